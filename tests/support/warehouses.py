"""Compare every Delta table of two warehouses row by row: the one comparison of the engine
parity tier (tests/test_engine_parity.py) and of ``python -m bench.compare_warehouses``.

Each table is read with delta-rs (its current version) and its rows compared as multisets (row
order is no part of a table). Columns are left out only where the caller names them, per table
(``drop``: ``{"ops/runs": {"started_at", ...}}``, ``"*"`` for every table); doubles are equal, or
within a relative tolerance in the columns the caller names (``close``, nested values too: a
list of structs holding doubles). A table that differs is described by the columns whose values
differ and the rows found on one side only.

Example:
    >>> diff = compare_warehouses(Path("a/warehouse"), Path("b/warehouse"), Options(drop={"*": {"run_id"}}))
    >>> diff.identical, diff.report()
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]

#: every table (the key of ``drop`` / ``close`` that applies to all of them)
ALL_TABLES = "*"


def delta_tables(warehouse: Path) -> list[str]:
    """Table folders (relative, ``layer/table``) that hold a ``_delta_log``."""
    return sorted(log.parent.relative_to(warehouse).as_posix() for log in warehouse.rglob("_delta_log") if log.is_dir())


def _exact(value: Any) -> Any:
    """A hashable, order-free form of one cell: maps (read as ``[(key, value), ...]``) with
    their entries sorted, lists in their order, structs with their fields sorted, NaN as text
    (NaN equals nothing, and its hash is its identity)."""
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):
            return json.dumps(sorted(value, key=repr), default=str, sort_keys=True)
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, dict):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _floats_out(value: Any, floats: list[float]) -> Any:
    """``value`` with every double (nested too) replaced by a marker, the doubles appended to
    ``floats`` in order."""
    if isinstance(value, float) and not math.isnan(value):
        floats.append(value)
        return "<double>"
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # a map: its entries in key order
            value = sorted(value, key=lambda entry: repr(entry[0]))
        return [_floats_out(v, floats) for v in value]
    if isinstance(value, tuple):
        return tuple(_floats_out(v, floats) for v in value)
    if isinstance(value, dict):
        return {k: _floats_out(v, floats) for k, v in value.items()}
    return value


@dataclass
class TableRows:
    """One table's rows as compared: ``columns`` kept, ``rows`` (exact forms), ``raw`` (the cells
    as read, in the same order as ``rows``' elements), ``dropped`` columns."""

    columns: list[str]
    rows: Counter[Row]
    raw: dict[Row, Row]
    dropped: list[str]


