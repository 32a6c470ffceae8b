"""Streaming ingest of web and email events from Kafka, exactly once into Delta.

One Structured Streaming query per (topic, source):

    Kafka value + (topic, partition, offset, timestamp)
      -> parse_and_validate (the batch ingest's own rules, no second validator)
      -> watermark on the batch time + dropDuplicatesWithinWatermark on the event id
      -> foreachBatch:  messages of erased people dropped first (the batch ingest's
                        erased_condition; ops.erasures read again for every micro-batch)
                        quarantine.<source>      MERGE insert-if-new on (topic, partition, offset)
                        bronze.<source>          MERGE insert-if-new on (topic, partition, offset)
                        silver.events            MERGE insert-if-new on event_id
                        ops.ingest_audit         MERGE insert-if-new on (source, source_file, stream_batch)
                        silver.customer_records  the source's ``also`` rows (web logins), upserted on
                                                 record_id by the batch ingest's own code

Exactly once = the query's checkpoint (which offsets each micro-batch covers; a batch that
failed half way is replayed with the same offsets) + writes that are idempotent (a replayed
batch, a restarted query or a producer re-delivering the same event adds nothing). The
watermark bounds the de-duplication state; a duplicate arriving later than that is still
caught by the MERGE on ``event_id``.

Each micro-batch holding messages writes one ``ops.ingest_audit`` row: ``source_file`` is
``kafka://<topic>``, ``stream_batch`` is ``<query name>:<batch id>`` (the query name is derived
from the checkpoint folder's path; the batch's offsets are in
``<checkpoint>/offsets/<batch id>``). For a stream, *read* means the messages that reached the micro-batch, after the query's
de-duplication within its window: a re-delivery dropped by the state store is counted nowhere.
read = loaded (events new to silver.events) + quarantined (rejected by the validator) +
duplicates removed (accepted messages whose event id the MERGE found in silver.events, or that
repeat within the batch) + erased, checked per batch like the batch ingest (``AuditError`` stops
the query). A replayed batch finds its audit row and adds none; one that died between its
silver.events commit and its audit commit counts, on replay, the events it had inserted as
duplicates (the sum still holds).

A message of a person erased earlier (:mod:`lakecdp.erasure`: the salted hash of its email,
device / anonymous id or customer number is in ``ops.erasures``) is refused as the batch ingest
refuses a row, by the same :func:`~lakecdp.ingest.classify.erased_condition`: it is written to no
table (not bronze, quarantine, silver.events nor, for a login, customer_records), even when
the validator rejected it, and counted in the batch's ``rows_erased``. Each micro-batch reads
``ops.erasures`` again (it is small), so an erasure made while a query runs holds from its next
micro-batch on; a micro-batch already being written when the erasure commits may still land
the person's messages, as a batch ingest running at that moment may (erase again to remove them).

A ``login`` event with an ``anonymous_id`` also becomes a ``silver.customer_records`` row
(``conf/sources/web_events.yaml``, ``also``), mapped and upserted by the batch ingest's code, so
identity resolution sees logins that arrived by Kafka.

The watermark is on processing time (the micro-batch's timestamp), not on the event time nor
the producer-set Kafka time: late events must load (docs/sample-data.md), and rows behind a
watermark are dropped without trace.

This module is the query: its wiring, the micro-batch sink (insert-if-new MERGEs, retried
when a concurrent writer wins the commit) and the runs of ``conf/streaming.yaml``. Its parts:
:mod:`~lakecdp.ingest.stream_config` (the config, which sources can stream),
:mod:`~lakecdp.ingest.messages` (the pure transforms) and :mod:`~lakecdp.ingest.rows` (the
bronze and quarantine rows, the batch ingest's own).

Example:
    >>> ctx = JobContext.create(project, spark)
    >>> query = start_kafka_stream(ctx, bootstrap_servers="127.0.0.1:9092",
    ...                            topic="web_events", source="web_events", trigger="available_now")
    >>> query.awaitTermination()
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.config import ConfigError
from lakecdp.ingest.messages import (
    DEDUP_KEY,
    deduplicated,
    is_valid,
    kafka_messages,
    validate_messages,
    with_dedup_key,
)
from lakecdp.ingest.writes import (
    AUDIT,
    create_stream_tables,
    insert_new_rows,
    with_retries,
    write_extra_records,
    write_silver,
)
from lakecdp.ingest.stream_config import (
    AVAILABLE_NOW,
    StreamDefinitionError,
    StreamingConfig,
    as_json_messages,
    load_streaming_config,
    parse_trigger,
    stream_refusal,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import StreamingQuery

    from lakecdp.context import JobContext
    from lakecdp.ingest.sources import SourceConfig

# the stream's parts, imported from here by callers that predate the split
__all__ = [
    "AVAILABLE_NOW",
    "StreamDefinitionError",
    "as_json_messages",
    "checkpoint_location",
    "insert_new_rows",
    "kafka_messages",
    "load_streaming_config",
    "parse_trigger",
    "run_available_now",
    "run_streams",
    "start_configured_streams",
    "start_kafka_stream",
    "stream_refusal",
    "with_dedup_key",
    "write_micro_batch",
]

logger = logging.getLogger(__name__)

_ERASED = "_erased"


# -- the query ----------------------------------------------------------------------------
def _resolve_source(ctx: JobContext, source: str | SourceConfig) -> SourceConfig:
    from lakecdp.ingest.sources import load_sources

    if not isinstance(source, str):
        return source
    sources = load_sources(ctx.project.conf_dir / "sources")
    if source not in sources:
        raise ConfigError(f"{ctx.project.conf_dir / 'sources'}: no source named {source!r}")
    refusal = stream_refusal(sources[source], source)
    if refusal is not None:
        raise StreamDefinitionError(refusal)
    return sources[source]


def checkpoint_location(ctx: JobContext, *, source: str, topic: str) -> Path:
    """One checkpoint folder per (source, topic) query under the project's checkpoints."""
    return ctx.project.checkpoints / "kafka" / f"{source}__{topic}"


