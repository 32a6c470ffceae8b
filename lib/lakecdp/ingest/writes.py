"""The writes of the ingest tables, for every way in and both engines: the one module that writes
bronze, quarantine, the silver tables, ``ops.ingest_audit``, ``ops.data_quality`` and the ledger
``ops.ingest_files`` (issue #15; tests/test_catalog.py holds every write to its table's writer).

Callers (the batch job on either engine, :mod:`lakecdp.ingest.embedded_batch`, the Kafka stream,
the HTTP intake's pickup on either engine) decide which rows; this module decides how they are
stored, with the same keys on both engines:

============================  ================================  ==========================================
table                         key                               write
============================  ================================  ==========================================
``bronze.<source>``           file, line, row hash / Kafka pos  insert if new
``quarantine.<source>``       file, line, raw / Kafka position  insert if new
``silver.events``             event_id                          insert if new
``silver.customer_records``   record_id                         upsert when the row is newer
``silver.orders`` / items     order_id / (order_id, line)       upsert
``silver.products``           product_id                        upsert
``ops.ingest_audit``          source, source_file (, batch)     upsert (file) / insert if new (batch)
``ops.data_quality``          source, source_file               the files' rows replaced
``ops.ingest_files``          source, content_hash              insert if new, last
============================  ================================  ==========================================

On Spark through Delta MERGEs (:class:`lakecdp.tables.Tables`), on the embedded engine through
delta-rs (:class:`lakecdp.delta_store.DeltaStore`: tables it creates have no deletion vectors, so
either engine continues the other's tables).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from operator import attrgetter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Window
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.delta_store import arrow_schema, text_literal
from lakecdp.ingest import embedded, standardise
from lakecdp.ingest.python_rules import null_like_key
from lakecdp.ingest.audit import audit_row
from lakecdp.ingest.schemas import (
    DATA_QUALITY_SCHEMA,
    INGEST_AUDIT_SCHEMA,
    INGEST_FILES_SCHEMA,
    SILVER_KEYS,
    SILVER_SCHEMAS,
)
from lakecdp.ingest.validate import NO_ROWS

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import Column, DataFrame

    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore
    from lakecdp.ingest.embedded import CheckedRow
    from lakecdp.ingest.landing import LandedFile
    from lakecdp.ingest.sources import ExtraTarget, SourceConfig

logger = logging.getLogger(__name__)

LEDGER = catalog.INGEST_FILES.name
AUDIT = catalog.INGEST_AUDIT.name
DATA_QUALITY = catalog.DATA_QUALITY.name
LOADED = "loaded"
QUARANTINED = "quarantined"

#: called with the logical table name after each write; tests raise from it to simulate a crash
WriteHook = Callable[[str], None]


@dataclass(frozen=True)
class LoadedFiles:
    """A source whose new files are in bronze, quarantine and silver: what its audit, data
    quality and ledger rows are made of (written by :func:`write_ops`)."""

    source: SourceConfig
    files: list[LandedFile]
    per_file: dict[str, dict[str, int]]
    reasons: list[tuple[str, str, int]]


def write_ops(ctx: JobContext, done: list[LoadedFiles], hook: WriteHook, *, store: DeltaStore | None = None) -> None:
    """The audit, data quality and ledger rows of ``done`` (sources already in bronze,
    quarantine and silver): one write per table for all of them, the ledger last; through
    ``store`` (delta-rs) when given, else Spark."""
    if not done:
        return
    if store is None:
        _write_ops_spark(ctx, done, hook)
    else:
        _write_ops_delta(ctx, store, done, hook)


def _ledger_status(file: LandedFile, per_file: Mapping[str, Mapping[str, int]]) -> tuple[str, str | None]:
    if file.refused:
        return QUARANTINED, file.reason
    if file.size > 0 and per_file[file.relative]["rows_read"] == 0:
        return LOADED, NO_ROWS
    return LOADED, None


# -- Spark: Delta MERGEs ----------------------------------------------------------------------


def _insert_new(
    ctx: JobContext,
    df: DataFrame,
    name: str,
    condition: str,
    *,
    evolve: bool = False,
    scope: Column | None = None,
) -> None:
    """Insert rows of ``df`` that do not match ``condition`` (over ``t`` and ``s``); idempotent.

    ``scope``: a condition every stored row that could match a row of ``df`` meets (its landed
    files). When no stored row meets it -- every run but one that re-does a crashed run's files
    -- ``df`` is appended: what the MERGE would insert (every row), without joining the table
    (:func:`_none_in_scope`).
    """
    if not ctx.tables.exists(ctx.spark, name) or _none_in_scope(ctx, df, name, scope):
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
    scope: Column | None = None,
) -> None:
    """Update the rows of ``name`` that match ``condition`` (when ``update_condition``), insert
    the others; ``scope`` as :func:`_insert_new`'s: no stored row in it, ``df`` is appended."""
    if not ctx.tables.exists(ctx.spark, name) or _none_in_scope(ctx, df, name, scope):
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


def _none_in_scope(ctx: JobContext, df: DataFrame, name: str, scope: Column | None) -> bool:
    """True when no row of the stored table ``name`` meets ``scope`` and ``df`` has the table's
    columns (else the MERGE's schema evolution adds them): appending ``df`` is then what a MERGE
    of it would do. One query, which Delta's file statistics mostly answer without reading data."""
    if scope is None:
        return False
    stored = ctx.tables.read(ctx.spark, name)
    return set(stored.columns) == set(df.columns) and stored.where(scope).isEmpty()


def write_bronze(
    ctx: JobContext, rows: DataFrame, source: SourceConfig, *, evolve: bool = False, files: Iterable[str] | None = None
) -> None:
    """Insert a landed file's rows that passed into ``bronze.<source>`` when new (file, line, row hash).

    Args:
        files: the landing paths ``rows`` come from (all of them, when given): bronze holding no
            row of them, the rows are appended without a MERGE.
    """
    _insert_new(
        ctx,
        rows,
        catalog.BRONZE.named(source.name),
        "t._source_file = s._source_file AND t._line = s._line AND t._row_hash = s._row_hash",
        evolve=evolve,
        scope=F.col("_source_file").isin(sorted(files)) if files is not None else None,
    )


