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
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.delta_store import embedded_store
from lakecdp.ingest.audit import (
    AuditError,
    check_audit_counts,
    check_lines_read,
    source_counts,
    file_counts,
)
from lakecdp.ingest.classify import classify, erased_condition, keys_repeat
from lakecdp.ingest.landing import LandedFile, inspect_file, natural_key, new_files
from lakecdp.ingest.reading import validated_rows
from lakecdp.ingest.rows import bronze_rows, quarantine_rows, refused_file_rows, rescued_keys
from lakecdp.ingest.sources import SourceConfig, load_sources
from lakecdp.ingest.writes import (
    AUDIT,
    DATA_QUALITY,
    LEDGER,
    LOADED,
    LoadedFiles,
    WriteHook,
    write_bronze,
    write_extra_records,
    write_ops,
    write_quarantine,
    write_silver,
)

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

#: the erased flag of a kept row (:func:`_classified`)
_ERASED = "_erased"


# -- writing ---------------------------------------------------------------------------


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

    The kept RDD is the one that node reads (not "the RDDs kept since": one source is read while
    another is written, and Delta keeps table states of its own meanwhile).
    """
    kept = df.localCheckpoint(eager=True)
    return kept, [kept._jdf.queryExecution().logical().rdd().id()]


def _release(ctx: JobContext, blocks: list[int]) -> None:
    """Drop the rows :func:`_materialised` kept (else they stay until the JVM collects them)."""
    if not blocks:
        return
    kept = ctx.spark.sparkContext._jsc.getPersistentRDDs()
    for rdd_id in blocks:
        if kept.containsKey(rdd_id):
            kept.get(rdd_id).unpersist(False)


def _classified(ctx: JobContext, rows: DataFrame, source: SourceConfig) -> tuple[DataFrame, list[int]]:
    """The validated ``rows`` classified (:func:`classify`) and kept (:func:`_materialised`).

    A source that does not look up the keys it stored (customer records, orders, products) has
    its rows kept as validated, with the erased flag; when no primary key repeats among them --
    an export holds each record once -- they are classified over what is kept, without ranking
    the keys: the ranking's shuffle and sort of every row (raw line, typed columns) is left out.
    """
    existing = _existing_keys(ctx, source)
    erased = erased_condition(ctx, rows, source)
    if existing is not None:
        return _materialised(classify(rows, source, existing, erased))
    kept, blocks = _materialised(rows.withColumn(_ERASED, erased if erased is not None else F.lit(False)))
    # the kept rows are released here once ranked into rows of their own, by the caller when the
    # rows returned still read them (no key repeats), and here whenever the check or ranking fails
    try:
        if not keys_repeat(kept, source):
            return classify(kept, source, None, F.col(_ERASED), keys_repeat=False).drop(_ERASED), blocks
        ranked, more = _materialised(classify(kept, source, None, F.col(_ERASED)).drop(_ERASED))
    except BaseException:
        _release(ctx, blocks)
        raise
    _release(ctx, blocks)
    return ranked, more


def ingest_source(ctx: JobContext, source: SourceConfig, *, hook: WriteHook | None = None) -> dict[str, int]:
    """Ingest the new files of one source; returns its counts.

    A file refused as a whole (symbolic link, unreadable) is quarantined, audited (one row
    read, one quarantined) and put in the ledger; the source's other files load all the same.
    """
    hook = hook or (lambda _name: None)
    loaded, counts = _load_source(ctx, source, _ledger_hashes(ctx, [source.name])[source.name], hook)
    write_ops(ctx, [loaded] if loaded is not None else [], hook)
    return counts


@dataclass
class _Read:
    """A source's new files read, validated, classified and kept, checked against their lines
    (:func:`_read_source`); nothing of it written yet."""

    source: SourceConfig
    files: list[LandedFile]
    skipped: int
    classified: DataFrame | None = None
    blocks: list[int] = field(default_factory=list)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
    reasons: list[tuple[str, str, int]] = field(default_factory=list)


def _load_source(
    ctx: JobContext, source: SourceConfig, seen: set[str], hook: WriteHook
) -> tuple[LoadedFiles | None, dict[str, int]]:
    """Bronze, quarantine and silver for the new files of ``source`` (content hash not in
    ``seen``); its ops rows are returned, for :func:`_write_ops` to write after them."""
    return _write_source(ctx, _read_source(ctx, source, seen), hook)


def _read_source(ctx: JobContext, source: SourceConfig, seen: set[str]) -> _Read:
    """The new files of ``source`` (content hash not in ``seen``) read and classified, their
    rows kept, every file's counts checked -- before any write: a line the reader lost (or made
    up) fails the run, nothing is marked done. Reads no table another source's writes change."""
    new, skipped = new_files(ctx.project.landing, source, seen)
    if not new:
        return _Read(source, [], skipped)
    rows, readable = validated_rows(ctx, source, [f for f in new if not f.refused])
    files = sorted([*readable, *[f for f in new if f.refused]], key=lambda f: natural_key(f.relative))
    for file in files:
        if file.refused:
            logger.warning("%s: %s quarantined: %s", source.name, file.relative, file.detail)
    read = _Read(source, files, skipped)
    if rows is not None:
        read.classified, read.blocks = _classified(ctx, rows, source)
    try:
        read.per_file, read.reasons = file_counts(read.classified, files)
        check_lines_read(source, files, read.per_file)
        for relative, c in read.per_file.items():
            check_audit_counts(f"{source.name} {relative}", c)
    except BaseException:
        _release(ctx, read.blocks)
        raise
    return read


