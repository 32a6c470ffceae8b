"""The rows ingest writes to ``bronze.<source>`` and ``quarantine.<source>``, one definition for
both ways in: a landed file (the batch job) and a Kafka micro-batch (the stream).

Validated rows carry where they came from: ``source_file, line`` (a file) or ``kafka_topic,
kafka_partition, kafka_offset`` (a Kafka message, or a line of the HTTP intake log); the builders
keep whichever the rows have and leave the other null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp.ingest.schemas import QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakecdp.context import JobContext
    from lakecdp.ingest.landing import LandedFile
    from lakecdp.ingest.sources import SourceConfig

#: the Kafka position a row read from Kafka carries (parse_and_validate keeps it as it is)
KAFKA_POSITION = ("kafka_topic", "kafka_partition", "kafka_offset")
_POSITION_TYPES = {"kafka_topic": "string", "kafka_partition": "int", "kafka_offset": "bigint"}


def _from_kafka(rows: DataFrame) -> bool:
    return "kafka_topic" in rows.columns


def _file_position(rows: DataFrame) -> list[Column]:
    """``source_file, line`` of a file's rows; null for Kafka messages."""
    if _from_kafka(rows):
        return [F.lit(None).cast("string").alias("source_file"), F.lit(None).cast("bigint").alias("line")]
    return [F.col("source_file"), F.col("line")]


def _kafka_position(rows: DataFrame) -> list[Column]:
    """``kafka_topic, kafka_partition, kafka_offset`` of Kafka messages; null for a file's rows."""
    if _from_kafka(rows):
        return [F.col(name).cast(kind).alias(name) for name, kind in _POSITION_TYPES.items()]
    return [F.lit(None).cast(kind).alias(name) for name, kind in _POSITION_TYPES.items()]


def bronze_rows(
    accepted: DataFrame,
    source: SourceConfig,
    *,
    run_id: str,
    ingested_at: datetime,
    rescued_keys: Sequence[str] | None = None,
) -> DataFrame:
    """Rows that passed validation -> ``bronze.<source>`` rows: the fields as read, drift, provenance.

    Args:
        accepted: validated rows (``parse_and_validate``) that passed.
        rescued_keys: with ``drift: evolve``, the unknown fields that become columns of their own;
            None keeps them as JSON in ``_rescued``.

    Returns:
        The source's columns as read, then ``_rescued`` (or the evolved columns), ``_source_file,
        _line`` (null for Kafka), for Kafka messages ``_kafka_topic, _kafka_partition,
        _kafka_offset``, and ``_ingested_at, _run_id, _row_hash`` (SHA-256 of ``raw``).
    """
    if rescued_keys is None:
        drift = [F.col("_rescued")]
    else:
        extra = F.from_json("_rescued", "map<string,string>")
        drift = [F.try_element_at(extra, F.lit(key)).alias(key) for key in rescued_keys]
    source_file, line = _file_position(accepted)
    kafka = (
        [column.alias(f"_{name}") for column, name in zip(_kafka_position(accepted), KAFKA_POSITION)]
        if _from_kafka(accepted)
        else []
    )
    return accepted.select(
        *[F.col(f"_as_read.`{name}`").alias(name) for name in source.column_names],
        *drift,
        source_file.alias("_source_file"),
        line.alias("_line"),
        *kafka,
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.lit(run_id).cast("string").alias("_run_id"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def quarantine_rows(rejected: DataFrame, *, run_id: str, quarantined_at: datetime) -> DataFrame:
    """Rows the validator rejected -> ``quarantine.<source>`` rows (QUARANTINE_SCHEMA's columns):
    the raw line or message, where it came from, the reason codes and their detail."""
    return rejected.select(
        F.col("raw"),
        *_file_position(rejected),
        *_kafka_position(rejected),
        F.col("_reasons").alias("reasons"),
        F.col("_detail").cast("string").alias("detail"),
        F.lit(run_id).cast("string").alias("run_id"),
        F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
    ).select(*QUARANTINE_SCHEMA.fieldNames())


def refused_file_rows(ctx: JobContext, refused: list[LandedFile]) -> DataFrame:
    """One quarantine row per file refused as a whole: no ``raw`` (its bytes were not read, a
    link's target never is), ``line`` null, the reason and what was seen in ``detail``."""
    return ctx.spark.createDataFrame(
        [(None, f.relative, None, None, None, None, [f.reason], f.detail, ctx.run_id, ctx.as_of) for f in refused],
        QUARANTINE_SCHEMA,
    )


def rescued_keys(classified: DataFrame) -> list[str]:
    """The unknown fields rescued from any row (``drift: evolve`` makes each a bronze column)."""
    rows = (
        classified.where(F.col("_rescued").isNotNull())
        .select(F.explode(F.map_keys(F.from_json("_rescued", "map<string,string>"))).alias("k"))
        .distinct()
        .collect()
    )
    return sorted(row[0] for row in rows)