def write_quarantine(
    ctx: JobContext, rows: DataFrame, source: SourceConfig, *, files: Iterable[str] | None = None
) -> None:
    """Insert quarantine rows of landed files when new (file, line, raw; null-safe).

    Args:
        files: the landing paths ``rows`` come from (all of them, when given): quarantine holding
            no row of them, the rows are appended without a MERGE.
    """
    _insert_new(
        ctx,
        rows,
        catalog.QUARANTINE.named(source.name),
        "t.source_file <=> s.source_file AND t.line <=> s.line AND t.raw <=> s.raw",
        scope=F.col("source_file").isin(sorted(files)) if files is not None else None,
    )


def create_stream_tables(ctx: JobContext, source: SourceConfig) -> None:
    """The tables every stream (and the batch ingest) shares, created before any query runs so
    that two first micro-batches never race to create them."""
    from lakecdp.ingest.schemas import SILVER_SCHEMAS

    ctx.tables.create_if_missing(ctx.spark, catalog.EVENTS.name, SILVER_SCHEMAS["events"])
    ctx.tables.create_if_missing(ctx.spark, AUDIT, INGEST_AUDIT_SCHEMA)
    for extra in source.also:
        ctx.tables.create_if_missing(ctx.spark, catalog.SILVER[extra.target].name, SILVER_SCHEMAS[extra.target])


def _keys_condition(keys: Iterable[str]) -> str:
    return " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)


def _latest(df: DataFrame, keys: list[str], order: str | None) -> DataFrame:
    """One row per key (the latest by ``order``); a MERGE source must not match a row twice."""
    if order is None:
        return df.dropDuplicates(keys)
    window = Window.partitionBy(*keys).orderBy(F.col(order).desc_nulls_last())
    return df.withColumn("_n", F.row_number().over(window)).where("_n = 1").drop("_n")


def write_silver(ctx: JobContext, loaded: DataFrame, source: SourceConfig, hook: WriteHook) -> None:
    """MERGE the loaded rows into the source's silver table(s).

    ``loaded`` holds at most one row per primary key as read (what ``classify`` loads).
    """
    run_id, ingested_at = ctx.run_id, ctx.as_of
    if source.target == "customer_records":
        _write_source_records(ctx, loaded, source, None, ingested_at=ingested_at)
        hook(catalog.CUSTOMER_RECORDS.name)
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
        _write_source_records(ctx, loaded, source, extra, ingested_at=ingested_at)
        (hook or (lambda _name: None))(catalog.CUSTOMER_RECORDS.name)


def _write_source_records(
    ctx: JobContext, loaded: DataFrame, source: SourceConfig, extra: ExtraTarget | None, *, ingested_at: datetime
) -> None:
    """``loaded`` (validated rows of ``source``, or of its ``extra`` target) standardised into
    silver.customer_records: the latest row per record id replaces the stored one when newer.

    Only rows whose upsert would write something are standardised: a row whose record is stored
    with the same or a later ``updated_at`` (a re-delivered record) is left out first -- leaving
    them out before the latest row per record id is picked picks the same row, since a record's
    latest row is left out only when every row of that record is. The rows of records not stored
    yet are appended (what the MERGE would insert, without its join), the others MERGEd; when
    the table holds no record of the source at all, every row is appended without the look-up.
    """
    name = catalog.CUSTOMER_RECORDS.name
    one_per_record = extra is None and _record_id_is_key(source)

    def records(rows: DataFrame) -> DataFrame:
        standardised = standardise.to_customer_records(
            rows, source, extra=extra, run_id=ctx.run_id, ingested_at=ingested_at
        )
        if one_per_record:
            # one row per record id already: no window (a sort of every row, a shuffle, a sort)
            return standardised
        return _latest(standardised, SILVER_KEYS["customer_records"], "updated_at")

    if not ctx.tables.exists(ctx.spark, name):
        ctx.tables.append(records(loaded), name)
        return
    stored = ctx.tables.read(ctx.spark, name)
    if set(stored.columns) != set(SILVER_SCHEMAS["customer_records"].fieldNames()):
        # a table written before the additive columns (middle_name, ...): the MERGE's schema
        # evolution gives it them
        _merge_records(ctx, records(loaded))
        return
    if stored.where(F.col("source") == standardise.record_label(source, extra)).isEmpty():
        # no record of this source stored yet (its first load): every row is new and appended
        # without being looked up (the files' statistics on ``source`` answer this, no row read)
        ctx.tables.append(records(loaded), name)
        return
    mapping = extra.mapping if extra is not None else source.mapping
    schema = SILVER_SCHEMAS["customer_records"]
    if extra is not None:
        # to_customer_records keeps only these rows (web: logins); the others need no look-up
        loaded = loaded.where(F.expr(extra.filter))

    def mapped(column: str) -> Column:
        value = F.expr(mapping[column]) if column in mapping else F.lit(None)
        return value.cast(schema[column].dataType)

    marked = loaded.withColumns(
        {
            "_record_id": standardise.record_id_column(
                standardise.record_label(source, extra), mapped("source_record_id")
            ).cast(schema["record_id"].dataType),
            "_updated_at": mapped("updated_at"),
        }
    ).join(
        stored.select(
            F.col("record_id").alias("_stored_id"),
            F.col("updated_at").alias("_stored_at"),
            F.lit(True).alias("_stored"),
        ),
        F.col("_record_id").eqNullSafe(F.col("_stored_id")),
        "left",
    )
    is_stored = F.col("_stored").isNotNull()
    newer = F.col("_updated_at").isNotNull() & (
        F.col("_stored_at").isNull() | (F.col("_updated_at") > F.col("_stored_at"))
    )
    helpers = ["_record_id", "_updated_at", "_stored_id", "_stored_at", "_stored"]
    # one pass says which of the two writes has rows
    new, changed = marked.select(
        F.count_if(~is_stored).alias("new"), F.count_if(is_stored & newer).alias("changed")
    ).first() or (0, 0)
    if new:
        ctx.tables.append(records(marked.where(~is_stored).drop(*helpers)), name)
    if changed:
        _merge_records(ctx, records(marked.where(is_stored & newer).drop(*helpers)))


def _record_id_is_key(source: SourceConfig) -> bool:
    """True when the source's record id is its primary key as read: its one key column, of type
    string (a typed value is then the text as read), mapped as it is to ``source_record_id``.

    The rows :func:`write_silver` gets hold one row per primary key as read (``classify`` loads
    one per key), so they then hold one per record id: ``<label>:<key>`` tells keys apart.
    """
    if len(source.primary_key) != 1 or "source_record_id" not in source.mapping:
        return False
    key = source.primary_key[0]
    if key not in source.column_names or source.column(key).type != "string":
        return False
    return _mapped_as_is(source, "source_record_id", key)


