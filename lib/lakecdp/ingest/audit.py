"""The ingest audit: every row read is loaded, quarantined, a duplicate or erased, and counted.

Per file (batch) or micro-batch (Kafka): read = loaded + quarantined + duplicates + erased,
checked before the audit row is written (:class:`AuditError`); for a text file the rows read
are also checked against the non-blank lines counted from its bytes. One ``ops.ingest_audit``
row per file or micro-batch (:func:`audit_row`), one ``ops.data_quality`` row per reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp.ingest.validate import DUPLICATE, NO_ROWS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.ingest.landing import LandedFile
    from lakecdp.ingest.sources import SourceConfig

ERASED = "ERASED"
COUNTS = ("rows_read", "rows_loaded", "rows_quarantined", "duplicates_removed", "rows_erased")
STATUS_COUNT = {
    "loaded": "rows_loaded",
    "quarantined": "rows_quarantined",
    "duplicate": "duplicates_removed",
    "erased": "rows_erased",
}


class AuditError(RuntimeError):
    """rows read != loaded + quarantined + duplicates + erased for a file, or != the file's
    non-blank lines: something was lost."""


def file_counts(
    classified: DataFrame | None, files: list[LandedFile]
) -> tuple[dict[str, dict[str, int]], list[tuple[str, str, int]]]:
    """The audit counts per file and (file, reason, rows): quarantine reasons, warnings of loaded
    rows, duplicates, erased rows and :func:`file_reasons`; from one Spark action over
    ``classified`` (a group per file, status and reason codes, counted).

    A refused file counts as one row read and quarantined (its row in quarantine), so audit and
    quarantine agree.
    """
    result = {f.relative: dict.fromkeys(COUNTS, 0) for f in files}
    for file in files:
        if file.refused:
            result[file.relative].update(rows_read=1, rows_quarantined=1)
    if classified is None:
        return result, file_reasons(files, result)
    codes = (
        F.when(F.col("_status") == "quarantined", F.col("_reasons"))
        .when(F.col("_status") == "duplicate", F.array(F.lit(DUPLICATE)))
        .when(F.col("_status") == "erased", F.array(F.lit(ERASED)))
        .otherwise(F.col("_warnings"))
    )
    groups = classified.groupBy("source_file", "_status", codes.alias("_codes")).count().collect()
    found: dict[tuple[str, str], int] = {}
    for row in groups:
        entry = result[row["source_file"]]
        entry[STATUS_COUNT[row["_status"]]] += row["count"]
        entry["rows_read"] += row["count"]
        # as explode would: every code of the group's array, once per row (none for null / empty)
        for code in row["_codes"] or []:
            key = (row["source_file"], code)
            found[key] = found.get(key, 0) + int(row["count"])
    reasons = file_reasons(files, result)
    return result, sorted([*reasons, *((file, code, rows) for (file, code), rows in found.items())])


def source_counts(
    files: list[LandedFile], per_file: Mapping[str, Mapping[str, int]], *, skipped: int
) -> dict[str, int]:
    """A source's counts for the run: files loaded / quarantined (refused) / skipped and the rows
    summed over its files (what :func:`lakecdp.ingest.job.ingest` returns, per source)."""
    refused = sum(1 for f in files if f.refused)
    counts = {
        "files_loaded": len(files) - refused,
        "files_quarantined": refused,
        "files_skipped": skipped,
        **dict.fromkeys(COUNTS, 0),
    }
    for value in per_file.values():
        for key in COUNTS:
            counts[key] += value[key]
    return counts


def expected_rows(source: SourceConfig, file: LandedFile) -> int | None:
    """Rows a text file must yield: its non-blank lines, counted from the bytes, less the header."""
    if file.refused or file.lines is None:
        return None
    header = 1 if source.has_header and file.first_line_filled else 0
    return file.lines - header


def check_lines_read(source: SourceConfig, files: list[LandedFile], per_file: Mapping[str, Mapping[str, int]]) -> None:
    """Raise :class:`AuditError` when the rows read from a text file are not its non-blank lines
    (a CR-only file read as one line once lost every row while read = loaded held, 0 = 0)."""
    for file in files:
        expected = expected_rows(source, file)
        read = per_file[file.relative]["rows_read"]
        if expected is not None and read != expected:
            raise AuditError(
                f"{source.name} {file.relative}: {read} rows read but the file holds {expected} non-blank "
                f"lines{' after its header' if source.has_header else ''}: rows lost or invented, nothing written"
            )


def file_reasons(files: list[LandedFile], per_file: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str, int]]:
    """(file, reason, rows) known without reading rows: refused files (1 row) and ``NO_ROWS``
    (0 rows) for a non-empty file that held none; :func:`file_counts` adds the rows' reasons
    (quarantine reasons, warnings of loaded rows, duplicates, erased)."""
    found = [(f.relative, f.reason, 1) for f in files if f.reason is not None]
    found += [
        (f.relative, NO_ROWS, 0)
        for f in files
        if not f.refused and f.size > 0 and per_file[f.relative]["rows_read"] == 0
    ]
    return sorted(found)


def check_audit_counts(where: str, counts: Mapping[str, int]) -> None:
    """Raise :class:`AuditError` unless read = loaded + quarantined + duplicates + erased, none below 0.

    ``where`` names the file (or Kafka micro-batch) in the message.
    """
    c = counts
    negative = [f"{key} {c[key]}" for key in COUNTS if c[key] < 0]
    if negative:
        raise AuditError(f"{where}: {', '.join(negative)} below zero")
    if c["rows_read"] != c["rows_loaded"] + c["rows_quarantined"] + c["duplicates_removed"] + c["rows_erased"]:
        raise AuditError(
            f"{where}: rows read {c['rows_read']} != loaded {c['rows_loaded']} + "
            f"quarantined {c['rows_quarantined']} + duplicates {c['duplicates_removed']} + "
            f"erased {c['rows_erased']}"
        )


def audit_row(
    run_id: str,
    source: str,
    source_file: str,
    counts: Mapping[str, int],
    at: datetime,
    stream_batch: str | None = None,
) -> tuple[object, ...]:
    """One ``ops.ingest_audit`` row in INGEST_AUDIT_SCHEMA's order (``stream_batch``: Kafka only)."""
    return (
        run_id,
        source,
        source_file,
        counts["rows_read"],
        counts["rows_loaded"],
        counts["rows_quarantined"],
        counts["duplicates_removed"],
        at,
        counts["rows_erased"],
        stream_batch,
    )
