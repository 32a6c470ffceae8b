"""Event-triggered segments evaluated continuously from ``silver.events``.

A Structured Streaming query reads the Delta table; each micro-batch (``foreachBatch``)
finds the customers its events belong to, re-evaluates the event segments for those
customers only (over all their events, so windows and absences see the full history)
and writes changes and membership exactly as the batch job does. The run id of a
micro-batch is ``<prefix>-b<batch_id>``: when Spark replays a batch after a crash the
change ids are the same and the ones already stored are left out of the append.

Time-based exits (a window passing with no new event) are left to the scheduled batch
run; the stream makes entries fast (a cart abandoner enters within one trigger interval).

Example:
    >>> query = start_stream(ctx, trigger_available_now=True)
    >>> query.awaitTermination()
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.context import JobContext
from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.evaluate import SegmentInputs, resolve_events
from lakecdp.segments.job import (
    EVENTS_SCHEMA,
    IDENTIFIERS_SCHEMA,
    evaluate_and_write,
    read_or_empty,
    require_input,
)

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

logger = logging.getLogger(__name__)


def event_segments(segments: dict[str, SegmentDefinition]) -> dict[str, SegmentDefinition]:
    return {sid: d for sid, d in segments.items() if d.kind == "event"}


def process_batch(
    ctx: JobContext,
    batch: DataFrame,
    batch_id: int,
    *,
    segments: dict[str, SegmentDefinition],
    run_prefix: str,
    as_of: datetime | None,
) -> dict[str, int]:
    """Re-evaluate the event segments for the customers of one micro-batch of events."""
    spark = ctx.spark
    identifiers = read_or_empty(ctx, catalog.IDENTIFIERS.name, IDENTIFIERS_SCHEMA)
    affected = (
        resolve_events(batch, identifiers)
        .filter(F.col("customer_id").isNotNull())
        .select("customer_id")
        .distinct()
        .localCheckpoint()
    )
    if affected.isEmpty():
        logger.info("stream batch %d: no resolvable customers", batch_id)
        return {}
    moment = as_of or datetime.now(timezone.utc)
    batch_ctx = JobContext(project=ctx.project, spark=spark, as_of=moment, run_id=f"{run_prefix}-b{batch_id:08d}")
    all_events = resolve_events(read_or_empty(ctx, catalog.EVENTS.name, EVENTS_SCHEMA), identifiers)
    inputs = SegmentInputs(
        profile=require_input(ctx, catalog.CUSTOMER_PROFILE.name),
        features=require_input(ctx, catalog.CUSTOMER_FEATURES.name),
        events=all_events.join(affected, "customer_id", "left_semi"),
        as_of=moment,
    )
    counts = evaluate_and_write(
        batch_ctx,
        event_segments(segments),
        inputs,
        mode="stream",
        scope=affected,
        all_segments=segments,
    )
    logger.info("stream batch %d (%s): %s", batch_id, batch_ctx.run_id, counts)
    return counts


def start_stream(
    ctx: JobContext,
    *,
    segments: dict[str, SegmentDefinition] | None = None,
    checkpoint: str | None = None,
    trigger_available_now: bool = False,
    processing_time: str = "1 minute",
    run_prefix: str = "stream",
    as_of: datetime | None = None,
) -> StreamingQuery:
    """Start the streaming evaluation of event segments.

    Args:
        segments: definitions (default: ``conf/segments``); only event ones are evaluated,
            the others take part in exclusions and groups with their current members.
        checkpoint: streaming checkpoint folder (default ``<checkpoints>/segments_stream``).
        trigger_available_now: process what is there and stop (tests, catch-up runs).
        processing_time: micro-batch interval otherwise.
        as_of: fixed evaluation time (tests); default the wall clock per micro-batch.

    Returns:
        The running query.
    """
    definitions = segments if segments is not None else load_segments(ctx.project.conf_dir / "segments")
    if not event_segments(definitions):
        raise ValueError("no event-triggered segments to stream")
    tables = ctx.tables
    reader = ctx.spark.readStream.format("delta")
    source = (
        reader.table(tables.identifier(catalog.EVENTS.name).replace("`", ""))
        if tables.uses_catalog
        else reader.load(tables.location(catalog.EVENTS.name))
    )
    location = checkpoint or str(Path(ctx.project.checkpoints) / "segments_stream")

    def handle(batch: DataFrame, batch_id: int) -> None:
        process_batch(ctx, batch, batch_id, segments=definitions, run_prefix=run_prefix, as_of=as_of)

    writer = source.writeStream.foreachBatch(handle).option("checkpointLocation", location)
    writer = (
        writer.trigger(availableNow=True) if trigger_available_now else writer.trigger(processingTime=processing_time)
    )
    return writer.queryName(f"segments_stream_{run_prefix}").start()