def table_rows(
    path: Path,
    drop: Collection[str] = (),
    *,
    normalise: Callable[[Any], Any] | None = None,
    version: int | None = None,
) -> TableRows:
    """The rows of the Delta table at ``path`` (at ``version``; None: the current one) without
    the columns in ``drop``; ``normalise`` rewrites each cell before it is compared (the bench's
    random id tags)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path), version=version).to_pyarrow_table()
    dropped = sorted(c for c in table.column_names if c in drop)
    kept = [c for c in table.column_names if c not in drop]
    columns = [table.column(c).to_pylist() for c in kept]
    rows: Counter[Row] = Counter()
    raw: dict[Row, Row] = {}
    for cells in zip(*columns):
        if normalise is not None:
            cells = tuple(normalise(v) for v in cells)
        exact = tuple(_exact(v) for v in cells)
        rows[exact] += 1
        raw.setdefault(exact, tuple(cells))
    if not kept:
        rows[()] = table.num_rows
    return TableRows(kept, rows, raw, dropped)


@dataclass
class TableDiff:
    """How one table differs between the two warehouses."""

    table: str
    left_count: int
    right_count: int
    left_columns: list[str]
    right_columns: list[str]
    differing_columns: list[str] = field(default_factory=list)
    only_left: list[dict[str, Any]] = field(default_factory=list)
    only_right: list[dict[str, Any]] = field(default_factory=list)
    #: rows found on one side only (``only_left`` / ``only_right`` hold a few of them)
    only_left_count: int = 0
    only_right_count: int = 0

    def describe(self, examples: int = 3) -> str:
        lines = [f"DIFFERS  {self.table}: {self.left_count} vs {self.right_count} rows"]
        if self.left_columns != self.right_columns:
            lines.append(f"  columns: {self.left_columns} vs {self.right_columns}")
            return "\n".join(lines)
        lines.append(
            f"  columns whose values differ: {self.differing_columns}; "
            f"{self.only_left_count} rows only left, {self.only_right_count} only right"
        )
        lines += [f"  - {row}" for row in self.only_left[:examples]]
        lines += [f"  + {row}" for row in self.only_right[:examples]]
        return "\n".join(lines)


@dataclass
class WarehouseDiff:
    """The outcome of :func:`compare_warehouses`."""

    left: Path
    right: Path
    only_left: list[str]
    only_right: list[str]
    same: dict[str, str]
    differing: list[TableDiff]

    @property
    def identical(self) -> bool:
        return not (self.only_left or self.only_right or self.differing)

    def report(self, examples: int = 3) -> str:
        """One line per table, and the differences with a few rows from each side."""
        lines = [f"ONLY IN {self.left}: {name}" for name in self.only_left]
        lines += [f"ONLY IN {self.right}: {name}" for name in self.only_right]
        lines += [f"same     {name}: {note}" for name, note in self.same.items()]
        lines += [diff.describe(examples) for diff in self.differing]
        return "\n".join(lines)


def _for_table(option: Mapping[str, Collection[str]], table: str) -> set[str]:
    return set(option.get(ALL_TABLES, ())) | set(option.get(table, ()))


def _close_leftovers(
    left: TableRows,
    right: TableRows,
    only_left: Counter[Row],
    only_right: Counter[Row],
    close: set[str],
    rel_tol: float,
) -> None:
    """Pair the rows left on each side that are equal once the doubles of the ``close`` columns
    are set aside, and drop each pair whose doubles agree to ``rel_tol`` (removed in place)."""
    positions = [i for i, c in enumerate(left.columns) if c in close]

    def key_and_floats(raw: Row) -> tuple[Row, list[float]]:
        floats: list[float] = []
        cells = list(raw)
        for i in positions:
            cells[i] = _floats_out(cells[i], floats)
        return tuple(_exact(v) for v in cells), floats

    candidates: dict[Row, list[tuple[list[float], Row]]] = defaultdict(list)
    for row in only_right.elements():
        key, floats = key_and_floats(right.raw[row])
        candidates[key].append((floats, row))
    for row in list(only_left.elements()):
        key, floats = key_and_floats(left.raw[row])
        for index, (other, other_row) in enumerate(candidates.get(key, [])):
            if len(other) == len(floats) and all(
                math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0) for a, b in zip(floats, other)
            ):
                only_left[row] -= 1
                only_right[other_row] -= 1
                del candidates[key][index]
                break
    only_left += Counter()  # drops the zero counts
    only_right += Counter()


@dataclass(frozen=True)
class Options:
    """How tables are compared (see :func:`compare_warehouses`)."""

    drop: Mapping[str, Collection[str]] = field(default_factory=dict)
    close: Mapping[str, Collection[str]] = field(default_factory=dict)
    rel_tol: float = 1e-12
    normalise: Callable[[Any], Any] | None = None
    examples: int = 5


def compare_table(
    left: Path, right: Path, name: str, options: Options, *, versions: tuple[int | None, int | None] = (None, None)
) -> TableDiff | str:
    """Compare table ``name`` (``layer/table``) under the warehouses ``left`` and ``right``, each
    at its version in ``versions`` (None: the current one).

    Returns:
        How it differs, or a one-line note (rows, columns, columns dropped) when it does not.
    """
    dropped = _for_table(options.drop, name)
    rows_l = table_rows(left / name, dropped, normalise=options.normalise, version=versions[0])
    rows_r = table_rows(right / name, dropped, normalise=options.normalise, version=versions[1])
    count_l, count_r = sum(rows_l.rows.values()), sum(rows_r.rows.values())
    label = name if versions == (None, None) else f"{name} at versions {versions[0]} / {versions[1]}"
    diff = TableDiff(label, count_l, count_r, rows_l.columns, rows_r.columns)
    if rows_l.columns != rows_r.columns:
        return diff
    only_l, only_r = rows_l.rows - rows_r.rows, rows_r.rows - rows_l.rows
    tolerant = _for_table(options.close, name)
    if tolerant and (only_l or only_r):
        _close_leftovers(rows_l, rows_r, only_l, only_r, tolerant, options.rel_tol)
    if not only_l and not only_r:
        note = f"{count_l} rows, {len(rows_l.columns)} columns"
        return note + (f" (dropped {', '.join(rows_l.dropped)})" if rows_l.dropped else "")
    diff.differing_columns = [
        c
        for i, c in enumerate(rows_l.columns)
        if Counter(r[i] for r in only_l.elements()) != Counter(r[i] for r in only_r.elements())
    ]
    examples = options.examples
    diff.only_left = [dict(zip(rows_l.columns, rows_l.raw[r])) for r in list(only_l.elements())[:examples]]
    diff.only_right = [dict(zip(rows_r.columns, rows_r.raw[r])) for r in list(only_r.elements())[:examples]]
    diff.only_left_count, diff.only_right_count = sum(only_l.values()), sum(only_r.values())
    return diff


def compare_warehouses(left: Path, right: Path, options: Options | None = None) -> WarehouseDiff:
    """Compare every Delta table under ``left`` with the one of the same name under ``right``.

    ``options``: ``drop`` maps a table (``layer/table``, or ``"*"`` for all) to the columns left
    out of its comparison; ``close`` a table to the columns whose doubles (nested too) may differ
    by ``rel_tol`` relative; ``normalise`` rewrites each cell of both sides before the
    comparison; ``examples`` rows are kept per side of a table that differs.

    Returns:
        The tables found on one side only, the same tables, and how the others differ.
    """
    options = options or Options()
    tables_l, tables_r = delta_tables(left), delta_tables(right)
    result = WarehouseDiff(
        left,
        right,
        only_left=sorted(set(tables_l) - set(tables_r)),
        only_right=sorted(set(tables_r) - set(tables_l)),
        same={},
        differing=[],
    )
    for name in sorted(set(tables_l) & set(tables_r)):
        outcome = compare_table(left, right, name, options)
        if isinstance(outcome, str):
            result.same[name] = outcome
        else:
            result.differing.append(outcome)
    return result


def differing_files(left: Path, right: Path, *, read: Callable[[Path], Any] = Path.read_bytes) -> list[str]:
    """The files (relative paths) under the folders ``left`` and ``right`` found on one side
    only (``+``/``-``) or whose contents differ (``!``); ``read`` gives a file's contents as
    compared (default: its bytes)."""
    files_l = {p.relative_to(left).as_posix() for p in left.rglob("*") if p.is_file()}
    files_r = {p.relative_to(right).as_posix() for p in right.rglob("*") if p.is_file()}
    found = [f"- {name}" for name in sorted(files_l - files_r)] + [f"+ {name}" for name in sorted(files_r - files_l)]
    found += [f"! {name}" for name in sorted(files_l & files_r) if read(left / name) != read(right / name)]
    return found
