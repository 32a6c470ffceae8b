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
refuses a row, by the same :func:`~lakecdp.ingest.job.erased_condition`: it is written to no
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
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import Field, field_validator

from lakecdp import catalog
from lakecdp.config import ConfigError, StrictModel, load_model

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.streaming import StreamingQuery

    from lakecdp.context import JobContext
    from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

#: the silver targets a Kafka stream writes: a source of one of these, whose format has a JSON
#: message form (lakecdp.ingest.formats), is streamed by naming it in conf/streaming.yaml
STREAM_TARGETS = ("events",)

AVAILABLE_NOW = "available_now"
# "1 second", "500 milliseconds", "2 minutes"
_INTERVAL_RE = re.compile(r"^\d+\s+(millisecond|milliseconds|second|seconds|minute|minutes|hour|hours)$")
# Kafka provenance as parse_and_validate expects it, plus the broker's timestamp
PROVENANCE = ("kafka_topic", "kafka_partition", "kafka_offset")
KAFKA_TIMESTAMP = "kafka_timestamp"
BRONZE_KEYS = ("_kafka_topic", "_kafka_partition", "_kafka_offset")
_DEDUP_KEY = "_dedup_key"
_SEEN_AT = "_seen_at"
_ERASED = "_erased"


class StreamDefinitionError(ValueError):
    """A stream is asked for with an unknown source, a bad topic or a bad trigger."""


