"""Kafka messages -> validated, de-duplicated rows: the stream's pure transforms.

Each is ``DataFrame -> DataFrame`` (or a ``Column``), chained with ``transform`` by the query
(:func:`lakecdp.ingest.stream.start_kafka_stream`) and by the HTTP intake pickup
(:mod:`lakecdp.api.pickup`); none reads or writes a table.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakecdp.ingest.sources import SourceConfig

#: the broker's timestamp of a message (``kafka_messages``); "future" is judged by it
KAFKA_TIMESTAMP = "kafka_timestamp"
#: ``with_dedup_key``'s column: the event id of a valid row, the Kafka position of a rejected one
DEDUP_KEY = "_dedup_key"
_SEEN_AT = "_seen_at"
_RECEIVED = "_received"


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
    return df.withColumn(DEDUP_KEY, F.when(is_valid(), F.concat(F.lit("event:"), F.col(event_id))).otherwise(position))


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
        .dropDuplicatesWithinWatermark([DEDUP_KEY])
        .drop(_SEEN_AT)
    )


def validate_messages(df: DataFrame, *, source: SourceConfig, as_of: datetime) -> DataFrame:
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
