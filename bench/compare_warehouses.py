"""Compare every Delta table of two warehouses row by row (a refactoring's "no behaviour change").

Reads each table with delta-rs (its current version), drops the columns that differ between any
two runs of the same demo whatever the code (wall-clock times, run ids and hashes over them; see
``VOLATILE``), writes the API demo's random id tag as ``<tag>`` (``RANDOM_TAG``), and compares the
rows as multisets (doubles to 12 decimals, inside maps and lists too). For a table that differs it names the columns whose values differ and prints a
few rows found on one side only.

Usage:
    python -m bench.compare_warehouses /tmp/base/warehouse /tmp/branch/warehouse
    python -m bench.compare_warehouses A B --keep run_id   # compare a volatile column too

Exit status 0 when every table holds the same rows (and both warehouses hold the same tables).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: column -> why it differs between two runs of the same demo (dropped wherever it occurs)
VOLATILE = {
    "run_id": "a run id is '<as-of>-<random 8 hex>', new on every run",
    "_run_id": "bronze's copy of the run id",
    "entered_run_id": "the run id of the segments run a customer entered in",
    "exited_run_id": "the run id of the segments run a customer left in",
    "change_id": "sha256 over the segments run id (segments/changes, activation/deliveries)",
    "idempotency_key": "sha256 over the destination and change_id",
    "_row_hash": "bronze's hash over the row, which holds the API demo's random id tag",
    "_ingested_at": "wall-clock time bronze got the row",
    "ingested_at": "wall-clock time silver got the row",
    "delivered_at": "wall-clock time of the delivery",
    "at": "wall-clock time (ops/api_intake, ops/ingest_audit)",
    "started_at": "wall-clock start of a step (ops/runs)",
    "finished_at": "wall-clock end of a step (ops/runs)",
    "duration_s": "wall-clock duration of a step (ops/runs)",
    "applied_at": "wall-clock time a segments run was applied (segments/runs)",
}
#: the API demo's ids end in a random tag (``O-demo-http-9f4576a1``, uuid4, new on every demo)
RANDOM_TAG = re.compile(r"(-demo-http-(?:cart-|buy-)?)[0-9a-f]{8}$")


def delta_tables(warehouse: Path) -> list[str]:
    """Table folders (relative, ``layer/table``) that hold a ``_delta_log``."""
    return sorted(str(log.parent.relative_to(warehouse)) for log in warehouse.rglob("_delta_log") if log.is_dir())


def _rounded(value: Any) -> Any:
    """Doubles to 12 decimals, inside lists, maps and structs too (a map of shares summed in
    another order differs in the last bits: gold.customer_features.category_affinities)."""
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _value(value: Any) -> Any:
    """A hashable, order-free form of one cell (lists and maps as sorted JSON, doubles rounded)."""
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # a map read as [(key, value), ...]
            return json.dumps(_rounded(sorted(value, key=repr)), default=str, sort_keys=True)
        return json.dumps(_rounded(value), default=str, sort_keys=True)
    if isinstance(value, dict):
        return json.dumps(_rounded(value), default=str, sort_keys=True)
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, str):
        return RANDOM_TAG.sub(r"\1<tag>", value)
    return value


def table_rows(path: Path, drop: set[str]) -> tuple[list[str], Counter[tuple[Any, ...]], list[str]]:
    """``(columns compared, row multiset, columns dropped)`` of the Delta table at ``path``."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path)).to_pyarrow_table()
    dropped = sorted(c for c in table.column_names if c in drop)
    kept = [c for c in table.column_names if c not in drop]
    columns = [table.column(c).to_pylist() for c in kept]
    rows = Counter(tuple(_value(v) for v in row) for row in zip(*columns)) if kept else Counter()
    if not kept:
        rows[()] = table.num_rows
    return kept, rows, dropped


def compare(left: Path, right: Path, drop: set[str], *, examples: int = 3) -> bool:
    """Print one line per table (and the differences); True when every table holds the same rows."""
    tables_l, tables_r = delta_tables(left), delta_tables(right)
    same = tables_l == tables_r
    for only, side in ((sorted(set(tables_l) - set(tables_r)), left), (sorted(set(tables_r) - set(tables_l)), right)):
        for name in only:
            print(f"ONLY IN {side}: {name}")
    for name in sorted(set(tables_l) & set(tables_r)):
        columns_l, rows_l, dropped = table_rows(left / name, drop)
        columns_r, rows_r, _ = table_rows(right / name, drop)
        count = sum(rows_l.values())
        dropped_note = f" (dropped {', '.join(dropped)})" if dropped else ""
        if columns_l == columns_r and rows_l == rows_r:
            print(f"same     {name}: {count} rows, {len(columns_l)} columns{dropped_note}")
            continue
        same = False
        print(f"DIFFERS  {name}: {count} vs {sum(rows_r.values())} rows{dropped_note}")
        if columns_l != columns_r:
            print(f"  columns: {columns_l} vs {columns_r}")
            continue
        differing = [
            c
            for i, c in enumerate(columns_l)
            if Counter(r[i] for r in rows_l.elements()) != Counter(r[i] for r in rows_r.elements())
        ]
        print(f"  columns whose values differ: {differing}")
        for row in list((rows_l - rows_r).elements())[:examples]:
            print(f"  - {dict(zip(columns_l, row))}")
        for row in list((rows_r - rows_l).elements())[:examples]:
            print(f"  + {dict(zip(columns_r, row))}")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("left", type=Path, help="a warehouse folder (e.g. the demo's on main)")
    parser.add_argument("right", type=Path, help="the warehouse to compare with it")
    parser.add_argument("--keep", action="append", default=[], help="a volatile column to compare anyway")
    args = parser.parse_args(argv)
    drop = set(VOLATILE) - set(args.keep)
    print("dropped where present: " + "; ".join(f"{c} ({VOLATILE[c]})" for c in sorted(drop)))
    same = compare(args.left, args.right, drop)
    print("IDENTICAL" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
