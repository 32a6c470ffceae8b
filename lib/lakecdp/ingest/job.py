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
non-blank lines counted from the file's bytes before anything is written
(:class:`~lakecdp.ingest.audit.AuditError`).

A row carrying an identifier of a person erased earlier (its salted hash is in ``ops.erasures``,
see :mod:`lakecdp.erasure`) is refused: written nowhere, not even quarantine, and counted as
``rows_erased`` with reason ``ERASED``.

The job's parts, one module each: :mod:`~lakecdp.ingest.landing` (the files found, hashed and
line-counted), :mod:`~lakecdp.ingest.reading` (their rows, validated), :mod:`~lakecdp.ingest.classify`
(loaded / duplicate / quarantined / erased), :mod:`~lakecdp.ingest.rows` (bronze and quarantine
rows, shared with the Kafka stream), :mod:`~lakecdp.ingest.audit` (the counts and their checks);
this module writes the tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.ingest import standardise
from lakecdp.ingest.audit import (
    COUNTS,
    AuditError,
    audit_row,
    check_audit_counts,
    check_lines_read,
    per_file_counts,
    reason_counts,
)
from lakecdp.ingest.classify import classify, erased_condition
from lakecdp.ingest.landing import LandedFile, discover, inspect_file, natural_key
from lakecdp.ingest.reading import validated_rows
from lakecdp.ingest.rows import bronze_rows, quarantine_rows, refused_file_rows, rescued_keys
from lakecdp.ingest.schemas import DATA_QUALITY_SCHEMA, INGEST_AUDIT_SCHEMA, INGEST_FILES_SCHEMA, SILVER_KEYS
from lakecdp.ingest.sources import SourceConfig, load_sources
from lakecdp.ingest.validate import NO_ROWS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.context import JobContext

# the job's parts, imported from here by callers that predate the split
__all__ = [
    "AUDIT",
    "AuditError",
    "DATA_QUALITY",
    "LEDGER",
    "LandedFile",
    "check_lines_read",
    "erased_condition",
    "ingest",
    "ingest_source",
    "inspect_file",
    "run",
    "write_extra_records",
    "write_silver",
]

logger = logging.getLogger(__name__)

LEDGER = catalog.INGEST_FILES.name
AUDIT = catalog.INGEST_AUDIT.name
DATA_QUALITY = catalog.DATA_QUALITY.name

#: called with the logical table name after each write; tests raise from it to simulate a crash
WriteHook = Callable[[str], None]

LOADED = "loaded"
QUARANTINED = "quarantined"

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


def _latest(df: DataFrame, keys: list[str], order: str | None) -> DataFrame:
    """One row per key (the latest by ``order``); a MERGE source must not match a row twice."""
    if order is None:
        return df.dropDuplicates(keys)
    window = Window.partitionBy(*keys).orderBy(F.col(order).desc_nulls_last())
    return df.withColumn("_n", F.row_number().over(window)).where("_n = 1").drop("_n")


def write_silver(ctx: JobContext, loaded: DataFrame, source: SourceConfig, hook: WriteHook) -> None:
    """MERGE the loaded rows into the source's silver table(s)."""
    run_id, ingested_at = ctx.run_id, ctx.as_of
    if source.target == "customer_records":
        _write_records(
            ctx, standardise.to_customer_records(loaded, source, run_id=run_id, ingested_at=ingested_at), hook
        )
    elif source.target == "events":
        events = standardise.to_events(loaded, source, run_id=run_id, ingested_at=ingested_at)
        _insert_new(ctx, events, catalog.EVENTS.name, _keys_condition(SILVER_KEYS["events"]))
        hook(catalog.EVENTS.name)
    elif source.target == "orders":
        orders = standardise.to_orders(loaded, source, run_id=run_id, ingested_at=ingested_at)
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
    counts = {"files_loaded": 0, "files_quarantined": 0, "files_skipped": skipped, **dict.fromkeys(COUNTS, 0)}
    if not new:
        return counts

    rows, readable = validated_rows(ctx, source, [f for f in new if not f.refused])
    files = sorted([*readable, *[f for f in new if f.refused]], key=lambda f: natural_key(f.relative))
    refused = [f for f in files if f.refused]
    for file in refused:
        logger.warning("%s: %s quarantined: %s", source.name, file.relative, file.detail)
    classified = None
    if rows is not None:
        classified = classify(rows, source, _existing_keys(ctx, source), erased_condition(ctx, rows, source)).persist()
    try:
        per_file = per_file_counts(classified, files)
        # before any write: a line the reader lost (or made up) fails the run, nothing is marked done
        check_lines_read(source, files, per_file)
        reasons = reason_counts(classified, files, per_file)

        if classified is not None:
            passed = classified.where(F.col("_status").isin("loaded", "duplicate"))
            _insert_new(
                ctx,
                bronze_rows(
                    passed,
                    source,
                    run_id=ctx.run_id,
                    ingested_at=ctx.as_of,
                    rescued_keys=rescued_keys(classified) if source.drift == "evolve" else None,
                ),
                catalog.BRONZE.named(source.name),
                "t._source_file = s._source_file AND t._line = s._line AND t._row_hash = s._row_hash",
                evolve=source.drift == "evolve",
            )
            hook(catalog.BRONZE.named(source.name))
        if any(c["rows_quarantined"] for c in per_file.values()):
            quarantined = refused_file_rows(ctx, refused)
            if classified is not None:
                rejected = classified.where(F.col("_status") == "quarantined")
                quarantined = quarantine_rows(rejected, run_id=ctx.run_id, quarantined_at=ctx.as_of).unionByName(
                    quarantined
                )
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
        for key in COUNTS:
            counts[key] += value[key]
    return counts


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
