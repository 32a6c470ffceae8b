"""Batch ingest job: landing files -> bronze, quarantine, silver, with an exactly-once file ledger.

For each configured source the job finds the files in the landing folder that the ledger
(``ops.ingest_files``) has not seen (by content hash), reads them as text with exact physical
line numbers (Parquet: row index), validates every row (:func:`parse_and_validate`), and writes
in this order, each write idempotent (MERGE on its keys):

1. ``bronze.<source>``: rows that passed (duplicates included), as read, + provenance;
2. ``quarantine.<source>``: rows that failed, raw, with reasons; a file refused as a whole
   (a symbolic link, an unreadable file) as one row with ``line`` null;
3. silver tables (MERGE on their primary keys; events insert-only);
4. ``ops.ingest_audit`` (per file: read = loaded + quarantined + duplicates + erased, checked)
   and ``ops.data_quality`` (rows per reason);
5. the ledger entry, last: a run killed before it re-does the file and ends in the same state.
   A refused file is in the ledger too (``status`` quarantined, ``reason``): reported once, and
   a corrected delivery (other bytes) loads.

Every line ending counts (LF, CRLF, CR-only, mixed), and the rows read are checked against the
non-blank lines counted from the file's bytes before anything is written (:class:`AuditError`).

A row carrying an identifier of a person erased earlier (its salted hash is in ``ops.erasures``,
see :mod:`lakecdp.erasure`) is refused: written nowhere, not even quarantine, and counted as
``rows_erased`` with reason ``ERASED``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyspark.sql import Window
from pyspark.sql import functions as F

from lakecdp.columns import MissingColumnsError
from lakecdp import catalog
from lakecdp.erasure import PERSON_KEY, erased_hashes, person_key, salted_hash_column
from lakecdp.ingest import standardise
from lakecdp.ingest.schemas import (
    DATA_QUALITY_SCHEMA,
    INGEST_AUDIT_SCHEMA,
    INGEST_FILES_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_KEYS,
)
from lakecdp.ingest.sources import SourceConfig, load_sources
from lakecdp.ingest.validate import (
    DUPLICATE,
    DUPLICATE_HEADER,
    NO_ROWS,
    SYMLINK,
    UNREADABLE_FILE,
    parse_and_validate,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

LEDGER = catalog.INGEST_FILES.name
AUDIT = catalog.INGEST_AUDIT.name
DATA_QUALITY = catalog.DATA_QUALITY.name

#: called with the logical table name after each write; tests raise from it to simulate a crash
WriteHook = Callable[[str], None]


ERASED = "ERASED"
_COUNTS = ("rows_read", "rows_loaded", "rows_quarantined", "duplicates_removed", "rows_erased")
_STATUS_COUNT = {
    "loaded": "rows_loaded",
    "quarantined": "rows_quarantined",
    "duplicate": "duplicates_removed",
    "erased": "rows_erased",
}


#: a physical line ends at CRLF, LF or a lone CR (old Mac), as Python's universal newlines
LINE_BREAK = r"\r\n|\r|\n"
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"

LOADED = "loaded"
QUARANTINED = "quarantined"


class AuditError(RuntimeError):
    """rows read != loaded + quarantined + duplicates + erased for a file, or != the file's
    non-blank lines: something was lost."""


@dataclass(frozen=True)
class LandedFile:
    """One file in the landing folder.

    ``reason`` set: the file is refused as a whole (``SYMLINK``, ``UNREADABLE_FILE``) and
    ``content_hash`` keys its ledger entry (its bytes were not read: a hash of what was seen).
    """

    path: Path
    relative: str
    size: int
    content_hash: str
    #: non-blank physical lines counted from the bytes (text formats; a leading BOM ignored)
    lines: int | None = None
    #: line 1 is non-blank (a CSV header that ``read_lines`` skips)
    first_line_filled: bool = False
    reason: str | None = None
    detail: str | None = None

    @property
    def refused(self) -> bool:
        return self.reason is not None

    def refuse(self, reason: str, detail: str) -> LandedFile:
        return LandedFile(self.path, self.relative, self.size, self.content_hash, reason=reason, detail=detail)


def _natural_key(text: str) -> list[object]:
    """``x_2`` before ``x_10``: increments are numbered, not zero-padded."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _pseudo_hash(*parts: object) -> str:
    """Ledger key of a file whose bytes were not read (a link, a folder, an unreadable file)."""
    return "refused:" + hashlib.sha256("\0".join(map(str, parts)).encode("utf-8", "surrogateescape")).hexdigest()


