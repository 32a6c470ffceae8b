"""Product recommendations from item-to-item co-view and co-purchase association (definitions:
:func:`lakecdp.features.definitions.recommendations_sql`,
:func:`~lakecdp.features.definitions.recommendation_feedback_sql`).

A customer's feedback ("not interested", "wrong recommendation": events
``feedback_not_interested`` / ``feedback_wrong_recommendation``, from a feedback link in an
email or the HTTP intake) takes that product (or, for feedback on a category, every product
of it) out of their recommendations for ``feedback_suppression_days`` after the feedback.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features.config import RecommendationConfig
from lakecdp.features.definitions import (
    FEEDBACK_EVENT_TYPES,
    Sql,
    feedback_per_customer_sql,
    recommendation_feedback_sql,
    recommendations_sql,
)
from lakecdp.features.engines import spark_query

__all__ = [
    "FEEDBACK_EVENT_TYPES",
    "FEEDBACK_TYPE",
    "RECOMMENDATION_TYPE",
    "feedback_per_customer",
    "recommendation_feedback",
    "recommendations",
]

RECOMMENDATION_TYPE = "array<struct<product_id:string,confidence:double>>"
FEEDBACK_TYPE = (
    "array<struct<product_id:string,category:string,reason:string,given_at:timestamp,suppressed_until:timestamp>>"
)


def _with_category(frame: DataFrame) -> DataFrame:
    """``frame`` with a ``category`` column (NULL when it has none: nothing to suppress by category)."""
    return frame if "category" in frame.columns else frame.withColumn("category", F.lit(None).cast("string"))


def recommendation_feedback(events: DataFrame, *, as_of: datetime, suppression_days: int) -> DataFrame:
    """The feedback in force at ``as_of``: one row per customer and product (or category).

    A feedback event with a ``product_id`` suppresses that product; one with only a
    ``category`` suppresses the category. It is in force from ``occurred_at`` for
    ``suppression_days`` days; the latest feedback on the same thing counts.

    Returns:
        ``customer_id, product_id, category, reason, given_at, suppressed_until`` (product
        feedback has ``category`` null: a catalog may fill the event's category from the product).
    """
    require_columns(events, ("customer_id", "event_type", "occurred_at", "product_id"), what="events")
    return spark_query(
        events.sparkSession,
        lambda n: recommendation_feedback_sql(events=n["events"], as_of=as_of, suppression_days=suppression_days),
        events=_with_category(events),
    )


def feedback_per_customer(feedback: DataFrame) -> DataFrame:
    """``customer_id, recommendation_feedback`` (FEEDBACK_TYPE), newest first."""
    return spark_query(
        feedback.sparkSession, lambda n: feedback_per_customer_sql(feedback=n["feedback"]), feedback=feedback
    )


def recommendations(
    events: DataFrame, order_items: DataFrame, *, as_of: datetime, config: RecommendationConfig
) -> DataFrame:
    """Top-N products per customer from co-view and co-purchase rules, excluding bought ones.

    Baskets are the products each customer viewed, and separately bought, in the
    ``config.lookback_days`` up to ``as_of``. A rule A -> B has confidence P(B | A): of the
    customers who viewed (bought) A, the share who also viewed (bought) B; pairs held by
    fewer than ``config.min_support`` customers are dropped. The stronger of the co-view and
    co-purchase confidence is kept. A customer is offered every B of a rule whose A they
    viewed or bought, scored by the best such rule, except products they ever bought up
    to as_of and products (or categories) the customer gave feedback on within
    ``config.feedback_suppression_days`` (see :func:`recommendation_feedback`); best first
    (ties by product id), at most ``config.top_n``.

    Args:
        events: events with ``customer_id, event_type, occurred_at, product_id``.
        order_items: purchased lines with ``customer_id, ordered_at, product_id``
            (see :func:`lakecdp.features.customers.purchased_items`).

    Returns:
        ``customer_id, recommendations array<struct<product_id, confidence>>`` for customers
        with at least one recommendation.
    """
    require_columns(events, ("customer_id", "event_type", "occurred_at", "product_id"), what="events")
    require_columns(order_items, ("customer_id", "ordered_at", "product_id"), what="order_items")

    def build(names) -> Sql:
        feedback = recommendation_feedback_sql(
            events=names["events"], as_of=as_of, suppression_days=config.feedback_suppression_days
        )
        chosen = recommendations_sql(
            events=names["events"], items=names["items"], feedback="feedback", as_of=as_of, config=config
        )
        return Sql((*feedback.ctes, ("feedback", feedback.select), *chosen.ctes), chosen.select)

    return spark_query(events.sparkSession, build, events=_with_category(events), items=_with_category(order_items))