def _mapped_as_is(source: SourceConfig, target: str, column: str) -> bool:
    """Whether ``source`` maps ``column`` as it is (the bare name, quoted or not) to ``target``."""
    expression = source.mapping.get(target)
    return expression is not None and expression.strip().removeprefix("`").removesuffix("`") == column


def _merge_records(ctx: JobContext, latest: DataFrame) -> None:
    # a later version of a record replaces it; an older or equal one (re-delivery) changes nothing.
    # evolve: a table written before the additive columns (middle_name, ...) gains them
    _upsert(
        ctx,
        latest,
        catalog.CUSTOMER_RECORDS.name,
        _keys_condition(SILVER_KEYS["customer_records"]),
        update_condition=_NEWER_RECORD,
        evolve=True,
    )


def _write_ops_spark(ctx: JobContext, done: list[LoadedFiles], hook: WriteHook) -> None:
    _write_audit(ctx, done, hook)
    _write_ledger(ctx, done, hook)


def _write_audit(ctx: JobContext, done: list[LoadedFiles], hook: WriteHook) -> None:
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
        scope=_any_of(
            (F.col("source") == item.source.name) & F.col("source_file").isin(list(item.per_file)) for item in done
        ),
    )
    hook(AUDIT)
    reasons = [(item.source.name, file, reason, rows) for item in done for file, reason, rows in item.reasons]
    quality = spark.createDataFrame(
        [(ctx.run_id, source, file, reason, rows, ctx.as_of) for source, file, reason, rows in reasons],
        DATA_QUALITY_SCHEMA,
    )
    if ctx.tables.exists(spark, DATA_QUALITY):
        # replace these files' summaries (a crashed run may have written some); a DELETE only
        # when one is stored: the look-up reads the files' statistics, a DELETE scans and commits
        replaced = F.lit(False)
        for item in done:
            replaced = replaced | (
                (F.col("source") == item.source.name) & F.col("source_file").isin(list(item.per_file))
            )
        if not ctx.tables.read(spark, DATA_QUALITY).where(replaced).isEmpty():
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


def _any_of(conditions: Iterable[Column]) -> Column:
    result = F.lit(False)
    for condition in conditions:
        result = result | condition
    return result


def _write_ledger(ctx: JobContext, done: list[LoadedFiles], hook: WriteHook) -> None:
    ledger = ctx.spark.createDataFrame(
        [
            (
                item.source.name,
                f.relative,
                f.size,
                f.content_hash,
                ctx.run_id,
                ctx.as_of,
                *_ledger_status(f, item.per_file),
            )
            for item in done
            for f in item.files
        ],
        INGEST_FILES_SCHEMA,
    )
    # status and reason came later: older ledgers get the columns on their next run
    _insert_new(
        ctx,
        ledger,
        LEDGER,
        "t.source = s.source AND t.content_hash = s.content_hash",
        evolve=True,
        scope=_any_of(
            (F.col("source") == item.source.name) & F.col("content_hash").isin([f.content_hash for f in item.files])
            for item in done
        ),
    )
    hook(LEDGER)


def rehash_ledger_files(ctx: JobContext, landed: Mapping[str, tuple[str, str, int]]) -> None:
    """Point the ledger's rows of rewritten landing files at their new content (erasure rewrites a
    landed file without the person's lines; the ledger knows files by content hash, so without
    this the rewritten file would be loaded again).

    Args:
        landed: landing path -> (old content hash, new content hash, new size).
    """
    if not landed or not ctx.tables.exists(ctx.spark, LEDGER):
        return
    changes = ctx.spark.createDataFrame(
        [(path, old, new, size) for path, (old, new, size) in sorted(landed.items())],
        "path string, old_hash string, new_hash string, new_size bigint",
    )
    (
        ctx.tables.delta(ctx.spark, LEDGER)
        .alias("t")
        .merge(changes.alias("s"), "t.path = s.path AND t.content_hash = s.old_hash")
        .whenMatchedUpdate(set={"content_hash": F.col("s.new_hash"), "size": F.col("s.new_size")})
        .execute()
    )


# -- Spark: the Kafka stream's writes, retried when a concurrent commit wins -----------------
_RETRIES = 5
_T = TypeVar("_T")


