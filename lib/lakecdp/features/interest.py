"""What a customer is interested in: decayed category affinities, recent views, trends
(definitions: :func:`lakecdp.features.definitions.category_affinities_sql`,
:func:`~lakecdp.features.definitions.product_interest_sql`)."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame

from lakecdp.columns import require_columns
from lakecdp.features.config import InterestConfig
from lakecdp.features.definitions import category_affinities_sql, product_interest_sql
from lakecdp.features.engines import spark_query


def category_affinities(
    events: DataFrame,
    order_items: DataFrame,
    *,
    as_of: datetime,
    half_life_days: float,
    view_weight: float = 1.0,
    purchase_weight: float = 3.0,
    lookback_days: int | None = None,
) -> DataFrame:
    """Share of each category in a customer's decayed product views and purchases.

    A product view weighs ``view_weight``, a purchased unit ``purchase_weight``; both halve
    every ``half_life_days`` before ``as_of``. Per customer the weights are summed by category
    and divided by their total, so the map's values sum to 1.

    Args:
        events: events with ``customer_id, event_type, occurred_at, category``
            (``product_view`` rows with a category are used).
        order_items: purchased lines with ``customer_id, ordered_at, category, quantity``
            (see :func:`lakecdp.features.customers.purchased_items`).
        lookback_days: ignore activity older than this (None: all history up to as_of).

    Returns:
        ``customer_id, category_affinities map<string,double>`` for customers with any
        categorised view or purchase.

    Example:
        >>> category_affinities(events, items, as_of=as_of, half_life_days=30)
    """
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}")
    require_columns(events, ("customer_id", "event_type", "occurred_at", "category"), what="events")
    require_columns(order_items, ("customer_id", "ordered_at", "category", "quantity"), what="order_items")
    return spark_query(
        events.sparkSession,
        lambda n: category_affinities_sql(
            events=n["events"],
            items=n["items"],
            as_of=as_of,
            half_life_days=half_life_days,
            view_weight=view_weight,
            purchase_weight=purchase_weight,
            lookback_days=lookback_days,
        ),
        events=events,
        items=order_items,
    )


def product_interest(
    events: DataFrame,
    *,
    as_of: datetime,
    recent_views_limit: int = 10,
    trend_recent_days: int = 7,
    trend_baseline_days: int = 30,
    trend_min_lift: float = 1.0,
    trend_min_recent_views: int = 2,
    trending_limit: int = 5,
) -> DataFrame:
    """Recently viewed products and categories whose views are rising.

    ``recent_product_views``: distinct product ids viewed up to ``as_of``, most recent view
    first (ties by product id), at most ``recent_views_limit``.

    ``trending_interests``: categories viewed at least ``trend_min_recent_views`` times in the
    last ``trend_recent_days`` whose daily view rate there is above ``trend_min_lift`` times
    the daily rate of the ``trend_baseline_days`` before; most recent views first (ties by
    name), at most ``trending_limit``.

    Args:
        events: events with ``customer_id, event_type, occurred_at, product_id, category``.

    Returns:
        ``customer_id, recent_product_views array<string>, trending_interests array<string>``
        for customers with any product view; either array may be empty.
    """
    require_columns(
        events,
        ("customer_id", "event_type", "occurred_at", "product_id", "category"),
        what="events",
    )
    config = InterestConfig(
        recent_views_limit=recent_views_limit,
        trend_recent_days=trend_recent_days,
        trend_baseline_days=trend_baseline_days,
        trend_min_lift=trend_min_lift,
        trend_min_recent_views=trend_min_recent_views,
        trending_limit=trending_limit,
    )
    return spark_query(
        events.sparkSession,
        lambda n: product_interest_sql(events=n["events"], as_of=as_of, config=config),
        events=events,
    )