# -- configuration: conf/streaming.yaml ------------------------------------------------
class KafkaSettings(StrictModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    # where a query without a checkpoint starts; a checkpoint always wins
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    # cap a micro-batch (None: everything available); keeps the first batch of a backlog small
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
    # extra consumer settings passed as ``kafka.<key>`` (security, timeouts)
    consumer: dict[str, str] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class TopicStream(StrictModel):
    # a source of conf/sources that can be streamed (stream_refusal); checked when loaded
    source: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")


class StreamingConfig(StrictModel):
    """``conf/streaming.yaml``: where the events come from and how often to process them."""

    version: Literal[1]
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    streams: list[TopicStream]
    # continuous runs: "1 second", "30 seconds"; or "available_now" (process the backlog, stop)
    trigger: str = "10 seconds"
    # how long de-duplication remembers an event id (processing time); later re-deliveries
    # are still stopped by the MERGE on event_id, this only bounds the state store
    dedup_window: str = "1 hour"

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        parse_trigger(value)
        return value

    @field_validator("dedup_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not _INTERVAL_RE.match(value.strip()):
            raise ValueError(f"expected an interval like '1 hour', got {value!r}")
        return value.strip()


def load_streaming_config(conf_dir: str | Path) -> StreamingConfig:
    """Load ``<conf_dir>/streaming.yaml`` (errors name the file and field); each stream's
    source must be one of ``<conf_dir>/sources`` that can be streamed (:func:`stream_refusal`)."""
    from lakecdp.ingest.sources import load_sources

    path = Path(conf_dir) / "streaming.yaml"
    config = load_model(path, StreamingConfig)
    sources = load_sources(Path(conf_dir) / "sources") if config.streams else {}
    for index, spec in enumerate(config.streams):
        refusal = stream_refusal(sources.get(spec.source), spec.source)
        if refusal is not None:
            raise ConfigError(f"{path}: streams[{index}].source: {refusal}")
    return config


def parse_trigger(trigger: str) -> dict[str, object]:
    """``"available_now"`` or an interval (``"1 second"``) -> ``DataStreamWriter.trigger`` kwargs."""
    text = trigger.strip()
    if text in (AVAILABLE_NOW, "availableNow"):
        return {"availableNow": True}
    if _INTERVAL_RE.match(text):
        return {"processingTime": text}
    raise StreamDefinitionError(f"trigger must be 'available_now' or an interval like '1 second', got {trigger!r}")


# -- pure transforms --------------------------------------------------------------------
def kafka_messages(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> ``raw`` (the message as text) + provenance + broker timestamp."""
    from pyspark.sql import functions as F

    return kafka_df.select(
        F.col("value").cast("string").alias("raw"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias(KAFKA_TIMESTAMP),
    )


def is_valid() -> Column:
    """Rows the validator accepted: no reason codes."""
    from pyspark.sql import functions as F

    return F.coalesce(F.size("_reasons"), F.lit(0)) == 0


def with_dedup_key(df: DataFrame, *, event_id: str = "event_id") -> DataFrame:
    """A key that is the event id for valid rows and the Kafka position for rejected ones.

    Rejected rows are never collapsed into each other (many have no event id at all), so every
    bad message reaches quarantine with its own partition and offset.
    """
    from pyspark.sql import functions as F

    position = F.concat_ws(
        ":",
        F.lit("kafka"),
        F.col("kafka_topic"),
        F.col("kafka_partition").cast("string"),
        F.col("kafka_offset").cast("string"),
    )
    return df.withColumn(_DEDUP_KEY, F.when(is_valid(), F.concat(F.lit("event:"), F.col(event_id))).otherwise(position))


def deduplicated(df: DataFrame, *, window: str) -> DataFrame:
    """Drop repeated event ids seen within the last ``window`` of processing (streaming state).

    The watermark runs on the micro-batch's own timestamp, not on the Kafka record time:
    rows older than a watermark are dropped silently, and Kafka time is set by producers
    (a lagging partition, a backlog read in several batches, a replay keeping the original
    timestamps would all look "late"). The batch time never is, so nothing is lost; a
    replayed batch keeps its original batch time (it is in the checkpoint's offset log).
    """
    from pyspark.sql import functions as F

    return (
        df.withColumn(_SEEN_AT, F.current_timestamp())
        .withWatermark(_SEEN_AT, window)
        .dropDuplicatesWithinWatermark([_DEDUP_KEY])
        .drop(_SEEN_AT)
    )


def quarantine_rows(rejected: DataFrame, *, run_id: str, quarantined_at: datetime) -> DataFrame:
    """Rejected messages -> ``quarantine.<source>`` rows: the raw message, its Kafka position, reasons."""
    from pyspark.sql import functions as F

    return rejected.select(
        F.col("raw"),
        F.lit(None).cast("string").alias("source_file"),
        F.lit(None).cast("bigint").alias("line"),
        F.col("kafka_topic").cast("string"),
        F.col("kafka_partition").cast("int"),
        F.col("kafka_offset").cast("bigint"),
        F.col("_reasons").alias("reasons"),
        F.col("_detail").cast("string").alias("detail"),
        F.lit(run_id).cast("string").alias("run_id"),
        F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
    )


def bronze_rows(accepted: DataFrame, source: SourceConfig, *, run_id: str, ingested_at: datetime) -> DataFrame:
    """Accepted messages -> ``bronze.<source>`` rows: the fields as read + Kafka provenance."""
    from pyspark.sql import functions as F

    return accepted.select(
        *[F.col(f"_as_read.`{name}`").alias(name) for name in source.column_names],
        F.col("_rescued"),
        F.lit(None).cast("string").alias("_source_file"),
        F.lit(None).cast("bigint").alias("_line"),
        F.col("kafka_topic").cast("string").alias("_kafka_topic"),
        F.col("kafka_partition").cast("int").alias("_kafka_partition"),
        F.col("kafka_offset").cast("bigint").alias("_kafka_offset"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.lit(run_id).cast("string").alias("_run_id"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def as_json_messages(source: SourceConfig) -> SourceConfig:
    """The source as it arrives on Kafka: one JSON object per message, whatever its file format.

    Email events land as CSV files, but on Kafka they are JSON objects with the same fields;
    the columns, required fields and checks stay the source's own. The format decides
    (:meth:`lakecdp.ingest.formats.SourceFormat.as_message`).
    """
    try:
        return source.file_format.as_message(source)
    except ValueError as exc:
        raise StreamDefinitionError(
            f"source {source.name!r} ({source.format}) cannot arrive as Kafka JSON: {exc}"
        ) from None


def stream_refusal(source: SourceConfig | None, name: str) -> str | None:
    """Why source ``name`` cannot be streamed from Kafka, or None when it can: it must exist,
    load a target a stream writes (:data:`STREAM_TARGETS`) and have a JSON message form."""
    if source is None:
        return f"no source named {name!r} in conf/sources"
    if source.target not in STREAM_TARGETS:
        return (
            f"source {name!r} cannot be streamed from Kafka: it loads {source.target}; "
            f"a stream writes {', '.join(STREAM_TARGETS)} only"
        )
    try:
        as_json_messages(source)
    except StreamDefinitionError as exc:
        return f"source {name!r} cannot be streamed from Kafka: {exc}"
    return None


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


_RETRIES = 5
_T = TypeVar("_T")


def _with_retries(action: Callable[[], _T], *, what: str) -> _T:
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
        metrics = builder.whenNotMatchedInsertAll().execute().first()
        return int(metrics["num_inserted_rows"])

    return _with_retries(write, what=name)


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
    from lakecdp.ingest.job import AUDIT
    from lakecdp.ingest.schemas import INGEST_AUDIT_SCHEMA, SILVER_SCHEMAS

    ctx.tables.create_if_missing(ctx.spark, catalog.EVENTS.name, SILVER_SCHEMAS["events"])
    ctx.tables.create_if_missing(ctx.spark, AUDIT, INGEST_AUDIT_SCHEMA)
    for extra in source_config.also:
        ctx.tables.create_if_missing(ctx.spark, catalog.SILVER[extra.target].name, SILVER_SCHEMAS[extra.target])
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
        .transform(_validate, source=source_config, as_of=ctx.as_of)
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


_RECEIVED = "_received"


def _validate(df: DataFrame, *, source: SourceConfig, as_of: datetime) -> DataFrame:
    """The shared validator, shielded from blank messages.

    Spark 4.2's ``from_json`` on an empty / whitespace-only string yields a null struct whose
    fields, when projected into a new struct, throw a NullPointerException inside generated
    code -- one empty Kafka message would kill the query on every restart (a poison pill).
    Blank messages are therefore validated as a placeholder that is not JSON (so they get
    ``MALFORMED_LINE`` like any unparsable message) and keep their received text as ``raw``.
    """
    from pyspark.sql import functions as F

    from lakecdp.ingest.validate import parse_and_validate

    blank = F.trim(F.col("raw")) == ""
    shielded = df.withColumn(_RECEIVED, F.col("raw")).withColumn(
        "raw", F.when(blank, F.lit("<blank message>")).otherwise(F.col("raw"))
    )
    return (
        # "future" is judged by when the broker received each message, not by the query's start
        parse_and_validate(
            shielded, source, as_of=as_of, received_at=KAFKA_TIMESTAMP if KAFKA_TIMESTAMP in df.columns else None
        )
        .withColumn("raw", F.col(_RECEIVED))
        .drop(_RECEIVED)
    )


def _batch_writer(
    ctx: JobContext, source: SourceConfig, *, topic: str, query_name: str
) -> Callable[[DataFrame, int], None]:
    def write_batch(batch: DataFrame, batch_id: int) -> None:
        write_micro_batch(ctx, batch, batch_id, source=source, topic=topic, query_name=query_name)

    return write_batch


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

    from lakecdp.ingest.job import AUDIT, audit_row, check_audit_counts, erased_condition, write_extra_records
    from lakecdp.ingest.schemas import INGEST_AUDIT_SCHEMA
    from lakecdp.ingest.standardise import to_events

    name = source.name
    # one timestamp for the whole batch, the same in every table it writes
    ingested_at = datetime.now(timezone.utc)
    batch = batch.drop(_DEDUP_KEY)
    # ops.erasures as it is now, every batch: an erasure made while the query runs holds from
    # the next batch; the flag is computed once (persisted), not per table written
    erased = erased_condition(ctx, batch, source)
    batch = batch.withColumn(_ERASED, erased if erased is not None else F.lit(False)).persist()
    try:
        not_erased = ~F.col(_ERASED)
        row = batch.agg(
            F.coalesce(F.sum((not_erased & is_valid()).cast("bigint")), F.lit(0)).alias("accepted"),
            F.coalesce(F.sum((not_erased & ~is_valid()).cast("bigint")), F.lit(0)).alias("rejected"),
            F.coalesce(F.sum(F.col(_ERASED).cast("bigint")), F.lit(0)).alias("erased"),
            F.count(F.lit(1)).alias("total"),
        ).first()
        read, accepted, rejected = int(row["total"]), int(row["accepted"]), int(row["rejected"])
        loaded = 0
        # an erased person's messages go nowhere, not even quarantine
        kept = batch.where(not_erased).drop(_ERASED)
        if rejected:
            insert_new_rows(
                ctx,
                quarantine_rows(kept.where(~is_valid()), run_id=ctx.run_id, quarantined_at=ingested_at),
                catalog.QUARANTINE.named(name),
                keys=list(PROVENANCE),
            )
        valid = kept.where(is_valid())
        if accepted:
            insert_new_rows(
                ctx,
                bronze_rows(valid, source, run_id=ctx.run_id, ingested_at=ingested_at),
                catalog.BRONZE.named(name),
                keys=list(BRONZE_KEYS),
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
            _with_retries(
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
    from lakecdp.ingest.job import write_silver

    unique = valid.dropDuplicates(source.primary_key)
    _with_retries(lambda: write_silver(ctx, unique, source, lambda _table: None), what=f"{source.name} orders")
    return unique.count()


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