def _scan(handle: BinaryIO, *, count_lines: bool) -> tuple[str, int, bool]:
    """sha256 of the bytes and, for text, the non-blank lines (only spaces = blank, as Spark's
    ``trim``), counted independently of the Spark reader; and whether line 1 is non-blank."""
    digest = hashlib.sha256()
    lines, first_filled, number = 0, False, 0
    carry = b""

    def count(line: bytes) -> None:
        nonlocal lines, first_filled, number
        number += 1
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if line.strip(b" "):
            lines += 1
            first_filled = first_filled or number == 1

    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
        if not count_lines:
            continue
        text = carry + block
        held = b""
        if text.endswith(b"\r"):  # maybe the first half of a CRLF split over two blocks
            text, held = text[:-1], b"\r"
        parts = _LINE_BREAK_BYTES.split(text)
        for line in parts[:-1]:
            count(line)
        carry = parts[-1] + held
    if count_lines and carry:
        parts = _LINE_BREAK_BYTES.split(carry)
        for line in parts[:-1]:
            count(line)
        if parts[-1]:
            count(parts[-1])
    return digest.hexdigest(), lines, first_filled


def _link_on_the_way(landing: Path, path: Path) -> Path | None:
    """The first symbolic link among ``path`` and its folders below ``landing`` (the landing
    folder itself is configuration and may be a link)."""
    current = landing
    for part in path.relative_to(landing).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def inspect_file(landing: Path, path: Path, source: SourceConfig) -> LandedFile:
    """One landing path as a :class:`LandedFile`: hashed and line-counted, or refused with a reason.

    Never follows a symbolic link (``O_NOFOLLOW`` also covers a link swapped in after the
    listing) and never blocks on a pipe (``O_NONBLOCK``, then ``fstat`` must say regular file).
    """
    relative = path.relative_to(landing).as_posix()
    link = _link_on_the_way(landing, path)
    if link is not None:
        try:
            target = os.readlink(link)
        except OSError as exc:
            target = f"? ({exc.strerror})"
        where = "it" if link == path else f"its folder {link.relative_to(landing).as_posix()}"
        return LandedFile(path, relative, 0, _pseudo_hash("symlink", relative, target)).refuse(
            SYMLINK,
            f"{relative}: {where} is a symbolic link (to {target}); links in landing are not followed",
        )
    try:
        info = os.lstat(path)
    except OSError as exc:
        return LandedFile(path, relative, 0, _pseudo_hash("gone", relative, exc.errno)).refuse(
            UNREADABLE_FILE, f"{relative}: cannot be read: {exc.strerror} (listed, then gone?)"
        )
    seen = LandedFile(
        path, relative, info.st_size, _pseudo_hash("unreadable", relative, info.st_size, info.st_mtime_ns)
    )
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        return seen.refuse(UNREADABLE_FILE, f"{relative}: is {kind}, not a data file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return seen.refuse(UNREADABLE_FILE, f"{relative}: cannot be opened: {exc.strerror}")
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return seen.refuse(UNREADABLE_FILE, f"{relative}: is not a regular file, not a data file")
        try:
            content_hash, lines, first_filled = _scan(handle, count_lines=source.file_format.text)
        except OSError as exc:
            return seen.refuse(UNREADABLE_FILE, f"{relative}: read failed: {exc.strerror}")
    text = source.file_format.text
    return LandedFile(
        path, relative, info.st_size, content_hash, lines=lines if text else None, first_line_filled=first_filled
    )


def discover(landing: Path, source: SourceConfig) -> list[LandedFile]:
    """Paths matching the source's glob, in natural order (increment 2 before 10), each hashed
    or refused (:func:`inspect_file`): one bad path never stops the others."""
    found = list(landing.glob(source.path))
    found.sort(key=lambda p: _natural_key(p.relative_to(landing).as_posix()))
    return [inspect_file(landing, p, source) for p in found]


# -- reading ---------------------------------------------------------------------------


def _csv_header(file: LandedFile, source: SourceConfig) -> list[str]:
    import csv

    # newline="": readline ends at LF, CRLF or a lone CR, as read_lines splits
    with file.path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline().lstrip(_BOM).rstrip("\r\n")
    sep = source.options.get("sep", source.options.get("delimiter", ","))
    quote = source.options.get("quote", '"')
    return [name.strip() for name in next(csv.reader([first], delimiter=sep, quotechar=quote), [])]


def _repeated_columns(header: list[str]) -> str | None:
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


def _check_columns(file: LandedFile, source: SourceConfig, present: Iterable[str]) -> None:
    missing = [name for name in source.required if name.split(".")[0] not in set(present)]
    if missing:
        raise MissingColumnsError(
            f"{file.relative}: required column(s) {', '.join(missing)} missing (file has: {', '.join(present)})"
        )


def read_lines(ctx: JobContext, file: LandedFile, *, skip_header: bool) -> DataFrame:
    """The file's physical lines as ``raw, source_file, line`` (line 1 = first line; blank lines dropped).

    A line ends at LF, CRLF or a lone CR (:data:`LINE_BREAK`); a UTF-8 byte order mark before
    line 1 is not part of it. Invalid UTF-8 bytes become U+FFFD (Spark's text decoder), which
    validation flags.
    """
    whole = ctx.spark.read.text(str(file.path), wholetext=True)
    lines = whole.select(F.posexplode(F.split("value", LINE_BREAK)).alias("_position", "raw")).select(
        F.when(F.col("_position") == 0, F.regexp_replace("raw", f"^{_BOM}", "")).otherwise(F.col("raw")).alias("raw"),
        F.lit(file.relative).alias("source_file"),
        (F.col("_position") + 1).cast("bigint").alias("line"),
    )
    lines = lines.where(F.trim("raw") != "")
    if skip_header:
        lines = lines.where(F.col("line") > 1)
    return lines


def read_parquet_rows(ctx: JobContext, file: LandedFile, source: SourceConfig) -> DataFrame:
    """Parquet rows as JSON text (``raw``), ``line`` = 1-based row index in the file."""
    frame = ctx.spark.read.parquet(str(file.path))
    _check_columns(file, source, frame.columns)
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


# -- classification --------------------------------------------------------------------


def classify(
    rows: DataFrame, source: SourceConfig, existing_keys: DataFrame | None, erased: Column | None = None
) -> DataFrame:
    """Add ``_status``: ``erased`` | ``quarantined`` | ``duplicate`` | ``loaded``.

    Within the batch one row per primary key loads: the latest ``event_time`` (records) or the
    first seen (events, ``drop_existing_keys``); when ``existing_keys`` is given, a key already
    loaded by an earlier file is a duplicate too. ``erased`` (see :func:`erased_condition`) marks
    rows of erased people, before anything else: they are kept nowhere.
    """
    keys = [F.col(f"_as_read.`{k}`") for k in source.primary_key]
    if source.drop_existing_keys or source.event_time is None:
        order = [F.col("_file_order"), F.col("line")]
    else:
        order = [F.col(source.event_time).desc_nulls_last(), F.col("_file_order").desc(), F.col("line").desc()]
    bad = F.size("_reasons") > 0
    ranked = rows.withColumn(
        "_rank",
        F.when(~bad, F.row_number().over(Window.partitionBy(*keys, bad).orderBy(*order))),
    )
    status = F.when(bad, "quarantined").when(F.col("_rank") > 1, "duplicate")
    if existing_keys is not None:
        marked = existing_keys.select(*[F.col(k).alias(f"_existing_{k}") for k in source.primary_key]).distinct()
        condition = [F.col(f"_as_read.`{k}`") == F.col(f"_existing_{k}") for k in source.primary_key]
        ranked = ranked.join(marked.withColumn("_seen", F.lit(True)), condition, "left")
        status = status.when(F.col("_seen"), "duplicate")
        ranked = ranked.drop(*[f"_existing_{k}" for k in source.primary_key])
    if erased is not None:
        status = F.when(F.coalesce(erased, F.lit(False)), "erased").otherwise(status.otherwise("loaded"))
    else:
        status = status.otherwise("loaded")
    return ranked.withColumn("_status", status).drop("_rank", "_seen")


def erased_condition(ctx: JobContext, rows: DataFrame, source: SourceConfig) -> Column | None:
    """True where a row carries an identifier whose salted hash is in ``ops.erasures``; None if none.

    Each identifier the source maps (email, phone, CRM id, customer number, device ids and, for
    customer records, the source record id and the name + birth date + postcode key,
    :func:`lakecdp.erasure.person_key`) is standardised as silver would store it, then
    hashed with the erasure salt and looked up: the suppression list holds only hashes.
    The Kafka stream calls it for every micro-batch (:func:`lakecdp.ingest.stream.write_micro_batch`):
    one check for both ways in. ``ops.erasures`` is read at the call.
    """
    erasures = erased_hashes(ctx)
    if erasures is None:
        return None
    wanted: dict[str, list[str]] = {}
    for row in erasures.collect():
        wanted.setdefault(row["identifier_type"], []).append(row["salted_hash"])
    if not wanted:
        return None
    mapping, junk = source.mapping, source.junk_values

    def mapped(name: str) -> Column | None:
        return F.expr(mapping[name]).cast("string") if name in mapping else None

    values: dict[str, Column] = {}
    if (email := mapped("email")) is not None:
        values["email"] = standardise.normalise_email(email, junk)
    if (phone := mapped("phone")) is not None:
        country = mapped("country")
        values["phone"] = standardise.normalise_phone(
            phone,
            standardise.country_code(country) if country is not None else F.lit(None).cast("string"),
            default_region=source.default_region,
            junk_values=junk,
        )
    for name in ("crm_id", "customer_number", "device_id"):
        if (column := mapped(name)) is not None:
            values[name] = standardise.null_if_junk(F.trim(column), junk)
    if source.target == "customer_records" and (record := mapped("source_record_id")) is not None:
        values["source_record_id"] = F.trim(record)
    checks = [
        salted_hash_column(ctx, kind, column).isin(wanted[kind]) for kind, column in values.items() if kind in wanted
    ]
    if (
        source.target == "customer_records"
        and PERSON_KEY in wanted
        and all(name in mapping for name in ("first_name", "last_name", "date_of_birth", "postcode"))
    ):
        # name + birth date + postcode: the person without any email, phone or id
        key = person_key(
            mapped("first_name"), mapped("last_name"), F.expr(mapping["date_of_birth"]), mapped("postcode")
        )
        checks.append(salted_hash_column(ctx, PERSON_KEY, key).isin(wanted[PERSON_KEY]))
    if "device_ids" in mapping and "device_id" in wanted:
        hashes = wanted["device_id"]
        checks.append(
            F.exists(
                F.coalesce(F.expr(mapping["device_ids"]), F.array().cast("array<string>")),
                lambda d: salted_hash_column(ctx, "device_id", F.trim(d)).isin(hashes),
            )
        )
    if not checks:
        return None
    condition = F.lit(False)
    for check in checks:
        condition = condition | F.coalesce(check, F.lit(False))
    return condition


# -- writing ---------------------------------------------------------------------------


def _insert_new(ctx: JobContext, df: DataFrame, name: str, condition: str, *, evolve: bool = False) -> None:
    """Insert rows of ``df`` that do not match ``condition`` (over ``t`` and ``s``); idempotent."""
    if not ctx.tables.exists(ctx.spark, name):
        ctx.tables.append(df, name)
        return
    builder = ctx.tables.delta(ctx.spark, name).alias("t").merge(df.alias("s"), condition).whenNotMatchedInsertAll()
    if evolve:
        builder = builder.withSchemaEvolution()
    builder.execute()


def _upsert(
    ctx: JobContext,
    df: DataFrame,
    name: str,
    condition: str,
    update_condition: str | None = None,
    *,
    evolve: bool = False,
) -> None:
    if not ctx.tables.exists(ctx.spark, name):
        ctx.tables.append(df, name)
        return
    builder = (
        ctx.tables.delta(ctx.spark, name)
        .alias("t")
        .merge(df.alias("s"), condition)
        .whenMatchedUpdateAll(condition=update_condition)
        .whenNotMatchedInsertAll()
    )
    if evolve:
        builder = builder.withSchemaEvolution()
    builder.execute()


def _keys_condition(keys: Iterable[str]) -> str:
    return " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)


def bronze_rows(classified: DataFrame, source: SourceConfig, ctx: JobContext, rescued_keys: list[str]) -> DataFrame:
    """Rows that passed validation, as read, with provenance; drift rescued or evolved."""
    passed = classified.where(F.col("_status").isin("loaded", "duplicate"))
    provenance = [
        F.col("source_file").alias("_source_file"),
        F.col("line").alias("_line"),
        F.lit(ctx.as_of).cast("timestamp").alias("_ingested_at"),
        F.lit(ctx.run_id).alias("_run_id"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    ]
    if source.drift == "evolve":
        extra = F.from_json("_rescued", "map<string,string>")
        drift = [F.try_element_at(extra, F.lit(key)).alias(key) for key in rescued_keys]
    else:
        drift = [F.col("_rescued")]
    return passed.select("_as_read.*", *drift, *provenance)


def quarantine_rows(classified: DataFrame, ctx: JobContext) -> DataFrame:
    bad = classified.where(F.col("_status") == "quarantined")
    return bad.select(
        "raw",
        "source_file",
        "line",
        F.lit(None).cast("string").alias("kafka_topic"),
        F.lit(None).cast("int").alias("kafka_partition"),
        F.lit(None).cast("bigint").alias("kafka_offset"),
        F.col("_reasons").alias("reasons"),
        F.col("_detail").alias("detail"),
        F.lit(ctx.run_id).alias("run_id"),
        F.lit(ctx.as_of).cast("timestamp").alias("quarantined_at"),
    ).select(*QUARANTINE_SCHEMA.fieldNames())


def refused_file_rows(ctx: JobContext, refused: list[LandedFile]) -> DataFrame:
    """One quarantine row per file refused as a whole: no ``raw`` (its bytes were not read, a
    link's target never is), ``line`` null, the reason and what was seen in ``detail``."""
    return ctx.spark.createDataFrame(
        [(None, f.relative, None, None, None, None, [f.reason], f.detail, ctx.run_id, ctx.as_of) for f in refused],
        QUARANTINE_SCHEMA,
    )


def _latest(df: DataFrame, keys: list[str], order: str | None) -> DataFrame:
    """One row per key (the latest by ``order``); a MERGE source must not match a row twice."""
    if order is None:
        return df.dropDuplicates(keys)
    window = Window.partitionBy(*keys).orderBy(F.col(order).desc_nulls_last())
    return df.withColumn("_n", F.row_number().over(window)).where("_n = 1").drop("_n")


def write_silver(ctx: JobContext, loaded: DataFrame, source: SourceConfig, hook: WriteHook) -> None:
    """MERGE the loaded rows into the source's silver table(s)."""
    stamps = {"run_id": ctx.run_id, "ingested_at": ctx.as_of}
    if source.target == "customer_records":
        _write_records(ctx, standardise.to_customer_records(loaded, source, **stamps), hook)
    elif source.target == "events":
        events = standardise.to_events(loaded, source, **stamps)
        _insert_new(ctx, events, catalog.EVENTS.name, _keys_condition(SILVER_KEYS["events"]))
        hook(catalog.EVENTS.name)
    elif source.target == "orders":
        orders = standardise.to_orders(loaded, source, **stamps)
        _upsert(ctx, orders, catalog.ORDERS.name, _keys_condition(SILVER_KEYS["orders"]))
        hook(catalog.ORDERS.name)
        items = standardise.to_order_items(loaded, source)
        if ctx.tables.exists(ctx.spark, catalog.PRODUCTS.name):
            product_catalog = ctx.tables.read(ctx.spark, catalog.PRODUCTS.name).select(
                "product_id", F.col("category").alias("_catalog_category")
            )
            items = items.join(product_catalog, "product_id", "left").select(
                *[
                    F.coalesce("category", "_catalog_category").alias(c) if c == "category" else F.col(c)
                    for c in items.columns
                ]
            )
        _upsert(ctx, items, catalog.ORDER_ITEMS.name, _keys_condition(SILVER_KEYS["order_items"]))
        hook(catalog.ORDER_ITEMS.name)
    elif source.target == "products":
        products = standardise.to_products(loaded, source)
        _upsert(ctx, products, catalog.PRODUCTS.name, _keys_condition(SILVER_KEYS["products"]))
        hook(catalog.PRODUCTS.name)
    write_extra_records(ctx, loaded, source, ingested_at=ctx.as_of, hook=hook)


def write_extra_records(
    ctx: JobContext,
    loaded: DataFrame,
    source: SourceConfig,
    *,
    ingested_at: datetime,
    hook: WriteHook | None = None,
) -> None:
    """Upsert the rows of ``source`` that also feed customer_records (its ``also`` entries:
    web ``login`` events). Idempotent; the Kafka stream writes them through here too."""
    for extra in source.also:
        if extra.target != "customer_records":
            raise ValueError(f"{source.name}: also[] supports customer_records only, got {extra.target}")
        records = standardise.to_customer_records(
            loaded, source, extra=extra, run_id=ctx.run_id, ingested_at=ingested_at
        )
        _write_records(ctx, records, hook or (lambda _name: None))


def _write_records(ctx: JobContext, records: DataFrame, hook: WriteHook) -> None:
    name = catalog.CUSTOMER_RECORDS.name
    latest = _latest(records, SILVER_KEYS["customer_records"], "updated_at")
    # a later version of a record replaces it; an older or equal one (re-delivery) changes nothing.
    # evolve: a table written before the additive columns (middle_name, ...) gains them
    _upsert(
        ctx,
        latest,
        name,
        _keys_condition(SILVER_KEYS["customer_records"]),
        update_condition="s.updated_at > t.updated_at OR (t.updated_at IS NULL AND s.updated_at IS NOT NULL)",
        evolve=True,
    )
    hook(name)


# -- the job ---------------------------------------------------------------------------


def _ledger_hashes(ctx: JobContext, source: SourceConfig) -> set[str]:
    if not ctx.tables.exists(ctx.spark, LEDGER):
        return set()
    rows = ctx.tables.read(ctx.spark, LEDGER).where(F.col("source") == source.name).select("content_hash").collect()
    return {row[0] for row in rows}


def _existing_keys(ctx: JobContext, source: SourceConfig) -> DataFrame | None:
    """Primary keys loaded from files the ledger has completed (not from a crashed run's leftovers)."""
    name = catalog.BRONZE.named(source.name)
    if not source.drop_existing_keys or not ctx.tables.exists(ctx.spark, name):
        return None
    if not ctx.tables.exists(ctx.spark, LEDGER):
        return None
    ledger = ctx.tables.read(ctx.spark, LEDGER)
    done = ledger.where(F.col("source") == source.name)
    if "status" in ledger.columns:
        done = done.where(F.coalesce(F.col("status"), F.lit(LOADED)) == LOADED)
    done = done.select(F.col("path").alias("_source_file"))
    return ctx.tables.read(ctx.spark, name).join(done, "_source_file", "left_semi").select(*source.primary_key)


def ingest_source(ctx: JobContext, source: SourceConfig, *, hook: WriteHook | None = None) -> dict[str, int]:
    """Ingest the new files of one source; returns its counts.

    A file refused as a whole (symbolic link, unreadable) is quarantined, audited (one row
    read, one quarantined) and put in the ledger; the source's other files load all the same.
    """
    hook = hook or (lambda _name: None)
    seen = _ledger_hashes(ctx, source)
    new: list[LandedFile] = []
    skipped = 0
    for file in discover(ctx.project.landing, source):
        if file.content_hash in seen or (file.size == 0 and not file.refused):
            logger.info(
                "%s: %s already loaded or refused (same content), or empty: skipped", source.name, file.relative
            )
            skipped += 1
            continue
        seen.add(file.content_hash)
        new.append(file)
    counts = {"files_loaded": 0, "files_quarantined": 0, "files_skipped": skipped, **dict.fromkeys(_COUNTS, 0)}
    if not new:
        return counts

    rows, readable = validated_rows(ctx, source, [f for f in new if not f.refused])
    files = sorted([*readable, *[f for f in new if f.refused]], key=lambda f: _natural_key(f.relative))
    refused = [f for f in files if f.refused]
    for file in refused:
        logger.warning("%s: %s quarantined: %s", source.name, file.relative, file.detail)
    classified = None
    if rows is not None:
        classified = classify(rows, source, _existing_keys(ctx, source), erased_condition(ctx, rows, source)).persist()
    try:
        per_file = _per_file_counts(classified, files)
        # before any write: a line the reader lost (or made up) fails the run, nothing is marked done
        check_lines_read(source, files, per_file)
        reasons = _reason_counts(classified, files, per_file)

        if classified is not None:
            rescued_keys = _rescued_keys(classified) if source.drift == "evolve" else []
            _insert_new(
                ctx,
                bronze_rows(classified, source, ctx, rescued_keys),
                catalog.BRONZE.named(source.name),
                "t._source_file = s._source_file AND t._line = s._line AND t._row_hash = s._row_hash",
                evolve=source.drift == "evolve",
            )
            hook(catalog.BRONZE.named(source.name))
        if any(c["rows_quarantined"] for c in per_file.values()):
            quarantined = refused_file_rows(ctx, refused)
            if classified is not None:
                quarantined = quarantine_rows(classified, ctx).unionByName(quarantined)
            _insert_new(
                ctx,
                quarantined,
                catalog.QUARANTINE.named(source.name),
                "t.source_file <=> s.source_file AND t.line <=> s.line AND t.raw <=> s.raw",
            )
            hook(catalog.QUARANTINE.named(source.name))
        if classified is not None:
            loaded = classified.where(F.col("_status") == "loaded")
            write_silver(ctx, loaded, source, hook)
        _write_audit(ctx, source, per_file, reasons, hook)
        _write_ledger(ctx, source, files, per_file, hook)
    finally:
        if classified is not None:
            classified.unpersist()
    counts["files_loaded"] = len(files) - len(refused)
    counts["files_quarantined"] = len(refused)
    for value in per_file.values():
        for key in _COUNTS:
            counts[key] += value[key]
    return counts


def _per_file_counts(classified: DataFrame | None, files: list[LandedFile]) -> dict[str, dict[str, int]]:
    """Audit counts per file; a refused file counts as one row read and quarantined (its row in
    quarantine), so audit and quarantine agree."""
    result = {f.relative: dict.fromkeys(_COUNTS, 0) for f in files}
    for file in files:
        if file.refused:
            result[file.relative].update(rows_read=1, rows_quarantined=1)
    if classified is None:
        return result
    rows = classified.groupBy("source_file", "_status").count().collect()
    for row in rows:
        entry = result[row["source_file"]]
        entry[_STATUS_COUNT[row["_status"]]] += row["count"]
        entry["rows_read"] += row["count"]
    return result


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


def _reason_counts(
    classified: DataFrame | None, files: list[LandedFile], per_file: Mapping[str, Mapping[str, int]]
) -> list[tuple[str, str, int]]:
    """(file, reason, rows): quarantine reasons, warnings of loaded rows, duplicates, refused
    files (1 row), and ``NO_ROWS`` (0 rows) for a non-empty file that held none."""
    found = [(f.relative, f.reason, 1) for f in files if f.refused]
    found += [
        (f.relative, NO_ROWS, 0)
        for f in files
        if not f.refused and f.size > 0 and per_file[f.relative]["rows_read"] == 0
    ]
    if classified is None:
        return sorted(found)
    codes = (
        F.when(F.col("_status") == "quarantined", F.col("_reasons"))
        .when(F.col("_status") == "duplicate", F.array(F.lit(DUPLICATE)))
        .when(F.col("_status") == "erased", F.array(F.lit(ERASED)))
        .otherwise(F.col("_warnings"))
    )
    rows = (
        classified.select("source_file", F.explode(codes).alias("reason"))
        .groupBy("source_file", "reason")
        .count()
        .collect()
    )
    return sorted([*found, *((row["source_file"], row["reason"], int(row["count"])) for row in rows)])


def _rescued_keys(classified: DataFrame) -> list[str]:
    rows = (
        classified.where(F.col("_rescued").isNotNull())
        .select(F.explode(F.map_keys(F.from_json("_rescued", "map<string,string>"))).alias("k"))
        .distinct()
        .collect()
    )
    return sorted(row[0] for row in rows)


def check_audit_counts(where: str, counts: Mapping[str, int]) -> None:
    """Raise :class:`AuditError` unless read = loaded + quarantined + duplicates + erased, none below 0.

    ``where`` names the file (or Kafka micro-batch) in the message.
    """
    c = counts
    negative = [f"{key} {c[key]}" for key in _COUNTS if c[key] < 0]
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


def _write_audit(
    ctx: JobContext,
    source: SourceConfig,
    per_file: dict[str, dict[str, int]],
    reasons: list[tuple[str, str, int]],
    hook: WriteHook,
) -> None:
    for file, c in per_file.items():
        check_audit_counts(f"{source.name} {file}", c)
    spark = ctx.spark
    audit = spark.createDataFrame(
        [audit_row(ctx.run_id, source.name, file, c, ctx.as_of) for file, c in per_file.items()],
        INGEST_AUDIT_SCHEMA,
    )
    # keyed by file: a re-run after a crash replaces the half-done run's row, never adds one
    # rows_erased and stream_batch came later: older warehouses get the columns on their next run
    _upsert(
        ctx,
        audit,
        AUDIT,
        "t.source <=> s.source AND t.source_file <=> s.source_file AND s.source_file IS NOT NULL",
        evolve=True,
    )
    hook(AUDIT)
    quality = spark.createDataFrame(
        [(ctx.run_id, source.name, file, reason, rows, ctx.as_of) for file, reason, rows in reasons],
        DATA_QUALITY_SCHEMA,
    )
    files = list(per_file)
    if ctx.tables.exists(spark, DATA_QUALITY):
        # replace this file's summary (a crashed run may have written one)
        ctx.tables.delta(spark, DATA_QUALITY).delete(
            (F.col("source") == source.name) & F.col("source_file").isin(files)
        )
    if reasons:
        ctx.tables.append(quality, DATA_QUALITY)
    else:
        ctx.tables.create_if_missing(spark, DATA_QUALITY, DATA_QUALITY_SCHEMA)
    hook(DATA_QUALITY)
    if reasons:
        logger.info(
            "data quality %s:\n%s",
            source.name,
            "\n".join(f"  {file:<45} {reason:<18} {rows:>7}" for file, reason, rows in reasons),
        )


def _write_ledger(
    ctx: JobContext,
    source: SourceConfig,
    files: list[LandedFile],
    per_file: Mapping[str, Mapping[str, int]],
    hook: WriteHook,
) -> None:
    def status(file: LandedFile) -> tuple[str, str | None]:
        if file.refused:
            return QUARANTINED, file.reason
        if file.size > 0 and per_file[file.relative]["rows_read"] == 0:
            return LOADED, NO_ROWS
        return LOADED, None

    ledger = ctx.spark.createDataFrame(
        [(source.name, f.relative, f.size, f.content_hash, ctx.run_id, ctx.as_of, *status(f)) for f in files],
        INGEST_FILES_SCHEMA,
    )
    # status and reason came later: older ledgers get the columns on their next run
    _insert_new(ctx, ledger, LEDGER, "t.source = s.source AND t.content_hash = s.content_hash", evolve=True)
    hook(LEDGER)


def ingest(
    ctx: JobContext,
    *,
    only: Iterable[str] | None = None,
    hook: WriteHook | None = None,
) -> dict[str, int]:
    """Ingest every configured source (or ``only`` those) from the landing folder.

    Args:
        ctx: the job context (landing folder, tables, run id, as-of).
        only: source names to ingest; default all in ``conf/sources``.
        hook: called with each table name after it is written (fault injection in tests).

    Returns:
        Totals over sources: ``files_loaded, files_skipped, rows_read, rows_loaded,
        rows_quarantined, duplicates_removed, rows_erased``.

    Example:
        >>> ingest(ctx, only=["crm"])
    """
    sources = load_sources(ctx.project.conf_dir)
    wanted = list(only) if only else list(sources)
    unknown = sorted(set(wanted) - set(sources))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; configured: {sorted(sources)}")
    # the catalog first: order lines take their category from silver.products
    wanted.sort(key=lambda name: (sources[name].target != "products", name))
    totals: dict[str, int] = {}
    for name in wanted:
        counts = ingest_source(ctx, sources[name], hook=hook)
        logger.info("ingest %s: %s", name, counts)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline step ``ingest``: every configured source."""
    return ingest(ctx)
