"""Benchmark: the embedded engine's Delta writes against delta-rs doing the same job, in one run.

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.delta_writes --work /tmp/delta-writes \
        [--rows 500000] [--repeats 5] [--record]

Two writes of an ingest's customer re-delivery, each beside its bare delta-rs baseline on the
same rows, alternated, process CPU-seconds (all threads) and wall seconds, best of
``--repeats``:

- **append**: ``--rows`` rows of a bronze table (the crm source's 12 text columns and bronze's
  provenance columns, ``delta.dataSkippingStatsColumns`` as the catalogue sets it) appended with
  ``DeltaStore.append`` (pyarrow's writer, one add action) against ``write_deltalake`` on a table
  created with the same properties.
- **merge**: silver.customer_records holding three sources' records (``--rows`` crm records,
  80 % as many shop and 40 % as many third-party ones, each source's in its own file as a run
  appends them), then 8.5 % of the crm records changed and upserted as ``_upsert_records`` does:
  ``DeltaStore.merge`` with ``within=("source", ["crm"])`` and its writer properties against the
  bare delta-rs MERGE (key condition only, delta-rs's default writer).

The rows are made up from a seeded generator (names, emails, phones, dates as text), not read
from a sample world: what is measured is the write, not the data.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from lakecdp import catalog
from lakecdp.delta_store import TABLE_CONFIGURATION, DeltaStore, arrow_schema

#: the crm source's columns as read (conf/sources/crm.yaml), all text
CRM_COLUMNS = (
    "CustomerID FirstName LastName Email Phone DOB Street PostCode Town Country EmailOptIn LastModified".split()
)
AT = datetime(2026, 11, 8, tzinfo=timezone.utc)


class _Store(DeltaStore):
    """A DeltaStore over a folder of path-based tables (``<root>/<layer>/<table>``), no project."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = "lakecdp-bench"

    def path(self, name: str) -> str:
        layer, table = name.split(".", 1)
        return str(self.root / layer / table)


def _texts(rng: np.random.Generator, rows: int, width: int, prefix: str = "") -> pa.Array:
    """``rows`` strings of ``width`` random lowercase letters (a few hundred distinct per column
    would make dictionaries; names and emails are not)."""
    letters = rng.integers(97, 123, size=(rows, width), dtype=np.uint8)
    data = pa.py_buffer(letters.tobytes())
    offsets = pa.py_buffer((np.arange(rows + 1, dtype=np.int32) * width).tobytes())
    plain = pa.StringArray.from_buffers(rows, offsets, data)
    return pa.compute.binary_join_element_wise(pa.scalar(prefix), plain, "") if prefix else plain


def bronze_rows(rows: int, seed: int = 7) -> tuple[pa.Table, str]:
    """A crm bronze table's rows and DDL."""
    rng = np.random.default_rng(seed)
    columns = {
        name: _texts(rng, rows, width) for name, width in zip(CRM_COLUMNS, (8, 6, 7, 24, 13, 10, 16, 7, 9, 7, 1, 19))
    }
    columns["_rescued"] = pa.nulls(rows, pa.string())
    columns["_source_file"] = pa.array(["crm/crm_customers_1.csv"] * rows)
    columns["_line"] = pa.array(np.arange(2, rows + 2, dtype=np.int64))
    columns["_ingested_at"] = pa.array([AT] * rows, pa.timestamp("us", tz="UTC"))
    columns["_run_id"] = pa.array(["bench re-delivery"] * rows)
    columns["_row_hash"] = _texts(rng, rows, 64)
    ddl = ", ".join(f"{name} string" for name in CRM_COLUMNS)
    ddl += (
        ", _rescued string, _source_file string, _line bigint, _ingested_at timestamp, _run_id string, _row_hash string"
    )
    return pa.table(columns), ddl


def records(label: str, rows: int, seed: int) -> pa.Table:
    """``rows`` silver.customer_records rows of one source."""
    rng = np.random.default_rng(seed)
    schema = arrow_schema(catalog.CUSTOMER_RECORDS.ddl)
    ids = pa.array([f"{i:08d}" for i in range(rows)])
    given = {
        "record_id": pa.compute.binary_join_element_wise(pa.scalar(f"{label}:"), ids, ""),
        "source": pa.array([label] * rows),
        "source_record_id": ids,
        "first_name": _texts(rng, rows, 6),
        "last_name": _texts(rng, rows, 7),
        "email": _texts(rng, rows, 20),
        "phone": _texts(rng, rows, 13),
        "address_line1": _texts(rng, rows, 16),
        "postcode": _texts(rng, rows, 7),
        "city": _texts(rng, rows, 9),
        "updated_at": pa.array([datetime(2026, 10, 1, tzinfo=timezone.utc)] * rows, pa.timestamp("us", tz="UTC")),
        "run_id": pa.array(["bench first load"] * rows),
        "ingested_at": pa.array([datetime(2026, 11, 1, tzinfo=timezone.utc)] * rows, pa.timestamp("us", tz="UTC")),
    }
    return pa.table({f.name: given[f.name] if f.name in given else pa.nulls(rows, f.type) for f in schema})


