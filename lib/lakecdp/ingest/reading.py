"""Reading landed files: their rows as ``raw`` text with exact physical line numbers, validated.

The source's format (:mod:`lakecdp.ingest.formats`) reads a file with the helpers here; every
row then goes through the shared validator (:func:`lakecdp.ingest.validate.parse_and_validate`).
A file Spark cannot open is refused, not fatal; a CSV whose header repeats a column has every
line quarantined.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp.columns import MissingColumnsError
from lakecdp.ingest.landing import BOM, LINE_BREAK, LandedFile
from lakecdp.ingest.validate import DUPLICATE_HEADER, UNREADABLE_FILE, parse_and_validate

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.context import JobContext
    from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

#: a text file larger than this is read by several tasks at once, a byte range each (as Spark
#: splits a text file), its lines numbered after one counting pass; a smaller one is read and
#: split into lines by one task (``wholetext``)
SPLIT_ABOVE_BYTES = 4 * 1024 * 1024


def csv_header(file: LandedFile, source: SourceConfig) -> list[str]:
    import csv

    # newline="": readline ends at LF, CRLF or a lone CR, as read_lines splits
    with file.path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline().lstrip(BOM).rstrip("\r\n")
    sep = source.options.get("sep", source.options.get("delimiter", ","))
    quote = source.options.get("quote", '"')
    return [name.strip() for name in next(csv.reader([first], delimiter=sep, quotechar=quote), [])]


def repeated_columns(header: list[str]) -> str | None:
    """What is wrong with a header that names a column twice (case-insensitively: Delta and
    Spark do not tell ``Email`` from ``email``), or None."""
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(header, start=1):
        positions.setdefault(name.casefold(), []).append(position)
    repeated = [
        f"{' / '.join(repr(header[i - 1]) for i in at)} (columns {', '.join(map(str, at))})"
        for at in positions.values()
        if len(at) > 1
    ]
    if not repeated:
        return None
    return f"header names a column more than once: {'; '.join(repeated)}; the file is refused, no column dropped"


def check_columns(file: LandedFile, source: SourceConfig, present: Iterable[str]) -> None:
    missing = [name for name in source.required if name.split(".")[0] not in set(present)]
    if missing:
        raise MissingColumnsError(
            f"{file.relative}: required column(s) {', '.join(missing)} missing (file has: {', '.join(present)})"
        )


def read_lines(ctx: JobContext, file: LandedFile, *, skip_header: bool) -> DataFrame:
    """The file's physical lines as ``raw, source_file, line`` (line 1 = first line; blank lines dropped).

    A line ends at LF, CRLF or a lone CR (:data:`LINE_BREAK`); a UTF-8 byte order mark before
    line 1 is not part of it. Invalid UTF-8 bytes become U+FFFD (Java's decoder, as Spark's
    string functions decode), which validation flags. A file larger than
    :data:`SPLIT_ABOVE_BYTES` is read in byte ranges by several tasks (:func:`_ranged_lines`);
    a smaller one as a whole, a file with no carriage return (``file.lf_only``) split at LF
    alone: the same lines, without a regular expression.
    """
    lines = _ranged_lines(ctx, file) if file.size > SPLIT_ABOVE_BYTES else None
    if lines is None:
        whole = ctx.spark.read.text(str(file.path), wholetext=True)
        breaks = "\n" if file.lf_only else LINE_BREAK
        lines = whole.select(F.posexplode(F.split("value", breaks)).alias("_position", "raw")).select(
            F.col("raw"), (F.col("_position") + 1).cast("bigint").alias("line")
        )
    lines = lines.select(
        F.when(F.col("line") == 1, F.regexp_replace("raw", f"^{BOM}", "")).otherwise(F.col("raw")).alias("raw"),
        F.lit(file.relative).alias("source_file"),
        F.col("line"),
    ).where(F.trim("raw") != "")
    if skip_header:
        lines = lines.where(F.col("line") > 1)
    return lines


#: ``monotonically_increasing_id`` holds the task's partition above these bits and the row's
#: place in the partition below them
_PLACE_BITS = 33


def _ranged_lines(ctx: JobContext, file: LandedFile) -> DataFrame | None:
    """``raw, line`` of every physical line of ``file`` (blank ones too), read by Spark's text
    reader in byte ranges -- several tasks at once -- and numbered: the lines of the ranges
    before a line's range (counted first, one pass over the file) plus its place in its range.
    A task reads its ranges in order, so a line's place in its range is its place in the task
    less the place of the range's first line. None for a file with no line.

    The reader ends lines where :data:`LINE_BREAK` does and drops a byte order mark at the
    start; it keeps invalid UTF-8 as read, so a line that is not valid UTF-8 is decoded as
    ``split`` decodes it (Java's decoder, one U+FFFD per malformed sequence), like the lines of
    a file read as a whole.
    """
    place = F.monotonically_increasing_id().bitwiseAND(F.lit((1 << _PLACE_BITS) - 1))
    text = ctx.spark.read.text(str(file.path)).select(
        F.col("value"), F.col("_metadata.file_block_start").alias("_range"), place.alias("_place")
    )
    ranges = sorted(
        text.groupBy("_range").agg(F.count(F.lit(1)).alias("lines"), F.min("_place").alias("first")).collect()
    )
    if not ranges:
        return None
    cases, before = [], 0
    for start, count, first in ranges:
        cases.append((F.col("_range") == F.lit(start), F.col("_place") + F.lit(before - first + 1)))
        before += count
    line = F.when(*cases[0])
    for is_range, numbered in cases[1:]:
        line = line.when(is_range, numbered)
    line = line.otherwise(F.raise_error(F.lit(f"{file.relative}: a byte range of the file read, not counted")))
    raw = F.when(F.is_valid_utf8("value"), F.col("value")).otherwise(F.split("value", "\n").getItem(0))
    return text.select(raw.alias("raw"), line.cast("bigint").alias("line"))


def read_parquet_rows(ctx: JobContext, file: LandedFile, source: SourceConfig) -> tuple[DataFrame, list[str]]:
    """Parquet rows as JSON text (``raw``), ``line`` = 1-based row index in the file; and the
    file's columns."""
    frame = ctx.spark.read.parquet(str(file.path))
    check_columns(file, source, frame.columns)
    rows = frame.select(
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in frame.columns])).alias("raw"),
        F.lit(file.relative).alias("source_file"),
        (F.col("_metadata.row_index") + 1).cast("bigint").alias("line"),
    )
    return rows, frame.columns


