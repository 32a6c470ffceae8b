"""The demo pipeline end to end through spark-submit.sh on a real standalone cluster:
a master and two workers in their own JVMs, the driver in spark-submit's process.

The world it leaves is the run's demo world (tests/support/worlds.py): the same conf, size, seed
and as-of as the one the end-to-end, API and erasure files start from, so once this test's checks
pass its data folders are published and those files copy them instead of running the demo again.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import SEND_TIME, SHORT_LIVED_JVM_OPTIONS
from deltalake import DeltaTable

from tests.support.standalone import StandaloneCluster
from tests.support.worlds import DEMO_PEOPLE, REPO_ROOT, publishing_demo_world, write_demo_conf

AS_OF = "2026-11-01T00:00:00Z"


def _standalone_conf(root: Path) -> Path:
    """The repository's conf (demo sized to the shared world) with a ``standalone`` environment
    whose folders are laid out as the tests' local projects lay theirs (conftest.make_project)."""
    conf = write_demo_conf(root, people=DEMO_PEOPLE)
    environment = {
        "version": 1,
        "name": "standalone",
        "spark": {
            "mode": "cluster",
            # the settings a local session gets for small tables (lakecdp.spark._LOCAL_CONF);
            # cluster mode leaves them to the cluster, whose defaults are sized for big data:
            # Delta replays a table's log with 50 tasks and lists a folder with 10,000, each a
            # round trip to an executor JVM on this 2-core box
            "conf": {
                "spark.sql.shuffle.partitions": "4",
                "spark.default.parallelism": "4",
                "spark.databricks.delta.snapshotPartitions": "4",
                "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
                "spark.ui.enabled": "false",
            },
        },
        "storage": {"warehouse": str(root / "warehouse")},
        "landing": str(root / "landing"),
        "checkpoints": str(root / "checkpoints"),
        "as_of": AS_OF,
        "send_time": SEND_TIME,  # as conftest.make_project's: this is the run's shared demo world
    }
    (conf / "environments" / "standalone.yaml").write_text(yaml.safe_dump(environment))
    return conf


@pytest.mark.cluster
def test_demo_pipeline_on_a_standalone_cluster_through_spark_submit(tmp_path, tmp_path_factory):
    with publishing_demo_world(tmp_path_factory, people=DEMO_PEOPLE, as_of=AS_OF) as publish:
        root = tmp_path / "project"
        _check_the_demo_on_a_cluster(root, _standalone_conf(root), cluster_dir=tmp_path / "cluster")
        # the checks passed: this is the run's demo world
        publish(root)


def _check_the_demo_on_a_cluster(root: Path, conf: Path, *, cluster_dir: Path) -> None:
    with StandaloneCluster(
        workers=2,
        cores_per_worker=1,
        memory_per_worker="1g",
        work_dir=cluster_dir,
        daemon_java_options=SHORT_LIVED_JVM_OPTIONS,
    ) as cluster:
        completed = subprocess.run(
            [
                str(REPO_ROOT / "spark-submit.sh"),
                "--master",
                cluster.master_url,
                "--local-jars",
                "--env",
                "standalone",
                "--conf-dir",
                str(conf),
                "--spark-conf",
                "spark.executor.memory=768m",
                "--spark-conf",
                "spark.driver.memory=1g",
                "--spark-conf",
                f"spark.executor.extraJavaOptions={SHORT_LIVED_JVM_OPTIONS}",
                "--spark-conf",
                f"spark.driver.extraJavaOptions={SHORT_LIVED_JVM_OPTIONS}",
                "demo",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert completed.returncode == 0, completed.stderr[-5000:]
        state = cluster.state()
    # the work really ran on the cluster: an application completed there, and its executors
    # (one per worker) left their logs in the workers' folders
    assert any(app["name"].startswith("lakecdp") for app in state["completedapps"])
    executor_logs = list(cluster_dir.glob("worker-*/app-*/*/stderr"))
    assert len({path.parts[-4] for path in executor_logs}) == 2

    warehouse = root / "warehouse"
    runs = DeltaTable(str(warehouse / "ops" / "runs")).to_pyarrow_table().to_pylist()
    assert {r["step"] for r in runs if r["status"] == "succeeded"} >= {
        "generate",
        "ingest",
        "identity",
        "features",
        "segments",
        "activation",
    }
    assert not [r for r in runs if r["status"] != "succeeded"]

    # the identity graph the cluster computed: every record has one customer, one profile per
    # customer, and clusters are pure against the generator's labels (precision target 0.98)
    truth = {}
    with (warehouse / "labels" / "entities_0.csv").open() as handle:
        for row in csv.DictReader(handle):
            source = "web" if row["source"] == "web_events" else row["source"]
            truth[f"{source}:{row['source_record_id']}"] = row["person_id"]
    id_map = DeltaTable(str(warehouse / "identity" / "id_map")).to_pyarrow_table().to_pylist()
    records = DeltaTable(str(warehouse / "silver" / "customer_records")).to_pyarrow_table().column("record_id")
    assert sorted(r["record_id"] for r in id_map) == sorted(records.to_pylist())
    profiles = DeltaTable(str(warehouse / "gold" / "customer_profile")).to_pyarrow_table()
    assert sorted(profiles.column("customer_id").to_pylist()) == sorted({r["customer_id"] for r in id_map})
    persons_per_cluster: dict[str, set[str]] = {}
    for row in id_map:
        if row["record_id"] in truth:
            persons_per_cluster.setdefault(row["customer_id"], set()).add(truth[row["record_id"]])
    pure = sum(len(p) == 1 for p in persons_per_cluster.values()) / len(persons_per_cluster)
    assert pure >= 0.98, pure
    changes = DeltaTable(str(warehouse / "segments" / "changes")).to_pyarrow_table()
    assert set(changes.column("change_type").to_pylist()) == {"entered"}
