"""File exports of segment changes: CSV (formula injection escaped), JSON lines, Parquet.

One file per segment and segment run: ``<folder>/<segment_id>/<segment_run_id>.<ext>``. The
file is written to a temporary name and renamed, so a reader never sees half a file and a
re-run after a crash rewrites the same file with the same rows.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9_\-.:]")


def escape_csv_cell(value: Any) -> Any:
    """Prefix ``'`` to a text cell a spreadsheet would read as a formula; other values unchanged.

    Example:
        >>> escape_csv_cell("=HYPERLINK(...)")
        "'=HYPERLINK(...)"
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def safe_path_part(value: str) -> str:
    """A segment id or run id as a file-name part (no separators, no ``..``)."""
    cleaned = _UNSAFE_PATH.sub("_", value)
    return cleaned if cleaned.strip(".") else "_"


def write_export(
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str],
    path: Path,
    file_format: str,
) -> Path:
    """Write ``rows`` (only ``columns``, in that order) to ``path`` atomically.

    Args:
        rows: the items to export.
        columns: column names, in file order.
        path: target file; its folder is created.
        file_format: ``csv``, ``jsonl`` or ``parquet``.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if file_format == "csv":
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([escape_csv_cell(_plain(row.get(c))) for c in columns])
    elif file_format == "jsonl":
        with temporary.open("w", encoding="utf-8") as handle:
            for row in rows:
                record = {c: _plain(row.get(c)) for c in columns}
                handle.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
    elif file_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = []
        for column in columns:
            if column == "changed_at":
                fields.append(pa.field(column, pa.timestamp("us", tz="UTC")))
            elif column == "date_of_birth":
                fields.append(pa.field(column, pa.date32()))
            else:
                fields.append(pa.field(column, pa.string()))
        schema = pa.schema(fields)
        data = {
            c: [
                row.get(c) if schema.field(c).type != pa.string() or row.get(c) is None else str(row.get(c))
                for row in rows
            ]
            for c in columns
        }
        pq.write_table(pa.table(data, schema=schema), temporary)
    else:
        raise ValueError(f"unknown file format {file_format!r}; expected csv, jsonl or parquet")
    os.replace(temporary, path)
    return path