def measured(action: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = parser.parse_args()
    from deltalake import DeltaTable, write_deltalake

    from bench.results import append_results, machine, stamp

    started_on, started = machine(), stamp()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    bronze, ddl = bronze_rows(args.rows)
    name = "bronze.crm"
    configuration = {**TABLE_CONFIGURATION, **catalog.stats_configuration(name, [n for n in bronze.column_names])}

    def ours_append() -> None:
        store = _Store(work / "ours")
        store.append(bronze, name, ddl, run_id="bench")

    def bare_append() -> None:
        path = work / "bare" / "bronze" / "crm"
        DeltaTable.create(str(path), arrow_schema(ddl), configuration=configuration)
        write_deltalake(str(path), bronze, mode="append")

    # silver.customer_records: three sources' files, then 8.5 % of crm's records changed
    crm = records("crm", args.rows, 1)
    others = [records("shop_customers", args.rows * 4 // 5, 2), records("third_party", args.rows * 2 // 5, 3)]
    changed_rows = np.random.default_rng(4).choice(args.rows, size=int(args.rows * 0.085), replace=False)
    changed = crm.take(pa.array(np.sort(changed_rows)))
    changed = changed.set_column(
        changed.schema.get_field_index("updated_at"),
        "updated_at",
        pa.array([datetime(2026, 11, 5, tzinfo=timezone.utc)] * changed.num_rows, pa.timestamp("us", tz="UTC")),
    )
    records_name = catalog.CUSTOMER_RECORDS.name
    seeded = work / "seed"
    seed_store = _Store(seeded)
    for table in (crm, *others):
        seed_store.append(table, records_name, catalog.CUSTOMER_RECORDS.ddl, run_id="bench first load")
    newer = "s.updated_at > t.updated_at OR (t.updated_at IS NULL AND s.updated_at IS NOT NULL)"

    def fresh(side: str) -> _Store:
        shutil.rmtree(work / side, ignore_errors=True)
        shutil.copytree(seeded, work / side)
        return _Store(work / side)

    def ours_merge(store: _Store) -> Callable[[], None]:
        return lambda: store.merge(
            changed,
            records_name,
            catalog.CUSTOMER_RECORDS.ddl,
            keys=["record_id"],
            run_id="bench",
            update_predicate=newer,
            within=("source", ["crm"]),
        )

    def bare_merge(store: _Store) -> Callable[[], None]:
        def run() -> None:
            table = DeltaTable(store.path(records_name))
            merger = table.merge(changed, "t.record_id = s.record_id", source_alias="s", target_alias="t")
            merger.when_matched_update_all(predicate=newer).when_not_matched_insert_all().execute()

        return run

    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in ("append", "append bare", "merge", "merge bare")}
    for _ in range(args.repeats):
        for side in ("ours", "bare"):
            shutil.rmtree(work / side, ignore_errors=True)
        figures["append"].append(measured(ours_append))
        figures["append bare"].append(measured(bare_append))
        figures["merge"].append(measured(ours_merge(fresh("ours"))))
        figures["merge bare"].append(measured(bare_merge(fresh("bare"))))
    shutil.rmtree(work, ignore_errors=True)
    best = {k: (min(c for c, _ in v), min(w for _, w in v)) for k, v in figures.items()}
    lines = [
        f"| {job} | {best[job][0]:.2f} | {best[job][1]:.2f} | {best[job + ' bare'][0]:.2f} | "
        f"{best[job + ' bare'][1]:.2f} | {best[job][0] / best[job + ' bare'][0]:.2f} |"
        for job in ("append", "merge")
    ]
    table = "\n".join(
        [
            "| write | lakecdp CPU-s | wall s | bare delta-rs CPU-s | wall s | CPU ratio |",
            "|---|---|---|---|---|---|",
            *lines,
        ]
    )
    print(table)
    if args.record:
        append_results(
            f"## Delta writes against bare delta-rs ({started})\n\n{started_on}; `python -m bench.delta_writes"
            f" --rows {args.rows} --repeats {args.repeats}`: append = {args.rows:,} crm bronze rows; merge ="
            f" {changed.num_rows:,} changed crm records into silver.customer_records of three sources; best"
            f" of {args.repeats}, alternated.\n\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
