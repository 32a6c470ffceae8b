"""Suppression at send time, through the identity graph.

A person is suppressed when any identifier of theirs unsubscribed, hard-bounced or complained,
when their profile says ``email_consent = false``, or when an erasure was requested for one of
their identifiers. The trigger (say an email address) is resolved to its ``customer_id`` and
then expanded to *every* identifier of that customer, so a change keyed by the customer, or a
payload carrying any of their emails or phones, is suppressed in every destination.

Erasure requests (``ops.erasures``) hold only salted hashes of identifiers; the job matches
them with :func:`lakecdp.erasure.salted_hash_column` (same salt, same normalisation).

The functions here are DataFrame -> DataFrame; the job does the reading and writing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F

from lakecdp import catalog

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SUPPRESSIONS = catalog.SUPPRESSIONS.name

SUPPRESSIONS_SCHEMA = catalog.SUPPRESSIONS.struct()

# silver.events event type -> suppression reason
EVENT_REASONS = {
    "email_unsubscribe": "unsubscribed",
    "email_bounce": "hard_bounce",
    "email_complaint": "complaint",
}
_IDS = "customer_id string, identifier_type string, identifier_value string"


def normalised_email(column: Column) -> Column:
    """Trimmed, lower-cased email; empty becomes null."""
    return F.nullif(F.lower(F.trim(column)), F.lit(""))


def event_triggers(events: DataFrame, *, as_of: datetime) -> DataFrame:
    """Unsubscribes, hard bounces and complaints up to ``as_of``, per email.

    Returns:
        ``identifier_type, identifier_value, reason, since`` (earliest event).
    """
    reason = F.coalesce(*[F.when(F.col("event_type") == e, F.lit(r)) for e, r in EVENT_REASONS.items()])
    return (
        events.where(F.col("event_type").isin(list(EVENT_REASONS)))
        .where((F.col("event_type") != "email_bounce") | (F.lower(F.col("bounce_type")) == "hard"))
        .where(F.col("occurred_at") <= F.lit(as_of))
        .select(
            F.lit("email").alias("identifier_type"),
            normalised_email(F.col("email")).alias("identifier_value"),
            reason.alias("reason"),
            F.col("occurred_at").alias("since"),
        )
        .where(F.col("identifier_value").isNotNull())
        .groupBy("identifier_type", "identifier_value", "reason")
        .agg(F.min("since").alias("since"))
    )


def customer_identifiers(
    *,
    identifiers: DataFrame | None = None,
    records: DataFrame | None = None,
    id_map: DataFrame | None = None,
    profile: DataFrame | None = None,
) -> DataFrame | None:
    """Every (customer_id, identifier_type, identifier_value) the identity graph knows.

    Union of ``identity.identifiers``, ``silver.customer_records`` joined to
    ``identity.id_map`` (email, phone) and the profile's ``emails`` / ``phones``.
    """
    parts: list[DataFrame] = []
    if identifiers is not None:
        parts.append(identifiers.select("customer_id", "identifier_type", "identifier_value"))
    if records is not None and id_map is not None:
        linked = records.join(id_map.select("record_id", "customer_id"), "record_id")
        parts.append(
            linked.select(
                "customer_id",
                F.expr("stack(2, 'email', email, 'phone', phone) AS (identifier_type, identifier_value)"),
            )
        )
    if profile is not None:
        empty = F.array().cast("array<string>")
        # one pass over the profile; normalised after the explode (small generated code)
        every = F.concat(
            F.array(
                F.struct(F.lit("email").alias("t"), F.col("email").alias("v")),
                F.struct(F.lit("phone").alias("t"), F.col("phone").alias("v")),
            ),
            F.transform(
                F.coalesce(F.col("emails"), empty), lambda e: F.struct(F.lit("email").alias("t"), e.alias("v"))
            ),
            F.transform(
                F.coalesce(F.col("phones"), empty), lambda p: F.struct(F.lit("phone").alias("t"), p.alias("v"))
            ),
        )
        parts.append(
            profile.select("customer_id", F.explode(every).alias("id")).select(
                "customer_id", F.col("id.t").alias("identifier_type"), F.col("id.v").alias("identifier_value")
            )
        )
    if not parts:
        return None
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    union = union.withColumn(
        "identifier_value",
        F.when(F.col("identifier_type") == "email", normalised_email(F.col("identifier_value"))).otherwise(
            F.col("identifier_value")
        ),
    )
    # duplicates are harmless: build_suppressions aggregates per identifier
    return union.where(
        F.col("customer_id").isNotNull() & F.col("identifier_value").isNotNull() & (F.col("identifier_value") != "")
    )


def consent_triggers(profile: DataFrame) -> DataFrame:
    """Customers whose profile says ``email_consent = false``: ``customer_id, reason, since``."""
    return profile.where(F.col("email_consent") == F.lit(False)).select(
        "customer_id", F.lit("no_consent").alias("reason"), F.col("updated_at").alias("since")
    )


def record_consent_triggers(records: DataFrame, id_map: DataFrame) -> DataFrame:
    """Without a profile: customers with any record saying ``email_consent = false``."""
    return (
        records.where(F.col("email_consent") == F.lit(False))
        .join(id_map.select("record_id", "customer_id"), "record_id")
        .groupBy("customer_id")
        .agg(F.min("updated_at").alias("since"))
        .select("customer_id", F.lit("no_consent").alias("reason"), "since")
    )


def erasure_triggers(erasures: DataFrame, identifiers: DataFrame, *, salted_hash: Column) -> DataFrame:
    """Identifiers whose salted hash was asked to be erased.

    Args:
        salted_hash: the salted hash of an ``identifiers`` row (over ``identifier_type`` and
            ``identifier_value``), as the erasure part computes it.

    Returns:
        ``identifier_type, identifier_value, reason, since``.
    """
    hashed = identifiers.select("identifier_type", "identifier_value", salted_hash.alias("salted_hash")).distinct()
    return (
        hashed.join(
            erasures.select("salted_hash", "identifier_type", "requested_at"), ["salted_hash", "identifier_type"]
        )
        .groupBy("identifier_type", "identifier_value")
        .agg(F.min("requested_at").alias("since"))
        .select("identifier_type", "identifier_value", F.lit("erased").alias("reason"), "since")
    )


def build_suppressions(
    identifier_triggers: DataFrame,
    customer_triggers: DataFrame,
    identifiers: DataFrame,
    *,
    run_id: str,
) -> DataFrame:
    """Resolve triggers to customers and expand them to every identifier of each customer.

    Args:
        identifier_triggers: ``identifier_type, identifier_value, reason, since``.
        customer_triggers: ``customer_id, reason, since``.
        identifiers: from :func:`customer_identifiers`.

    Returns:
        ``activation.suppressions`` rows; a trigger whose identifier belongs to no known
        customer is kept with a null ``customer_id`` (it still guards payloads).
    """
    resolved = identifier_triggers.join(identifiers, ["identifier_type", "identifier_value"], "left")
    unresolved = resolved.where(F.col("customer_id").isNull()).select(
        "customer_id", "reason", "identifier_type", "identifier_value", "since"
    )
    per_customer = (
        resolved.where(F.col("customer_id").isNotNull())
        .select("customer_id", "reason", "since")
        .unionByName(customer_triggers.select("customer_id", "reason", "since"))
    )
    expanded = per_customer.join(identifiers, "customer_id", "left").select(
        "customer_id", "reason", "identifier_type", "identifier_value", "since"
    )
    return (
        expanded.unionByName(unresolved)
        .groupBy("customer_id", "reason", "identifier_type", "identifier_value")
        .agg(F.min("since").alias("since"))
        .withColumn("run_id", F.lit(run_id))
    )


def mark_suppressed(items: DataFrame, suppressions: DataFrame) -> DataFrame:
    """Adds ``suppression_reason`` (null = may be sent) to changes joined with profile data.

    A change is suppressed when its ``customer_id`` or ``previous_customer_id`` is a suppressed
    customer, or when any of its ``email`` / ``emails`` / ``phone`` / ``phones`` is a suppressed
    identifier. ``items`` must have one row per ``change_id``.
    """
    # one explode over plain columns, normalised afterwards: a single pass over ``items``
    # and small generated code
    empty = F.array().cast("array<string>")
    candidates = F.concat(
        F.array(
            F.struct(F.lit("customer").alias("kind"), F.col("customer_id").alias("value")),
            F.struct(F.lit("customer").alias("kind"), F.col("previous_customer_id").alias("value")),
            F.struct(F.lit("email").alias("kind"), F.col("email").alias("value")),
            F.struct(F.lit("phone").alias("kind"), F.col("phone").alias("value")),
        ),
        F.transform(
            F.coalesce(F.col("emails"), empty), lambda e: F.struct(F.lit("email").alias("kind"), e.alias("value"))
        ),
        F.transform(
            F.coalesce(F.col("phones"), empty), lambda p: F.struct(F.lit("phone").alias("kind"), p.alias("value"))
        ),
    )
    keys = (
        items.select("change_id", F.explode(candidates).alias("key"))
        .select("change_id", F.col("key.kind").alias("kind"), F.col("key.value").alias("value"))
        .withColumn(
            "value", F.when(F.col("kind") == "email", normalised_email(F.col("value"))).otherwise(F.col("value"))
        )
        .where(F.col("value").isNotNull())
    )
    suppressed_keys = (
        suppressions.where(F.col("customer_id").isNotNull())
        .select(F.lit("customer").alias("kind"), F.col("customer_id").alias("value"), "reason")
        .unionByName(
            suppressions.where(F.col("identifier_value").isNotNull()).select(
                F.col("identifier_type").alias("kind"), F.col("identifier_value").alias("value"), "reason"
            )
        )
        .distinct()
    )
    reasons = (
        keys.join(suppressed_keys, ["kind", "value"])
        .groupBy("change_id")
        .agg(F.array_join(F.array_sort(F.collect_set("reason")), ",").alias("suppression_reason"))
    )
    return items.join(reasons, "change_id", "left")


def empty_identifiers(spark) -> DataFrame:
    return spark.createDataFrame([], _IDS)
