"""Identity on labelled public sets (FEBRL) next to bare Splink: appends a table to bench/RESULTS.md.

Runs ``lakecdp identity-benchmark`` (lakecdp.identity.benchmark) on each set with the shipped
``conf/identity.yaml`` and the source YAMLs in ``conf/benchmarks/<family>/``, in one Spark session.

    .venv/bin/python -m bench.identity_benchmark /work/shared/benchmarks/identity/febrl1 \
        /work/shared/benchmarks/identity/febrl2 --work /tmp/idbench
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from bench.results import append_results, machine, stamp
from lakecdp.identity.benchmark import prepare_project, default_sources_dir, run_benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--note", default="", help="what changed since the last row (recorded)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    machine_text, when = machine(), stamp()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    conf = REPO_ROOT / "conf"

    from lakecdp.spark import get_session

    first = args.sets[0].resolve()
    spark = get_session(
        prepare_project(first, conf_dir=conf, sources_dir=default_sources_dir(conf, first), work=args.work / "session"),
        app_name="bench-identity-benchmark",
    )
    rows, speed_rows = [], []
    for set_dir in args.sets:
        result = run_benchmark(set_dir, conf_dir=conf, work=args.work / set_dir.name, spark=spark)
        print(result.format(), flush=True)  # noqa: T201
        for name, report, seconds in (
            ("lakecdp", result.lakecdp, result.lakecdp_seconds),
            ("bare Splink", result.splink, result.splink_seconds),
        ):
            blocking = f"{result.blocking_recall:.4f}" if name == "lakecdp" else "-"
            rows.append(
                f"| {result.set_name} | {result.records:,} | {name} | {report.pairwise_precision:.4f} | "
                f"{report.pairwise_recall:.4f} | {report.pairwise_f1:.4f} | {blocking} | {seconds:.1f} |"
            )
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result.stage_seconds.items())
        speed_rows.append(
            f"| {result.set_name} | {result.records:,} | {result.lakecdp_seconds:.1f} | "
            f"{result.splink_seconds:.1f} | {result.speed_ratio:.1f}× | {stages} |"
        )
    table = "\n".join(
        [
            "| set | records | method | pair P | pair R | pair F1 | blocking recall | seconds |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    speed = "\n".join(
        [
            "| set | records | lakecdp identity s | bare Splink s | ratio (target ≤ 3×) | lakecdp stages (s) |",
            "|---|---|---|---|---|---|",
            *speed_rows,
        ]
    )
    table = f"{table}\n\nSpeed, same run (load average at the end {os.getloadavg()[0]:.1f}):\n\n{speed}"
    print(table)  # noqa: T201
    if not args.no_record:
        append_results(
            f"## Identity on labelled sets vs bare Splink{': ' + args.note if args.note else ''}\n\n"
            f"Measured {when} on {machine_text}. Command: `python -m bench.identity_benchmark "
            f"{' '.join(str(s) for s in args.sets)} --work ...`. lakecdp = ingest then a full identity run "
            f"with the shipped `conf/identity.yaml` (seconds: the identity run, training included); "
            f"bare Splink = textbook Splink 5 on DuckDB on the same silver records (seconds: train + "
            f"predict + cluster). Cluster-level pairwise scores against labels.csv. Ratio = lakecdp "
            f"identity seconds / bare Splink seconds; stages from `run_identity(timings=...)` "
            f"(train is part of score).\n\n{table}"
        )


if __name__ == "__main__":
    main()