def with_retries(action: Callable[[], _T], *, what: str) -> _T:
    """Run an idempotent write again when a concurrent writer won the Delta commit race."""
    from delta import exceptions as delta_errors
    from pyspark.errors import AnalysisException

    # delta's Python exception classes are siblings, not subclasses of one base
    conflicts = tuple(getattr(delta_errors, n) for n in delta_errors.__all__)

    for attempt in range(1, _RETRIES + 1):
        try:
            return action()
        except (*conflicts, AnalysisException) as exc:
            # AnalysisException: two queries creating the same new table at once
            if attempt == _RETRIES or (isinstance(exc, AnalysisException) and "already exists" not in str(exc).lower()):
                raise
            logger.info("%s: concurrent commit (%s), retry %d", what, type(exc).__name__, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def insert_new_rows(ctx: JobContext, df: DataFrame, name: str, *, keys: list[str], evolve_schema: bool = False) -> int:
    """Insert the rows of ``df`` whose ``keys`` are not in ``name`` yet (never update).

    Creates the table from ``df`` on first use. Idempotent: running it again with the same
    rows changes nothing, which is what makes a replayed micro-batch harmless.

    Args:
        evolve_schema: add ``df``'s columns the table lacks (bronze created by the batch
            ingest has no ``_kafka_*`` columns).

    Returns:
        How many rows were inserted (the MERGE's own metric).
    """
    tables, spark = ctx.tables, ctx.spark

    def write() -> int:
        if not tables.exists(spark, name):
            tables.append(df, name)
            return df.count()
        if evolve_schema:
            # the MERGE condition names the keys, so the table must have them before the MERGE
            # (schema evolution in MERGE only adds columns for its insert and update actions)
            present = set(tables.read(spark, name).columns)
            missing = [f for f in df.schema.fields if f.name not in present]
            if missing:
                added = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
                spark.sql(f"ALTER TABLE {tables.identifier(name)} ADD COLUMNS ({added})")
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        builder = tables.delta(spark, name).alias("t").merge(df.alias("s"), condition)
        if evolve_schema:
            builder = builder.withSchemaEvolution()
        [metrics] = builder.whenNotMatchedInsertAll().execute().collect()
        return int(metrics["num_inserted_rows"])

    return with_retries(write, what=name)


def insert_events(ctx: JobContext, events: DataFrame) -> None:
    """silver.events rows that come from no source file (a planted campaign's,
    :func:`lakecdp.sample.campaigns.write_planted`), inserted when their event id is new.

    Raises:
        MissingColumnsError: ``events`` lacks a column of the catalogue's silver.events.
    """
    from lakecdp.columns import require_columns

    require_columns(events, catalog.EVENTS.columns, what="events for silver.events")
    ordered = events.select(*catalog.EVENTS.columns)
    _insert_new(ctx, ordered, catalog.EVENTS.name, _keys_condition(SILVER_KEYS["events"]))


# -- the embedded engine: delta-rs -------------------------------------------------------------


def append_quarantine(store: DeltaStore, rows: pa.Table, source: SourceConfig, *, run_id: str) -> None:
    """Append quarantine rows the caller found new (file, line, raw / Kafka position)."""
    store.append(rows, catalog.QUARANTINE.named(source.name), catalog.QUARANTINE.ddl, run_id=run_id)


def append_bronze(store: DeltaStore, rows: pa.Table, source: SourceConfig, ddl: str, *, run_id: str) -> None:
    """Append bronze rows the caller found new; ``ddl``: the table's columns (its own order)."""
    store.append(rows, catalog.BRONZE.named(source.name), ddl, run_id=run_id)


def append_audit(store: DeltaStore, rows: pa.Table, *, run_id: str) -> None:
    """Append ``ops.ingest_audit`` rows of stream batches the caller found new."""
    store.append(rows, AUDIT, catalog.INGEST_AUDIT.ddl, run_id=run_id)


def stored_keys(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, name: str, columns: list[str], where: str, params: list
) -> set:
    """``columns`` of the stored rows matching ``where``: what an insert-if-new leaves out."""
    return embedded._stored(con, store, name, columns, where, params)


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def append_new_events(
    con: duckdb.DuckDBPyConnection,
    store: DeltaStore,
    mapped: pa.Table,
    accepted: set[int],
    source: SourceConfig,
    junk: frozenset[str],
    *,
    run_id: str,
    ingested_at: datetime,
) -> int:
    """silver.events: :func:`lakecdp.ingest.standardise.to_events`'s rows, inserted when their
    event id is new (one per id: the first in the log)."""
    rows = [r for r in mapped.to_pylist() if r["_row"] in accepted]
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["event_id"], row)
    ids = list(first)
    stored = {
        r[0]
        for r in stored_keys(
            con, store, catalog.EVENTS.name, ["event_id"], "WHERE list_contains(?::VARCHAR[], event_id)", [ids]
        )
    }
    fresh = [first[i] for i in ids if i not in stored]
    schema = arrow_schema(catalog.EVENTS.ddl)
    out: dict[str, list[Any]] = {f.name: [] for f in schema}
    for row in fresh:
        standard = {
            **row,
            "source": source.name,
            "email": embedded.normalise_email(row.get("email"), junk),
            "device_id": embedded.trimmed_id(row.get("device_id"), junk),
            "customer_number": embedded.trimmed_id(row.get("customer_number"), junk),
            "run_id": run_id,
            "ingested_at": ingested_at,
        }
        for field in schema:
            value = standard.get(field.name)
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            out[field.name].append(value)
    if fresh:
        store.append(
            pa.table({f.name: pa.array(out[f.name], f.type) for f in schema}, schema=schema),
            catalog.EVENTS.name,
            catalog.EVENTS.ddl,
            run_id=run_id,
        )
    return len(fresh)


def upsert_login_records(
    store: DeltaStore,
    typed: pa.Table,
    checked: list[CheckedRow],
    source: SourceConfig,
    junk: frozenset[str],
    *,
    run_id: str,
    ingested_at: datetime,
    as_of: datetime,
) -> None:
    """silver.customer_records from the ``also`` entries (web logins): filtered, mapped and
    standardised as :func:`lakecdp.ingest.standardise.to_customer_records`, the latest row per
    record id upserted when newer (:func:`lakecdp.ingest.job.write_extra_records`)."""
    schema = arrow_schema(catalog.CUSTOMER_RECORDS.ddl)
    for extra in source.also:
        label = extra.record_source or source.name
        mapped = embedded.map_rows(typed, extra.mapping, catalog.CUSTOMER_RECORDS.ddl, as_of=as_of, where=extra.filter)
        latest: dict[str, dict[str, Any]] = {}
        for row in mapped.to_pylist():
            record_id = row.get("source_record_id")
            # a blank or placeholder id would make one record of many people: an event only
            if record_id is None or record_id.strip(" ") == "" or null_like_key(record_id):
                continue
            key = f"{label}:{record_id}"
            held = latest.get(key)
            stamp = row.get("updated_at")
            if held is None or (stamp is not None and (held.get("updated_at") is None or stamp > held["updated_at"])):
                latest[key] = {**row, "record_id": key}
        out: dict[str, list[Any]] = {f.name: [] for f in schema}
        for key in sorted(latest):
            row = latest[key]
            standard = {
                "record_id": key,
                "source": label,
                "source_record_id": row["source_record_id"],
                "email": embedded.normalise_email(row.get("email"), junk),
                "device_ids": [d for d in (row.get("device_ids") or []) if embedded.null_if_junk(d, junk) is not None],
                "crm_id": embedded.trimmed_id(row.get("crm_id"), junk),
                "customer_number": embedded.trimmed_id(row.get("customer_number"), junk),
                "email_consent": row.get("email_consent"),
                "sms_consent": row.get("sms_consent"),
                "updated_at": _as_utc(row.get("updated_at")),
                "warnings": checked[row["_row"]].warnings,
                "run_id": run_id,
                "ingested_at": ingested_at,
            }
            for field in schema:
                out[field.name].append(standard.get(field.name))
        if latest:
            store.merge(
                pa.table({f.name: pa.array(out[f.name], f.type) for f in schema}, schema=schema),
                catalog.CUSTOMER_RECORDS.name,
                catalog.CUSTOMER_RECORDS.ddl,
                keys=["record_id"],
                run_id=run_id,
                update_predicate="s.updated_at > t.updated_at OR (t.updated_at IS NULL AND s.updated_at IS NOT NULL)",
            )


