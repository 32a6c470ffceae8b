"""Where the demo's features and activation steps spend their time, per engine, in one process.

Run on a warehouse the demo has filled (``lakecdp demo`` once), from the project folder:
``PYTHONPATH=lib:. .venv/bin/python -m bench.demo_steps_profile --step activation --base warehouse
--engines embedded,spark`` (``--step features --bare`` adds the features SQL on bare DuckDB over
the same Parquet files, the tool's own time without lakecdp's reads and writes). Each engine works on its own copy of ``--base`` (never the original)
under ``--scratch``: activation's ledger, exports and suppressions are removed from the copy first
so every change is pending again, and the features step is forced to recompute. Engines run one
after the other in one Spark session (the first pays the JVM's warm-up), so their ratio is
measured under the same load. Prints each run's wall time, Spark jobs, time in table reads and
writes (Spark ``Tables`` and delta-rs ``DeltaStore``) and HTTP requests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path

from lakecdp.config import load_project
from lakecdp.context import JobContext, open_session, setup_logging


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.seconds[label] += time.perf_counter() - started
                timers.calls[label] += 1

        setattr(owner, attribute, timed)

    def report(self) -> str:
        return "\n".join(
            f"  {label:<40} {self.calls[label]:>5} calls {self.seconds[label]:>8.2f} s"
            for label in sorted(self.seconds, key=lambda k: -self.seconds[k])
        )


def prepare(base: Path, warehouse: Path, step: str) -> None:
    """``warehouse`` a fresh copy of ``base`` with the step's outputs removed where needed."""
    if warehouse.exists():
        shutil.rmtree(warehouse)
    shutil.copytree(base, warehouse, symlinks=True)
    if step == "activation":
        for folder in ("activation", "exports", "demo_receiver"):
            shutil.rmtree(warehouse / folder, ignore_errors=True)


#: what each step writes, compared between the engines' copies (run ids and clock times aside)
OUTPUTS = {
    "features": {"gold/customer_features": ("run_id",)},
    "activation": {
        "activation/deliveries": ("run_id", "delivered_at"),
        "activation/suppressions": ("run_id",),
    },
}


