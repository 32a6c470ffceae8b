"""The parity tier: the whole pipeline on both engines gives the same tables, on the demo world
and on its increment (issue 14, "two engines").

The Spark engine's demo world is the run's shared one (tests/support/worlds.py: in the full suite
the standalone cluster's spark-submit run, else built in-process), so only the embedded engine's
demo runs here: a fresh project with ``engine: embedded`` (conf/environments/local.yaml's), the
world's landing files and labels (the demo's generate step finds its own files and writes
nothing) and the Spark run's run id and as-of, so ids derived from the run id (change ids,
idempotency keys, ``entered_run_id``) are comparable too. Then the generator's increment 1, a
week later, lands in both projects and the pipeline runs on each, with one run id.

Every Delta table of every layer (bronze, quarantine, silver, identity, gold, segments,
activation, ops) is compared row for row by tests/support/warehouses.py, the comparison
``python -m bench.compare_warehouses`` prints. The Spark engine is the oracle: the columns left
out are listed in :data:`DIFFERS_BY_DESIGN`, each with its reason; nothing else is.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project
from lakecdp.alerts import after_run
from lakecdp.config import Project
from lakecdp.context import JobContext, SparkHandle, new_run_id
from lakecdp.demo import demo_receiver
from lakecdp.pipeline import PipelineResult, run_steps
from lakecdp.steps import Step, demo_steps, pipeline_steps
from tests.support.warehouses import Options, TableDiff, compare_table, compare_warehouses, differing_files
from tests.support.worlds import DEMO_PEOPLE, copy_demo_world, write_demo_conf

# the embedded engine's demo beside the shared world, an increment on both engines: minutes
pytestmark = pytest.mark.e2e

AS_OF = "2026-11-01T00:00:00Z"
#: the increment is a later delivery of the same world (README: ``generate --increment 1
#: --as-of 2026-11-08``): time moves on, so segments can also exit and reasons change
INCREMENT_AS_OF = datetime.fromisoformat("2026-11-08T00:00:00+00:00")

#: table -> columns the two engines write differently by design, with the reason; everything
#: else is compared. Ingest stamps the run's as-of on both engines (``ingested_at``,
#: ``_ingested_at``, ``quarantined_at``, ``at`` are compared), and both runs have one run id.
DIFFERS_BY_DESIGN: dict[str, dict[str, str]] = {
    "ops/runs": {
        "started_at": "wall-clock start of the step",
        "finished_at": "wall-clock end of the step",
        "duration_s": "wall-clock duration of the step",
        # a Delta version counts an engine's commits: delta-rs creates a table in a commit of
        # its own (CREATE TABLE, version 0) before its first write, where Spark's first write
        # is version 0, and the engines group a step's writes into commits differently.
        # _lineage_differences checks what the versions point at instead: the same rows on
        # both engines
        "input_versions": "each engine's own Delta versions of the step's inputs (checked by lineage)",
    },
    "identity/state": {"silver_version": "the engine's own Delta version of silver.customer_records (lineage)"},
    "segments/runs": {
        "applied_at": "wall-clock time the run was applied",
        # the embedded engine writes a run's exits (MERGE) and entries (append) in two commits,
        # Spark in one MERGE: after the increment membership is at version 3 and 2
        "membership_version": "the engine's own Delta version of segments.membership the run left (lineage)",
    },
    "activation/deliveries": {"delivered_at": "wall-clock time of the delivery"},
}

#: table -> (column holding a Delta version, the table it is a version of): the versions
#: :func:`_lineage_differences` reads on both engines, keyed by the row's run id
VERSION_POINTERS: dict[str, tuple[str, str]] = {
    "identity/state": ("silver_version", "silver.customer_records"),
    "segments/runs": ("membership_version", "segments.membership"),
}

#: table -> columns whose doubles may differ in the last bit (docs/DESIGN.md, features: sums in
#: another order), compared to 1e-12 relative
SUMS_IN_ANOTHER_ORDER: dict[str, set[str]] = {
    "gold/customer_features": {"category_affinities"},
}

OPTIONS = Options(
    drop={table: set(columns) for table, columns in DIFFERS_BY_DESIGN.items()}, close=SUMS_IN_ANOTHER_ORDER
)

#: identity model file (``model_v<N>.json``, ``.meta.json``) -> keys that differ between two
#: trainings on the same records, with the reason
MODEL_KEYS_DIFFER: dict[str, dict[str, str]] = {
    "model": {"linker_uid": "Splink's random id of the linker that trained the model"},
    "meta": {"trained_at": "wall-clock time of the training"},
}


def _demo_run_id(warehouse: Path) -> str:
    """The run id of the world's demo run (ops.runs, read with delta-rs)."""
    runs = DeltaTable(str(warehouse / "ops" / "runs")).to_pyarrow_table().to_pylist()
    (run_id,) = {r["run_id"] for r in runs if r["job"] == "demo"}
    return run_id


