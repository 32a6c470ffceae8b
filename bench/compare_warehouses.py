"""Compare every Delta table of two warehouses row by row (a refactoring's "no behaviour change").

The comparison is tests/support/warehouses.py's (the engine parity tier's): each table read with
delta-rs (its current version), rows compared as multisets. This command drops the columns that
differ between any two runs of the same demo whatever the code (wall-clock times, run ids and
hashes over them; see ``VOLATILE``) and writes the API demo's random id tag as ``<tag>``
(``RANDOM_TAG``). For a table that differs it names the columns whose values differ and prints a
few rows found on one side only.

Usage:
    python -m bench.compare_warehouses /tmp/base/warehouse /tmp/branch/warehouse
    python -m bench.compare_warehouses A B --keep run_id   # compare a volatile column too

Exit status 0 when every table holds the same rows (and both warehouses hold the same tables).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from tests.support.warehouses import ALL_TABLES, Options, compare_warehouses

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


def _without_random_tag(value: Any) -> Any:
    return RANDOM_TAG.sub(r"\1<tag>", value) if isinstance(value, str) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("left", type=Path, help="a warehouse folder (e.g. the demo's on main)")
    parser.add_argument("right", type=Path, help="the warehouse to compare with it")
    parser.add_argument("--keep", action="append", default=[], help="a volatile column to compare anyway")
    args = parser.parse_args(argv)
    drop = set(VOLATILE) - set(args.keep)
    print("dropped where present: " + "; ".join(f"{c} ({VOLATILE[c]})" for c in sorted(drop)))
    diff = compare_warehouses(
        args.left,
        args.right,
        Options(
            drop={ALL_TABLES: drop},
            # shares summed in another order differ in the last bits between two runs of one engine
            close={"gold/customer_features": {"category_affinities"}},
            normalise=_without_random_tag,
            examples=3,
        ),
    )
    print(diff.report())
    print("IDENTICAL" if diff.identical else "DIFFERENT")
    return 0 if diff.identical else 1


if __name__ == "__main__":
    sys.exit(main())
