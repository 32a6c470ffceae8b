"""Classification of validated rows: which load, which are duplicates, quarantined or erased.

:func:`erased_condition` is the one check of ``ops.erasures`` for both ways in: the batch
ingest and every Kafka micro-batch (:func:`lakecdp.ingest.stream.write_micro_batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from lakecdp.erasure import PERSON_KEY, erased_hashes, person_key, salted_hash_column
from lakecdp.ingest import standardise

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakecdp.context import JobContext
    from lakecdp.ingest.sources import SourceConfig


def classify(
    rows: DataFrame,
    source: SourceConfig,
    existing_keys: DataFrame | None,
    erased: Column | None = None,
    *,
    keys_repeat: bool = True,
) -> DataFrame:
    """Add ``_status``: ``erased`` | ``quarantined`` | ``duplicate`` | ``loaded``.

    Within the batch one row per primary key loads: the latest ``event_time`` (records) or the
    first seen (events, ``drop_existing_keys``); when ``existing_keys`` is given, a key already
    loaded by an earlier file is a duplicate too. ``erased`` (see :func:`erased_condition`) marks
    rows of erased people, before anything else: they are kept nowhere.

    ``keys_repeat=False``: the caller found no primary key on two rows that passed
    (:func:`keys_repeat`); every such row is then the first of its key, without a window (a
    shuffle and a sort of every row).
    """
    keys = [F.col(f"_as_read.`{k}`") for k in source.primary_key]
    if source.drop_existing_keys or source.event_time is None:
        order = [F.col("_file_order"), F.col("line")]
    else:
        order = [F.col(source.event_time).desc_nulls_last(), F.col("_file_order").desc(), F.col("line").desc()]
    bad = F.size("_reasons") > 0
    first = F.row_number().over(Window.partitionBy(*keys, bad).orderBy(*order)) if keys_repeat else F.lit(1)
    ranked = rows.withColumn("_rank", F.when(~bad, first))
    status = F.when(bad, "quarantined").when(F.col("_rank") > 1, "duplicate")
    if existing_keys is not None:
        marked = existing_keys.select(*[F.col(k).alias(f"_existing_{k}") for k in source.primary_key]).distinct()
        condition = [F.col(f"_as_read.`{k}`") == F.col(f"_existing_{k}") for k in source.primary_key]
        ranked = ranked.join(marked.withColumn("_seen", F.lit(True)), condition, "left")
        status = status.when(F.col("_seen"), "duplicate")
        ranked = ranked.drop(*[f"_existing_{k}" for k in source.primary_key])
    if erased is not None:
        status = F.when(F.coalesce(erased, F.lit(False)), "erased").otherwise(status.otherwise("loaded"))
    else:
        status = status.otherwise("loaded")
    return ranked.withColumn("_status", status).drop("_rank", "_seen")


def keys_repeat(rows: DataFrame, source: SourceConfig) -> bool:
    """True when a primary key (as read) may be on two rows of ``rows`` that passed validation --
    the rows :func:`classify` ranks. One aggregation of a 64-bit hash of the key: distinct hashes
    are distinct keys, so False is certain; True is a repeated key or, about once in 4 x 10^7 batches
    of a million keys, two keys with one hash -- then the keys are ranked, as they would be anyway."""
    keys = [F.col(f"_as_read.`{k}`") for k in source.primary_key]
    hashes = rows.where(F.size("_reasons") == 0).select(F.xxhash64(*keys).alias("_key_hash"))
    return not hashes.groupBy("_key_hash").count().where(F.col("count") > 1).isEmpty()


def erased_condition(ctx: JobContext, rows: DataFrame, source: SourceConfig) -> Column | None:
    """True where a row carries an identifier whose salted hash is in ``ops.erasures``; None if none.

    Each identifier the source maps (email, phone, CRM id, customer number, device ids and, for
    customer records, the source record id and the name + birth date + postcode key,
    :func:`lakecdp.erasure.person_key`) is standardised as silver would store it, then
    hashed with the erasure salt and looked up: the suppression list holds only hashes.
    The Kafka stream calls it for every micro-batch (:func:`lakecdp.ingest.stream.write_micro_batch`):
    one check for both ways in. ``ops.erasures`` is read at the call.
    """
    erasures = erased_hashes(ctx)
    if erasures is None:
        return None
    wanted: dict[str, list[str]] = {}
    for row in erasures.collect():
        wanted.setdefault(row["identifier_type"], []).append(row["salted_hash"])
    if not wanted:
        return None
    mapping, junk = source.mapping, source.junk_values

    def as_text(name: str) -> Column:
        return F.expr(mapping[name]).cast("string")

    def mapped(name: str) -> Column | None:
        return as_text(name) if name in mapping else None

    values: dict[str, Column] = {}
    if (email := mapped("email")) is not None:
        values["email"] = standardise.normalise_email(email, junk)
    if (phone := mapped("phone")) is not None:
        country = mapped("country")
        values["phone"] = standardise.normalise_phone(
            phone,
            standardise.country_code(country) if country is not None else F.lit(None).cast("string"),
            default_region=source.default_region,
            junk_values=junk,
        )
    for name in ("crm_id", "customer_number", "device_id"):
        if (column := mapped(name)) is not None:
            values[name] = standardise.null_if_junk(F.trim(column), junk)
    if source.target == "customer_records" and (record := mapped("source_record_id")) is not None:
        values["source_record_id"] = F.trim(record)
    checks = [
        salted_hash_column(ctx, kind, column).isin(wanted[kind]) for kind, column in values.items() if kind in wanted
    ]
    if (
        source.target == "customer_records"
        and PERSON_KEY in wanted
        and all(name in mapping for name in ("first_name", "last_name", "date_of_birth", "postcode"))
    ):
        # name + birth date + postcode: the person without any email, phone or id
        key = person_key(
            as_text("first_name"), as_text("last_name"), F.expr(mapping["date_of_birth"]), as_text("postcode")
        )
        checks.append(salted_hash_column(ctx, PERSON_KEY, key).isin(wanted[PERSON_KEY]))
    if "device_ids" in mapping and "device_id" in wanted:
        hashes = wanted["device_id"]
        checks.append(
            F.exists(
                F.coalesce(F.expr(mapping["device_ids"]), F.array().cast("array<string>")),
                lambda d: salted_hash_column(ctx, "device_id", F.trim(d)).isin(hashes),
            )
        )
    if not checks:
        return None
    condition = F.lit(False)
    for check in checks:
        condition = condition | F.coalesce(check, F.lit(False))
    return condition
