"""Recency, frequency, monetary value and their fixed-bin scores (definition:
:func:`lakecdp.features.definitions.rfm_sql`)."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame

from lakecdp.columns import require_columns
from lakecdp.features.config import RfmConfig
from lakecdp.features.definitions import rfm_sql
from lakecdp.features.engines import spark_query

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
    return spark_query(
        orders.sparkSession, lambda n: rfm_sql(orders=n["orders"], as_of=as_of, config=config), orders=orders
    )