# -- the embedded engine: landed files ---------------------------------------------------------


def _arrow_table(values: Mapping[str, list[Any] | pa.Array], ddl: str) -> pa.Table:
    schema = embedded._arrow_schema(ddl)
    return pa.table({f.name: pa.array(values[f.name], f.type) for f in schema}, schema=schema)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _bronze_ddl(store: DeltaStore, name: str, source: SourceConfig) -> str:
    ours: dict[str, str] = {c.name: "string" if c.is_scalar else c.type.replace(" ", "") for c in source.columns}
    ours.update(
        {
            "_rescued": "string",
            "_source_file": "string",
            "_line": "bigint",
            "_ingested_at": "timestamp",
            "_run_id": "string",
            "_row_hash": "string",
        }
    )
    if not store.exists(name):
        return ", ".join(f"{k} {v}" for k, v in ours.items())
    # a table the pickup or the stream widened (the Kafka position): its columns, in its order
    fields = store.table(name).schema().fields
    return ", ".join(f"{f.name} {ours[f.name]}" if f.name in ours else f"{f.name} {_ddl_type(f)}" for f in fields)


#: Delta primitive types -> Spark DDL, for the columns a bronze table has beyond the batch's own
_DELTA_DDL = {"string": "string", "long": "bigint", "integer": "int", "double": "double", "timestamp": "timestamp"}


def _ddl_type(field: Any) -> str:
    kind = getattr(field.type, "type", None)
    if kind not in _DELTA_DDL:
        raise TypeError(f"bronze column {field.name} of type {field.type}")
    return _DELTA_DDL[kind]


def _stored_keys(store: DeltaStore, name: str, columns: list[str], files: list[str]) -> set[tuple[Any, ...]]:
    """``columns`` of the stored rows of ``files`` (a crashed run's leftovers): what not to add again."""
    import duckdb

    if not store.exists(name):
        # no table, no stored row: no connection either (~15 ms of CPU each)
        return set()
    file_column = columns[0]
    con = embedded._connection()
    try:
        return embedded._stored(con, store, name, columns, f"WHERE list_contains(?::VARCHAR[], {file_column})", [files])
    except duckdb.Error:
        raise
    finally:
        con.close()


def write_bronze_rows(
    store: DeltaStore,
    source: SourceConfig,
    checked: list[CheckedRow],
    reads: Mapping[int, dict[str, Any]],
    rescued: dict[int, str | None],
    passed: list[int],
    *,
    run_id: str,
    at: datetime,
    copied: tuple[list[int], pa.Table] | None = None,
    hashes: Sequence[str | None] = (),
) -> None:
    """``bronze.<source>``: the rows ``passed`` (their fields as read, ``reads``), inserted when new
    (file, line, row hash: a crashed run's rows are not added again).

    Args:
        copied: rows of re-delivered lines (positions in ``checked``) and, in the same order, their
            stored bronze rows: written as those rows with this file, line, run and time.
        hashes: the SHA-256 of rows' lines computed already, by position in ``checked`` (None, or
            past its end: computed here)."""
    name = catalog.BRONZE.named(source.name)
    ddl = _bronze_ddl(store, name, source)
    rows_passed = [checked[i] for i in passed]
    # hashlib per row: DuckDB's sha256 over the Arrow column of lines took twice its CPU (85k lines)
    sha256 = hashlib.sha256
    given = len(hashes)
    row_hashes = [
        (hashes[i] if i < given else None) or sha256(row.raw.encode("utf-8")).hexdigest()
        for i, row in zip(passed, rows_passed)
    ]
    copied_rows, copied_from = copied if copied is not None else ([], None)
    stored = _stored_keys(
        store,
        name,
        ["_source_file", "_line", "_row_hash"],
        sorted({row.topic for row in rows_passed} | {checked[i].topic for i in copied_rows}),
    )
    fresh, rows_fresh = passed, rows_passed
    if stored:
        keep = [(row.topic, row.offset, h) not in stored for row, h in zip(rows_passed, row_hashes)]
        fresh = [i for i, k in zip(passed, keep) if k]
        rows_fresh = [row for row, k in zip(rows_passed, keep) if k]
        row_hashes = [h for h, k in zip(row_hashes, keep) if k]
    schema = embedded._arrow_schema(ddl)
    # column by column (a row of a re-delivered file costs a few list appends)
    own: dict[str, Callable[[], Any]] = {
        "_rescued": lambda: list(map(rescued.__getitem__, fresh)),
        "_source_file": lambda: list(map(attrgetter("topic"), rows_fresh)),
        "_line": lambda: list(map(attrgetter("offset"), rows_fresh)),
        "_row_hash": lambda: row_hashes,
    }
    constant = {"_ingested_at": _utc(at), "_run_id": run_id}
    # the fields as read: taken from the reads' Arrow columns when they have them
    texts = reads.columns(fresh) if isinstance(reads, embedded.Reads) else None
    values: dict[str, Any] = {}
    for column, _, _ in catalog.ddl_fields(ddl):
        if column in constant:
            values[column] = pa.repeat(pa.scalar(constant[column], schema.field(column).type), len(fresh))
        elif column in own:
            values[column] = own[column]()
        elif texts is not None and column in texts.column_names:
            values[column] = texts[column].combine_chunks()
        else:
            values[column] = [reads[i].get(column) for i in fresh]
    rows = _arrow_table(values, ddl)
    if copied_from is not None:
        rows = pa.concat_tables(
            [rows, _copied_bronze(copied_from, copied_rows, checked, rows.schema, stored, run_id, at)]
        )
    store.append(rows, name, ddl, run_id=run_id)


