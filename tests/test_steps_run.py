"""Steps run from the registry on Spark: the order of a run, the run ledger of ``lakecdp ingest``,
and a test-only plugin step (tests/plugin_price_bands.py + one registry line) through
``lakecdp step`` with its lineage in ops.runs.

Expected rows are written by hand from the inputs each test writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import on_engine
from lakecdp import catalog, cli, steps
from lakecdp.pipeline import run_pipeline
from lakecdp.steps import Step
from lakecdp.tables import Tables

sys.path.insert(0, str(Path(__file__).parent))


def _conf(tmp_path: Path, project, *sources: str) -> Path:
    """A conf folder the CLI can load: the test environment as ``t`` and the named sources."""
    conf = tmp_path / "conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "environments" / "t.yaml").write_text(project.environment.model_dump_json())
    (conf / "sources").mkdir()
    repo_conf = Path(__file__).resolve().parents[1] / "conf"
    for name in sources:
        (conf / "sources" / f"{name}.yaml").write_text((repo_conf / "sources" / f"{name}.yaml").read_text())
    return conf


def _runs(spark, project) -> list[dict]:
    rows = Tables(project).read(spark, catalog.RUNS.name).orderBy("started_at", "position").collect()
    return [row.asDict() for row in rows]


def test_a_run_follows_the_registry_order(spark, project, monkeypatch):
    called: list[str] = []

    def first(ctx):
        called.append("first")
        return {"n": 1}

    def second(ctx):
        called.append("second")
        return {"n": 2}

    monkeypatch.setattr(steps, "STEPS", (Step("second", second), Step("first", first)))
    # the order is the subject, not Spark: ops.runs written by delta-rs (engine: embedded; Spark's
    # writes of ops.runs: test_lakecdp_ingest_records_its_run_in_ops_runs, tests/test_pipeline_runs.py)
    result = run_pipeline(on_engine(project, "embedded"), spark)  # no steps given: the registry's pipeline
    assert called == ["second", "first"]
    assert list(result.steps) == ["second", "first"]
    runs = _runs(spark, project)
    assert [(r["job"], r["step"], r["position"], r["status"]) for r in runs] == [
        ("pipeline", "second", 1, "succeeded"),
        ("pipeline", "first", 2, "succeeded"),
    ]


# 17-21 s in make test (two workers on two cores): the full suite's tier
@pytest.mark.slow
def test_lakecdp_ingest_records_its_run_in_ops_runs(spark, project, tmp_path):
    conf = _conf(tmp_path, project, "products")
    landing = project.landing / "products"
    landing.mkdir(parents=True)
    (landing / "products_1.csv").write_text(
        "product_id,name,category,price\np1,Kettle,kitchen,25.0\np2,Toaster,kitchen,40.0\np3,Lamp,home,15.5\n"
    )
    assert cli.main(["--conf", str(conf), "--env", "t", "ingest", "--source", "products"]) == 0
    runs = _runs(spark, project)
    assert len(runs) == 1
    run = runs[0]
    assert (run["job"], run["step"], run["position"], run["status"]) == ("ingest", "ingest", 1, "succeeded")
    assert run["counts"]["files_loaded"] == 1
    assert run["counts"]["rows_loaded"] == 3
    assert run["input_versions"] == {}  # ingest reads landing files, no table
    assert run["as_of"] is not None and run["finished_at"] >= run["started_at"]
    assert Tables(project).read(spark, catalog.PRODUCTS.name).count() == 3

    # a failing command is recorded too, and exits 1
    assert cli.main(["--conf", str(conf), "--env", "t", "ingest", "--source", "nope"]) == 1
    failed = [r for r in _runs(spark, project) if r["status"] == "failed"]
    assert [(r["job"], r["step"]) for r in failed] == [("ingest", "ingest")]
    assert "unknown source(s) ['nope']" in failed[0]["message"]


# ~34 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_a_plugin_step_runs_through_the_pipeline_with_its_lineage(spark, project, tmp_path, monkeypatch):
    from plugin_price_bands import PRICE_BANDS

    # the one registry line
    monkeypatch.setattr(
        steps,
        "STEPS",
        (
            *steps.STEPS,
            Step(
                "price_bands",
                "plugin_price_bands:run",
                inputs=(catalog.PRODUCTS,),
                outputs=(PRICE_BANDS,),
                scheduled=False,
            ),
        ),
    )
    tables = Tables(project)
    products = spark.createDataFrame(
        [("p1", "Kettle", "kitchen", 25.0), ("p2", "Toaster", "kitchen", 40.0), ("p3", "Lamp", "home", 15.5)],
        catalog.PRODUCTS.schema,
    )
    tables.overwrite(products, catalog.PRODUCTS.name)
    # a second commit: lineage must record the version the step read (1), not the first
    tables.append(
        spark.createDataFrame([("p4", "Mug", "kitchen", 8.0)], catalog.PRODUCTS.schema), catalog.PRODUCTS.name
    )
    conf = _conf(tmp_path, project)

    assert cli.main(["--conf", str(conf), "--env", "t", "step", "price_bands"]) == 0
    (run,) = _runs(spark, project)
    assert (run["job"], run["step"], run["position"], run["status"]) == ("price_bands", "price_bands", 1, "succeeded")
    assert run["input_versions"] == {"silver.products": 1}
    assert run["counts"] == {"categories": 2}
    bands = {
        r["category"]: (r["products"], r["min_price"], r["max_price"], r["run_id"])
        for r in tables.read(spark, PRICE_BANDS.name).collect()
    }
    assert bands == {"kitchen": (3, 8.0, 40.0, run["run_id"]), "home": (1, 15.5, 15.5, run["run_id"])}
