"""Shared fixtures: one SparkSession for the whole test run, a fresh project per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakecdp.config import Environment, Project, SparkSettings, StorageSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the environments' ``send_time`` in tests (see :func:`make_project`)
SEND_TIME = "2026-11-01T12:00:00Z"

#: JVM options for the JVMs a test starts besides its workers' sessions (the standalone cluster's
#: master, workers, executors and spark-submit driver; a notebook's kernel): the client compiler
#: only and the serial collector. Each runs a query's code a few times, so the server compiler's
#: threads only compete with the work for the 2 cores of a CI box. Measured on the shared 2-core
#: box (2026-12-02, under load): the cluster test 692 s -> 543 s, the three notebooks 470 s -> 224 s
SHORT_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# the real Kafka broker's fixtures (kafka_broker, kafka_topic_factory, ...) for the tests that ask for them
pytest_plugins = ["kafka_fixtures"]


#: The order of the full suite's files. With ``--dist loadfile`` a file runs on one worker and a
#: worker takes the next file when it is nearly done, so the run ends when the last file does: the
#: longest go first and the many short files fill in behind them on whichever worker is free.
#: Needs ``--no-loadscope-reorder`` (the Makefile passes it), else xdist orders the files by their
#: number of tests. The figures are each file's seconds in one full run on the shared 2-core box
#: at load 12-17 (2026-12-02, about twice a quiet box's), from the start of the file to the start
#: of the next one on its worker.
#:
#: The standalone cluster's demo is the run's demo world (tests/support/worlds.py): it goes first
#: and holds the world's lock until it publishes it, and the four files that copy the world come
#: after enough other long files (460 s against 1289 s on the other worker) that the other worker
#: reaches them after it is published (a worker that comes early waits for it, idle; the world is
#: not built twice). The cluster file has
#: one test, so its worker is handed the third file at once (xdist tops a worker up while it has
#: two tests or fewer to run).
HEAVIEST_FILES_FIRST = (
    "test_standalone_cluster.py",  # 460: the 400-person demo through spark-submit on a cluster
    "test_segments_engines.py",  # 445
    "test_segments.py",  # 591 (after the cluster, on its worker)
    "test_identity_local.py",  # 438: the identity backends' parity on Spark
    "test_kafka_stream.py",  # 406: the Kafka stream on a real broker
    # the demo world's files and the other long ones, longest first
    "test_erasure_forgets.py",  # 493: erasure on a copy of the demo world, then an increment
    "test_engine_parity.py",  # 339: the embedded engine's demo beside the world, the increment on both engines
    "test_erasure.py",  # > 290
    "test_end_to_end.py",  # 147: the demo world's checks, the entry points' re-run, notebooks
    "test_identity_job.py",  # 120
    "test_ingest_sample.py",  # 87
    "test_feedback_loop.py",  # 69
    "test_api_end_to_end.py",  # events over HTTP into a copy of the demo world
    "test_segments_conformance.py",
    "test_segments_event_embedded.py",
    # make test's heaviest files (Spark module fixtures, each worker's first Delta writes): its
    # tier runs --dist load, which hands tests out in this order, so the run ends on short tests
    # on both workers instead of a 15-30 s Spark test on one
    "test_identity_match.py",
    "test_campaign_report.py",
    "test_identity_ids.py",
    "test_catalog.py",
    "test_columns.py",
    "test_features.py",
    "test_security_sql.py",
    "test_foundation_delta.py",
    "test_steps_no_jvm.py",
    "test_kind_plugins.py",
    "test_phones.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the heaviest files first (see :data:`HEAVIEST_FILES_FIRST`); each file's tests keep
    their order, and the other files theirs."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
        # SMS quiet hours judged at midday UTC, not when the test runs: two runs of one world
        # hours apart (the parity tier) must defer the same messages
        send_time=SEND_TIME,
    )
    return Project(root=root, conf_dir=REPO_ROOT / "conf", environment=environment)


def on_engine(project: Project, engine: str) -> Project:
    """``project`` with its steps run by ``engine`` ("embedded" or "spark")."""
    return project.model_copy(update={"environment": project.environment.model_copy(update={"engine": engine})})


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
        # SHOW VIEWS, not catalog.listTables(): the latter looks up every table's metadata,
        # ~1 s a call on two loaded cores against 0.1 s, and this runs after every Spark test
        for view in session.sql("SHOW VIEWS").collect():
            if view.isTemporary:
                session.catalog.dropTempView(view.viewName)
