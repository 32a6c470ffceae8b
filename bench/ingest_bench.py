"""Benchmark: the batch ingest of the demo world (5,000 people), old code against new, same run;
or, with ``--engines``, this tree's code on the Spark engine against the embedded one.

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.ingest_bench --work /tmp/ingbench \
        --old-rev main --rounds 2 [--increment] [--record]
    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.ingest_bench --work /tmp/ingbench \
        --engines spark,embedded [--sources web_events,email_events] --rounds 2 [--record]

With ``--engines`` each side is an engine (``spark``: Delta MERGEs on a warm session;
``embedded``: DuckDB + delta-rs, no JVM unless a source the embedded engine does not map is
ingested, which then goes through Spark in the same run); ``--sources`` limits both to those
sources, so that the figure is the embedded engine's own (rows/s over the rows read).

The sample world is generated once (increment 0, and with ``--increment`` increment 1 too: a
second delivery, mostly re-delivered rows); then each round ingests it into a fresh warehouse
with the old code (``git archive`` of ``--old-rev``'s ``lib/``) and with this tree's code, one
after the other, each in its own Python process with its own Spark session (same settings:
``conf/environments/local.yaml``), run id and as-of fixed. The time is ``ingest()`` alone (no
session start). Both warehouses' tables are then compared row for row with delta-rs: every
``bronze.*``, ``quarantine.*``, ``silver.*`` table, ``ops.ingest_audit``, ``ops.ingest_files``,
``ops.data_quality``; any difference fails the bench (exit 1). The box is shared, so the figure
that counts is the ratio old / new within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


def _project(work: Path, name: str, landing: Path) -> Path:
    """A project folder: this tree's conf, its landing folder a copy of the generated world."""
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copytree(landing, root / "warehouse" / "landing")
    if os.environ.get("INGEST_BENCH_EVENT_LOG"):
        # profiling: Spark's event log (job times and call sites) under <project>/eventlog
        env_file = root / "conf" / "environments" / "local.yaml"
        (root / "eventlog").mkdir()
        text = env_file.read_text(encoding="utf-8").replace(
            "  conf:\n",
            f'  conf:\n    spark.eventLog.enabled: "true"\n    spark.eventLog.dir: "{root / "eventlog"}"\n',
            1,
        )
        env_file.write_text(text, encoding="utf-8")
    return root


def _old_lib(work: Path, rev: str) -> Path:
    target = work / f"old-{rev.replace('/', '_')}"
    if not (target / "lib").exists():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lib"], check=True, capture_output=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target / "lib"


