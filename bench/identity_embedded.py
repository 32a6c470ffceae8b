"""Identity on the embedded engine (duckdb backend, path tables, no JVM) at scale, against
bare Splink predict + cluster on the same records, and an incremental ~1 % run against a full one.

The world is built once (Spark generator + ingest, not timed) under ``--world``: ``w0`` holds
``silver.customer_records`` after increment 0, ``w1`` the same table after an increment of
~1 % new people (``increments.new_people: 0.01``, no CRM changes). The model is trained once
(not timed) and copied into each run. The timed run, in one process:

1. bare Splink (DuckDB, the same model JSON) predict + ``cluster_pairwise_predictions_at_threshold``
   over the prepared records of ``w0`` (already in Arrow);
2. ``lakecdp identity`` full on ``w0`` (a fresh copy, no earlier identity tables);
3. silver moved on to ``w1``; ``lakecdp identity`` incremental;
4. ``lakecdp identity --mode full`` on the same ``w1`` data (the incremental run's reference).

Every stage's seconds come from :func:`lakecdp.identity.job.run_identity`. ``--dump DIR``
writes the identity tables after runs 2-4 as Parquet, and ``--compare DIR`` checks them
against an earlier dump (e.g. of the code before a change) row for row.

    .venv/bin/python -m bench.identity_embedded --people 600000 --world /tmp/idscale
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from pathlib import Path

from bench.results import append_results, machine, stamp

REPO_ROOT = Path(__file__).resolve().parents[1]
CUSTOMER_SOURCES = ("crm", "shop_customers", "third_party")
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
RECORDS = "silver/customer_records"
#: the identity tables compared between dumps (sort keys)
OUTPUTS = {
    "identity/edges": ["edge_type", "record_id_l", "record_id_r", "rule"],
    "identity/id_map": ["record_id"],
    "identity/id_changes": ["run_id", "change_type", "new_customer_id", "old_customer_id"],
    "identity/identifiers": ["identifier_type", "identifier_value"],
    "gold/customer_profile": ["customer_id"],
}
logger = logging.getLogger("bench.identity_embedded")


def _project(root: Path, conf: Path, as_of: datetime):
    from lakecdp.config import Environment, Project, SparkSettings, StorageSettings

    environment = Environment(
        version=1,
        name="bench",
        spark=SparkSettings(
            mode="local",
            master="local[2]",
            conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "6g"},
        ),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"),
        checkpoints=str(root / "checkpoints"),
        as_of=as_of,
    )
    return Project(root=root, conf_dir=conf, environment=environment)


def build_world(world: Path, people: int) -> None:
    """``w0`` (increment 0 ingested), ``w1`` (plus ~1 % new people) and the conf; skipped when there."""
    if (world / "w1").exists():
        return
    from lakecdp.context import JobContext
    from lakecdp.ingest.job import ingest
    from lakecdp.sample import generate, load_sample_config
    from lakecdp.spark import get_session

    conf = world / "conf"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "conf", conf)
    sample_yaml = conf / "sample.yaml"
    text = sample_yaml.read_text().replace("new_people: 0.05", "new_people: 0.01")
    sample_yaml.write_text(text.replace("crm_changes: 0.10", "crm_changes: 0.0"))
    root = world / "building"
    shutil.rmtree(root, ignore_errors=True)
    project = _project(root, conf, START)
    spark = get_session(project, app_name="bench-identity-world")
    sample = load_sample_config(conf)
    for increment, as_of in ((0, START), (1, START + timedelta(days=sample.increments.days))):
        generate(
            spark,
            landing=project.landing,
            labels=root / "labels",
            people=people,
            seed=42,
            increment=increment,
            as_of=as_of,
            config=sample,
            only=CUSTOMER_SOURCES,
        )
        ingest(JobContext.create(project, spark, as_of=as_of, run_id=f"world-{increment}"), only=CUSTOMER_SOURCES)
        if increment == 0:
            shutil.copytree(root, world / "w0")
    spark.stop()
    root.rename(world / "w1")


def _fresh_run_root(world: Path, name: str) -> Path:
    root = world / "runs" / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "warehouse" / "silver").mkdir(parents=True)
    shutil.copytree(world / "w0" / "warehouse" / RECORDS, root / "warehouse" / RECORDS)
    if (world / "models").exists():
        shutil.copytree(world / "models", root / "models")
    return root


def train_once(world: Path) -> None:
    """Train the model on the ``w0`` records (not timed) and keep it under ``world/models``."""
    if (world / "models").exists():
        return
    from deltalake import DeltaTable

    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.local import LocalRecords
    from lakecdp.identity.matching import ProbabilisticMatcher

    config = load_identity_config(world / "conf")
    records = DeltaTable(str(world / "w0" / "warehouse" / RECORDS)).to_pyarrow_table()
    prepared = LocalRecords(records, config).prepared()
    scratch = world / "models-training"
    shutil.rmtree(scratch, ignore_errors=True)
    matcher = ProbabilisticMatcher(config, spark=None, model_dir=scratch / Path(config.models_dir).name)
    matcher.model(prepared, prepared=prepared)
    scratch.rename(world / "models")


def bare_splink(world: Path) -> tuple[float, float, int, float]:
    """Plain Splink on DuckDB over the prepared ``w0`` records: (prepare s, predict + cluster s,
    pairs, predict + cluster process CPU s)."""
    from deltalake import DeltaTable
    from splink import DuckDBAPI, Linker
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.local import LocalRecords, duckdb_connection

    config = load_identity_config(world / "conf")
    model_path = sorted((world / "models" / "identity").glob("model_v*[0-9].json"))[-1]
    records = DeltaTable(str(world / "w0" / "warehouse" / RECORDS)).to_pyarrow_table()
    started = time.perf_counter()
    prepared = LocalRecords(records, config).prepared()
    prepare_s = time.perf_counter() - started
    started, cpu_started = time.perf_counter(), time.process_time()
    # the memory limit and spill folder lakecdp's own Splink connection gets (a fair comparison)
    db_api = DuckDBAPI(connection=duckdb_connection(config.duckdb))
    linker = Linker(db_api.register(prepared), str(model_path))
    predictions = linker.inference.predict(threshold_match_probability=config.edge_floor)
    pairs = predictions.as_duckdbpyrelation().aggregate("count(*)").fetchall()[0][0]
    cluster_pairwise_predictions_at_threshold(
        db_api.register(prepared.select(["record_id"])),
        predictions,
        db_api=db_api,
        node_id_column_name="record_id",
        threshold_match_probability=config.model.match_threshold,
    ).as_duckdbpyrelation().aggregate("count(*)").fetchall()
    return prepare_s, time.perf_counter() - started, pairs, time.process_time() - cpu_started


def _dump(root: Path, dump: Path | None, label: str) -> None:
    if dump is None:
        return
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    for table in OUTPUTS:
        data = DeltaTable(str(root / "warehouse" / table)).to_pyarrow_table()
        target = dump / label / f"{table.replace('/', '.')}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, target)


def compare(dump: Path, reference: Path) -> list[str]:
    """Tables of two dumps that differ (sorted rows, same columns); empty when identical."""
    import pyarrow.parquet as pq

    differing = []
    for run in sorted(p.name for p in reference.iterdir()):
        for table, keys in OUTPUTS.items():
            name = f"{table.replace('/', '.')}.parquet"
            ours, theirs = (pq.read_table(d / run / name) for d in (dump, reference))
            ours, theirs = (
                t.select(sorted(t.column_names)).sort_by([(k, "ascending") for k in keys]) for t in (ours, theirs)
            )
            same = ours.num_rows == theirs.num_rows and ours.equals(theirs)
            print(
                f"{run} {table}: {ours.num_rows:,} vs {theirs.num_rows:,} rows, {'identical' if same else 'DIFFERENT'}"
            )  # noqa: T201
            if not same:
                differing.append(f"{run}/{table}")
    return differing


def timed_runs(
    world: Path, dump: Path | None, *, name: str = "timed", before_increment: Callable[[], None] | None = None
) -> dict[str, tuple[float, dict[str, float], dict[str, int]]]:
    """Full on w0, incremental to w1, full on w1: (seconds, stage seconds, counts) each
    (``before_increment`` is called before silver moves on to w1)."""
    from lakecdp.context import JobContext
    from lakecdp.identity.job import run_identity

    root = _fresh_run_root(world, name)
    later = START + timedelta(days=7)
    results = {}
    for label, as_of, mode in (
        ("full", START, "full"),
        ("incremental", later, "incremental"),
        ("full_w1", later, "full"),
    ):
        if label == "incremental":  # silver moves on to w1 (its log continues w0's)
            if before_increment is not None:
                before_increment()
            shutil.rmtree(root / "warehouse" / RECORDS)
            shutil.copytree(world / "w1" / "warehouse" / RECORDS, root / "warehouse" / RECORDS)
        ctx = JobContext.create(_project(root, world / "conf", as_of), None, as_of=as_of, run_id=f"bench-{label}")
        timings: dict[str, float] = {}
        started, cpu_started = time.perf_counter(), time.process_time()
        counts = run_identity(ctx, mode=mode, timings=timings)  # type: ignore[arg-type]
        # process CPU seconds (every thread): on a shared box they depend on the load far less than the wall
        timings["process CPU"] = time.process_time() - cpu_started
        results[label] = (time.perf_counter() - started, timings, counts)
        logger.info("%s: %.1f s %s %s", label, results[label][0], timings, counts)
        _dump(root, dump, label)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=600_000)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--dump", type=Path, default=None, help="write the identity tables of each run here")
    parser.add_argument("--compare", type=Path, default=None, help="check the dump against this earlier one")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    build_world(args.world, args.people)
    train_once(args.world)
    machine_text, when = machine(), stamp()
    prepare_s, bare_s, pairs, bare_cpu = bare_splink(args.world)
    runs = timed_runs(args.world, args.dump)
    full_s, full_stages, full_counts = runs["full"]
    inc_s, inc_stages, inc_counts = runs["incremental"]
    full1_s, full1_stages, full1_counts = runs["full_w1"]
    full_cpu, inc_cpu, full1_cpu = (runs[r][1].pop("process CPU") for r in ("full", "incremental", "full_w1"))
    stages = sorted(
        set(full_stages) | set(inc_stages), key=lambda s: list(full_stages).index(s) if s in full_stages else 99
    )
    stage_rows = [f"| {s} | {full_stages.get(s, 0):.1f} | {inc_stages.get(s, 0):.1f} |" for s in stages]
    text = "\n".join(
        [
            f"## Identity on the embedded engine at {full_counts['records']:,} records ({args.people:,} people)",
            "",
            f"Measured {when} on {machine_text}; duckdb backend on path tables (delta-rs, no JVM), "
            "`conf/identity.yaml` defaults, model trained beforehand (not timed); "
            f"Command: `nice python -m bench.identity_embedded --people {args.people} --world /tmp/idscale`.",
            "",
            "| run | records | seconds | ratio | process CPU s | CPU ratio |",
            "|---|---|---|---|---|---|",
            f"| bare Splink DuckDB predict + cluster (same model JSON, prepared records in Arrow; {pairs:,} pairs) "
            f"| {full_counts['records']:,} | {bare_s:.1f} | 1.00 | {bare_cpu:.1f} | 1.00 |",
            f"| lakecdp identity full (read, prepare, predict, det. edges, guards, cluster, ids, golden records, "
            f"writes) | {full_counts['records']:,} | {full_s:.1f} | {full_s / bare_s:.2f}x bare Splink "
            f"| {full_cpu:.1f} | {full_cpu / bare_cpu:.2f}x |",
            f"| lakecdp identity incremental ({inc_counts['records_changed']:,} new records, "
            f"{inc_counts['records_rescoped']:,} re-clustered) | {inc_counts['records']:,} | {inc_s:.1f} "
            f"| {inc_s / full1_s:.2f}x the full run below | {inc_cpu:.1f} | {inc_cpu / full1_cpu:.2f}x |",
            f"| lakecdp identity full on the same data | {full1_counts['records']:,} | {full1_s:.1f} | 1.00 "
            f"| {full1_cpu:.1f} | 1.00 |",
            "",
            f"Preparation (normalised names, streets, lookups; not in the bare Splink figure): {prepare_s:.1f} s.",
            "",
            "| stage | full s | incremental s |",
            "|---|---|---|",
            *stage_rows,
        ]
    )
    print(text)  # noqa: T201
    if args.compare is not None:
        differing = compare(args.dump, args.compare)
        print("outputs identical to the reference" if not differing else f"DIFFERENT: {differing}")  # noqa: T201
    if not args.no_record:
        append_results(text)


if __name__ == "__main__":
    main()
