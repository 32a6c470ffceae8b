"""The demo pipeline end to end through spark-submit.sh on a real standalone cluster:
a master and two workers in their own JVMs, the driver in spark-submit's process."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from lakecdp.standalone import StandaloneCluster

ROOT = Path(__file__).resolve().parents[1]
DEMO_PEOPLE = 400


def _standalone_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    # paths in conf resolve against the folder holding conf/: templates sit beside it
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    environment = {
        "version": 1,
        "name": "standalone",
        "spark": {"mode": "cluster", "conf": {"spark.sql.shuffle.partitions": "4"}},
        "storage": {"warehouse": str(tmp_path / "warehouse")},
        "landing": str(tmp_path / "warehouse" / "landing"),
        "checkpoints": str(tmp_path / "warehouse" / "_checkpoints"),
        "as_of": "2026-11-01T00:00:00Z",
    }
    (conf / "environments" / "standalone.yaml").write_text(yaml.safe_dump(environment))
    sample = yaml.safe_load((conf / "sample.yaml").read_text())
    sample["demo_people"] = DEMO_PEOPLE
    (conf / "sample.yaml").write_text(yaml.safe_dump(sample))
    return conf


@pytest.mark.cluster
def test_demo_pipeline_on_a_standalone_cluster_through_spark_submit(tmp_path):
    conf = _standalone_conf(tmp_path)
    with StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1g",
                           work_dir=tmp_path / "cluster") as cluster:
        completed = subprocess.run(
            [str(ROOT / "spark-submit.sh"), "--master", cluster.master_url, "--local-jars",
             "--env", "standalone", "--conf-dir", str(conf),
             "--spark-conf", "spark.executor.memory=768m",
             "--spark-conf", "spark.driver.memory=1g",
             "demo"],
            capture_output=True, text=True, timeout=1800,
        )
        assert completed.returncode == 0, completed.stderr[-5000:]
        state = cluster.state()
    # the work really ran on the cluster: an application completed there, and its executors
    # (one per worker) left their logs in the workers' folders
    assert any(app["name"].startswith("lakecdp") for app in state["completedapps"])
    executor_logs = list((tmp_path / "cluster").glob("worker-*/app-*/*/stderr"))
    assert len({path.parts[-4] for path in executor_logs}) == 2

    warehouse = tmp_path / "warehouse"
    runs = DeltaTable(str(warehouse / "ops" / "runs")).to_pyarrow_table().to_pylist()
    assert {r["step"] for r in runs if r["status"] == "succeeded"} >= {
        "generate", "ingest", "identity", "features", "segments", "activation"}
    assert not [r for r in runs if r["status"] != "succeeded"]

    # one profile per person, within the accuracy the identity targets allow
    labels = next((warehouse / "labels").glob("entities_0.csv"))
    with labels.open() as handle:
        people = {row["person_id"] for row in csv.DictReader(handle)}
    profiles = DeltaTable(str(warehouse / "gold" / "customer_profile")).to_pyarrow_table()
    assert abs(profiles.num_rows - len(people)) <= 0.05 * len(people)
    changes = DeltaTable(str(warehouse / "segments" / "changes")).to_pyarrow_table()
    assert changes.num_rows > 0