def run_with_id(
    project: Project, spark, steps: Sequence[Step], *, job: str, run_id: str, as_of: datetime
) -> PipelineResult:
    """What ``lakecdp demo`` / ``lakecdp run`` do (the demo receiver up, every step recorded,
    the alerts check after the run), with the run id given: the runner's own takes a fresh one."""
    ctx = JobContext.create(
        project, SparkHandle(project, app_name=f"lakecdp-{job}", session=spark), as_of=as_of, run_id=run_id
    )
    with demo_receiver(project.warehouse):
        try:
            return run_steps(ctx, steps, job=job)
        finally:
            after_run(project)


def _embedded_project(root: Path) -> Project:
    conf = write_demo_conf(root, people=DEMO_PEOPLE)
    project = make_project(root, as_of=AS_OF)
    environment = project.environment.model_copy(update={"engine": "embedded", "name": "parity-embedded"})
    return project.model_copy(update={"conf_dir": conf, "environment": environment})


def _rows(warehouse: Path, table: str) -> list[dict]:
    return DeltaTable(str(warehouse / table)).to_pyarrow_table().to_pylist()


def _lineage_differences(left: Path, right: Path) -> list[str]:
    """Read at the versions each engine recorded (``ops.runs`` input versions and
    :data:`VERSION_POINTERS`), the tables hold the same rows on both engines."""
    pointers: dict[str, dict[tuple, dict[str, int]]] = {}
    for side, warehouse in (("left", left), ("right", right)):
        recorded = {(r["run_id"], r["job"], r["step"]): dict(r["input_versions"]) for r in _rows(warehouse, "ops/runs")}
        for table, (column, target) in VERSION_POINTERS.items():
            for r in _rows(warehouse, table):
                recorded[(r["run_id"], table)] = {target: r[column]}
        pointers[side] = recorded
    found = []
    compared: dict[tuple[str, int, int], TableDiff | str] = {}
    for key in sorted(pointers["left"].keys() & pointers["right"].keys()):
        versions_l, versions_r = pointers["left"][key], pointers["right"][key]
        if set(versions_l) != set(versions_r):
            found.append(f"{key}: inputs {sorted(versions_l)} vs {sorted(versions_r)}")
            continue
        for name in sorted(versions_l):
            at = (name, versions_l[name], versions_r[name])
            if at not in compared:
                table = name.replace(".", "/")
                compared[at] = compare_table(left, right, table, OPTIONS, versions=at[1:])
            if isinstance(compared[at], TableDiff):
                found.append(f"{key}: {compared[at].describe()}")
    return found


def _requests(folder: Path) -> Counter[str]:
    """The demo receiver's requests (every ``.jsonl`` it wrote), as a multiset."""
    return Counter(
        json.dumps(json.loads(line), sort_keys=True)
        for path in folder.glob("*.jsonl")
        for line in path.read_text().splitlines()
    )


def _model(path: Path) -> dict:
    """A model file's JSON without the keys of :data:`MODEL_KEYS_DIFFER`."""
    content = json.loads(path.read_text())
    kind = path.name.split(".")[1] if path.name.count(".") > 1 else "model"
    keys = MODEL_KEYS_DIFFER.get(kind, {})
    assert set(keys) <= set(content), f"{path.name}: {set(keys) - set(content)} gone: update MODEL_KEYS_DIFFER"
    return {k: v for k, v in content.items() if k not in keys}


