"""Shared fixtures: one SparkSession for the whole test run, a fresh project per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakecdp.config import Environment, Project, SparkSettings, StorageSettings

REPO_ROOT = Path(__file__).resolve().parents[1]

# the real Kafka broker's fixtures (kafka_broker, kafka_topic_factory, ...) for the tests that ask for them
pytest_plugins = ["kafka_fixtures"]


def make_project(root: Path, *, as_of: str = "2026-11-01T00:00:00Z") -> Project:
    """A path-based project whose warehouse, landing and checkpoints sit under ``root``."""
    environment = Environment(
        version=1,
        name="test",
        spark=SparkSettings(
            mode="local",
            master="local[2]",
            conf={
                # test tables hold tens of rows: two partitions keep every shuffle cheap
                "spark.sql.shuffle.partitions": "2",
                "spark.default.parallelism": "2",
                # Delta's log replay uses 50 tasks by default; two are plenty for test tables
                "spark.databricks.delta.snapshotPartitions": "2",
                # fail fast instead of retrying a broken task four times
                "spark.task.maxFailures": "1",
                # one JVM serves the whole run: at the 1g default its heap filled up late in the full
                # suite (GC threads at 100 %, the segments tests crawled and one failed)
                "spark.driver.memory": "4g",
            },
        ),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"),
        checkpoints=str(root / "checkpoints"),
        as_of=as_of,
    )
    return Project(root=root, conf_dir=REPO_ROOT / "conf", environment=environment)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lakecdp")


@pytest.fixture(scope="session")
def spark(session_root):
    """The one SparkSession of the test run, built by the project's own factory."""
    from lakecdp.spark import get_session

    session = get_session(make_project(session_root), app_name="lakecdp-tests")
    yield session
    session.stop()


@pytest.fixture
def project(tmp_path) -> Project:
    """A fresh, empty warehouse for one test (the Spark session is shared)."""
    return make_project(tmp_path)


@pytest.fixture(autouse=True)
def _clean_spark_state(request):
    """Drop temp views and cached data a test left behind, so tests stay independent."""
    yield
    if "spark" in request.fixturenames:
        session = request.getfixturevalue("spark")
        session.catalog.clearCache()
        for table in session.catalog.listTables():
            if table.isTemporary:
                session.catalog.dropTempView(table.name)
