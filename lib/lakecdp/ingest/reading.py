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

#: a text file larger than this has its lines dealt out to several tasks (up to the session's
#: default parallelism): the file is read and split into lines by one task (``wholetext``, so
#: that every line keeps its physical number), but validating, typing and hashing the lines --
#: most of the read's work -- then runs on every core instead of one
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
    line 1 is not part of it. Invalid UTF-8 bytes become U+FFFD (Spark's text decoder), which
    validation flags. A file larger than :data:`SPLIT_ABOVE_BYTES` comes in several partitions.
    A file with no carriage return (``file.lf_only``) is split at LF alone: the same lines, without
    a regular expression.
    """
    whole = ctx.spark.read.text(str(file.path), wholetext=True)
    breaks = "\n" if file.lf_only else LINE_BREAK
    lines = whole.select(F.posexplode(F.split("value", breaks)).alias("_position", "raw")).select(
        F.when(F.col("_position") == 0, F.regexp_replace("raw", f"^{BOM}", "")).otherwise(F.col("raw")).alias("raw"),
        F.lit(file.relative).alias("source_file"),
        (F.col("_position") + 1).cast("bigint").alias("line"),
    )
    lines = lines.where(F.trim("raw") != "")
    if skip_header:
        lines = lines.where(F.col("line") > 1)
    tasks = min(ctx.spark.sparkContext.defaultParallelism, -(-file.size // SPLIT_ABOVE_BYTES))
    if tasks > 1:
        lines = lines.repartition(tasks)
    return lines


def read_parquet_rows(ctx: JobContext, file: LandedFile, source: SourceConfig) -> DataFrame:
    """Parquet rows as JSON text (``raw``), ``line`` = 1-based row index in the file."""
    frame = ctx.spark.read.parquet(str(file.path))
    check_columns(file, source, frame.columns)
    return frame.select(
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in frame.columns])).alias("raw"),
        F.lit(file.relative).alias("source_file"),
        (F.col("_metadata.row_index") + 1).cast("bigint").alias("line"),
    )


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