def _copied_bronze(
    stored_rows: pa.Table,
    positions: list[int],
    checked: list[CheckedRow],
    schema: pa.Schema,
    stored: set[tuple[Any, ...]],
    run_id: str,
    at: datetime,
) -> pa.Table:
    """The bronze rows of re-delivered lines: their stored rows (fields as read, rescued, row
    hash) with this file, line, run and time; those a crashed run wrote already left out."""
    files = [checked[i].topic for i in positions]
    lines = [checked[i].offset for i in positions]
    own = {
        "_source_file": pa.array(files, pa.string()),
        "_line": pa.array(lines, pa.int64()),
        "_ingested_at": pa.array([_utc(at)] * len(positions), schema.field("_ingested_at").type),
        "_run_id": pa.array([run_id] * len(positions), pa.string()),
    }
    columns = [
        own[f.name]
        if f.name in own
        else stored_rows[f.name].cast(f.type)
        if f.name in stored_rows.column_names
        else pa.nulls(len(positions), f.type)
        for f in schema
    ]
    rows = pa.Table.from_arrays(columns, schema=schema)
    if stored:
        hashes = rows["_row_hash"].to_pylist()
        keep = [(f, n, h) not in stored for f, n, h in zip(files, lines, hashes)]
        rows = rows.filter(pa.array(keep, pa.bool_()))
    return rows


def write_quarantine_rows(
    store: DeltaStore,
    source: SourceConfig,
    checked: list[CheckedRow],
    rejected: list[int],
    refused: list[LandedFile],
    *,
    run_id: str,
    at: datetime,
) -> None:
    name = catalog.QUARANTINE.named(source.name)
    rows: list[tuple[str | None, str, int | None, Sequence[str], str | None]] = [
        (checked[i].raw, checked[i].topic, checked[i].offset, checked[i].reasons, checked[i].detail) for i in rejected
    ]
    rows += [(None, f.relative, None, [f.reason or ""], f.detail) for f in refused]
    stored = _stored_keys(store, name, ["source_file", "line", "raw"], sorted({r[1] for r in rows}))
    fresh = [r for r in rows if (r[1], r[2], r[0]) not in stored]
    ddl = catalog.QUARANTINE.ddl
    values: dict[str, list[Any]] = {n: [] for n, _, _ in catalog.ddl_fields(ddl)}
    for raw, source_file, line, reasons, detail in fresh:
        own = {
            "raw": raw,
            "source_file": source_file,
            "line": line,
            "reasons": reasons,
            "detail": detail,
            "run_id": run_id,
            "quarantined_at": _utc(at),
        }
        for column in values:
            values[column].append(own.get(column))
    store.append(_arrow_table(values, ddl), name, ddl, run_id=run_id)


def write_silver_rows(
    ctx: JobContext, store: DeltaStore, source: SourceConfig, typed: pa.Table, hook: WriteHook
) -> None:
    """The loaded rows (``typed``: ``_row``, the source's typed columns, ``_warnings``) into the
    source's silver table(s), mapped by :mod:`lakecdp.ingest.embedded_silver`; keys and update
    rules as :func:`write_silver` (events inserted when new, records upserted when newer, orders,
    their items and products upserted; also-targets: web login records)."""
    # customer_records is locked only around its commits (_upsert_records): a source reads and
    # decides on its own records only (ids prefixed by its labels, which no other source shares:
    # sources.load_sources), so another source's commit in between cannot change its decisions
    targets = sorted({source.target, *(extra.target for extra in source.also)} - {"customer_records"})
    with ExitStack() as held:
        for target in targets:
            held.enter_context(_SILVER_LOCKS[target])
        _write_silver_rows(ctx, store, source, typed, hook)


#: one writer per silver table at a time: sources ingested side by side (read stored keys, then
#: write; customer_records: its commits)
_SILVER_LOCKS: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)


def _write_silver_rows(
    ctx: JobContext, store: DeltaStore, source: SourceConfig, typed: pa.Table, hook: WriteHook
) -> None:
    from lakecdp.ingest.embedded_silver import record_versions, to_silver

    stored = None
    own = typed
    if source.target == "customer_records":
        stored = _stored_versions(store, source.name)
        if stored is not None and stored.num_rows:
            # a row whose upsert would leave the stored record as it is (a re-delivered record,
            # an older version) is not standardised: only its record id and updated_at are mapped
            changing = _changing_rows(record_versions(typed, source, as_of=ctx.as_of), stored)
            own = typed.filter(pc.is_in(typed["_row"], changing))

    def write_also() -> None:
        for extra in source.also:
            records = to_silver(
                typed, source, extra=extra, run_id=ctx.run_id, ingested_at=_utc(ctx.as_of), as_of=ctx.as_of
            )
            _upsert_records(store, records.drop_columns(["_row"]), run_id=ctx.run_id)
            hook(catalog.CUSTOMER_RECORDS.name)

    # the also entries (web logins -> customer records) mapped and written beside the source's own
    # target, on a second thread, when they write another table (DuckDB and delta-rs release the GIL)
    apart = bool(source.also) and all(extra.target != source.target for extra in source.also)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"also-{source.name}") as beside:
        also = beside.submit(write_also) if apart else None
        if own is not typed and own.num_rows == 0:
            # every row leaves its stored record as it is (a re-delivery): nothing to map or write
            hook(catalog.CUSTOMER_RECORDS.name)
        else:
            _write_target(ctx, store, source, typed, own, stored, hook)
        if also is not None:
            also.result()
    if not apart:
        write_also()


def _write_target(
    ctx: JobContext,
    store: DeltaStore,
    source: SourceConfig,
    typed: pa.Table,
    own: pa.Table,
    stored: pa.Table | None,
    hook: WriteHook,
) -> None:
    """``own`` (``typed``, or the rows of it that change a record) mapped to ``source.target`` and
    written (order items from ``typed``)."""
    from lakecdp.ingest.embedded_silver import to_order_items, to_silver

    run_id, at = ctx.run_id, _utc(ctx.as_of)
    silver = to_silver(own, source, run_id=run_id, ingested_at=at, as_of=ctx.as_of).drop_columns(["_row"])
    if source.target == "customer_records":
        _upsert_records(store, silver, run_id=run_id, stored=stored)
        hook(catalog.CUSTOMER_RECORDS.name)
    elif source.target == "events":
        _insert_new_events(store, silver, run_id=run_id)
        hook(catalog.EVENTS.name)
    elif source.target == "orders":
        upsert_orders(store, silver, run_id=run_id)
        hook(catalog.ORDERS.name)
        upsert_order_items(store, to_order_items(typed, source, as_of=ctx.as_of).drop_columns(["_row"]), run_id=run_id)
        hook(catalog.ORDER_ITEMS.name)
    elif source.target == "products":
        keys = list(SILVER_KEYS["products"])
        store.merge(silver, catalog.PRODUCTS.name, catalog.PRODUCTS.ddl, keys=keys, run_id=run_id)
        hook(catalog.PRODUCTS.name)