def _child(lib: Path, *args: str) -> dict:
    # the old tree is an archive outside the checkout: point it at this checkout's JVM jars
    env = {
        **os.environ,
        "PYTHONPATH": f"{lib}:{ROOT}",
        "LAKECDP_JVM_DIR": os.environ.get("LAKECDP_JVM_DIR", str(ROOT / ".jvm")),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_bench", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- in the child process --------------------------------------------------------------


def _session(root: Path):
    from lakecdp.config import load_project
    from lakecdp.spark import get_session

    project = load_project(root / "conf", env="local")
    return project, get_session(project, app_name="ingest-bench")


def child_ingest_engine(root: Path, engine: str, sources: list[str] | None) -> dict:
    """Ingest the landing folder once on ``engine`` (this tree's code); the Spark session is
    started (and warmed) before the clock for ``spark``, started lazily for ``embedded``."""
    from lakecdp.config import load_project
    from lakecdp.context import JobContext, SparkHandle
    from lakecdp.ingest import job

    project = load_project(root / "conf", env="local")
    project = project.model_copy(update={"environment": project.environment.model_copy(update={"engine": engine})})
    handle = SparkHandle(project, app_name="ingest-bench")
    if engine == "spark":
        handle.get().range(1).count()  # the JVM warmed, as in a pipeline where ingest is not the first job
    ctx = JobContext.create(project, handle, as_of=AS_OF, run_id="bench-0")
    cpu_before = time.process_time()
    start = time.perf_counter()
    totals = job.ingest(ctx, only=sources)
    elapsed = time.perf_counter() - start
    jvm = handle.started
    return {
        "seconds": [elapsed],
        "driver_cpu_seconds": time.process_time() - cpu_before,
        "totals": [totals],
        "jvm_started": jvm,
    }


def child_generate(root: Path, people: int, increment: int) -> dict:
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate

    project, spark = _session(root)
    config = load_sample_config(project.conf_dir)
    counts = generate(
        spark,
        landing=project.landing,
        labels=project.warehouse / "labels",
        people=people,
        seed=config.demo_seed,
        increment=increment,
        as_of=AS_OF,
        config=config,
    )
    return {"counts": counts}


def child_ingest(root: Path, runs: int) -> dict:
    """Ingest the landing folder (``runs`` times: the second delivery lands between them)."""
    from lakecdp.context import JobContext
    from lakecdp.ingest import job

    project, spark = _session(root)
    spark.range(1).count()  # the JVM warmed, as in a pipeline where ingest is not the first job
    tracker = spark.sparkContext.statusTracker()
    jobs: dict[str, int] = {}
    seconds: dict[str, float] = {}
    # the old code ingests source by source (ingest_source); the new one loads each source
    # (_load_source), then writes every source's audit and ledger rows at once (_write_ops)
    per_source = "_load_source" if hasattr(job, "_load_source") else "ingest_source"
    original = getattr(job, per_source)

    def timed(ctx, source, *args, **kw):
        spark.sparkContext.setJobGroup(source.name, source.name)
        start = time.perf_counter()
        try:
            return original(ctx, source, *args, **kw)
        finally:
            seconds[source.name] = seconds.get(source.name, 0.0) + time.perf_counter() - start
            jobs[source.name] = len(tracker.getJobIdsForGroup(source.name))

    setattr(job, per_source, timed)
    if hasattr(job, "_write_ops"):
        write_ops = job._write_ops

        def timed_ops(ctx, *args, **kw):
            spark.sparkContext.setJobGroup("ops", "ops")
            start = time.perf_counter()
            try:
                return write_ops(ctx, *args, **kw)
            finally:
                seconds["ops"] = time.perf_counter() - start
                jobs["ops"] = len(tracker.getJobIdsForGroup("ops"))

        job._write_ops = timed_ops
    totals = []
    elapsed: list[float] = []
    cpu: list[float] = []
    for run in range(runs):
        if run:
            # the second delivery: move increment 1's files in
            staged = root / "increment1"
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    target = project.landing / path.relative_to(staged)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
        ctx = JobContext.create(project, spark, as_of=AS_OF, run_id=f"bench-{run}")
        cpu_before = _cpu_seconds(spark)
        start = time.perf_counter()
        totals.append(job.ingest(ctx))
        elapsed.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds(spark) - cpu_before)
    return {"seconds": elapsed, "cpu_seconds": cpu, "totals": totals, "per_source_s": seconds, "jobs": jobs}


def _cpu_seconds(spark) -> float:
    """CPU seconds used so far by this process and the JVM (with its exited children: Python
    UDF workers): far less dependent on the load of a shared box than wall time."""
    pid = spark.sparkContext._gateway.proc.pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK") + time.process_time()


# -- comparison ------------------------------------------------------------------------


def _tables(warehouse: Path) -> list[str]:
    return sorted(
        str(log.parent.relative_to(warehouse)) for log in warehouse.rglob("_delta_log") if "landing" not in log.parts
    )


