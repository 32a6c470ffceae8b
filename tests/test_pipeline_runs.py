"""The runner's record, ``ops.runs``, on both engines: delta-rs on the embedded engine, Spark on
engine ``spark``. The same steps give the same rows (hand-written below) whichever engine writes
them, and a run one engine left unfinished is resumed by the other.

Expected rows are written by hand from what the steps return and raise.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakecdp import catalog
from lakecdp.config import Project
from lakecdp.pipeline import StepFailedError, run_pipeline
from lakecdp.steps import Step
from lakecdp.tables import Tables

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
TIMINGS = ("started_at", "finished_at", "duration_s")


def _on(project: Project, engine: str, conf: Path) -> Project:
    """``project`` on ``engine``, with a conf folder of its own (no alerts.yaml: nothing is sent)."""
    environment = project.environment.model_copy(update={"engine": engine})
    return project.model_copy(update={"environment": environment, "conf_dir": conf})


def _stored_runs(project: Project) -> list[dict]:
    """ops.runs as delta-rs reads it (maps as dicts), ordered by run, position."""
    rows = DeltaTable(str(project.warehouse / "ops" / "runs")).to_pyarrow_table().to_pylist()
    for row in rows:
        row["input_versions"] = dict(row["input_versions"])
        row["counts"] = dict(row["counts"])
    return sorted(rows, key=lambda r: (r["started_at"], r["position"]))


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def _assert_written_by(project: Project, engine: str, run_id: str) -> None:
    """The last commit of ops.runs came from ``engine``: delta-rs labels its commits, Spark's
    MERGE leaves userMetadata empty."""
    last = DeltaTable(str(project.warehouse / "ops" / "runs")).history(1)[0]
    expected = f"lakecdp-pipeline merge {run_id}" if engine == "embedded" else None
    assert (last.get("userMetadata"), last["operation"]) == (expected, "MERGE")


def test_the_embedded_engine_records_a_run_without_a_spark_session(project, tmp_path):
    """Recording, lineage and resuming need no session: the handle is never started."""
    from lakecdp.context import SparkHandle

    conf = tmp_path / "conf"
    conf.mkdir()
    write_deltalake(str(project.warehouse / "silver" / "products"), pa.table({"product_id": ["p1"]}))
    embedded = _on(project, "embedded", conf)
    session = SparkHandle(embedded, app_name="lakecdp-test")
    flaky = Flaky()
    chosen = [Step("a", lambda ctx: {"rows": 1}, inputs=(catalog.PRODUCTS,)), Step("b", flaky)]
    with pytest.raises(StepFailedError):
        run_pipeline(embedded, session, steps=chosen, job="t", as_of=AS_OF)
    flaky.fixed = True
    result = run_pipeline(embedded, session, steps=chosen, job="t")
    assert (result.resumed, result.skipped) == (True, ["a"])
    assert not session.started
    assert [(r["step"], r["status"], r["input_versions"], r["counts"]) for r in _stored_runs(project)] == [
        ("a", "succeeded", {"silver.products": 0}, {"rows": 1}),
        ("b", "succeeded", {}, {"sent": 2}),
    ]


class Flaky:
    """Step ``b``: fails until ``fixed``."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, ctx) -> dict[str, int]:
        if not self.fixed:
            raise ValueError("boom")
        return {"sent": 2}


# slow tier: a Spark run of ~30-120 s on 2 loaded cores; the full suite (CI) runs it
@pytest.mark.slow
@pytest.mark.parametrize("first,second", [("embedded", "spark"), ("spark", "embedded")])
def test_ops_runs_holds_the_same_rows_whichever_engine_writes_and_continues_it(spark, project, tmp_path, first, second):
    conf = tmp_path / "conf"
    conf.mkdir()
    # lineage: silver.products at version 1 (two commits); silver.events does not exist
    products = str(project.warehouse / "silver" / "products")
    write_deltalake(products, pa.table({"product_id": ["p1"]}))
    write_deltalake(products, pa.table({"product_id": ["p2"]}), mode="append")
    flaky = Flaky()
    chosen = [
        Step("a", lambda ctx: {"rows": 3}, inputs=(catalog.PRODUCTS, catalog.EVENTS)),
        Step("b", flaky, inputs=(catalog.PRODUCTS,)),
    ]

    with pytest.raises(StepFailedError, match="step 'b' of run .* failed: ValueError: boom"):
        run_pipeline(_on(project, first, conf), spark, steps=chosen, job="t", as_of=AS_OF)
    runs = _stored_runs(project)
    run_id = runs[0]["run_id"]
    assert run_id.startswith("20261101T000000-")
    a_done = {
        "run_id": run_id,
        "job": "t",
        "step": "a",
        "position": 1,
        "status": "succeeded",
        "as_of": AS_OF,
        "input_versions": {"silver.products": 1},
        "counts": {"rows": 3},
        "message": None,
    }
    b = {**a_done, "step": "b", "position": 2, "input_versions": {"silver.products": 1}}
    assert _without_timings(runs) == [a_done, {**b, "status": "failed", "counts": {}, "message": "ValueError: boom"}]
    for row in runs:
        assert row["started_at"] <= row["finished_at"] and row["duration_s"] >= 0
    _assert_written_by(project, first, run_id)

    # the other engine finds the unfinished run in what the first wrote, and resumes it at b
    flaky.fixed = True
    result = run_pipeline(_on(project, second, conf), spark, steps=chosen, job="t")
    assert (result.run_id, result.resumed, result.skipped, result.steps) == (run_id, True, ["a"], {"b": {"sent": 2}})
    resumed = _stored_runs(project)
    assert _without_timings(resumed) == [a_done, {**b, "status": "succeeded", "counts": {"sent": 2}}]
    assert resumed[0] == runs[0]  # a's row untouched, timings included
    _assert_written_by(project, second, run_id)
    # Spark reads the table both engines wrote, row for row as delta-rs does
    through_spark = [r.asDict() for r in Tables(project).read(spark, catalog.RUNS.name).collect()]
    assert sorted((r["step"], r["status"], r["counts"], r["input_versions"]) for r in through_spark) == [
        ("a", "succeeded", {"rows": 3}, {"silver.products": 1}),
        ("b", "succeeded", {"sent": 2}, {"silver.products": 1}),
    ]

    # back on the first engine: the run is finished, so a new one starts (nothing skipped)
    again = run_pipeline(_on(project, first, conf), spark, steps=chosen, job="t", as_of=AS_OF)
    assert (again.resumed, again.skipped, list(again.steps)) == (False, [], ["a", "b"])
    assert again.run_id != run_id
    assert [(r["run_id"] == run_id, r["step"], r["status"]) for r in _stored_runs(project)] == [
        (True, "a", "succeeded"),
        (True, "b", "succeeded"),
        (False, "a", "succeeded"),
        (False, "b", "succeeded"),
    ]
