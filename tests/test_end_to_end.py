"""The whole pipeline on a small generated world: the demo run, an idempotent re-run through
the scheduled jobs' console entry points, and the notebooks. An increment and right to erasure on
the same world are in test_erasure_forgets.py, which erases a person and then runs an increment
(one erasure and one increment serve both files' checks).

Expected values come from the generator's labels and from reading the landing files and the
Delta tables independently (plain Python, delta-rs), never from the code under test.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

from lakecdp.steps import demo_steps, scheduled_steps
from conftest import REPO_ROOT, SHORT_LIVED_JVM_OPTIONS, make_project, on_engine
from tests.support.worlds import DEMO_PEOPLE, copy_demo_world, write_demo_conf

# the demo world through every step, the entry points and the notebooks: minutes, full suite only
pytestmark = pytest.mark.e2e

PEOPLE = DEMO_PEOPLE


def _rows(warehouse: Path, table: str) -> list[dict]:
    return DeltaTable(str(warehouse / table)).to_pyarrow_table().to_pylist()


def _version(warehouse: Path, table: str) -> int:
    return DeltaTable(str(warehouse / table)).version()


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    """The demo pipeline's 300-person world (built once per test run, copied here); yield the
    project."""
    root = tmp_path_factory.mktemp("e2e")
    copy_demo_world(spark, tmp_path_factory, root, people=PEOPLE)
    conf = write_demo_conf(root, people=PEOPLE)
    # the world was built by Spark (the standalone cluster's spark-submit run, or the demo in
    # process); this file continues it on the engine one machine runs (conf/environments/local.yaml),
    # so the entry points' re-run is also a switch of engines, which must change nothing
    project = on_engine(make_project(root), "embedded").model_copy(update={"conf_dir": conf})
    # the same environment as a file, for the console entry points (--conf/--env)
    environment = project.environment.model_dump(mode="json")
    environment["name"] = "e2e"
    # each notebook's kernel starts a Spark of its own for a few queries (a short-lived JVM)
    environment["spark"]["conf"]["spark.driver.extraJavaOptions"] = SHORT_LIVED_JVM_OPTIONS
    (conf / "environments" / "e2e.yaml").write_text(yaml.safe_dump(environment))
    return project


def test_every_demo_step_succeeded_and_was_recorded(demo):
    runs = _rows(demo.warehouse, "ops/runs")
    assert [r["step"] for r in sorted(runs, key=lambda r: r["position"])] == [s.name for s in demo_steps()]
    assert {r["status"] for r in runs} == {"succeeded"}
    identity = next(r for r in runs if r["step"] == "identity")
    # lineage: the identity step recorded which version of its input it read
    assert "silver.customer_records" in dict(identity["input_versions"])


def _physical_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    lines = path.read_bytes().splitlines()
    return len(lines) - (1 if path.suffix == ".csv" else 0)


def test_nothing_lost_in_ingest(demo):
    audit = _rows(demo.warehouse, "ops/ingest_audit")
    by_file = {r["source_file"]: r for r in audit}
    landing_files = sorted(p for p in demo.landing.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert {str(p.relative_to(demo.landing)) for p in landing_files} == set(by_file)
    for path in landing_files:
        row = by_file[str(path.relative_to(demo.landing))]
        assert row["rows_read"] == _physical_rows(path), path
        assert row["rows_read"] == row["rows_loaded"] + row["rows_quarantined"] + row["duplicates_removed"]


def test_identity_accuracy_against_the_labels(demo):
    truth = {}
    with (demo.warehouse / "labels" / "entities_0.csv").open() as handle:
        for row in csv.DictReader(handle):
            # a web login's record is "web:<anonymous_id>" (docs/sample-data.md, labels)
            source = "web" if row["source"] == "web_events" else row["source"]
            truth[f"{source}:{row['source_record_id']}"] = row["person_id"]
    id_map = {r["record_id"]: r["customer_id"] for r in _rows(demo.warehouse, "identity/id_map")}
    records = {r["record_id"]: r for r in _rows(demo.warehouse, "silver/customer_records")}
    assert set(id_map) == set(records)
    assert len([r for r in id_map if r in truth]) >= 0.99 * len(id_map)

    def cluster_figures(record_ids):
        clusters: dict[str, set[str]] = defaultdict(set)
        persons: dict[str, set[str]] = defaultdict(set)
        for record in record_ids:
            clusters[id_map[record]].add(truth[record])
            persons[truth[record]].add(id_map[record])
        precision = sum(len(p) == 1 for p in clusters.values()) / len(clusters)
        recall = sum(len(c) == 1 for c in persons.values()) / len(persons)
        return precision, recall

    # the targets, over records that describe a person (a name or a birth date)
    named = [r for r in id_map if r in truth and (records[r]["first_name"] or records[r]["date_of_birth"])]
    precision, recall = cluster_figures(named)
    assert precision >= 0.98, precision
    assert recall >= 0.95, recall
    # web logins carry only an email and a device: no cluster may mix people because of them
    labelled = [r for r in id_map if r in truth]
    assert cluster_figures(labelled)[0] >= 0.98
    profiles = _rows(demo.warehouse, "gold/customer_profile")
    assert sorted(p["customer_id"] for p in profiles) == sorted(set(id_map.values()))


def test_rerun_through_the_scheduled_entry_points_changes_nothing(demo):
    from lakecdp import entrypoints

    watched = [
        "segments/changes",
        "activation/deliveries",
        "identity/id_changes",
        "silver/events",
        "silver/customer_records",
    ]
    before = {t: len(_rows(demo.warehouse, t)) for t in watched}
    argv = ["--conf", str(demo.conf_dir), "--env", "e2e"]
    for step in scheduled_steps():
        assert getattr(entrypoints, f"{step.name}_main")(argv) == 0, step.name
    after = {t: len(_rows(demo.warehouse, t)) for t in watched}
    assert after == before
    runs = _rows(demo.warehouse, "ops/runs")
    assert {r["job"] for r in runs} >= {"demo", "ingest", "identity", "features", "segments", "activation"}


@pytest.mark.parametrize("name", ["identity_diagnostics", "segment_explorer", "campaign_report"])
def test_notebooks_run_top_to_bottom(demo, name):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    env = {"LAKECDP_CONF": str(demo.conf_dir), "LAKECDP_ENV": "e2e"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}}
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert errors == []
