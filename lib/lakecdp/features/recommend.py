"""Product recommendations from item-to-item co-view and co-purchase association.

A customer's feedback ("not interested", "wrong recommendation": events
``feedback_not_interested`` / ``feedback_wrong_recommendation``, from a feedback link in an
email or the HTTP intake) takes that product (or, for feedback on a category, every product
of it) out of their recommendations for ``feedback_suppression_days`` after the feedback.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import up_to, within_days
from lakecdp.features.config import RecommendationConfig

RECOMMENDATION_TYPE = "array<struct<product_id:string,confidence:double>>"
#: silver.events types a customer's recommendation feedback arrives as (reason after the prefix)
FEEDBACK_EVENT_TYPES = ("feedback_not_interested", "feedback_wrong_recommendation")
FEEDBACK_TYPE = (
    "array<struct<product_id:string,category:string,reason:string,given_at:timestamp,suppressed_until:timestamp>>"
)


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
    category = F.col("category") if "category" in events.columns else F.lit(None).cast("string")
    given = (
        up_to(events, "occurred_at", as_of)
        .where(F.col("event_type").isin(*FEEDBACK_EVENT_TYPES) & F.col("customer_id").isNotNull())
        .where(within_days("occurred_at", as_of, suppression_days))
        .select(
            "customer_id",
            "product_id",
            F.when(F.col("product_id").isNull(), category).alias("category"),
            F.regexp_replace("event_type", "^feedback_", "").alias("reason"),
            F.col("occurred_at").alias("given_at"),
        )
        .where(F.col("product_id").isNotNull() | F.col("category").isNotNull())
    )
    latest = Window.partitionBy("customer_id", "product_id", "category").orderBy(F.col("given_at").desc(), "reason")
    return (
        given.withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
        .drop("_rank")
        .withColumn("suppressed_until", F.col("given_at") + F.make_dt_interval(F.lit(suppression_days)))
    )


def feedback_per_customer(feedback: DataFrame) -> DataFrame:
    """``customer_id, recommendation_feedback`` (FEEDBACK_TYPE), newest first."""
    return (
        feedback.groupBy("customer_id")
        .agg(
            F.sort_array(
                F.collect_list(
                    F.struct(
                        F.col("given_at").alias("_given"),
                        "product_id",
                        "category",
                        "reason",
                        "given_at",
                        "suppressed_until",
                    )
                ),
                asc=False,
            ).alias("_sorted")
        )
        .select(
            "customer_id",
            F.transform(
                "_sorted",
                lambda r: F.struct(
                    r["product_id"].alias("product_id"),
                    r["category"].alias("category"),
                    r["reason"].alias("reason"),
                    r["given_at"].alias("given_at"),
                    r["suppressed_until"].alias("suppressed_until"),
                ),
            ).alias("recommendation_feedback"),
        )
    )


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
    return pairs.join(support.withColumnRenamed("product_id", "antecedent"), "antecedent").select(
        "antecedent",
        "consequent",
        "support",
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
    days = config.lookback_days
    viewed = (
        up_to(events, "occurred_at", as_of)
        .where((F.col("event_type") == F.lit("product_view")) & F.col("product_id").isNotNull())
        .where(within_days("occurred_at", as_of, days))
        .select("customer_id", "product_id")
        .distinct()
    )
    ever_bought = up_to(order_items, "ordered_at", as_of).where(F.col("product_id").isNotNull())
    bought = ever_bought.where(within_days("ordered_at", as_of, days)).select("customer_id", "product_id").distinct()
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
        .transform(
            _without_feedback, events, order_items, as_of=as_of, suppression_days=config.feedback_suppression_days
        )
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


def _without_feedback(
    candidates: DataFrame, events: DataFrame, order_items: DataFrame, *, as_of: datetime, suppression_days: int
) -> DataFrame:
    """Drop candidates the customer's feedback in force suppresses (product or category)."""
    feedback = recommendation_feedback(events, as_of=as_of, suppression_days=suppression_days)
    products = feedback.where(F.col("product_id").isNotNull()).select(
        "customer_id", F.col("product_id").alias("consequent")
    )
    categories = feedback.where(F.col("product_id").isNull()).select("customer_id", "category")
    # a candidate's category: the catalog's, as the features job filled it into events and lines
    known = [frame.select("product_id", "category") for frame in (events, order_items) if "category" in frame.columns]
    kept = candidates.join(products, ["customer_id", "consequent"], "left_anti")
    if not known:
        return kept
    catalog = known[0]
    for frame in known[1:]:
        catalog = catalog.unionByName(frame)
    catalog = (
        catalog.where(F.col("product_id").isNotNull() & F.col("category").isNotNull())
        .groupBy(F.col("product_id").alias("consequent"))
        .agg(F.min("category").alias("category"))
    )
    return (
        kept.join(catalog, "consequent", "left")
        .join(categories, ["customer_id", "category"], "left_anti")
        .drop("category")
    )