def upsert_orders(store: DeltaStore, orders: pa.Table, *, run_id: str) -> None:
    """silver.orders (its columns, :func:`lakecdp.ingest.embedded_silver.to_silver`'s rows) upserted
    on ``order_id``; one row per order id (the caller picks it)."""
    store.merge(orders, catalog.ORDERS.name, catalog.ORDERS.ddl, keys=list(SILVER_KEYS["orders"]), run_id=run_id)


def upsert_order_items(store: DeltaStore, items: pa.Table, *, run_id: str) -> None:
    """silver.order_items (:func:`lakecdp.ingest.embedded_silver.to_order_items`' rows, without
    ``_row``) upserted on (``order_id``, ``line_number``); a line without a category takes the
    catalogue's (silver.products is ingested first)."""
    if store.exists(catalog.PRODUCTS.name):
        products = store.read(catalog.PRODUCTS.name, columns=["product_id", "category"]).to_pylist()
        category = {p["product_id"]: p["category"] for p in products}
        filled = [
            c if c is not None else category.get(p)
            for c, p in zip(items["category"].to_pylist(), items["product_id"].to_pylist())
        ]
        items = items.set_column(items.schema.get_field_index("category"), "category", pa.array(filled, pa.string()))
    keys = list(SILVER_KEYS["order_items"])
    store.merge(items, catalog.ORDER_ITEMS.name, catalog.ORDER_ITEMS.ddl, keys=keys, run_id=run_id)


def _first_per_key(keys: pa.ChunkedArray, *, latest_by: pa.ChunkedArray | None = None) -> pa.Array:
    """The positions (ascending) of the first row per key (a null key is one key), or with
    ``latest_by`` of the row with the latest value per key (nulls last, the first of equals):
    grouped by Arrow, not a Python loop per row."""
    rows = pa.table({"key": keys, "position": pa.array(range(len(keys)), pa.int64())})
    if latest_by is not None:
        rows = rows.append_column("latest", latest_by).sort_by(
            [("latest", "descending", "at_end"), ("position", "ascending", "at_end")]
        )
    # use_threads=False: "first" is the first in the table's order
    first = rows.group_by("key", use_threads=False).aggregate([("position", "first")])["position_first"]
    return first.combine_chunks().sort()


def _first_rows(rows: pa.Table, key: str, *, latest_by: str | None = None) -> pa.Table:
    """The rows :func:`_first_per_key` picks, in order; ``rows`` itself when no key repeats (a
    first load, mostly): one distinct count, no sort, group-by or copy of every column."""
    keys = rows[key]
    if pc.count_distinct(keys, mode="all").as_py() == rows.num_rows:
        return rows
    return rows.take(_first_per_key(keys, latest_by=None if latest_by is None else rows[latest_by]))


def _insert_new_events(store: DeltaStore, events: pa.Table, *, run_id: str) -> None:
    """silver.events rows whose event id is new (the first of the run per id): appended, what an
    insert-only MERGE on ``event_id`` would insert (a null id never matches), without the MERGE's join."""
    events = _first_rows(events, "event_id")
    if store.exists(catalog.EVENTS.name):
        stored = store.read(catalog.EVENTS.name, columns=["event_id"])["event_id"].combine_chunks()
        ids = events["event_id"]
        events = events.filter(pc.invert(pc.and_(pc.is_valid(ids), pc.is_in(ids, value_set=stored))))
    store.create_if_missing(catalog.EVENTS.name, catalog.EVENTS.ddl)
    store.append(events, catalog.EVENTS.name, catalog.EVENTS.ddl, run_id=run_id)


#: when a stored record is replaced by the run's version of it (Spark and delta-rs MERGE SQL, ``s`` the run's row)
_NEWER_RECORD = "s.updated_at > t.updated_at OR (t.updated_at IS NULL AND s.updated_at IS NOT NULL)"


def redelivery_keeps_records(source: SourceConfig) -> bool:
    """True when a line of ``source`` that a completed run passed (its bronze row) cannot change
    silver.customer_records when it is delivered again: the record id is the primary key as read
    (:func:`_record_id_is_key`), ``updated_at`` is the event time as typed, with which ``classify``
    ranks a key's versions, and no ``also`` entry maps the line to other records.

    Then the run that passed the line loaded its key's latest version, whose ``updated_at`` is
    not older than the line's (nulls last), and a stored record is replaced only by a newer one
    (:data:`_NEWER_RECORD`; only erasure deletes one): the stored ``updated_at`` is not older
    than the line's, so the line's upsert would leave the record as it is. (The source's column
    types and formats are the ones that typed the line before, as validation rules are for a
    re-delivered event: see ``lakecdp.ingest.embedded_batch._KnownLines``.)"""
    if source.target != "customer_records" or source.also or source.event_time is None:
        return False
    if source.column(source.event_time).type != "timestamp":
        return False
    return _record_id_is_key(source) and _mapped_as_is(source, "updated_at", source.event_time)


def _stored_versions(store: DeltaStore, label: str | None = None) -> pa.Table | None:
    """``record_id`` and ``updated_at`` of silver.customer_records (None: no table yet).

    Args:
        label: only the records whose id starts ``<label>:`` (a source's own: the others can
            never match its rows, and joining them cost as much as the source's own)."""
    if not store.exists(catalog.CUSTOMER_RECORDS.name):
        return None
    stored = store.read(catalog.CUSTOMER_RECORDS.name, columns=["record_id", "updated_at"])
    if label is None:
        return stored
    return stored.filter(pc.fill_null(pc.starts_with(stored["record_id"], pattern=label + ":"), False))


