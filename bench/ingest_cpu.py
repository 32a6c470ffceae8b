"""Benchmark: the embedded ingest's process CPU per source, old code against new and bare DuckDB.

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.ingest_cpu --landing /tmp/landing \
        --sources web_events,email_events --old-rev main [--old-lib DIR] [--rounds 2] --work /tmp/ingestcpu [--record]

For each source, ``<landing>/<source>/`` holds its files. Each side (``old``: ``git archive`` of
``--old-rev``'s ``lib/``; ``new``: this tree) ingests a copy of them into a fresh warehouse in its
own Python process (``job.ingest(ctx, only=[source])`` on the embedded engine, run id and as-of
fixed), then a re-delivery: every file again under a new name with a blank line added (new
content, the same rows). The figure is ``time.process_time()`` around each ``ingest()`` (all the
process's threads: DuckDB and delta-rs included), far less dependent on a shared box's load than
wall time. Both sides' warehouses are then compared row for row
(:func:`bench.ingest_bench.compare`; any difference fails the bench). ``bare`` is DuckDB reading
the same file (``read_csv`` all text / ``read_json``, errors skipped) and delta-rs writing it to
Delta, in the same run: no validation, no line numbers, no quarantine, no silver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def child_ingest(base: Path, landing: Path, source: str) -> dict:
    """Ingest ``source``'s files into a fresh warehouse under ``base``, then their re-delivery."""
    from lakecdp.config import load_project
    from lakecdp.context import JobContext, SparkHandle
    from lakecdp.ingest import job

    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(ROOT / "conf", base / "conf")
    target = base / "warehouse" / "landing" / source
    target.mkdir(parents=True)
    files = sorted((landing / source).glob("*"))
    for path in files:
        shutil.copy2(path, target / path.name)
    project = load_project(base / "conf", env="local")
    handle = SparkHandle(project, app_name="ingest_cpu")
    result = {}
    for step in ("first load", "re-delivery"):
        if step == "re-delivery":
            for path in files:
                data = path.read_bytes()
                data += b"\n" if data.endswith(b"\n") else b"\n\n"
                (target / f"{path.stem}_again{path.suffix}").write_bytes(data)
        ctx = JobContext.create(project, handle, as_of=AS_OF, run_id=f"cpu-{len(result)}")
        cpu = time.process_time()
        totals = job.ingest(ctx, only=[source])
        result[step] = {"cpu_s": time.process_time() - cpu, "rows_read": totals["rows_read"], "totals": totals}
    result["jvm"] = handle.started
    return result


def child_bare(base: Path, landing: Path, source: str) -> dict:
    """DuckDB reads the source's files, delta-rs writes them to Delta: the floor."""
    import duckdb
    from deltalake import write_deltalake

    shutil.rmtree(base, ignore_errors=True)
    cpu = time.process_time()
    con = duckdb.connect()
    rows = 0
    for path in sorted((landing / source).glob("*")):
        if path.suffix == ".csv":
            relation = con.read_csv(str(path), all_varchar=True, ignore_errors=True, header=True)
        else:
            relation = con.read_json(str(path), format="newline_delimited", ignore_errors=True)
        table = relation.to_arrow_table()
        rows += table.num_rows
        write_deltalake(str(base), table, mode="append")
    return {"cpu_s": time.process_time() - cpu, "rows_written": rows}


def _child(lib: Path, *args: str) -> dict:
    # the old tree is an archive outside the checkout: point it at this checkout's JVM jars
    env = {
        **os.environ,
        "PYTHONPATH": f"{lib}{os.pathsep}{ROOT}",
        "LAKECDP_JVM_DIR": os.environ.get("LAKECDP_JVM_DIR", str(ROOT / ".jvm")),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_cpu", "--child", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, help="a folder per source (required)")
    parser.add_argument("--sources", default="web_events,email_events")
    parser.add_argument("--old-rev", default="main")
    parser.add_argument("--old-lib", type=Path, help="the old side's lib/ folder (instead of --old-rev's archive)")
    parser.add_argument("--rounds", type=int, default=1, help="old then new, this many times per source")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ingest_cpu"))
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, base, landing, source = args.child
        run = child_bare if kind == "bare" else child_ingest
        print(json.dumps(run(Path(base), Path(landing), source), default=str))
        return 0

    if args.landing is None:
        parser.error("--landing is required")
    from bench.ingest_bench import _old_lib, compare
    from bench.results import append_results, machine, stamp

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started_on, started = machine(), stamp()
    libs = {"old": args.old_lib.resolve() if args.old_lib else _old_lib(work, args.old_rev), "new": ROOT / "lib"}
    landing = args.landing.resolve()
    lines = []
    failed = False
    for round_ in range(1, args.rounds + 1):
        for source in args.sources.split(","):
            runs = {
                side: _child(lib, side, str(work / f"{source}-{side}"), str(landing), source)
                for side, lib in libs.items()
            }
            bare = _child(ROOT / "lib", "bare", str(work / f"{source}-bare"), str(landing), source)
            problems = compare(work / f"{source}-old" / "warehouse", work / f"{source}-new" / "warehouse")
            failed = failed or bool(problems)
            for problem in problems:
                print("DIFFERENCE", source, problem, flush=True)
            for step in ("first load", "re-delivery"):
                old, new = runs["old"][step], runs["new"][step]
                line = (
                    f"| {round_} | {source} {step} | {new['rows_read']:,} | {old['cpu_s']:.2f} | {new['cpu_s']:.2f} "
                    f"| {old['cpu_s'] / new['cpu_s']:.2f}× | {new['rows_read'] / new['cpu_s']:,.0f} "
                    f"| {bare['cpu_s']:.2f} ({bare['rows_written']:,}) "
                    f"| {'identical' if not problems else 'DIFFERENT'} |"
                )
                print(line, flush=True)
                lines.append(line)
    if args.record:
        append_results(
            f"## Embedded ingest CPU per source: {args.old_rev} vs this tree vs bare DuckDB\n\n"
            f"Measured {started} on {started_on}; load average at the end {os.getloadavg()[0]:.1f}. "
            f"Command: `python -m bench.ingest_cpu --landing {args.landing} --sources {args.sources} "
            f"--old-rev {args.old_rev} --rounds {args.rounds}`.\n\n"
            "| round | source, step | rows read | old CPU s | new CPU s | old / new | new rows per CPU-s "
            "| bare DuckDB CPU s (rows written) | warehouses |\n|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(lines)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