def _write_source(ctx: JobContext, read: _Read, hook: WriteHook) -> tuple[LoadedFiles | None, dict[str, int]]:
    """Bronze, quarantine and silver from ``read``; its rows released after."""
    source, files, classified, per_file = read.source, read.files, read.classified, read.per_file
    if not files:
        return None, source_counts([], {}, skipped=read.skipped)
    try:
        if classified is not None:
            passed = classified.where(F.col("_status").isin("loaded", "duplicate"))
            write_bronze(
                ctx,
                bronze_rows(
                    passed,
                    source,
                    run_id=ctx.run_id,
                    ingested_at=ctx.as_of,
                    rescued_keys=rescued_keys(classified) if source.drift == "evolve" else None,
                ),
                source,
                evolve=source.drift == "evolve",
                files=[f.relative for f in files],
            )
            hook(catalog.BRONZE.named(source.name))
        if any(c["rows_quarantined"] for c in per_file.values()):
            quarantined = refused_file_rows(ctx, [f for f in files if f.refused])
            if classified is not None:
                rejected = classified.where(F.col("_status") == "quarantined")
                quarantined = quarantine_rows(rejected, run_id=ctx.run_id, quarantined_at=ctx.as_of).unionByName(
                    quarantined
                )
            write_quarantine(ctx, quarantined, source, files=[f.relative for f in files])
            hook(catalog.QUARANTINE.named(source.name))
        if classified is not None:
            loaded = classified.where(F.col("_status") == "loaded")
            write_silver(ctx, loaded, source, hook)
    finally:
        _release(ctx, read.blocks)
    return LoadedFiles(source, files, per_file, read.reasons), source_counts(files, per_file, skipped=read.skipped)


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
    totals: dict[str, int] = {}
    store = embedded_store(ctx, label="lakecdp-ingest")
    if store is not None:
        from lakecdp.ingest.embedded_batch import embedded_reason, ingest_embedded

        on_spark = {name: embedded_reason(sources[name], landing=ctx.project.landing) for name in wanted}
        on_spark = {name: why for name, why in on_spark.items() if why is not None}
        for name, why in on_spark.items():
            logger.info("ingest %s: on Spark (the embedded engine does not do %s)", name, why)
        totals = ingest_embedded(ctx, store, sources, [n for n in wanted if n not in on_spark], hook=hook)
        wanted = [n for n in wanted if n in on_spark]
        if not wanted:
            return totals
    seen = _ledger_hashes(ctx, wanted)
    done: list[LoadedFiles] = []
    # the sources are written one after the other, in order; the next one is read (validated,
    # classified, kept) meanwhile, on a thread of its own: its reading's one-task stages and the
    # gaps between a write's jobs (planning, commits) leave the cores half idle otherwise
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakecdp-ingest-read") as reader:
        ahead: Future[_Read] | None = None
        try:
            for position, name in enumerate(wanted):
                current = ahead.result() if ahead is not None else _read_source(ctx, sources[name], seen[name])
                ahead = None
                if position + 1 < len(wanted):
                    following = sources[wanted[position + 1]]
                    ahead = reader.submit(_read_source, ctx, following, seen[following.name])
                loaded, counts = _write_source(ctx, current, write_hook)
                if loaded is not None:
                    done.append(loaded)
                logger.info("ingest %s: %s", name, counts)
                for key, value in counts.items():
                    totals[key] = totals.get(key, 0) + value
        finally:
            if ahead is not None and ahead.exception() is None:
                # a write failed with the next source read: its kept rows are dropped
                _release(ctx, ahead.result().blocks)
            # the sources done so far are complete even when a later one fails: audited and ledgered
            # (a killed run writes none of it and the next run re-does their files, to the same state)
            write_ops(ctx, done, write_hook)
    return totals


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline step ``ingest``: every configured source."""
    return ingest(ctx)
