"""Identity step: incremental run vs full run on the same data (time ratio).

Run: ``.venv/bin/python -m bench.identity_incremental [--people 1000] [--backend duckdb]``.

Generates the sample world (increment 0), ingests it and runs identity in full (training
the model); then generates increment 1 (new people and changed CRM records), ingests it and
times the identity step twice on the same data: the incremental path (Change Data Feed ->
only changed records scored) and a forced full run (every pair scored again). The two runs
must agree: the full run's id changes and the edges that differ between them (read with
delta-rs) are printed and recorded. Appends one line to ``bench/RESULTS.md`` under "identity
incremental"; ``--keep DIR`` keeps the warehouse for inspection.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.results import machine

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## identity incremental (lakecdp.identity.job)"
# the customer-record sources; web logins are left out (their ~17 events per person are
# not what this benchmark measures), as in bench.identity_scale
CUSTOMER_SOURCES = ["crm", "shop_customers", "third_party"]


def _project(root: Path, as_of: datetime, backend: str, people: int = 1000):
    from lakecdp.config import Environment, Project, SparkSettings, StorageSettings

    repo = Path(__file__).resolve().parents[1]
    conf = root / "conf"
    # the repo's config, with the chosen Splink backend
    import shutil

    shutil.copytree(repo / "conf", conf)
    identity = (conf / "identity.yaml").read_text()
    (conf / "identity.yaml").write_text(identity.replace("backend: duckdb", f"backend: {backend}"))
    environment = Environment(
        version=1,
        name="bench",
        spark=SparkSettings(
            mode="local",
            master="local[2]",
            conf={
                "spark.sql.shuffle.partitions": "4" if people <= 100_000 else "8",
                # the generator and the DuckDB backend work in the driver
                "spark.driver.memory": "6g",
            },
        ),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"),
        checkpoints=str(root / "checkpoints"),
        as_of=as_of,
    )
    return Project(root=root, conf_dir=conf, environment=environment)


def _edges(ctx) -> dict[tuple[str, str, str], float]:
    """identity.edges read with delta-rs: (left, right, type) -> probability."""
    from deltalake import DeltaTable

    table = (
        DeltaTable(ctx.tables.location("identity.edges"))
        .to_pyarrow_table(columns=["record_id_l", "record_id_r", "edge_type", "match_probability"])
        .to_pylist()
    )
    return {(r["record_id_l"], r["record_id_r"], r["edge_type"]): r["match_probability"] for r in table}


def _print_difference(incremental: dict, full: dict) -> int:
    """Edges one run has and the other has not (or with another probability), for review."""
    keys = sorted(set(incremental) | set(full))
    differing = [(k, incremental.get(k), full.get(k)) for k in keys if incremental.get(k) != full.get(k)]
    print(f"edges differing between the incremental and the full run: {len(differing)}")
    for key, left, right in differing[:20]:
        print(f"  {key}: incremental {left} full {right}")
    return len(differing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", choices=["duckdb", "spark"], default="duckdb")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this (new) folder and keep it, to inspect the tables"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # the identity step logs the seconds of each of its stages
    logging.getLogger("lakecdp.identity.job").setLevel(logging.INFO)

    from lakecdp.context import JobContext
    from lakecdp.identity.job import run_identity
    from lakecdp.ingest.job import ingest
    from lakecdp.sample import generate, load_sample_config
    from lakecdp.spark import get_session

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)  # never reuse an old world
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lakecdp-bench-identity-")))
        project = _project(root, start, args.backend, args.people)
        spark = get_session(project, app_name="bench-identity-incremental")
        sample = load_sample_config(project.conf_dir)
        labels = root / "labels"

        generate(
            spark,
            landing=project.landing,
            labels=labels,
            people=args.people,
            seed=args.seed,
            increment=0,
            as_of=start,
            config=sample,
            only=CUSTOMER_SOURCES,
        )
        ctx = JobContext.create(project, spark, as_of=start, run_id="bench-0")
        ingest(ctx, only=CUSTOMER_SOURCES)
        t0 = time.perf_counter()
        first = run_identity(ctx)
        first_s = time.perf_counter() - t0

        later = start + timedelta(days=sample.increments.days)
        generate(
            spark,
            landing=project.landing,
            labels=labels,
            people=args.people,
            seed=args.seed,
            increment=1,
            as_of=later,
            config=sample,
            only=CUSTOMER_SOURCES,
        )
        ctx = JobContext.create(project, spark, as_of=later, run_id="bench-1")
        ingest(ctx, only=CUSTOMER_SOURCES)
        t0 = time.perf_counter()
        incremental = run_identity(ctx)
        incremental_s = time.perf_counter() - t0
        after_incremental = _edges(ctx)

        ctx = JobContext.create(project, spark, as_of=later, run_id="bench-2")
        t0 = time.perf_counter()
        full = run_identity(ctx, mode="full")
        full_s = time.perf_counter() - t0
        differing = _print_difference(after_incremental, _edges(ctx))
        spark.stop()

    assert incremental["incremental"] == 1 and full["incremental"] == 0
    line = (
        f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.people} people, "
        f"backend {args.backend}, local[2], {machine()}: first full run (with "
        f"training) {first_s:.1f}s on {first['records']} records; increment of "
        f"{incremental['records_changed']} changed records: incremental {incremental_s:.1f}s vs "
        f"full {full_s:.1f}s on {full['records']} records -> ratio {incremental_s / full_s:.2f} "
        f"(pairs scored: {incremental['probabilistic_edges_scored']} vs "
        f"{full['probabilistic_edges_scored']}); id changes {incremental['id_changes']} vs "
        f"{full['id_changes']} and edges differing {differing} (0 = the full run agreed with the "
        f"incremental one)"
    )
    print(line)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n"
    head, _, tail = text.partition(SECTION)
    body, sep, rest = tail.lstrip("\n").partition("\n## ")
    body = body.rstrip("\n") + ("\n" if body.strip() else "") + line + "\n"
    RESULTS.write_text(head + SECTION + "\n" + body + (("\n## " + rest) if sep else ""))


if __name__ == "__main__":
    main()
