"""Batch ingest job: landing files -> bronze, quarantine, silver, with an exactly-once file ledger.

For each configured source the job finds the files in the landing folder that the ledger
(``ops.ingest_files``) has not seen (by content hash), reads them as text with exact physical
line numbers (Parquet: row index), validates every row (:func:`parse_and_validate`), and writes
in this order, each write idempotent (MERGE on its keys):

1. ``bronze.<source>``: rows that passed (duplicates included), as read, + provenance;
2. ``quarantine.<source>``: rows that failed, raw, with reasons; a file refused as a whole
   (a symbolic link, an unreadable file) as one row with ``line`` null;
3. silver tables (MERGE on their primary keys; events insert-only);
4. ``ops.ingest_audit`` (per file: read = loaded + quarantined + duplicates + erased, checked
   before step 1) and ``ops.data_quality`` (rows per reason);
5. the ledger entry, last: a run killed before it re-does the file and ends in the same state.
   A refused file is in the ledger too (``status`` quarantined, ``reason``): reported once, and
   a corrected delivery (other bytes) loads.

Steps 1-3 run source by source; steps 4 and 5 once for all the sources of the run (one commit
per table, not one per source), also when a later source fails: the sources done are audited
and ledgered, then the error is raised.

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
from dataclasses import dataclass
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
    file_counts,
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


def _ledger_hashes(ctx: JobContext, sources: Iterable[str]) -> dict[str, set[str]]:
    """Content hashes of the files the ledger holds, per source: one read for the whole run."""
    found: dict[str, set[str]] = {name: set() for name in sources}
    if not found or not ctx.tables.exists(ctx.spark, LEDGER):
        return found
    rows = (
        ctx.tables.read(ctx.spark, LEDGER)
        .where(F.col("source").isin(list(found)))
        .select("source", "content_hash")
        .collect()
    )
    for row in rows:
        found[row[0]].add(row[1])
    return found


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


def _materialised(df: DataFrame) -> tuple[DataFrame, list[int]]:
    """``df`` computed once and kept (memory, else disk), as a DataFrame whose plan is just the
    kept rows; and the ids of the kept blocks, for :func:`_release`.

    Every write of a source reads the classified rows (counts, bronze, quarantine, silver, a
    MERGE's source twice). ``persist`` would keep the rows but each of those queries would still
    be planned over the validation plan (hundreds of expressions) and matched against the cache;
    a local checkpoint leaves them a plan of one node.
    """
    context = df.sparkSession.sparkContext._jsc  # the JVM context: its kept RDDs by id
    before = set(context.getPersistentRDDs().keySet())
    kept = df.localCheckpoint(eager=True)
    return kept, sorted(set(context.getPersistentRDDs().keySet()) - before)


def _release(ctx: JobContext, blocks: list[int]) -> None:
    """Drop the rows :func:`_materialised` kept (else they stay until the JVM collects them)."""
    if not blocks:
        return
    kept = ctx.spark.sparkContext._jsc.getPersistentRDDs()
    for rdd_id in blocks:
        if kept.containsKey(rdd_id):
            kept.get(rdd_id).unpersist(False)


@dataclass(frozen=True)
class _Loaded:
    """A source whose new files are in bronze, quarantine and silver: what its audit, data
    quality and ledger rows are made of (written by :func:`_write_ops`)."""

    source: SourceConfig
    files: list[LandedFile]
    per_file: dict[str, dict[str, int]]
    reasons: list[tuple[str, str, int]]


def ingest_source(ctx: JobContext, source: SourceConfig, *, hook: WriteHook | None = None) -> dict[str, int]:
    """Ingest the new files of one source; returns its counts.

    A file refused as a whole (symbolic link, unreadable) is quarantined, audited (one row
    read, one quarantined) and put in the ledger; the source's other files load all the same.
    """
    hook = hook or (lambda _name: None)
    loaded, counts = _load_source(ctx, source, _ledger_hashes(ctx, [source.name])[source.name], hook)
    _write_ops(ctx, [loaded] if loaded is not None else [], hook)
    return counts


def _load_source(
    ctx: JobContext, source: SourceConfig, seen: set[str], hook: WriteHook
) -> tuple[_Loaded | None, dict[str, int]]:
    """Bronze, quarantine and silver for the new files of ``source`` (content hash not in
    ``seen``); its ops rows are returned, for :func:`_write_ops` to write after them."""
    seen = set(seen)
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
        return None, counts

    rows, readable = validated_rows(ctx, source, [f for f in new if not f.refused])
    files = sorted([*readable, *[f for f in new if f.refused]], key=lambda f: natural_key(f.relative))
    refused = [f for f in files if f.refused]
    for file in refused:
        logger.warning("%s: %s quarantined: %s", source.name, file.relative, file.detail)
    classified = None
    blocks: list[int] = []
    if rows is not None:
        classified, blocks = _materialised(
            classify(rows, source, _existing_keys(ctx, source), erased_condition(ctx, rows, source))
        )
    try:
        per_file, reasons = file_counts(classified, files)
        # before any write: a line the reader lost (or made up) fails the run, nothing is marked done
        check_lines_read(source, files, per_file)
        for relative, c in per_file.items():
            check_audit_counts(f"{source.name} {relative}", c)

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
    finally:
        _release(ctx, blocks)
    counts["files_loaded"] = len(files) - len(refused)
    counts["files_quarantined"] = len(refused)
    for value in per_file.values():
        for key in COUNTS:
            counts[key] += value[key]
    return _Loaded(source, files, per_file, reasons), counts


def _write_ops(ctx: JobContext, done: list[_Loaded], hook: WriteHook) -> None:
    """The audit, data quality and ledger rows of ``done`` (sources already in bronze,
    quarantine and silver): one write per table for all of them, the ledger last."""
    if not done:
        return
    _write_audit(ctx, done, hook)
    _write_ledger(ctx, done, hook)


def _write_audit(ctx: JobContext, done: list[_Loaded], hook: WriteHook) -> None:
    spark = ctx.spark
    audit = spark.createDataFrame(
        [
            audit_row(ctx.run_id, item.source.name, file, c, ctx.as_of)
            for item in done
            for file, c in item.per_file.items()
        ],
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
    reasons = [(item.source.name, file, reason, rows) for item in done for file, reason, rows in item.reasons]
    quality = spark.createDataFrame(
        [(ctx.run_id, source, file, reason, rows, ctx.as_of) for source, file, reason, rows in reasons],
        DATA_QUALITY_SCHEMA,
    )
    if ctx.tables.exists(spark, DATA_QUALITY):
        # replace these files' summaries (a crashed run may have written some)
        replaced = F.lit(False)
        for item in done:
            replaced = replaced | (
                (F.col("source") == item.source.name) & F.col("source_file").isin(list(item.per_file))
            )
        ctx.tables.delta(spark, DATA_QUALITY).delete(replaced)
    if reasons:
        ctx.tables.append(quality, DATA_QUALITY)
    else:
        ctx.tables.create_if_missing(spark, DATA_QUALITY, DATA_QUALITY_SCHEMA)
    hook(DATA_QUALITY)
    for item in done:
        if item.reasons:
            logger.info(
                "data quality %s:\n%s",
                item.source.name,
                "\n".join(f"  {file:<45} {reason:<18} {rows:>7}" for file, reason, rows in item.reasons),
            )


def _write_ledger(ctx: JobContext, done: list[_Loaded], hook: WriteHook) -> None:
    def status(file: LandedFile, per_file: Mapping[str, Mapping[str, int]]) -> tuple[str, str | None]:
        if file.refused:
            return QUARANTINED, file.reason
        if file.size > 0 and per_file[file.relative]["rows_read"] == 0:
            return LOADED, NO_ROWS
        return LOADED, None

    ledger = ctx.spark.createDataFrame(
        [
            (item.source.name, f.relative, f.size, f.content_hash, ctx.run_id, ctx.as_of, *status(f, item.per_file))
            for item in done
            for f in item.files
        ],
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
    write_hook = hook or (lambda _name: None)
    seen = _ledger_hashes(ctx, wanted)
    totals: dict[str, int] = {}
    done: list[_Loaded] = []
    try:
        for name in wanted:
            loaded, counts = _load_source(ctx, sources[name], seen[name], write_hook)
            if loaded is not None:
                done.append(loaded)
            logger.info("ingest %s: %s", name, counts)
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
    finally:
        # the sources done so far are complete even when a later one fails: audited and ledgered
        # (a killed run writes none of it and the next run re-does their files, to the same state)
        _write_ops(ctx, done, write_hook)
    return totals


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline step ``ingest``: every configured source."""
    return ingest(ctx)