def start_kafka_stream(
    ctx: JobContext,
    *,
    bootstrap_servers: str,
    topic: str,
    source: str | SourceConfig,
    trigger: str = AVAILABLE_NOW,
    starting_offsets: str = "earliest",
    dedup_window: str = "1 hour",
    max_offsets_per_trigger: int | None = None,
    consumer_options: dict[str, str] | None = None,
    checkpoint: str | Path | None = None,
) -> StreamingQuery:
    """Start the Kafka -> bronze / quarantine / silver.events query for one source's topic.

    Args:
        ctx: the job context (project, session, tables, run id).
        bootstrap_servers: ``host:port[,host:port]`` of the Kafka cluster.
        topic: the topic to read.
        source: ``"web_events"`` / ``"email_events"`` (from ``conf/sources``) or its config.
        trigger: ``"available_now"`` (process what is there, then stop) or an interval
            such as ``"1 second"`` (run until stopped).
        starting_offsets: ``earliest`` / ``latest`` for a query without a checkpoint.
        dedup_window: how long (processing time) the query remembers event ids in its state.
        checkpoint: the query's checkpoint folder (default: per source and topic under the
            project's checkpoints). Restarting with the same folder resumes exactly.

    Returns:
        The running :class:`~pyspark.sql.streaming.StreamingQuery`; with ``available_now``
        call ``awaitTermination()``.
    """
    trigger_kwargs = parse_trigger(trigger)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
        raise StreamDefinitionError(f"invalid Kafka topic name {topic!r}")
    if starting_offsets not in ("earliest", "latest"):
        raise StreamDefinitionError(f"starting_offsets must be 'earliest' or 'latest', got {starting_offsets!r}")
    source_config = as_json_messages(_resolve_source(ctx, source))
    source_name = source_config.name
    location = Path(checkpoint) if checkpoint is not None else checkpoint_location(ctx, source=source_name, topic=topic)
    # tables shared by every stream (and the batch ingest): create them before any query
    # runs, so two first micro-batches never race to create them
    create_stream_tables(ctx, source_config)
    reader = (
        ctx.spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        # offsets that expired before we read them are lost data: stop rather than skip
        .option("failOnDataLoss", "true")
    )
    if max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    for key, value in (consumer_options or {}).items():
        reader = reader.option(f"kafka.{key}", value)

    stream = (
        reader.load()
        .transform(kafka_messages)
        .transform(validate_messages, source=source_config, as_of=ctx.as_of)
        .transform(with_dedup_key)
        .transform(deduplicated, window=dedup_window)
    )
    # stable per checkpoint: names the query in logs and progress
    query_name = f"kafka_{source_name}_{hashlib.sha1(str(location).encode()).hexdigest()[:8]}"
    writer = (
        stream.writeStream.queryName(query_name)
        .foreachBatch(_batch_writer(ctx, source_config, topic=topic, query_name=query_name))
        .option("checkpointLocation", str(location))
        .trigger(**trigger_kwargs)
    )
    logger.info("starting %s: %s -> %s (trigger %s, checkpoint %s)", query_name, topic, source_name, trigger, location)
    return writer.start()


