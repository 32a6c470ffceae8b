"""Benchmark: end-to-end batch ingest at scale, rows/s per source kind, against a bare baseline.

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.ingest_scale --work /tmp/ingestrate/scale \
        [--customer-people 600000] [--event-people 35000] [--engines embedded,spark] \
        [--spark-fraction 0.05] [--generate-on spark|python] [--record] \
        [--lib OLD_TREE/lib] [--tag -old] [--keep] [--spark-conf KEY=VALUE ...] [--steps N]

(``--lib``: ingest with an old tree's lakecdp, for a before/after in one window;
``INGEST_SCALE_EVENT_LOG=1``: Spark's event log per step and phase, summarised by
``python -m bench.spark_event_log``.)

One sample world (``lakecdp.sample.generate``, seed 42): the customer sources (crm,
shop_customers, third_party) of ``--customer-people`` people (600,000: ~1M rows) and the
event sources (web_events, email_events) of ``--event-people`` people (35,000: ~1M rows);
generated once into ``--work`` and reused. The increment is a **re-delivery**: each source's
file delivered again under a new name with increment 1's rows appended (the same rows plus a
few % new or changed ones: new people, 7 more days of events, changed CRM records).

Each engine ingests, in its own process, on a fresh warehouse, run ids and as-of fixed, four
steps timed apart (``ingest()`` alone, Spark's session started and warm before the clock):
customer sources first load, event sources first load, then the customer and event
re-deliveries. ``--spark-fraction`` runs Spark on the first part of every file (the same
world cut down: CSV header kept) when 1M rows take too long on a shared box.

The baseline, in the same run: bare DuckDB reads the same files (``read_csv`` / ``read_json``
/ ``read_parquet``, CSV columns as text, bad lines skipped: ``ignore_errors``) and appends them to a Delta table with delta-rs
(``write_deltalake``): no validation, no quarantine, no dedup, no silver, no audit. The
ratio lakecdp / bare is what counts on a shared box.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
#: increment 1 covers the 7 days before its as_of (conf/sample.yaml increments.days)
LATER = AS_OF + timedelta(days=7)
ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = ("crm", "shop_customers", "third_party")
EVENTS = ("web_events", "email_events")
STEPS = (
    ("customers first load", CUSTOMERS, 0),
    ("events first load", EVENTS, 0),
    ("customers re-delivery", CUSTOMERS, 1),
    ("events re-delivery", EVENTS, 1),
)


def _steps() -> tuple[tuple[str, tuple[str, ...], int], ...]:
    """The steps run: the first ``INGEST_SCALE_STEPS`` (``--steps``), else all four."""
    return STEPS[: int(os.environ.get("INGEST_SCALE_STEPS") or len(STEPS))]


def _child(*args: str, lib: Path = ROOT / "lib") -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": f"{lib}:{ROOT}",
        "LAKECDP_JVM_DIR": os.environ.get("LAKECDP_JVM_DIR", str(ROOT / ".jvm")),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_scale", "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the world ---------------------------------------------------------------------------


def _generate(world: Path, customer_people: int, event_people: int, *, jvm: bool) -> None:
    """increment 0 into ``world/landing``, increment 1 into ``world/increment``, for each part
    (customers, events) not there yet; on Spark, or in this process (``jvm`` False)."""
    from lakecdp.config import load_project
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate
    from lakecdp.spark import get_session

    project = load_project(ROOT / "conf", env="local")
    spark = get_session(project, app_name="ingest-scale-generate") if jvm else None
    config = load_sample_config(ROOT / "conf")
    for part, people, only in (("customers", customer_people, CUSTOMERS), ("events", event_people, EVENTS)):
        if all(any((world / folder / source).glob("*")) for folder in ("landing", "increment") for source in only):
            continue
        for increment, as_of in ((0, AS_OF), (1, LATER)):
            target = world / ("landing" if increment == 0 else "increment")
            generate(
                spark,
                landing=target,
                labels=world / f"labels-{part}",
                people=people,
                seed=42,
                increment=increment,
                as_of=as_of,
                config=config,
                only=only,
            )


def _redelivery(source_file: Path, increment_file: Path, target: Path) -> int:
    """``target``: ``source_file``'s rows then ``increment_file``'s (one header). Returns its rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source_file.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        first, later = pq.read_table(source_file), pq.read_table(increment_file)
        table = pa.concat_tables([first, later.select(first.column_names).cast(first.schema)])
        pq.write_table(table, target)
        return table.num_rows
    head = source_file.suffix == ".csv"
    with target.open("wb") as out:
        out.write(source_file.read_bytes())
        with increment_file.open("rb") as extra:
            if head:
                extra.readline()
            shutil.copyfileobj(extra, out)
    return _rows(target)


