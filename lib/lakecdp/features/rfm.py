"""Recency, frequency, monetary value and their fixed-bin scores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import age_days, up_to, within_days
from lakecdp.features.config import RfmConfig

RFM_COLUMNS = (
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "r_score",
    "f_score",
    "m_score",
    "rfm_score",
    "total_spent",
    "order_count",
    "avg_order_value",
    "first_purchase_at",
    "last_purchase_at",
)


def recency_score(recency_days: Column, upper_bounds: Sequence[int]) -> Column:
    """``len(upper_bounds) + 1`` for the most recent bin down to 1 for older than the last bound."""
    best = len(upper_bounds) + 1
    score = F.when(recency_days <= F.lit(upper_bounds[0]), F.lit(best))
    for position, bound in enumerate(upper_bounds[1:], start=1):
        score = score.when(recency_days <= F.lit(bound), F.lit(best - position))
    return score.otherwise(F.lit(1)).cast("int")


def at_least_score(value: Column, lower_bounds: Sequence[float]) -> Column:
    """1 plus the number of ``lower_bounds`` that ``value`` reaches (frequency, monetary)."""
    score = F.lit(1)
    for bound in lower_bounds:
        score = score + F.when(value >= F.lit(bound), F.lit(1)).otherwise(F.lit(0))
    return score.cast("int")


def rfm(orders: DataFrame, *, as_of: datetime, config: RfmConfig) -> DataFrame:
    """RFM per customer from completed orders placed up to ``as_of``.

    ``recency_days`` is the whole days since the last completed order; ``frequency`` and
    ``monetary`` count the completed orders of the last ``config.window_days``;
    ``order_count`` / ``total_spent`` / ``avg_order_value`` cover every completed order.
    Cancelled and refunded orders (any status not in ``config.completed_statuses``) are left out.

    Args:
        orders: orders with ``customer_id, ordered_at, status, total``.
        as_of: the point in time; later orders are ignored.
        config: score bins and window.

    Returns:
        One row per customer with at least one completed order: :data:`RFM_COLUMNS`.

    Example:
        >>> rfm(orders, as_of=datetime(2026, 11, 1, tzinfo=timezone.utc), config=RfmConfig())
    """
    require_columns(orders, ("customer_id", "ordered_at", "status", "total"), what="orders")
    completed = up_to(orders, "ordered_at", as_of).where(F.col("status").isin(list(config.completed_statuses)))
    in_window = within_days("ordered_at", as_of, config.window_days)
    summary = completed.groupBy("customer_id").agg(
        F.count(F.lit(1)).cast("int").alias("order_count"),
        F.round(F.sum("total"), 2).alias("total_spent"),
        F.min("ordered_at").alias("first_purchase_at"),
        F.max("ordered_at").alias("last_purchase_at"),
        F.count(F.when(in_window, F.lit(1))).cast("int").alias("frequency"),
        F.round(F.coalesce(F.sum(F.when(in_window, F.col("total"))), F.lit(0.0)), 2).alias("monetary"),
    )
    scored = (
        summary.withColumn("recency_days", F.floor(age_days("last_purchase_at", as_of)).cast("int"))
        .withColumn("avg_order_value", F.round(F.col("total_spent") / F.col("order_count"), 2))
        .withColumn("r_score", recency_score(F.col("recency_days"), config.recency_days))
        .withColumn("f_score", at_least_score(F.col("frequency"), config.frequency))
        .withColumn("m_score", at_least_score(F.col("monetary"), config.monetary))
        .withColumn(
            "rfm_score",
            F.concat(*[F.col(c).cast("string") for c in ("r_score", "f_score", "m_score")]),
        )
    )
    return scored.select(*RFM_COLUMNS)