def assert_same_outputs(spark_project: Project, embedded_project: Project) -> None:
    """Every Delta table row for row, the lineage, and the files besides the tables (exports,
    previews, the demo receiver's requests, the identity model)."""
    left, right = spark_project.warehouse, embedded_project.warehouse
    # the list of columns left out stays true: each names a column the table has
    for table, columns in DIFFERS_BY_DESIGN.items():
        names = DeltaTable(str(left / table)).schema().fields
        assert set(columns) <= {f.name for f in names}, f"{table}: update DIFFERS_BY_DESIGN"
    diff = compare_warehouses(left, right, OPTIONS)
    lineage = _lineage_differences(left, right)
    files = [f"exports {d}" for d in differing_files(left / "exports", right / "exports")]
    files += [f"previews {d}" for d in differing_files(left / "previews", right / "previews")]
    requests_l, requests_r = _requests(left / "demo_receiver"), _requests(right / "demo_receiver")
    if requests_l != requests_r:
        only_l, only_r = requests_l - requests_r, requests_r - requests_l
        files.append(
            f"demo receiver: {sum(only_l.values())} requests only left, {sum(only_r.values())} only right, "
            f"e.g. {next(only_l.elements(), '')[:300]} / {next(only_r.elements(), '')[:300]}"
        )
    models = Path("models") / "identity"
    files += [
        f"{models} {d}"
        for d in differing_files(spark_project.root / models, embedded_project.root / models, read=_model)
    ]
    report = "\n".join([diff.report(), *lineage, *files])
    print(report)
    assert diff.identical and not lineage and not files, report


@pytest.fixture(scope="module")
def demo_worlds(spark, tmp_path_factory) -> tuple[Project, Project, dict[str, float]]:
    """(the Spark engine's demo world, the embedded engine's on the same inputs, seconds taken)."""
    timings = {}
    spark_root = tmp_path_factory.mktemp("parity-spark")
    started = time.monotonic()
    copy_demo_world(spark, tmp_path_factory, spark_root, people=DEMO_PEOPLE, as_of=AS_OF)
    timings["copy the shared world"] = time.monotonic() - started
    spark_project = make_project(spark_root, as_of=AS_OF).model_copy(
        update={"conf_dir": write_demo_conf(spark_root, people=DEMO_PEOPLE)}
    )

    embedded_project = _embedded_project(tmp_path_factory.mktemp("parity-embedded"))
    # the same inputs: the landing files and the generator's labels and manifest
    shutil.copytree(spark_project.landing, embedded_project.landing)
    shutil.copytree(spark_project.warehouse / "labels", embedded_project.warehouse / "labels")
    started = time.monotonic()
    run_with_id(
        embedded_project,
        spark,
        demo_steps(),
        job="demo",
        run_id=_demo_run_id(spark_project.warehouse),
        as_of=embedded_project.as_of(),
    )
    timings["embedded demo"] = time.monotonic() - started
    return spark_project, embedded_project, timings


def test_the_demo_world_is_the_same_on_both_engines(demo_worlds):
    spark_project, embedded_project, timings = demo_worlds
    print(timings)
    assert_same_outputs(spark_project, embedded_project)


def run_increment(spark, spark_project: Project, embedded_project: Project, delivery: Path) -> dict[str, float]:
    """Increment 1 of the demo world (generated under ``delivery``) into both projects, then the
    pipeline on each with one run id; returns the seconds each part took."""
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate

    timings = {}
    config = load_sample_config(spark_project.conf_dir)
    started = time.monotonic()
    # in this process: the same bytes as Spark's generation (test_sample_generator), and what is
    # compared here is the pipeline on each engine, not who wrote the delivery
    generate(
        None,
        landing=delivery / "landing",
        labels=delivery / "labels",
        people=DEMO_PEOPLE,
        seed=config.demo_seed,
        increment=1,
        as_of=INCREMENT_AS_OF,
        config=config,
    )
    timings["generate increment 1"] = time.monotonic() - started
    run_id = new_run_id(INCREMENT_AS_OF)
    for name, project in (("spark", spark_project), ("embedded", embedded_project)):
        shutil.copytree(delivery / "landing", project.landing, dirs_exist_ok=True)
        shutil.copytree(delivery / "labels", project.warehouse / "labels", dirs_exist_ok=True)
        started = time.monotonic()
        result = run_with_id(project, spark, pipeline_steps(), job="pipeline", run_id=run_id, as_of=INCREMENT_AS_OF)
        timings[f"{name} increment"] = time.monotonic() - started
        # a later delivery: identity continues incrementally on both engines
        assert result.steps["identity"]["incremental"] == 1, name
    return timings


@pytest.fixture(scope="module")
def increment_worlds(spark, demo_worlds, tmp_path_factory):
    """Both demo worlds after increment 1 of the same world, run through the pipeline."""
    spark_project, embedded_project, timings = demo_worlds
    timings |= run_increment(spark, spark_project, embedded_project, tmp_path_factory.mktemp("parity-increment"))
    return spark_project, embedded_project, timings


def test_the_increment_is_the_same_on_both_engines(increment_worlds):
    spark_project, embedded_project, timings = increment_worlds
    print(timings)
    assert_same_outputs(spark_project, embedded_project)
