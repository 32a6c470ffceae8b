"""What a customer is interested in: decayed category affinities, recent views, trends."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import age_days, up_to, within_days


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

    def decay(column: str):
        return F.pow(F.lit(0.5), age_days(column, as_of) / F.lit(float(half_life_days)))

    views = up_to(events, "occurred_at", as_of).where(
        (F.col("event_type") == F.lit("product_view")) & F.col("category").isNotNull()
    )
    bought = up_to(order_items, "ordered_at", as_of).where(F.col("category").isNotNull())
    if lookback_days is not None:
        views = views.where(within_days("occurred_at", as_of, lookback_days))
        bought = bought.where(within_days("ordered_at", as_of, lookback_days))
    weights = views.select(
        "customer_id", "category", (F.lit(float(view_weight)) * decay("occurred_at")).alias("weight")
    ).unionByName(
        bought.select(
            "customer_id",
            "category",
            (F.lit(float(purchase_weight)) * F.coalesce(F.col("quantity"), F.lit(1)) * decay("ordered_at")).alias(
                "weight"
            ),
        )
    )
    per_category = weights.groupBy("customer_id", "category").agg(F.sum("weight").alias("weight"))
    total = Window.partitionBy("customer_id")
    shares = per_category.withColumn("total", F.sum("weight").over(total)).where(F.col("total") > 0)
    return shares.groupBy("customer_id").agg(
        F.map_from_entries(
            F.array_sort(F.collect_list(F.struct("category", (F.col("weight") / F.col("total")).alias("share"))))
        ).alias("category_affinities")
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
    views = up_to(events, "occurred_at", as_of).where(F.col("event_type") == F.lit("product_view"))

    last_view = (
        views.where(F.col("product_id").isNotNull())
        .groupBy("customer_id", "product_id")
        .agg(F.max("occurred_at").alias("viewed_at"))
    )
    by_recency = Window.partitionBy("customer_id").orderBy(F.col("viewed_at").desc(), "product_id")
    recent = (
        last_view.withColumn("rank", F.row_number().over(by_recency))
        .where(F.col("rank") <= recent_views_limit)
        .groupBy("customer_id")
        .agg(F.array_sort(F.collect_list(F.struct("rank", "product_id"))).alias("ranked"))
        .select("customer_id", F.transform("ranked", lambda r: r["product_id"]).alias("recent_product_views"))
    )

    in_recent = within_days("occurred_at", as_of, trend_recent_days)
    in_baseline = ~in_recent & within_days("occurred_at", as_of, trend_recent_days + trend_baseline_days)
    per_category = (
        views.where(F.col("category").isNotNull())
        .groupBy("customer_id", "category")
        .agg(
            F.count(F.when(in_recent, F.lit(1))).alias("recent_views"),
            F.count(F.when(in_baseline, F.lit(1))).alias("baseline_views"),
        )
    )
    recent_rate = F.col("recent_views") / F.lit(float(trend_recent_days))
    baseline_rate = F.col("baseline_views") / F.lit(float(trend_baseline_days))
    rising = per_category.where(
        (F.col("recent_views") >= trend_min_recent_views) & (recent_rate > baseline_rate * F.lit(float(trend_min_lift)))
    )
    by_views = Window.partitionBy("customer_id").orderBy(F.col("recent_views").desc(), "category")
    trending = (
        rising.withColumn("rank", F.row_number().over(by_views))
        .where(F.col("rank") <= trending_limit)
        .groupBy("customer_id")
        .agg(F.array_sort(F.collect_list(F.struct("rank", "category"))).alias("ranked"))
        .select("customer_id", F.transform("ranked", lambda r: r["category"]).alias("trending_interests"))
    )
    empty = F.array().cast("array<string>")
    return (
        views.select("customer_id")
        .distinct()
        .join(recent, "customer_id", "left")
        .join(trending, "customer_id", "left")
        .select(
            "customer_id",
            F.coalesce("recent_product_views", empty).alias("recent_product_views"),
            F.coalesce("trending_interests", empty).alias("trending_interests"),
        )
    )