def _rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip()) - (1 if path.suffix == ".csv" else 0)


def _cut(source: Path, target: Path, fraction: float) -> None:
    """The first ``fraction`` of a file's rows (a CSV keeps its header)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if fraction >= 1:
        shutil.copy2(source, target)
        return
    if source.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        pq.write_table(table.slice(0, int(table.num_rows * fraction)), target)
        return
    lines = source.read_bytes().splitlines(keepends=True)
    head = 1 if source.suffix == ".csv" else 0
    keep = head + int((len(lines) - head) * fraction)
    target.write_bytes(b"".join(lines[:keep]))


def _landing_files(landing: Path, sources: tuple[str, ...]) -> list[Path]:
    return sorted(p for s in sources for p in (landing / s).glob("*") if p.is_file())


def prepare(world: Path, fraction: float, out: Path) -> dict[str, list[tuple[str, str]]]:
    """``out/first`` (increment 0) and ``out/redelivery`` (the re-delivered files), cut to
    ``fraction``; returns per step kind the (landing path, relative) pairs."""
    shutil.rmtree(out, ignore_errors=True)
    files: dict[str, list[tuple[str, str]]] = {}
    for kind, sources in (("customers", CUSTOMERS), ("events", EVENTS)):
        for path in _landing_files(world / "landing", sources):
            relative = path.relative_to(world / "landing")
            _cut(path, out / "first" / relative, fraction)
            later = world / "increment" / relative.parent / path.name.replace("_0.", "_1.")
            cut_later = out / "later" / relative.parent / later.name
            _cut(later, cut_later, fraction)
            target = out / "redelivery" / relative.parent / later.name
            _redelivery(out / "first" / relative, cut_later, target)
            files.setdefault(f"{kind} first load", []).append(str(out / "first" / relative))
            files.setdefault(f"{kind} re-delivery", []).append(str(target))
        shutil.rmtree(out / "later", ignore_errors=True)
    return files


# -- in the child process ------------------------------------------------------------------


def _jvm_cpu_seconds(spark) -> float:
    """CPU seconds used so far by the JVM (with its exited children: Python UDF workers)."""
    pid = spark.sparkContext._gateway.proc.pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


#: the step being run, for :func:`_label_phases`
_STEP = ["-"]


def _label_phases(job, seconds: dict[str, float]) -> None:
    """Profiling only: each phase of a source's Spark ingest (reading and validating, classifying
    and keeping the rows, counting, bronze, quarantine, silver, ops) as its own job group
    ``<step>|<source>|<phase>``, timed into ``seconds``."""
    import functools

    def labelled(phase: str, original, source_of):
        @functools.wraps(original)
        def wrapper(ctx, *args, **kw):
            source = source_of(args)
            group = f"{_STEP[0]}|{source}|{phase}"
            ctx.spark.sparkContext.setJobGroup(group, group)
            start = time.perf_counter()
            try:
                return original(ctx, *args, **kw)
            finally:
                key = f"{source}|{phase}"
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
                ctx.spark.sparkContext.setJobGroup(_STEP[0], _STEP[0])

        return wrapper

    def source_name(args):
        return args[0].name

    def second_source(args):
        return args[1].name

    for name in ("validated_rows", "_existing_keys", "erased_condition"):
        if hasattr(job, name):
            setattr(
                job,
                name,
                labelled(name, getattr(job, name), source_name if name != "erased_condition" else second_source),
            )
    for name in ("write_bronze", "write_quarantine"):
        setattr(job, name, labelled(name, getattr(job, name), second_source))
    job.write_silver = labelled("write_silver", job.write_silver, second_source)
    job.write_ops = labelled("write_ops", job.write_ops, lambda args: "all")
    original_materialised, original_counts = job._materialised, job.file_counts

    def materialised(df):
        group = f"{_STEP[0]}|{_SOURCE.name}|classify+checkpoint"
        df.sparkSession.sparkContext.setJobGroup(group, group)
        start = time.perf_counter()
        try:
            return original_materialised(df)
        finally:
            key = f"{_SOURCE.name}|classify+checkpoint"
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start

    def counts(classified, files):
        if classified is not None:
            group = f"{_STEP[0]}|{_SOURCE.name}|file_counts"
            classified.sparkSession.sparkContext.setJobGroup(group, group)
        start = time.perf_counter()
        try:
            return original_counts(classified, files)
        finally:
            key = f"{_SOURCE.name}|file_counts"
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start

    job._materialised, job.file_counts = materialised, counts
    original_read, original_write = job._read_source, job._write_source

    # the next source is read on a thread of its own while one is written: the source a thread
    # works on is the thread's (phases of two sources overlap; their seconds add up to more than the step's)
    def read_source(ctx, source, *args, **kw):
        _SOURCE.name = source.name
        return original_read(ctx, source, *args, **kw)

    def write_source(ctx, read, *args, **kw):
        _SOURCE.name = read.source.name
        return original_write(ctx, read, *args, **kw)

    job._read_source, job._write_source = read_source, write_source


class _Source(threading.local):
    name = "-"


_SOURCE = _Source()


def _jvm_threads_cpu(spark) -> dict[str, float]:
    """CPU seconds of the JVM's threads so far, by thread name with digits dropped (compiler, GC,
    executor task threads...), and of its child processes (Python workers) as ``python workers``."""
    import re

    pid = spark.sparkContext._gateway.proc.pid
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = re.sub(r"[0-9#-]+", "", (task / "comm").read_text().strip()).strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    workers = 0.0
    stats = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stats[int(proc.name)] = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    family = {pid}
    for _ in range(3):  # the JVM's children (the PySpark daemon) and theirs (its workers)
        family |= {child for child, fields in stats.items() if int(fields[1]) in family}
    for child in family - {pid}:
        workers += sum(int(v) for v in stats[child][11:15]) / tick
    out["python workers"] = workers
    return out


def child_lakecdp(root: Path, data: Path, engine: str) -> dict:
    """The four steps on ``engine`` in a fresh project under ``root``; with the environment
    variable ``INGEST_SCALE_EVENT_LOG`` set, Spark's event log (one job group per step) under
    ``root/eventlog``."""
    from lakecdp.config import load_project
    from lakecdp.context import JobContext, SparkHandle
    from lakecdp.ingest import job

    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(ROOT / "conf", root / "conf")
    project = load_project(root / "conf", env="local")
    environment = project.environment.model_copy(update={"engine": engine})
    if os.environ.get("INGEST_SCALE_SPARK_CONF"):
        # --spark-conf: settings tried on top of the environment's (a JVM option, ...)
        spark_conf = {**environment.spark.conf, **json.loads(os.environ["INGEST_SCALE_SPARK_CONF"])}
        environment = environment.model_copy(
            update={"spark": environment.spark.model_copy(update={"conf": spark_conf})}
        )
    if os.environ.get("INGEST_SCALE_EVENT_LOG"):
        (root / "eventlog").mkdir(parents=True)
        spark_conf = {
            **environment.spark.conf,
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": str(root / "eventlog"),
            "spark.eventLog.compress": "false",
        }
        environment = environment.model_copy(
            update={"spark": environment.spark.model_copy(update={"conf": spark_conf})}
        )
    project = project.model_copy(update={"environment": environment})
    phases: dict[str, float] = {}
    if os.environ.get("INGEST_SCALE_EVENT_LOG") and engine == "spark":
        _label_phases(job, phases)
    landing = project.landing
    landing.mkdir(parents=True)
    handle = SparkHandle(project, app_name="ingest-scale")
    if engine == "spark":
        handle.get().range(1).count()  # the JVM warmed, as in a pipeline where ingest is not the first job
    out = []
    for step, sources, increment in _steps():
        staged = data / ("first" if increment == 0 else "redelivery")
        for source in sources:
            for path in (staged / source).glob("*"):
                (landing / source).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, landing / source / path.name)
        ctx = JobContext.create(project, handle, as_of=AS_OF if increment == 0 else LATER, run_id=f"scale-{step}")
        spark = handle.get() if engine == "spark" else None
        if spark is not None:
            spark.sparkContext.setJobGroup(step, step)
        _STEP[0] = step
        phases.clear()
        jvm_cpu = _jvm_cpu_seconds(spark) if spark is not None else 0.0
        threads = _jvm_threads_cpu(spark) if spark is not None else {}
        cpu = time.process_time()
        start = time.perf_counter()
        totals = job.ingest(ctx, only=list(sources))
        out.append(
            {
                "step": step,
                "seconds": time.perf_counter() - start,
                "driver_cpu_seconds": time.process_time() - cpu,
                "jvm_cpu_seconds": _jvm_cpu_seconds(spark) - jvm_cpu if spark is not None else None,
                "totals": totals,
                "phases_s": dict(phases),
                "jvm_threads_cpu_s": {
                    k: round(v - threads.get(k, 0.0), 1)
                    for k, v in (_jvm_threads_cpu(spark) if spark is not None else {}).items()
                    if v - threads.get(k, 0.0) >= 0.5
                },
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return {"steps": out, "jvm_started": handle.started}


def child_bare(files: dict[str, list[str]], work: Path) -> dict:
    """Bare DuckDB: each step's files read (all columns as text) and appended to one Delta table per
    source with delta-rs; no validation, dedup, silver or audit."""
    import duckdb
    from deltalake import write_deltalake

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = []
    for step, _sources, _increment in _steps():
        start = time.perf_counter()
        rows = 0
        con = duckdb.connect()
        for path in files[step]:
            if path.endswith(".csv"):
                relation = con.sql(
                    "SELECT * FROM read_csv(?, all_varchar = true, header = true, ignore_errors = true, strict_mode = false)",
                    params=[path],
                )
            elif path.endswith(".parquet"):
                relation = con.sql("SELECT * FROM read_parquet(?)", params=[path])
            else:
                relation = con.sql(
                    "SELECT * FROM read_json(?, format = 'newline_delimited', records = true, ignore_errors = true)",
                    params=[path],
                )
            table = relation.arrow()
            table = table.read_all() if hasattr(table, "read_all") else table
            rows += table.num_rows
            write_deltalake(str(work / Path(path).parent.name), table, mode="append", schema_mode="merge")
        con.close()
        out.append({"step": step, "seconds": time.perf_counter() - start, "rows": rows})
    return {"steps": out}


# -- the parent ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ingest_scale"))
    parser.add_argument("--customer-people", type=int, default=600_000)
    parser.add_argument("--event-people", type=int, default=35_000)
    parser.add_argument("--engines", default="embedded,spark")
    parser.add_argument("--spark-fraction", type=float, default=1.0, help="Spark ingests this share of each file")
    parser.add_argument(
        "--generate-on",
        choices=("spark", "python"),
        default="spark",
        help="generate the world with Spark or in-process",
    )
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument(
        "--lib", type=Path, default=ROOT / "lib", help="lakecdp's lib folder to ingest with (an old tree's)"
    )
    parser.add_argument("--tag", default="", help="suffix of the project folder (project-<engine><tag>)")
    parser.add_argument("--keep", action="store_true", help="keep the project folders (warehouses, event logs)")
    parser.add_argument(
        "--spark-conf", action="append", default=[], help="KEY=VALUE: a Spark setting on top of the environment's"
    )
    parser.add_argument(
        "--steps",
        type=int,
        choices=range(1, len(STEPS) + 1),
        help="run only the first N steps (each needs the ones before)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "generate":
            _generate(Path(rest[0]), int(rest[1]), int(rest[2]), jvm=rest[3] == "spark")
            result: dict = {}
        elif kind == "lakecdp":
            result = child_lakecdp(Path(rest[0]), Path(rest[1]), rest[2])
        else:
            result = child_bare(json.loads(Path(rest[0]).read_text()), Path(rest[1]))
        print(json.dumps(result, default=str))
        return 0

    from bench.results import append_results, machine, stamp

    if args.steps:
        os.environ["INGEST_SCALE_STEPS"] = str(args.steps)
    if args.spark_conf:
        os.environ["INGEST_SCALE_SPARK_CONF"] = json.dumps(dict(kv.split("=", 1) for kv in args.spark_conf))
    work = args.work.resolve()
    started_on, started = machine(), stamp()
    world = work / f"world-{args.customer_people}-{args.event_people}"
    begin = time.perf_counter()
    _child("generate", str(world), str(args.customer_people), str(args.event_people), args.generate_on)
    print(f"world ready in {time.perf_counter() - begin:.0f} s", flush=True)
    engines = args.engines.split(",")
    fractions = sorted({1.0 if e == "embedded" else args.spark_fraction for e in engines}, reverse=True)
    table_rows = []
    for fraction in fractions:
        data = work / f"data-{fraction:g}"
        files = prepare(world, fraction, data)
        counts = {step: sum(_rows(Path(p)) for p in paths) for step, paths in files.items()}
        (work / "files.json").write_text(json.dumps(files))
        bare = _child("bare", str(work / "files.json"), str(work / "bare"))
        shutil.rmtree(work / "bare", ignore_errors=True)
        print(f"bare ({fraction:g}): {json.dumps(bare)}", flush=True)
        for engine in [e for e in engines if (1.0 if e == "embedded" else args.spark_fraction) == fraction]:
            project = work / f"project-{engine}{args.tag}"
            result = _child("lakecdp", str(project), str(data), engine, lib=args.lib.resolve())
            if not args.keep:
                shutil.rmtree(project, ignore_errors=True)
            for step_result, bare_step in zip(result["steps"], bare["steps"]):
                step = step_result["step"]
                rows = counts[step]
                seconds = step_result["seconds"]
                line = (
                    engine,
                    f"{fraction:g}",
                    step,
                    rows,
                    seconds,
                    rows / seconds,
                    bare_step["seconds"],
                    rows / bare_step["seconds"],
                    seconds / bare_step["seconds"],
                    step_result["driver_cpu_seconds"],
                    step_result["totals"],
                    bare_step["rows"],
                )
                table_rows.append(line)
                print(
                    f"{engine} {step}: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s; bare "
                    f"{bare_step['seconds']:.1f} s ({rows / bare_step['seconds']:,.0f} rows/s); "
                    f"ratio {seconds / bare_step['seconds']:.1f}x; driver CPU {step_result['driver_cpu_seconds']:.1f} s "
                    f"JVM CPU {step_result.get('jvm_cpu_seconds') or 0:.1f} s "
                    f"({rows / step_result['driver_cpu_seconds']:,.0f} rows per CPU-s); totals {step_result['totals']}",
                    flush=True,
                )
                if step_result.get("phases_s"):
                    phases = sorted(step_result["phases_s"].items(), key=lambda kv: -kv[1])
                    print("    phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases), flush=True)
                if step_result.get("jvm_threads_cpu_s"):
                    print(f"    CPU by JVM thread: {step_result['jvm_threads_cpu_s']}", flush=True)
            print(f"{engine}: JVM started: {result['jvm_started']}", flush=True)
        shutil.rmtree(data, ignore_errors=True)
    if args.record and table_rows:
        body = "\n".join(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:,} | {r[4]:.1f} | **{r[5]:,.0f}** | {r[6]:.1f} ({r[11]:,}) "
            f"| {r[7]:,.0f} | {r[8]:.1f}× | "
            f"{f'{r[9]:.1f} ({r[3] / r[9]:,.0f}/s)' if r[0] == 'embedded' else 'JVM not counted'} | {r[10]['rows_loaded']:,} / {r[10]['rows_quarantined']:,} / "
            f"{r[10]['duplicates_removed']:,} |"
            for r in table_rows
        )
        append_results(
            f"## Batch ingest at scale, end to end: rows/s per source kind against bare DuckDB\n\n"
            f"Measured {started} on {started_on}; load average at the end {os.getloadavg()[0]:.1f}. "
            f"Command: `python -m bench.ingest_scale --customer-people {args.customer_people} "
            f"--event-people {args.event_people} --engines {args.engines} --spark-fraction {args.spark_fraction:g} "
            f"--record`. Customer sources = crm, shop_customers, third_party; events = web_events, email_events; "
            f"re-delivery = each file delivered again under a new name with increment 1's rows appended. "
            f"Seconds are `ingest()` alone per step, each engine in its own process on a fresh warehouse "
            f"(Spark warm); bare = DuckDB reading the same files as text and appending them to Delta with "
            f"delta-rs (no validation, dedup, silver or audit; lines DuckDB cannot read skipped), in the same run; "
            f"share = the part of every file ingested; driver CPU = the ingesting process's CPU seconds (all "
            f"its threads: DuckDB and delta-rs included; for Spark the JVM is not in it), less dependent on "
            f"the box's load than wall time.\n\n"
            f"| engine | share | step | rows read | s | rows/s | bare s (rows written) | bare rows/s | ratio "
            f"| driver CPU s (rows per CPU-s) "
            f"| loaded / quarantined / duplicates |\n|---|---|---|---|---|---|---|---|---|---|---|\n{body}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