def _reader_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)


def validated_rows(
    ctx: JobContext, source: SourceConfig, files: list[LandedFile]
) -> tuple[DataFrame | None, list[LandedFile]]:
    """Every row of ``files`` through ``parse_and_validate``, with ``_file_order`` for ordering.

    Returns:
        The rows (None when no file could be read) and ``files`` with the ones Spark could not
        open (gone since the listing, not Parquet) refused (``UNREADABLE_FILE``). Every line of
        a CSV whose header repeats a column is quarantined (``DUPLICATE_HEADER``).
    """
    frames = []
    checked_files = []
    for order, file in enumerate(files):
        try:
            # the format reads the file (lakecdp.ingest.formats)
            read = source.file_format.read(ctx, file, source)
            lines, header, repeated = read.rows, read.header, read.header_problem
        except _reader_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("%s: %s cannot be read, quarantined: %s", source.name, file.relative, first)
            checked_files.append(file.refuse(UNREADABLE_FILE, f"{file.relative}: cannot be read: {first[:500]}"))
            continue
        checked = parse_and_validate(lines, source, header=header, as_of=ctx.as_of)
        if repeated is not None:
            logger.warning("%s: %s: %s", source.name, file.relative, repeated)
            checked = checked.withColumns(
                {
                    "_reasons": F.array(F.lit(DUPLICATE_HEADER)),
                    "_warnings": F.array().cast("array<string>"),
                    "_detail": F.lit(f"{DUPLICATE_HEADER}: {repeated}"),
                }
            )
        frames.append(checked.withColumn("_file_order", F.lit(order)))
        checked_files.append(file)
    if not frames:
        return None, checked_files
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result, checked_files