def compare(old: Path, new: Path) -> list[str]:
    """Differences between the two warehouses' tables (empty: identical contents)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    problems = []
    old_tables, new_tables = _tables(old), _tables(new)
    if old_tables != new_tables:
        problems.append(
            f"tables differ: only old {sorted(set(old_tables) - set(new_tables))}, "
            f"only new {sorted(set(new_tables) - set(old_tables))}"
        )
    for name in sorted(set(old_tables) & set(new_tables)):
        a = DeltaTable(str(old / name)).to_pyarrow_table()
        b = DeltaTable(str(new / name)).to_pyarrow_table()
        if a.schema != b.schema:
            problems.append(f"{name}: schema differs\n  old {a.schema}\n  new {b.schema}")
            continue
        rows_a = sorted(json.dumps(r, sort_keys=True, default=str) for r in a.to_pylist())
        rows_b = sorted(json.dumps(r, sort_keys=True, default=str) for r in b.to_pylist())
        if rows_a != rows_b:
            only_a = sorted(set(rows_a) - set(rows_b))[:3]
            only_b = sorted(set(rows_b) - set(rows_a))[:3]
            problems.append(
                f"{name}: {len(rows_a)} vs {len(rows_b)} rows; only old e.g. {only_a}; only new e.g. {only_b}"
            )
    assert pa  # pyarrow is what delta-rs returns
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ingest_bench"))
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--old-rev", default="main")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--increment", action="store_true", help="a second delivery (increment 1) ingested after the first"
    )
    parser.add_argument("--only", choices=("old", "new"), help="run one side only (profiling)")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument("--engines", help="spark,embedded: this tree on both engines instead of old vs new")
    parser.add_argument("--sources", help="with --engines: only these sources (comma-separated)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, root, *rest = args.child
        if kind == "generate":
            result = child_generate(Path(root), int(rest[0]), int(rest[1]))
        elif kind == "engine":
            result = child_ingest_engine(Path(root), rest[0], rest[1].split(",") if rest[1] != "-" else None)
        else:
            result = child_ingest(Path(root), int(rest[0]))
        print(json.dumps(result, default=str))
        return 0

    from bench.results import append_results, machine, stamp

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started_on, started = machine(), stamp()
    world = work / f"world-{args.people}"
    if not (world / "warehouse" / "landing").exists():
        shutil.copytree(ROOT / "conf", world / "conf", dirs_exist_ok=True)
        _child(ROOT / "lib", "--child", "generate", str(world), str(args.people), "0")
    increment = work / f"world-{args.people}-increment1"
    if args.increment and not (increment / "warehouse" / "landing").exists():
        shutil.copytree(ROOT / "conf", increment / "conf", dirs_exist_ok=True)
        _child(ROOT / "lib", "--child", "generate", str(increment), str(args.people), "1")
    if args.engines:
        return _engines(args, work, world, started_on, started)
    libs = {"old": _old_lib(work, args.old_rev), "new": ROOT / "lib"}
    sides = [args.only] if args.only else ["old", "new"]
    rows = []
    failed = False
    for round_ in range(args.rounds):
        results = {}
        for side in sides:
            root = _project(work, f"{side}-{round_}", world / "warehouse" / "landing")
            if args.increment:
                # child_ingest moves these files into the landing folder before its second run
                shutil.copytree(increment / "warehouse" / "landing", root / "increment1")
            results[side] = _child(libs[side], "--child", "ingest", str(root), "2" if args.increment else "1")
            print(f"round {round_} {side}: {json.dumps(results[side])}", flush=True)
        if len(sides) == 2:
            problems = compare(work / f"old-{round_}" / "warehouse", work / f"new-{round_}" / "warehouse")
            for problem in problems:
                print("DIFFERENCE", problem, flush=True)
            failed = failed or bool(problems)
            old_s, new_s = results["old"]["seconds"][0], results["new"]["seconds"][0]
            old_cpu, new_cpu = results["old"]["cpu_seconds"][0], results["new"]["cpu_seconds"][0]
            rows.append(
                (
                    round_,
                    old_s,
                    new_s,
                    old_s / new_s,
                    old_cpu,
                    new_cpu,
                    old_cpu / new_cpu,
                    sum(results["old"]["jobs"].values()),
                    sum(results["new"]["jobs"].values()),
                    "identical" if not problems else "DIFFERENT",
                )
            )
            print(
                f"round {round_}: old {old_s:.1f} s, new {new_s:.1f} s, {old_s / new_s:.2f}x; CPU old "
                f"{old_cpu:.1f} s, new {new_cpu:.1f} s, {old_cpu / new_cpu:.2f}x; "
                f"{'identical' if not problems else 'DIFFERENT'}",
                flush=True,
            )
    if args.record and rows:
        table = "\n".join(
            f"| {r[0] + 1} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f}× | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.2f}× "
            f"| {r[7]} | {r[8]} | {r[9]} |"
            for r in rows
        )
        append_results(
            f"## Batch ingest of the demo world ({args.people:,} people), old ({args.old_rev}) vs new\n\n"
            f"Measured {started} on {started_on}; load average at the end {os.getloadavg()[0]:.1f}. "
            f"Command: `python -m bench.ingest_bench --people {args.people} --old-rev {args.old_rev} "
            f"--rounds {args.rounds} --record`. Seconds are `ingest()` alone (session started and warm), "
            f"each side in its own process on a fresh warehouse from the same landing files, run id and "
            f"as-of fixed; CPU s = the JVM's and the driver's CPU seconds during `ingest()` (Python UDF "
            f'workers included once they exit), less dependent on the box\'s load; "tables" compares every bronze, quarantine, silver and ops table row for row '
            f"(delta-rs).\n\n"
            f"| round | old s | new s | old / new | old CPU s | new CPU s | old / new CPU | old Spark jobs "
            f"| new Spark jobs | tables |\n|---|---|---|---|---|---|---|---|---|---|\n{table}\n"
        )
    return 1 if failed else 0


def _engines(args: argparse.Namespace, work: Path, world: Path, started_on: str, started: str) -> int:
    """This tree's ingest on each engine of ``--engines``, same landing files, tables compared."""
    from bench.results import append_results

    engines = args.engines.split(",")
    if len(engines) != 2:
        raise SystemExit("--engines takes two engines, e.g. spark,embedded")
    rows = []
    failed = False
    for round_ in range(args.rounds):
        results = {}
        for engine in engines:
            root = _project(work, f"{engine}-{round_}", world / "warehouse" / "landing")
            results[engine] = _child(ROOT / "lib", "--child", "engine", str(root), engine, args.sources or "-")
            print(f"round {round_} {engine}: {json.dumps(results[engine])}", flush=True)
        a, b = engines
        problems = compare(work / f"{a}-{round_}" / "warehouse", work / f"{b}-{round_}" / "warehouse")
        for problem in problems:
            print("DIFFERENCE", problem, flush=True)
        failed = failed or bool(problems)
        read = results[a]["totals"][0]["rows_read"]
        s_a, s_b = results[a]["seconds"][0], results[b]["seconds"][0]
        rows.append(
            (round_, read, s_a, s_b, read / s_a, read / s_b, s_a / s_b, "identical" if not problems else "DIFFERENT")
        )
        print(
            f"round {round_}: {read} rows read; {a} {s_a:.1f} s ({read / s_a:,.0f} rows/s), {b} {s_b:.1f} s "
            f"({read / s_b:,.0f} rows/s), {a} / {b} {s_a / s_b:.2f}x; {'identical' if not problems else 'DIFFERENT'}",
            flush=True,
        )
    if args.record and rows:
        a, b = engines
        table = "\n".join(
            f"| {r[0] + 1} | {r[1]:,} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:,.0f} | {r[5]:,.0f} | {r[6]:.2f}× | {r[7]} |"
            for r in rows
        )
        only = f" --sources {args.sources}" if args.sources else ""
        append_results(
            f"## Batch ingest of the demo world ({args.people:,} people), {a} engine vs {b} engine\n\n"
            f"Measured {started} on {started_on}; load average at the end {os.getloadavg()[0]:.1f}. "
            f"Command: `python -m bench.ingest_bench --people {args.people} --engines {args.engines}{only} "
            f"--rounds {args.rounds} --record`. Seconds are `ingest()` alone, each engine in its own process on a "
            f"fresh warehouse from the same landing files, run id and as-of fixed (Spark's session started and "
            f'warm before the clock; the embedded engine starts none); "tables" compares every table row for '
            f"row (delta-rs).\n\n"
            f"| round | rows read | {a} s | {b} s | {a} rows/s | {b} rows/s | {a} / {b} | tables |\n"
            f"|---|---|---|---|---|---|---|---|\n{table}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