def _changing_rows(versions: pa.Table, stored: pa.Table) -> pa.Array:
    """The ``_row`` of ``versions`` (``_row``, ``record_id``, ``updated_at``) whose upsert
    (:func:`_upsert_records`) would write something: a record id not stored (a null one too: the
    MERGE never matches it) or one :data:`_NEWER_RECORD` holds for. Leaving the others out before
    the latest row per record id is picked picks the same row: a record's latest row is left out
    only when every row of that record is."""
    kind = versions.schema.field("updated_at").type
    stored = pa.table(
        {
            "record_id": stored["record_id"],
            "_stored_at": stored["updated_at"].cast(kind),
            "_stored": pa.repeat(pa.scalar(True), stored.num_rows),
        }
    )
    joined = versions.join(stored, "record_id", join_type="left outer", use_threads=False)
    new_at, old_at = joined["updated_at"], joined["_stored_at"]
    newer = pc.and_kleene(
        pc.is_valid(new_at), pc.or_kleene(pc.is_null(old_at), pc.fill_null(pc.greater(new_at, old_at), False))
    )
    keep = pc.or_kleene(pc.or_kleene(pc.is_null(joined["_stored"]), pc.is_null(joined["record_id"])), newer)
    return joined["_row"].filter(keep).combine_chunks()


def _upsert_records(store: DeltaStore, records: pa.Table, *, run_id: str, stored: pa.Table | None = None) -> None:
    """silver.customer_records: the latest row per record id (by ``updated_at``, nulls last)
    replaces the stored one when newer, as :func:`_write_records` on Spark.

    The rows of record ids not stored yet (every row of a first load) are appended -- what the
    MERGE would insert, without joining the stored table -- and only the others MERGEd.

    Args:
        stored: :func:`_stored_versions` read by the caller (read here when None)."""
    if records.num_rows == 0:
        store.create_if_missing(catalog.CUSTOMER_RECORDS.name, catalog.CUSTOMER_RECORDS.ddl)
        return
    records = _first_rows(records, "record_id", latest_by="updated_at")
    if stored is None:
        stored = _stored_versions(store)
    known = (
        pc.fill_null(pc.is_in(records["record_id"], value_set=stored["record_id"].combine_chunks()), False)
        if stored is not None and stored.num_rows
        else pa.repeat(pa.scalar(False), records.num_rows)
    )
    with _SILVER_LOCKS["customer_records"]:
        store.append(
            records.filter(pc.invert(known)), catalog.CUSTOMER_RECORDS.name, catalog.CUSTOMER_RECORDS.ddl, run_id=run_id
        )
        updates = records.filter(known)
        sources = updates["source"]
        store.merge(
            updates,
            catalog.CUSTOMER_RECORDS.name,
            catalog.CUSTOMER_RECORDS.ddl,
            keys=["record_id"],
            run_id=run_id,
            update_predicate=_NEWER_RECORD,
            # a record id is <label>:<id>, its row's source the label: only those sources' files are read
            within=None if sources.null_count else ("source", sorted(pc.unique(sources).to_pylist())),
        )


def _write_ops_delta(ctx: JobContext, store: DeltaStore, done: list[LoadedFiles], hook: WriteHook) -> None:
    """ops.ingest_audit (upsert per file), ops.data_quality (the files' rows replaced), then the ledger."""
    at = _utc(ctx.as_of)
    names = [n for n, _, _ in catalog.ddl_fields(catalog.INGEST_AUDIT.ddl)]
    audit_rows = [
        audit_row(ctx.run_id, item.source.name, file, c, at) for item in done for file, c in item.per_file.items()
    ]
    audit = _arrow_table({n: [r[k] for r in audit_rows] for k, n in enumerate(names)}, catalog.INGEST_AUDIT.ddl)
    _merge_or_append(store, audit, AUDIT, catalog.INGEST_AUDIT.ddl, keys=["source", "source_file"], run_id=ctx.run_id)
    hook(AUDIT)

    quality = [
        (ctx.run_id, item.source.name, file, reason, rows, at) for item in done for file, reason, rows in item.reasons
    ]
    ddl = catalog.DATA_QUALITY.ddl
    files = pa.table(
        {
            "source": pa.array([item.source.name for item in done for _f in item.per_file], pa.string()),
            "source_file": pa.array([f for item in done for f in item.per_file], pa.string()),
        }
    )
    if _any_stored(store, files, DATA_QUALITY, ["source", "source_file"]):
        # replace these files' summaries (a crashed run may have written some)
        replaced = " OR ".join(
            f"(source = {text_literal(item.source.name)} AND source_file IN "
            f"({', '.join(map(text_literal, item.per_file))}))"
            for item in done
        )
        store.delete(DATA_QUALITY, replaced, run_id=ctx.run_id)
    columns = [n for n, _, _ in catalog.ddl_fields(ddl)]
    store.create_if_missing(DATA_QUALITY, ddl)
    store.append(
        _arrow_table({n: [r[k] for r in quality] for k, n in enumerate(columns)}, ddl),
        DATA_QUALITY,
        ddl,
        run_id=ctx.run_id,
    )
    hook(DATA_QUALITY)

    ledger_rows = [
        (item.source.name, f.relative, f.size, f.content_hash, ctx.run_id, at, *_ledger_status(f, item.per_file))
        for item in done
        for f in item.files
    ]
    ddl = catalog.INGEST_FILES.ddl
    columns = [n for n, _, _ in catalog.ddl_fields(ddl)]
    ledger = _arrow_table({n: [r[k] for r in ledger_rows] for k, n in enumerate(columns)}, ddl)
    _merge_or_append(store, ledger, LEDGER, ddl, keys=["source", "content_hash"], run_id=ctx.run_id, update=False)
    hook(LEDGER)


def _merge_or_append(
    store: DeltaStore, rows: pa.Table, name: str, ddl: str, *, keys: list[str], run_id: str, update: bool = True
) -> None:
    """:meth:`DeltaStore.merge` of ``rows``; when no stored row has a key of ``rows`` (a table not
    created yet, an ops table before a run's new files), the rows appended: what the MERGE would
    insert (every row) without its join."""
    if _any_stored(store, rows, name, keys):
        store.merge(rows, name, ddl, keys=keys, run_id=run_id, update=update)
        return
    store.create_if_missing(name, ddl)
    store.append(rows, name, ddl, run_id=run_id)


def _any_stored(store: DeltaStore, rows: pa.Table, name: str, keys: list[str]) -> bool:
    """Whether table ``name`` holds a row whose ``keys`` equal a row's of ``rows`` (a null never
    equals, as in a MERGE's condition). For the ops tables: a few rows per file ever landed."""
    if not rows.num_rows or not store.exists(name):
        return False
    wanted = rows.select(keys)
    stored = store.read(name, columns=keys)
    if not stored.num_rows:
        return False
    return bool(wanted.join(stored.select(keys).cast(wanted.schema), keys, join_type="inner").num_rows)
