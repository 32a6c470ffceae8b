"""Run every scale benchmark at the given scales (default 100k and 1M).

A scale N means N customer records for identity (the generator gives ~1.7 records per person
from CRM, shop accounts and the third-party file, so 0.6 N people) and N customers for segments.

    python -m bench.run_all                       # 100k and 1M: hours on a 2-core machine
    python -m bench.run_all --scale 20000         # one smaller scale
    make bench BENCH_ARGS="--scale 100000 --only identity"

Each benchmark appends its own table (machine and date included) to bench/RESULTS.md and compares
against its in-run baseline (bare Splink, DuckDB SQL, unbatched delivery, Kafka without Delta).
This runner only sequences them and prints how long each took; a failing benchmark is reported
and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def _commands(scale: int, root: str) -> list[tuple[str, list[str]]]:
    people = scale * 3 // 5
    return [
        ("generate", ["bench.generate_scale", "--people", str(people), "--out", f"{root}/generate"]),
        (
            "identity (both backends + bare Splink)",
            ["bench.identity_scale", "--people", str(people), "--root", f"{root}/identity"],
        ),
        ("identity incremental vs full", ["bench.identity_incremental", "--people", str(people)]),
        (
            "segments (30 segments vs DuckDB)",
            ["bench.segments_bench", "--customers", str(scale), "--out", f"{root}/segments"],
        ),
        ("activation delivery", ["bench.activation_webhook", "--items", str(min(scale, 20_000))]),
        ("template rendering", ["bench.render_templates"]),
        ("kafka streaming latency", ["bench.kafka_latency"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--only", nargs="*", help="run only benchmarks whose name contains one of these words")
    args = parser.parse_args(argv)
    failures = []
    for scale in args.scale:
        root = tempfile.mkdtemp(prefix=f"lakecdp-bench-{scale}-")
        for name, command in _commands(scale, root):
            if args.only and not any(word in name for word in args.only):
                continue
            started = time.monotonic()
            print(f"== {name} at scale {scale:,}", flush=True)
            completed = subprocess.run([sys.executable, "-m", *command])
            print(f"== {name}: exit {completed.returncode} after {time.monotonic() - started:.0f}s", flush=True)
            if completed.returncode != 0:
                failures.append(f"{name} ({scale:,})")
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
