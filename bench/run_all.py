"""Run every scale benchmark at the given sizes (default 100k and 1M people).

    python -m bench.run_all                       # 100k and 1M: hours on a 2-core machine
    python -m bench.run_all --people 20000        # one smaller scale
    make bench BENCH_ARGS="--people 100000"

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


def _commands(people: int, root: str) -> list[tuple[str, list[str]]]:
    return [
        ("generate", ["bench.generate_scale", "--people", str(people), "--out", f"{root}/generate"]),
        ("identity (both backends + bare Splink)", ["bench.identity_scale", "--people", str(people),
                                                    "--root", f"{root}/identity"]),
        ("identity incremental vs full", ["bench.identity_incremental", "--people", str(people)]),
        ("segments (30 segments vs DuckDB)", ["bench.segments_bench", "--customers", str(people),
                                              "--out", f"{root}/segments"]),
        ("activation delivery", ["bench.activation_webhook", "--items", str(min(people, 20_000))]),
        ("template rendering", ["bench.render_templates"]),
        ("kafka streaming latency", ["bench.kafka_latency"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--only", nargs="*", help="run only benchmarks whose name contains one of these words")
    args = parser.parse_args(argv)
    failures = []
    for people in args.people:
        root = tempfile.mkdtemp(prefix=f"lakecdp-bench-{people}-")
        for name, command in _commands(people, root):
            if args.only and not any(word in name for word in args.only):
                continue
            started = time.monotonic()
            print(f"== {name} at {people:,} people", flush=True)
            completed = subprocess.run([sys.executable, "-m", *command])
            print(f"== {name}: exit {completed.returncode} after {time.monotonic() - started:.0f}s", flush=True)
            if completed.returncode != 0:
                failures.append(f"{name} ({people:,})")
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
