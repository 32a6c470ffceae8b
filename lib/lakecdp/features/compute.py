"""All customer features as of one point in time: the gold.customer_features rows."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.columns import require_columns
from lakecdp.features._columns import as_of_lit, up_to
from lakecdp.features.cart import cart_state
from lakecdp.features.config import FeaturesConfig
from lakecdp.features.customers import purchased_items, resolve_customer_id
from lakecdp.features.engagement import engagement
from lakecdp.features.interest import category_affinities, product_interest
from lakecdp.features.lifecycle import lifecycle_stage
from lakecdp.features.recommend import feedback_per_customer, recommendation_feedback, recommendations
from lakecdp.features.rfm import rfm

# gold.customer_features, declared in lakecdp.catalog (built without a session, so importable anywhere)
FEATURES_SCHEMA = catalog.CUSTOMER_FEATURES.struct()

# what a customer with no activity of a kind gets (null where "no value" is the honest answer:
# recency, scores and averages of someone who never bought)
_DEFAULTS: dict[str, object] = {
    "frequency": 0,
    "monetary": 0.0,
    "total_spent": 0.0,
    "order_count": 0,
    "opens_7d": 0,
    "opens_30d": 0,
    "opens_90d": 0,
    "clicks_7d": 0,
    "clicks_30d": 0,
    "clicks_90d": 0,
    "cart_open": False,
    "cart_value": 0.0,
}
_EMPTY = (
    "category_affinities",
    "recent_product_views",
    "trending_interests",
    "cart_product_ids",
    "recommendations",
    "recommendation_feedback",
)


def with_product_category(df: DataFrame, products: DataFrame) -> DataFrame:
    """Fill a missing ``category`` from the product catalog (events often carry only the id)."""
    require_columns(products, ("product_id", "category"), what="products")
    catalog = products.select("product_id", F.col("category").alias("_catalog_category")).dropDuplicates(["product_id"])
    filled = df if "category" in df.columns else df.withColumn("category", F.lit(None).cast("string"))
    return (
        filled.join(catalog, "product_id", "left")
        .withColumn("category", F.coalesce("category", "_catalog_category"))
        .drop("_catalog_category")
    )


def _purchase_events(orders: DataFrame, statuses: list[str]) -> DataFrame:
    """Completed orders as ``purchase`` events: an order placed in the shop empties the web cart."""
    return orders.where(F.col("status").isin(statuses)).select(
        "customer_id",
        F.lit("purchase").alias("event_type"),
        F.col("ordered_at").alias("occurred_at"),
        F.lit(None).cast("string").alias("product_id"),
        F.lit(None).cast("double").alias("value"),
    )


class Activity(NamedTuple):
    """Events, orders and bought order lines up to as_of, each with its ``customer_id``.

    ``events`` and ``orders`` keep the rows no identifier resolved (``customer_id`` null) so a
    job can count them; the features use only resolved rows.
    """

    events: DataFrame
    orders: DataFrame
    items: DataFrame


def prepare_activity(
    *,
    events: DataFrame,
    orders: DataFrame,
    order_items: DataFrame,
    products: DataFrame,
    identifiers: DataFrame,
    as_of: datetime,
    config: FeaturesConfig,
) -> Activity:
    """Cut the inputs at ``as_of``, find each row's customer, fill categories from the catalog.

    Every feature reads these three frames; a job can cache them so the identity lookups
    run once (see :mod:`lakecdp.features.job`).
    """
    require_columns(events, ("event_type", "occurred_at"), what="events")
    require_columns(orders, ("order_id", "ordered_at", "status", "total"), what="orders")
    resolved_events = with_product_category(
        resolve_customer_id(up_to(events, "occurred_at", as_of), identifiers), products
    )
    resolved_orders = resolve_customer_id(up_to(orders, "ordered_at", as_of), identifiers)
    items = purchased_items(
        resolved_orders.where(F.col("customer_id").isNotNull()),
        with_product_category(order_items, products),
        as_of=as_of,
        completed_statuses=list(config.rfm.completed_statuses),
    )
    return Activity(resolved_events, resolved_orders, items)


def customer_universe(identifiers: DataFrame, profiles: DataFrame | None = None) -> DataFrame:
    """Every known ``customer_id``: from the identity graph and, when given, the profiles."""
    customers = identifiers.select("customer_id")
    if profiles is not None:
        require_columns(profiles, ("customer_id",), what="profiles")
        customers = customers.unionByName(profiles.select("customer_id"))
    return customers.where(F.col("customer_id").isNotNull()).distinct()


def features_from_activity(
    activity: Activity,
    *,
    customers: DataFrame,
    as_of: datetime,
    config: FeaturesConfig,
    run_id: str | None = None,
) -> DataFrame:
    """gold.customer_features rows for ``customers`` from prepared :class:`Activity`."""
    statuses = list(config.rfm.completed_statuses)
    customer_events = activity.events.where(F.col("customer_id").isNotNull())
    customer_orders = activity.orders.where(F.col("customer_id").isNotNull())
    items = activity.items
    interest = config.interest
    parts = [
        rfm(customer_orders, as_of=as_of, config=config.rfm),
        engagement(customer_events, as_of=as_of),
        category_affinities(
            customer_events,
            items,
            as_of=as_of,
            half_life_days=config.affinity.half_life_days,
            view_weight=config.affinity.view_weight,
            purchase_weight=config.affinity.purchase_weight,
            lookback_days=config.affinity.lookback_days,
        ),
        product_interest(
            customer_events,
            as_of=as_of,
            recent_views_limit=interest.recent_views_limit,
            trend_recent_days=interest.trend_recent_days,
            trend_baseline_days=interest.trend_baseline_days,
            trend_min_lift=interest.trend_min_lift,
            trend_min_recent_views=interest.trend_min_recent_views,
            trending_limit=interest.trending_limit,
        ),
        cart_state(
            customer_events.select("customer_id", "event_type", "occurred_at", "product_id", "value").unionByName(
                _purchase_events(customer_orders, statuses)
            ),
            as_of=as_of,
            abandon_after_minutes=config.cart.abandon_after_minutes,
        ),
        recommendations(customer_events, items, as_of=as_of, config=config.recommendations),
        feedback_per_customer(
            recommendation_feedback(
                customer_events, as_of=as_of, suppression_days=config.recommendations.feedback_suppression_days
            )
        ),
    ]
    features = customers
    for part in parts:
        features = features.join(part, "customer_id", "left")

    # one select, not a withColumn per column: each DataFrame step re-analyses the whole
    # (large) plan on the driver, which dominated the job's run time
    def column(name: str, data_type):
        if name == "as_of":
            value = as_of_lit(as_of)
        elif name == "run_id":
            value = F.lit(run_id)
        elif name in _DEFAULTS:
            value = F.coalesce(F.col(name), F.lit(_DEFAULTS[name]).cast(data_type))
        elif name in _EMPTY:
            empty = F.create_map() if name == "category_affinities" else F.array()
            value = F.coalesce(F.col(name), empty.cast(data_type))
        else:
            value = F.col(name)
        return value.cast(data_type).alias(name)

    filled = features.select(
        *[column(f.name, f.dataType) for f in FEATURES_SCHEMA.fields if f.name != "lifecycle_stage"]
    )
    staged = filled.transform(lifecycle_stage, config=config.lifecycle)
    return staged.select(*[f.name for f in FEATURES_SCHEMA.fields])


def compute_features(
    *,
    events: DataFrame,
    orders: DataFrame,
    order_items: DataFrame,
    products: DataFrame,
    identifiers: DataFrame,
    as_of: datetime,
    config: FeaturesConfig,
    profiles: DataFrame | None = None,
    run_id: str | None = None,
) -> DataFrame:
    """One gold.customer_features row per customer, computed only from data up to ``as_of``.

    Customers are every ``customer_id`` of ``identifiers`` and of ``profiles`` (when given), so a
    customer with a profile but no activity still gets a row (zero counts, empty arrays).
    Events and orders find their customer through the identifiers (customer_number, then email,
    then device_id); rows that find none are left out.

    Args:
        events, orders, order_items, products: the silver tables (docs/tables.md).
        identifiers: ``identity.identifiers``.
        as_of: the point in time; later rows are ignored.
        config: ``conf/features.yaml``.
        profiles: ``gold.customer_profile`` (only ``customer_id`` is used), optional.
        run_id: stamped on every row.

    Returns:
        A DataFrame with exactly :data:`FEATURES_SCHEMA`.

    Example:
        >>> compute_features(events=ev, orders=o, order_items=oi, products=p,
        ...                  identifiers=ids, as_of=as_of, config=config)
    """
    activity = prepare_activity(
        events=events,
        orders=orders,
        order_items=order_items,
        products=products,
        identifiers=identifiers,
        as_of=as_of,
        config=config,
    )
    return features_from_activity(
        activity,
        customers=customer_universe(identifiers, profiles),
        as_of=as_of,
        config=config,
        run_id=run_id,
    )
