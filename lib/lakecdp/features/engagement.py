"""Email engagement counts and the last time a customer did anything (definition:
:func:`lakecdp.features.definitions.engagement_sql`)."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame

from lakecdp.columns import require_columns
from lakecdp.features.definitions import (
    ENGAGEMENT_EVENTS,
    ENGAGEMENT_WINDOWS,
    NOT_CUSTOMER_ACTIVITY,
    engagement_sql,
)
from lakecdp.features.engines import spark_query

__all__ = ["ENGAGEMENT_COLUMNS", "ENGAGEMENT_EVENTS", "NOT_CUSTOMER_ACTIVITY", "engagement"]

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
    return spark_query(events.sparkSession, lambda n: engagement_sql(events=n["events"], as_of=as_of), events=events)
