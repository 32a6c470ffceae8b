"""Pickup: load the intake log into bronze / quarantine / silver.events, exactly once.

Each segment file is read from where the ledger ``ops.api_intake`` says the last pickup
stopped, up to its last complete line. The lines go through the Kafka stream's own code
(:func:`lakecdp.ingest.stream.write_micro_batch`: the batch ingest's validator, erasure
refusal, insert-if-new MERGEs, an ``ops.ingest_audit`` row), with the log position as the
"Kafka" provenance: topic ``lakecdp-api.<source>``, partition = segment number, offset = byte
offset of the line. So a row in bronze or quarantine says exactly which log line it came from,
and writing the same lines twice adds nothing.

The ledger records a chunk ``started`` (segment, start, end) before writing and ``done``
after; a pickup killed half way replays the started chunk with the same bounds (the same audit
key, the same rows: nothing twice), then goes on.

Example:
    >>> ctx = JobContext.create(project, spark)
    >>> run(ctx)          # also a pipeline step: ``lakecdp.api.pickup:run``
    {'events_read': 120, 'events_loaded': 118, ...}
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.api.chunk_ledger import ChunkLedger
from lakecdp.api.embedded_pickup import EmbeddedPickupUnsupported, unsupported_reason, write_chunk
from lakecdp.api.intake_log import complete_length, read_lines, segments

if TYPE_CHECKING:
    from collections.abc import Callable

    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore

logger = logging.getLogger(__name__)

LEDGER = catalog.API_INTAKE.name
LEDGER_SCHEMA = catalog.API_INTAKE.ddl
CHUNKS = ChunkLedger(catalog.API_INTAKE, key=("segment",))
TOPIC_PREFIX = "lakecdp-api."
# kafka_timestamp: the request's receive time, so FUTURE_TIMESTAMP is judged as the HTTP validator
# judged it (as the Kafka stream judges by the broker's time), not against the run's as-of
# one micro-batch at most this many bytes of log lines: a backlog of hundreds of thousands of events
# handed to Spark as one local relation ran the driver out of heap (300,000 events, 1 GB driver)
MAX_CHUNK_BYTES = 16 << 20
_RAW_SCHEMA = "raw string, kafka_topic string, kafka_partition int, kafka_offset bigint, kafka_timestamp timestamp"


def topic_of(source: str) -> str:
    """The provenance topic of API events of ``source`` (bronze ``_kafka_topic``, audit ``kafka://...``)."""
    return f"{TOPIC_PREFIX}{source}"


def _ledger(ctx: JobContext, store: DeltaStore | None = None) -> dict[int, tuple[int, tuple[int, int] | None]]:
    """segment -> (end of the last done chunk, an unfinished started chunk or None)."""
    if store is not None:
        store.create_if_missing(LEDGER, LEDGER_SCHEMA)
        rows = store.read(LEDGER, columns=CHUNKS.columns).to_pylist()
    else:
        from pyspark.sql import types as T

        ctx.tables.create_if_missing(ctx.spark, LEDGER, T.StructType.fromDDL(LEDGER_SCHEMA))
        rows = [r.asDict() for r in ctx.tables.read(ctx.spark, LEDGER).select(*CHUNKS.columns).collect()]
    return {segment: (end or 0, pending) for (segment,), (end, pending) in CHUNKS.state(rows).items()}


def _record(
    ctx: JobContext, segment: int, start: int, end: int, status: str, events: int, store: DeltaStore | None = None
) -> None:
    rows = CHUNKS.rows([((segment,), start, end, events)], status, run_id=ctx.run_id)
    if store is not None:
        store.append(rows, LEDGER, LEDGER_SCHEMA, run_id=ctx.run_id)
        return
    ctx.tables.append(ctx.spark.createDataFrame(rows.to_pylist(), LEDGER_SCHEMA), LEDGER)


def chunk_bounds(path, start: int, end: int, max_bytes: int = MAX_CHUNK_BYTES) -> list[tuple[int, int]]:
    """``[start, end)`` of a segment cut at line ends into pieces of at most ``max_bytes``
    (a single longer line is a piece of its own)."""
    bounds, piece = [], start
    for offset, line in read_lines(path, start):
        if offset >= end:
            break
        if offset > piece and offset + len(line) + 1 - piece > max_bytes:
            bounds.append((piece, offset))
            piece = offset
    if end > piece:
        bounds.append((piece, end))
    return bounds


def _chunk_rows(path, segment: int, start: int, end: int) -> dict[str, list[tuple[str, str, int, int, datetime]]]:
    by_source: dict[str, list[tuple[str, str, int, int, datetime]]] = {}
    for offset, line in read_lines(path, start):
        if offset >= end:
            break
        record = json.loads(line)
        if "request" in record:
            continue
        raw = json.dumps(record["event"], separators=(",", ":"), ensure_ascii=False)
        received = datetime.fromisoformat(record["at"])
        by_source.setdefault(record["source"], []).append((raw, topic_of(record["source"]), segment, offset, received))
    return by_source


def _as_dataframe(ctx: JobContext, rows: list[tuple[str, str, int, int, datetime]]):
    """Rows -> DataFrame through Arrow (Spark 4 takes a pyarrow Table: no per-row pickling)."""
    import pyarrow as pa

    raw, topic, partition, offset, received = zip(*rows)
    table = pa.table(
        {
            "raw": pa.array(raw, pa.string()),
            "kafka_topic": pa.array(topic, pa.string()),
            "kafka_partition": pa.array(partition, pa.int32()),
            "kafka_offset": pa.array(offset, pa.int64()),
            "kafka_timestamp": pa.array(received, pa.timestamp("us", tz="UTC")),
        }
    )
    return ctx.spark.createDataFrame(table, _RAW_SCHEMA)


def pickup(
    ctx: JobContext,
    log_dir,
    *,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    engine: str | None = None,
    fault_hook: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Load every complete line of the intake log not loaded yet, in micro-batches of at most
    ``max_chunk_bytes`` of log; returns the audit counts summed.

    Args:
        engine: ``embedded`` (validation and standardisation in Python and DuckDB, writes with
            delta-rs: :mod:`lakecdp.api.embedded_pickup`) or ``spark`` (the Kafka stream's
            micro-batch writer); default: the environment's ``engine`` (path-based tables only
            for embedded). A source the embedded pickup cannot write (orders) goes through
            Spark either way, opening a session when ``ctx`` has none.
        fault_hook: called with ``"after_<source>"`` after each source of a chunk is written
            (tests kill the pickup there).
    """
    from lakecdp.api.server import intake_sources

    sources = intake_sources(ctx.project)
    store = _store_for(ctx, engine)
    state = _ledger(ctx, store)
    totals = {"rows_read": 0, "rows_loaded": 0, "rows_quarantined": 0, "duplicates_removed": 0, "rows_erased": 0}
    for number, path in segments(log_dir):
        done_end, pending = state.get(number, (0, None))
        chunks = []
        if pending is not None:
            logger.info("%s: replaying unfinished chunk %s", path.name, pending)
            chunks.append(pending)
            done_end = pending[1]
        end = complete_length(path)
        if end > done_end:
            chunks.extend(chunk_bounds(path, done_end, end, max_chunk_bytes))
        for start, stop in chunks:
            if (start, stop) != pending:
                _record(ctx, number, start, stop, "started", 0, store)
            rows = _chunk_rows(path, number, start, stop)
            events = 0
            for source_name, raw_rows in sorted(rows.items()):
                source = sources[source_name]
                query_name = f"api_intake_{number:08d}"
                counts = None
                if store is not None and unsupported_reason(source) is None:
                    try:
                        counts = write_chunk(
                            ctx,
                            store,
                            raw_rows,
                            source=source,
                            topic=topic_of(source_name),
                            stream_batch=f"{query_name}:{start}",
                        )
                    except EmbeddedPickupUnsupported as why:
                        # raised before anything is written (a nested value of another kind than
                        # declared): this chunk of the source goes through Spark
                        logger.info("%s [%d, %d) %s: through Spark: %s", path.name, start, stop, source_name, why)
                if counts is None:
                    ctx = _with_spark(ctx)
                    counts = _spark_chunk(ctx, raw_rows, source, start=start, query_name=query_name)
                for name in totals:
                    totals[name] += counts[name]
                events += len(raw_rows)
                if fault_hook is not None:
                    fault_hook(f"after_{source_name}")
            _record(ctx, number, start, stop, "done", events, store)
            logger.info("%s [%d, %d): %d events picked up", path.name, start, stop, events)
    return totals


def _store_for(ctx: JobContext, engine: str | None) -> DeltaStore | None:
    """The delta-rs store of an embedded pickup; None for the Spark pickup."""
    from lakecdp.delta_store import DeltaStore, embedded_store

    if engine is None:
        return embedded_store(ctx, label="lakecdp-api-pickup")
    if engine not in ("embedded", "spark"):
        raise ValueError(f"engine must be 'embedded' or 'spark', got {engine!r}")
    return DeltaStore(ctx, label="lakecdp-api-pickup") if engine == "embedded" else None


def _with_spark(ctx: JobContext) -> JobContext:
    """``ctx`` itself when it has a Spark session; else the same run with the project's session."""
    if ctx.spark is not None:
        return ctx
    from lakecdp.context import JobContext, open_session

    logger.info("a source the embedded pickup cannot write: opening a Spark session")
    spark = open_session(ctx.project, app_name="lakecdp-api-pickup")
    return JobContext(project=ctx.project, spark=spark, as_of=ctx.as_of, run_id=ctx.run_id)


def _spark_chunk(ctx: JobContext, raw_rows, source, *, start: int, query_name: str) -> dict[str, int]:
    """One source's lines of a chunk through the Kafka stream's micro-batch writer."""
    from lakecdp.ingest.messages import validate_messages, with_dedup_key
    from lakecdp.ingest.stream import write_micro_batch

    batch = (
        _as_dataframe(ctx, raw_rows)
        .transform(validate_messages, source=source, as_of=ctx.as_of)
        .transform(with_dedup_key, event_id=source.primary_key[0])
    )
    return write_micro_batch(ctx, batch, start, source=source, topic=topic_of(source.name), query_name=query_name)


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline-step form: pick up the log named by ``conf/api.yaml``."""
    from lakecdp.api.config import load_api_config

    config = load_api_config(ctx.project.conf_dir)
    counts = pickup(ctx, ctx.project.path(config.log_dir))
    return {f"api_{k}": v for k, v in counts.items()}
