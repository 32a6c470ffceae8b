"""Identity step: incremental run vs full run on the same data (time ratio).

Run: ``.venv/bin/python -m bench.identity_incremental [--people 1000] [--backend duckdb]``.

Generates the sample world (increment 0), ingests it and runs identity in full (training
the model); then generates increment 1 (new people and changed CRM records), ingests it and
times the identity step twice on the same data: the incremental path (Change Data Feed ->
only changed records scored) and a forced full run (every pair scored again). Appends one
line to ``bench/RESULTS.md`` under "identity incremental".
"""

from __future__ import annotations

import argparse
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


def _project(root: Path, as_of: datetime, backend: str):
    from lakecdp.config import Environment, Project, SparkSettings, StorageSettings

    repo = Path(__file__).resolve().parents[1]
    conf = root / "conf"
    # the repo's config, with the chosen Splink backend
    import shutil

    shutil.copytree(repo / "conf", conf)
    identity = (conf / "identity.yaml").read_text()
    (conf / "identity.yaml").write_text(identity.replace("backend: duckdb", f"backend: {backend}"))
    environment = Environment(
        version=1, name="bench",
        spark=SparkSettings(mode="local", master="local[2]",
                            conf={"spark.sql.shuffle.partitions": "4"}),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"), checkpoints=str(root / "checkpoints"), as_of=as_of,
    )
    return Project(root=root, conf_dir=conf, environment=environment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", choices=["duckdb", "spark"], default="duckdb")
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
    with tempfile.TemporaryDirectory(prefix="lakecdp-bench-identity-") as tmp:
        root = Path(tmp)
        project = _project(root, start, args.backend)
        spark = get_session(project, app_name="bench-identity-incremental")
        sample = load_sample_config(project.conf_dir)
        labels = root / "labels"

        generate(spark, landing=project.landing, labels=labels, people=args.people,
                 seed=args.seed, increment=0, as_of=start, config=sample, only=CUSTOMER_SOURCES)
        ctx = JobContext.create(project, spark, as_of=start, run_id="bench-0")
        ingest(ctx, only=CUSTOMER_SOURCES)
        t0 = time.perf_counter()
        first = run_identity(ctx)
        first_s = time.perf_counter() - t0

        later = start + timedelta(days=sample.increments.days)
        generate(spark, landing=project.landing, labels=labels, people=args.people,
                 seed=args.seed, increment=1, as_of=later, config=sample, only=CUSTOMER_SOURCES)
        ctx = JobContext.create(project, spark, as_of=later, run_id="bench-1")
        ingest(ctx, only=CUSTOMER_SOURCES)
        t0 = time.perf_counter()
        incremental = run_identity(ctx)
        incremental_s = time.perf_counter() - t0

        ctx = JobContext.create(project, spark, as_of=later, run_id="bench-2")
        t0 = time.perf_counter()
        full = run_identity(ctx, mode="full")
        full_s = time.perf_counter() - t0
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
        f"{full['id_changes']} (0 = the full run agreed with the incremental one)"
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