def _batch_writer(
    ctx: JobContext, source: SourceConfig, *, topic: str, query_name: str
) -> Callable[[DataFrame, int], None]:
    def write_batch(batch: DataFrame, batch_id: int) -> None:
        write_micro_batch(ctx, batch, batch_id, source=source, topic=topic, query_name=query_name)

    return write_batch


# -- the sink: one micro-batch ------------------------------------------------------------
def audit_source_file(topic: str) -> str:
    """What a stream's ``ops.ingest_audit`` rows carry as ``source_file``: ``kafka://<topic>``."""
    return f"kafka://{topic}"


def write_micro_batch(
    ctx: JobContext, batch: DataFrame, batch_id: int, *, source: SourceConfig, topic: str, query_name: str
) -> dict[str, int]:
    """Write one validated, de-duplicated micro-batch; safe to run twice for the same batch.

    A replayed batch (the query died after some of these commits) inserts only what is
    missing, so every table ends as if the batch had been written once. Empty parts are not
    written at all: every Delta commit costs, and most batches have no rejects; a batch with
    no message (Spark runs some to move the watermark) writes no audit row either.

    Args:
        topic: the Kafka topic the query reads (the audit row's ``kafka://<topic>``).
        query_name: the query's name, derived from its checkpoint path; with ``batch_id`` it keys the
            audit row, so a replay of the batch finds it and a second consumer gets its own.

    Returns:
        The batch's audit counts: ``rows_read`` (messages after the stream's de-duplication),
        ``rows_loaded``, ``rows_quarantined``, ``duplicates_removed``, ``rows_erased`` (messages
        of erased people, written nowhere).

    Raises:
        AuditError: read != loaded + quarantined + duplicates + erased, or a count below zero;
            raised before the audit row is written: the query stops, and a restart replays the batch.
    """
    from pyspark.sql import functions as F

    from lakecdp.ingest.audit import audit_row, check_audit_counts
    from lakecdp.ingest.classify import erased_condition
    from lakecdp.ingest.rows import KAFKA_POSITION, bronze_rows, quarantine_rows
    from lakecdp.ingest.schemas import INGEST_AUDIT_SCHEMA
    from lakecdp.ingest.standardise import to_events

    name = source.name
    # one timestamp for the whole batch, the same in every table it writes
    ingested_at = datetime.now(timezone.utc)
    batch = batch.drop(DEDUP_KEY)
    # ops.erasures as it is now, every batch: an erasure made while the query runs holds from
    # the next batch; the flag is computed once (persisted), not per table written
    erased = erased_condition(ctx, batch, source)
    batch = batch.withColumn(_ERASED, erased if erased is not None else F.lit(False)).persist()
    try:
        not_erased = ~F.col(_ERASED)
        [row] = batch.agg(
            F.coalesce(F.sum((not_erased & is_valid()).cast("bigint")), F.lit(0)).alias("accepted"),
            F.coalesce(F.sum((not_erased & ~is_valid()).cast("bigint")), F.lit(0)).alias("rejected"),
            F.coalesce(F.sum(F.col(_ERASED).cast("bigint")), F.lit(0)).alias("erased"),
            F.count(F.lit(1)).alias("total"),
        ).collect()
        read, accepted, rejected = int(row["total"]), int(row["accepted"]), int(row["rejected"])
        loaded = 0
        # an erased person's messages go nowhere, not even quarantine
        kept = batch.where(not_erased).drop(_ERASED)
        if rejected:
            insert_new_rows(
                ctx,
                quarantine_rows(kept.where(~is_valid()), run_id=ctx.run_id, quarantined_at=ingested_at),
                catalog.QUARANTINE.named(name),
                keys=list(KAFKA_POSITION),
            )
        valid = kept.where(is_valid())
        if accepted:
            insert_new_rows(
                ctx,
                bronze_rows(valid, source, run_id=ctx.run_id, ingested_at=ingested_at),
                catalog.BRONZE.named(name),
                keys=[f"_{name}" for name in KAFKA_POSITION],
                evolve_schema=True,
            )
            if source.target == "orders":
                # orders posted over HTTP (lakecdp.api): the batch ingest's own silver write
                loaded = _write_orders(ctx, valid, source)
            else:
                events = to_events(valid, source, run_id=ctx.run_id, ingested_at=ingested_at)
                # the stream already dropped repeats within its window; this covers one batch that
                # holds an id twice across the window edge (MERGE would insert both)
                loaded = insert_new_rows(
                    ctx, events.dropDuplicates(["event_id"]), catalog.EVENTS.name, keys=["event_id"]
                )
        counts = {
            "rows_read": read,
            "rows_loaded": loaded,
            "rows_quarantined": rejected,
            "duplicates_removed": accepted - loaded,
            "rows_erased": int(row["erased"]),
        }
        stream_batch = f"{query_name}:{batch_id}"
        check_audit_counts(f"{name} {audit_source_file(topic)} batch {stream_batch}", counts)
        if read:
            # right after silver.events: the shorter the gap between the two commits, the
            # rarer a replay that counts this batch's own events as duplicates
            audit = ctx.spark.createDataFrame(
                [audit_row(ctx.run_id, name, audit_source_file(topic), counts, ingested_at, stream_batch)],
                INGEST_AUDIT_SCHEMA,
            )
            # evolve: warehouses whose audit table predates ``stream_batch`` get the column
            insert_new_rows(ctx, audit, AUDIT, keys=["source", "source_file", "stream_batch"], evolve_schema=True)
        # a MERGE of no rows still runs its Spark jobs: skip the batches that hold no such rows
        if any(not valid.where(F.expr(extra.filter)).isEmpty() for extra in source.also):
            with_retries(
                lambda: write_extra_records(ctx, valid, source, ingested_at=ingested_at),
                what=f"{name} also",
            )
        logger.info("%s: micro-batch %d written %s", name, batch_id, counts)
        return counts
    finally:
        batch.unpersist()


