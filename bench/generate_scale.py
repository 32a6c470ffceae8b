"""Sample-data generation time for a large population (default 100,000 people, increment 0).

Run: ``.venv/bin/python -m bench.generate_scale [--people 100000] [--out /tmp/lakecdp-bench-gen]``.
Uses the local environment's Spark session (``conf/environments/local.yaml``) and
``conf/sample.yaml``; writes into ``--out`` (landing + labels), never into the project warehouse.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from bench.results import append_results, machine, stamp
from lakecdp.config import load_project
from lakecdp.sample import generate, load_sample_config
from lakecdp.spark import get_session

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="/tmp/lakecdp-bench-gen")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    machine_text, when = machine(), stamp()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    project = load_project(CONF, env="local")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    spark = get_session(project, app_name="bench-generate")
    # warm the Python workers so the figure measures generation, not interpreter start-up
    spark.range(4).mapInArrow(lambda batches: batches, "id long").count()
    started = time.monotonic()
    counts = generate(
        spark,
        landing=out / "landing",
        labels=out / "labels",
        people=args.people,
        seed=args.seed,
        increment=0,
        as_of=project.as_of(),
        config=load_sample_config(CONF),
    )
    elapsed = time.monotonic() - started
    rows = sum(v for k, v in counts.items() if k not in ("people", "entities", "planted"))
    size = sum(p.stat().st_size for p in (out / "landing").rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "people": args.people,
                "seconds": round(elapsed, 1),
                "source_rows": rows,
                "rows_per_second": round(rows / elapsed),
                "landing_mb": round(size / 1e6, 1),
                "counts": counts,
            },
            sort_keys=True,
        )
    )
    if not args.no_record:
        append_results(
            f"## Sample generator at {args.people:,} people\n\nMeasured {when} on {machine_text}; Spark local[2]. "
            f"Command: `python -m bench.generate_scale --people {args.people}`.\n\n"
            "| people | source rows | seconds | rows/s | landing MB |\n|---|---|---|---|---|\n"
            f"| {args.people:,} | {rows:,} | {elapsed:.1f} | {rows / elapsed:,.0f} | {size / 1e6:,.1f} |"
        )


if __name__ == "__main__":
    main()
