"""Outcomes of exposures, from ``silver.events`` through the identity graph (Spark transformations).

The unit is the customer: a customer's first exposure to a campaign (as of the report time)
starts their window ``[exposed_at, exposed_at + attribution_window]``, both ends included; an
event one second later is outside. Events find their customer through ``identity.identifiers``
(customer_number, then email, then device id: :func:`lakecdp.features.customers.attach_customer_id`),
so a purchase under another identifier linked to the same ``customer_id`` counts.

What counts, per customer:

- ``converted`` / ``revenue``: any event of the campaign's ``conversion_event`` in the window
  (revenue: the sum of ``value`` of purchases in the window);
- ``opened`` / ``clicked`` / ``complained`` / ``unsubscribed``: ``email_open`` / ``email_click`` /
  ``email_complaint`` / ``email_unsubscribe`` events in the window that carry this ``campaign_id``
  (the holdout got no email, so these are 0 there by construction);
- ``had_open_cart`` / ``cart_recovered``: an ``add_to_cart`` before exposure not followed by a
  purchase before exposure, and a purchase in the window (cart recovery).
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.features.customers import attach_customer_id

_OUTCOME_COUNTS = ("converted", "opened", "clicked", "complained", "unsubscribed", "had_open_cart", "cart_recovered")


def first_exposures(exposures: DataFrame, *, campaign_id: str, as_of: datetime) -> DataFrame:
    """``campaign_id, customer_id, variant, is_holdout, exposed_at``: each customer's first
    exposure to the campaign at or before ``as_of``."""
    mine = exposures.where((F.col("campaign_id") == F.lit(campaign_id)) & (F.col("exposed_at") <= F.lit(as_of)))
    first = mine.groupBy("campaign_id", "customer_id").agg(
        F.min(F.struct("exposed_at", "variant", "is_holdout")).alias("_first")
    )
    return first.select("campaign_id", "customer_id", "_first.variant", "_first.is_holdout", "_first.exposed_at")


def customer_events(events: DataFrame, identifiers: DataFrame, *, as_of: datetime) -> DataFrame:
    """Events that occurred at or before ``as_of``, with the ``customer_id`` their identifiers
    resolve to (events of no known customer are left out)."""
    return events.where(F.col("occurred_at") <= F.lit(as_of)).transform(attach_customer_id, identifiers)


def attribute_outcomes(
    exposed: DataFrame,
    events: DataFrame,
    *,
    window_seconds: int,
    conversion_event: str,
) -> DataFrame:
    """One row per exposed customer with their outcomes (see the module docstring).

    Args:
        exposed: :func:`first_exposures`.
        events: :func:`customer_events` (``customer_id, event_type, occurred_at, value, campaign_id``).
        window_seconds: the attribution window's length.

    Returns:
        ``exposed``'s columns plus ``converted, opened, clicked, complained, unsubscribed,
        had_open_cart, cart_recovered`` (0/1 ints) and ``revenue double``.
    """
    start = F.unix_seconds(F.col("exposed_at"))
    at = F.unix_seconds(F.col("occurred_at"))
    in_window = (at >= start) & (at <= start + F.lit(window_seconds))
    before = at < start
    kind = F.col("event_type")
    this_campaign = F.col("e_campaign_id") == F.col("campaign_id")

    def flag(condition):
        return F.max(F.when(condition, 1).otherwise(0))

    joined = exposed.join(
        events.select("customer_id", "event_type", "occurred_at", "value", F.col("campaign_id").alias("e_campaign_id")),
        "customer_id",
        "left",
    )
    per_customer = joined.groupBy(*exposed.columns).agg(
        flag(in_window & (kind == F.lit(conversion_event))).alias("converted"),
        F.coalesce(F.sum(F.when(in_window & (kind == "purchase"), F.col("value"))), F.lit(0.0))
        .cast("double")
        .alias("revenue"),
        flag(in_window & this_campaign & (kind == "email_open")).alias("opened"),
        flag(in_window & this_campaign & (kind == "email_click")).alias("clicked"),
        flag(in_window & this_campaign & (kind == "email_complaint")).alias("complained"),
        flag(in_window & this_campaign & (kind == "email_unsubscribe")).alias("unsubscribed"),
        F.max(F.when(before & (kind == "add_to_cart"), F.col("occurred_at"))).alias("_last_cart"),
        F.max(F.when(before & (kind == "purchase"), F.col("occurred_at"))).alias("_last_purchase"),
        flag(in_window & (kind == "purchase")).alias("_purchased"),
    )
    open_cart = F.col("_last_cart").isNotNull() & (
        F.col("_last_purchase").isNull() | (F.col("_last_purchase") < F.col("_last_cart"))
    )
    return (
        per_customer.withColumn("had_open_cart", F.when(open_cart, 1).otherwise(0))
        .withColumn("cart_recovered", F.when(open_cart & (F.col("_purchased") == 1), 1).otherwise(0))
        .drop("_last_cart", "_last_purchase", "_purchased")
    )


def variant_totals(outcomes: DataFrame) -> DataFrame:
    """Per ``variant``: ``is_holdout, exposed`` and the sum of every outcome (and revenue)."""
    return outcomes.groupBy("variant", "is_holdout").agg(
        F.count(F.lit(1)).alias("exposed"),
        *[F.sum(c).cast("long").alias(c) for c in _OUTCOME_COUNTS],
        F.sum("revenue").alias("revenue"),
    )
