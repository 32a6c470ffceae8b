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

from tests.support.standalone import StandaloneCluster

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
    with StandaloneCluster(
        workers=2, cores_per_worker=1, memory_per_worker="1g", work_dir=tmp_path / "cluster"
    ) as cluster:
        completed = subprocess.run(
            [
                str(ROOT / "spark-submit.sh"),
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
    executor_logs = list((tmp_path / "cluster").glob("worker-*/app-*/*/stderr"))
    assert len({path.parts[-4] for path in executor_logs}) == 2

    warehouse = tmp_path / "warehouse"
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
