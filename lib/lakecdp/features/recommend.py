"""Product recommendations from item-to-item co-view and co-purchase association."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecdp.features._columns import require_columns, up_to, within_days
from lakecdp.features.config import RecommendationConfig

RECOMMENDATION_TYPE = "array<struct<product_id:string,confidence:double>>"


def association_rules(baskets: DataFrame, *, min_support: int) -> DataFrame:
    """Item-to-item rules A -> B with ``confidence = P(B | A)`` over customers' product sets.

    Args:
        baskets: distinct ``customer_id, product_id`` (who viewed / bought what).
        min_support: least number of customers holding both A and B for a rule to count.

    Returns:
        ``antecedent, consequent, support bigint, confidence double``.
    """
    support = baskets.groupBy("product_id").agg(F.count(F.lit(1)).alias("antecedent_count"))
    left = baskets.select("customer_id", F.col("product_id").alias("antecedent"))
    right = baskets.select("customer_id", F.col("product_id").alias("consequent"))
    pairs = (
        left.join(right, "customer_id")
        .where(F.col("antecedent") != F.col("consequent"))
        .groupBy("antecedent", "consequent")
        .agg(F.count(F.lit(1)).alias("support"))
        .where(F.col("support") >= min_support)
    )
    return pairs.join(
        support.withColumnRenamed("product_id", "antecedent"), "antecedent"
    ).select(
        "antecedent", "consequent", "support",
        (F.col("support") / F.col("antecedent_count")).alias("confidence"),
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
    to as_of; best first (ties by product id), at most ``config.top_n``.

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
    days = config.lookback_days
    viewed = (
        up_to(events, "occurred_at", as_of)
        .where((F.col("event_type") == F.lit("product_view")) & F.col("product_id").isNotNull())
        .where(within_days("occurred_at", as_of, days))
        .select("customer_id", "product_id").distinct()
    )
    ever_bought = (
        up_to(order_items, "ordered_at", as_of).where(F.col("product_id").isNotNull())
    )
    bought = (
        ever_bought.where(within_days("ordered_at", as_of, days))
        .select("customer_id", "product_id").distinct()
    )
    rules = (
        association_rules(viewed, min_support=config.min_support)
        .unionByName(association_rules(bought, min_support=config.min_support))
        .groupBy("antecedent", "consequent")
        .agg(F.max("confidence").alias("confidence"))
        .where(F.col("confidence") >= F.lit(float(config.min_confidence)))
    )
    interacted = viewed.unionByName(bought).distinct().withColumnRenamed("product_id", "antecedent")
    owned = ever_bought.select("customer_id", F.col("product_id").alias("consequent")).distinct()
    candidates = (
        interacted.join(rules, "antecedent")
        .join(owned, ["customer_id", "consequent"], "left_anti")
        .groupBy("customer_id", "consequent")
        .agg(F.max("confidence").alias("confidence"))
    )
    best_first = Window.partitionBy("customer_id").orderBy(F.col("confidence").desc(), "consequent")
    return (
        candidates.withColumn("rank", F.row_number().over(best_first))
        .where(F.col("rank") <= config.top_n)
        .groupBy("customer_id")
        .agg(F.array_sort(F.collect_list(F.struct("rank", "consequent", "confidence"))).alias("ranked"))
        .select(
            "customer_id",
            F.transform(
                "ranked",
                lambda r: F.struct(
                    r["consequent"].alias("product_id"), r["confidence"].cast("double").alias("confidence")
                ),
            ).alias("recommendations"),
        )
    )