def _write_orders(ctx: JobContext, valid: DataFrame, source: SourceConfig) -> int:
    """Upsert orders and their items exactly as a landed shop_orders file does; returns the orders
    written (one per order id: a batch holding an order twice keeps one, the rest are duplicates)."""
    unique = valid.dropDuplicates(source.primary_key)
    with_retries(lambda: write_silver(ctx, unique, source, lambda _table: None), what=f"{source.name} orders")
    return unique.count()


# -- runs of conf/streaming.yaml ----------------------------------------------------------
def start_configured_streams(
    ctx: JobContext, config: StreamingConfig, *, trigger: str | None = None
) -> list[StreamingQuery]:
    """Start one query per stream of ``conf/streaming.yaml`` (``trigger`` overrides the config's)."""
    return [
        start_kafka_stream(
            ctx,
            bootstrap_servers=config.kafka.bootstrap_servers,
            topic=spec.topic,
            source=spec.source,
            trigger=trigger or config.trigger,
            starting_offsets=config.kafka.starting_offsets,
            dedup_window=config.dedup_window,
            max_offsets_per_trigger=config.kafka.max_offsets_per_trigger,
            consumer_options=config.kafka.consumer,
        )
        for spec in config.streams
    ]


def run_streams(ctx: JobContext, *, trigger: str | None = None, timeout: float | None = None) -> dict[str, int]:
    """Run the configured streams: with ``available_now`` until the backlog is written,
    otherwise until one query fails, the process is stopped or ``timeout`` seconds pass.

    Returns:
        Rows written per query's source (accepted + rejected, after de-duplication),
        summed over its progress reports.
    """
    config = load_streaming_config(ctx.project.conf_dir)
    queries = start_configured_streams(ctx, config, trigger=trigger)
    try:
        if parse_trigger(trigger or config.trigger).get("availableNow"):
            for query in queries:
                query.awaitTermination()
        else:
            ctx.spark.streams.awaitAnyTermination(int(timeout * 1000) if timeout else None)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    counts: dict[str, int] = {}
    for spec, query in zip(config.streams, queries):
        if query.exception() is not None:
            raise RuntimeError(f"stream {spec.topic} -> {spec.source} failed: {query.exception()}")
        rows = sum(int(p.get("numInputRows", 0)) for p in (query.recentProgress or []))
        counts[f"{spec.source}_messages_read"] = rows
    return counts


def run_available_now(ctx: JobContext) -> dict[str, int]:
    """Pipeline-step form (``lakecdp.ingest.stream:run_available_now``): write every message
    the configured topics hold now, then return. Not in the default pipeline: it needs a broker."""
    return run_streams(ctx, trigger=AVAILABLE_NOW)