def _digits(value):
    """``value`` with every double to 12 significant digits: category affinities are sums whose
    order differs between the engines (and between Spark runs), so their last bits do."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _digits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_digits(v) for v in value]
    return value


def same_outputs(step: str, warehouses: list[Path]) -> list[str]:
    """Differences between the warehouses' outputs of ``step`` (empty: identical rows and files,
    doubles to 12 significant digits)."""
    from deltalake import DeltaTable

    differences = []
    for table, ignored in OUTPUTS[step].items():
        rows = []
        for warehouse in warehouses:
            data = DeltaTable(str(warehouse / table)).to_pyarrow_table()
            kept = [c for c in data.column_names if c not in ignored]
            rows.append(sorted(repr(_digits(r)) for r in data.select(kept).to_pylist()))
        if rows[0] != rows[1]:
            differences.append(f"{table}: {len(rows[0])} vs {len(rows[1])} rows, not the same")
    if step == "activation":
        files = [
            {p.relative_to(w).as_posix(): p.read_bytes() for p in (w / "exports").rglob("*") if p.is_file()}
            for w in warehouses
        ]
        if files[0] != files[1]:
            differences.append(f"exports differ: {sorted(files[0])} vs {sorted(files[1])}")
        sent = []
        for warehouse in warehouses:
            lines = []
            for path in (warehouse / "demo_receiver").glob("*.jsonl"):
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    body = record["body"]
                    body.pop("run_id", None)
                    lines.append(json.dumps([record["idempotency_key"], body], sort_keys=True))
            sent.append(sorted(lines))
        if sent[0] != sent[1]:
            differences.append(f"receiver requests differ: {len(sent[0])} vs {len(sent[1])}")
    return differences


def bare_features(base: Path, scratch: Path, project) -> tuple[float, int]:
    """The features SQL on bare DuckDB: the same translated definitions over the inputs' live
    Parquet files (file lists from the Delta logs, taken before the clock starts), the result
    written to one Parquet file -- no lakecdp reads, no conforming to the catalogue, no Delta commit.

    Returns:
        (seconds, rows written)
    """
    import duckdb
    from deltalake import DeltaTable

    from lakecdp.features._time import as_of_utc
    from lakecdp.features.config import load_features_config
    from lakecdp.features.definitions import (
        activity_events_sql,
        activity_items_sql,
        activity_orders_sql,
        features_sql,
    )
    from lakecdp.features.embedded import INPUTS
    from lakecdp.features.engines import prepare_connection, to_duckdb

    as_of = as_of_utc(project.as_of())
    config = load_features_config(Path(project.conf_dir) / "features.yaml")
    sources = {}
    for target, (name, wanted) in INPUTS.items():
        path = base / name.replace(".", "/")
        table = DeltaTable(str(path))
        present = {f.name for f in table.schema().fields}
        files = ", ".join("'" + uri.removeprefix("file://") + "'" for uri in table.file_uris())
        sources[target] = ([c for c in wanted if c in present], files)
    steps = [
        (
            "activity_events",
            to_duckdb(
                activity_events_sql(
                    events="events",
                    columns=sources["events"][0],
                    identifiers="identifiers",
                    products="products",
                    as_of=as_of,
                )
            ),
        ),
        (
            "activity_orders",
            to_duckdb(
                activity_orders_sql(
                    orders="orders", columns=sources["orders"][0], identifiers="identifiers", as_of=as_of
                )
            ),
        ),
        (
            "activity_items",
            to_duckdb(
                activity_items_sql(
                    orders="activity_orders",
                    order_items="order_items",
                    products="products",
                    as_of=as_of,
                    completed_statuses=config.rfm.completed_statuses,
                )
            ),
        ),
    ]
    final = to_duckdb(
        features_sql(
            events="activity_events",
            orders="activity_orders",
            items="activity_items",
            identifiers="identifiers",
            profiles="profiles",
            as_of=as_of,
            config=config,
            run_id="bare",
        )
    )
    out = scratch / "bare-features.parquet"
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    prepare_connection(con)
    for target, (columns, files) in sources.items():
        select = ", ".join(f'"{c}"' for c in columns)
        con.execute(f'CREATE TABLE "{target}" AS SELECT {select} FROM read_parquet([{files}], union_by_name = true)')
    for name, sql in steps:
        con.execute(f"CREATE TABLE {name} AS {sql}")
    con.execute(f"COPY ({final}) TO '{out}' (FORMAT parquet)")
    elapsed = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    con.close()
    return elapsed, int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=("features", "activation"), required=True)
    parser.add_argument("--base", type=Path, required=True, help="a demo warehouse to copy")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/lakecdp-demo-steps"))
    parser.add_argument("--engines", default="embedded,spark", help="comma-separated, run in this order")
    parser.add_argument("--conf", default="conf")
    parser.add_argument(
        "--bare", action="store_true", help="features: also the same SQL on bare DuckDB over the base's Parquet files"
    )
    args = parser.parse_args()
    setup_logging()
    project = load_project(args.conf)
    spark = open_session(project, app_name="bench-demo-steps")
    timers = Timers()
    from lakecdp import delta_store, tables
    from lakecdp.activation import webhook

    for method in ("append", "overwrite", "merge", "read", "exists", "version", "create_if_missing"):
        timers.wrap(tables.Tables, method, f"Tables.{method}")
    timers.wrap(webhook.WebhookClient, "_request", "http request")
    for method in ("read", "load", "append", "overwrite", "upsert", "merge", "exists", "version_or_none"):
        timers.wrap(delta_store.DeltaStore, method, f"DeltaStore.{method}")

    tracker = spark.sparkContext.statusTracker()
    results = []
    for engine in args.engines.split(","):
        warehouse = args.scratch / f"{args.step}-{engine}" / "warehouse"
        prepare(args.base, warehouse, args.step)
        environment = project.environment.model_copy(
            update={
                "engine": engine,
                "storage": project.environment.storage.model_copy(update={"warehouse": str(warehouse)}),
            }
        )
        run_project = project.model_copy(update={"environment": environment})
        ctx = JobContext.create(run_project, spark)
        timers.seconds.clear()
        timers.calls.clear()
        group = f"bench-{engine}"
        spark.sparkContext.setJobGroup(group, group)
        started = time.perf_counter()
        if args.step == "features":
            from lakecdp.features import job

            job._last_fingerprint = lambda *_args: None
            counts = job.run(ctx)
        else:
            from lakecdp.activation import job
            from lakecdp.demo import demo_receiver

            with demo_receiver(run_project.warehouse):
                counts = job.run(ctx)
        elapsed = time.perf_counter() - started
        jobs = len(tracker.getJobIdsForGroup(group))
        results.append((engine, elapsed, warehouse))
        print(f"\n{args.step} on engine {engine}: {elapsed:.1f} s, {jobs} Spark jobs, counts {counts}")
        print(timers.report(), flush=True)
    if len(results) == 2:
        (first, a, one), (second, b, other) = results
        print(f"\n{args.step}: {second} / {first} = {b / a:.2f}x")
        differences = same_outputs(args.step, [one, other])
        print("outputs identical" if not differences else "OUTPUTS DIFFER: " + "; ".join(differences))
    if args.bare and args.step == "features":
        seconds, rows = bare_features(args.base, args.scratch, project)
        print(f"\nfeatures on bare DuckDB (same SQL, Parquet in, Parquet out): {seconds:.1f} s, {rows} rows")
        for engine, elapsed, _ in results:
            print(f"  {engine} / bare = {elapsed / seconds:.1f}x")


if __name__ == "__main__":
    main()
