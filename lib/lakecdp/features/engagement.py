"""Email engagement counts and the last time a customer did anything."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import up_to, within_days

ENGAGEMENT_WINDOWS = (7, 30, 90)
ENGAGEMENT_EVENTS = ("email_open", "email_click")
# events the customer did not do themselves: a send or a bounce says nothing about whether
# they are still around, so they do not move last_activity_at
NOT_CUSTOMER_ACTIVITY = ("email_send", "email_bounce")

ENGAGEMENT_COLUMNS = (
    "customer_id",
    *[f"opens_{d}d" for d in ENGAGEMENT_WINDOWS],
    *[f"clicks_{d}d" for d in ENGAGEMENT_WINDOWS],
    "last_engagement_at",
    "last_activity_at",
)


def engagement(events: DataFrame, *, as_of: datetime) -> DataFrame:
    """Email opens and clicks in the 7/30/90 days up to ``as_of`` and the latest activity.

    Windows are ``(as_of - N days, as_of]``. ``last_engagement_at`` is the latest email open
    or click; ``last_activity_at`` the latest event of any type the customer did (web or
    email; sends and bounces are done *to* them and do not count).

    Args:
        events: events with ``customer_id, event_type, occurred_at``.

    Returns:
        One row per customer with at least one event up to as_of: :data:`ENGAGEMENT_COLUMNS`.
    """
    require_columns(events, ("customer_id", "event_type", "occurred_at"), what="events")
    past = up_to(events, "occurred_at", as_of)
    counts = []
    for kind, event_type in (("opens", "email_open"), ("clicks", "email_click")):
        for days in ENGAGEMENT_WINDOWS:
            hit = (F.col("event_type") == F.lit(event_type)) & within_days("occurred_at", as_of, days)
            counts.append(F.count(F.when(hit, F.lit(1))).cast("int").alias(f"{kind}_{days}d"))
    engaged = F.col("event_type").isin(list(ENGAGEMENT_EVENTS))
    active = ~F.col("event_type").isin(list(NOT_CUSTOMER_ACTIVITY))
    return (
        past.groupBy("customer_id")
        .agg(
            *counts,
            F.max(F.when(engaged, F.col("occurred_at"))).alias("last_engagement_at"),
            F.max(F.when(active, F.col("occurred_at"))).alias("last_activity_at"),
        )
        .select(*ENGAGEMENT_COLUMNS)
    )
