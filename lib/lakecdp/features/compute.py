"""All customer features as of one point in time on Spark: the gold.customer_features rows.

The rows are defined once, in :mod:`lakecdp.features.definitions`; this module binds Spark
DataFrames to that SQL (the embedded engine runs the same SQL on DuckDB:
:mod:`lakecdp.features.embedded`).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.columns import require_columns
from lakecdp.features.config import FeaturesConfig
from lakecdp.features.definitions import (
    activity_events_sql,
    activity_items_sql,
    activity_orders_sql,
    features_sql,
    with_category_sql,
)
from lakecdp.features.engines import spark_query

# gold.customer_features, declared in lakecdp.catalog (built without a session, so importable anywhere)
FEATURES_SCHEMA = catalog.CUSTOMER_FEATURES.struct()


def with_product_category(df: DataFrame, products: DataFrame) -> DataFrame:
    """Fill a missing ``category`` from the product catalog (events often carry only the id)."""
    require_columns(products, ("product_id", "category"), what="products")
    columns = list(df.columns)
    return spark_query(
        df.sparkSession,
        lambda n: with_category_sql(rows=n["rows"], columns=columns, products=n["products"]),
        rows=df,
        products=products,
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
    require_columns(order_items, ("order_id", "product_id", "category", "quantity", "unit_price"), what="order_items")
    require_columns(products, ("product_id", "category"), what="products")
    require_columns(identifiers, ("identifier_type", "identifier_value", "customer_id"), what="identifiers")
    spark = events.sparkSession
    event_columns, order_columns = list(events.columns), list(orders.columns)
    resolved_events = spark_query(
        spark,
        lambda n: activity_events_sql(
            events=n["events"], columns=event_columns, identifiers=n["ids"], products=n["products"], as_of=as_of
        ),
        events=events,
        ids=identifiers,
        products=products,
    )
    resolved_orders = spark_query(
        spark,
        lambda n: activity_orders_sql(orders=n["orders"], columns=order_columns, identifiers=n["ids"], as_of=as_of),
        orders=orders,
        ids=identifiers,
    )
    items = spark_query(
        spark,
        lambda n: activity_items_sql(
            orders=n["orders"],
            order_items=n["lines"],
            products=n["products"],
            as_of=as_of,
            completed_statuses=config.rfm.completed_statuses,
        ),
        orders=resolved_orders,
        lines=order_items,
        products=products,
    )
    return Activity(resolved_events, resolved_orders, items)


def features_from_activity(
    activity: Activity,
    *,
    identifiers: DataFrame,
    profiles: DataFrame | None,
    as_of: datetime,
    config: FeaturesConfig,
    run_id: str | None = None,
) -> DataFrame:
    """gold.customer_features rows for every ``customer_id`` of ``identifiers`` and ``profiles``
    from prepared :class:`Activity`."""
    spark = activity.events.sparkSession
    if profiles is None:
        profiles = spark.createDataFrame([], "customer_id string")
    require_columns(profiles, ("customer_id",), what="profiles")
    frames = spark_query(
        spark,
        lambda n: features_sql(
            events=n["events"],
            orders=n["orders"],
            items=n["items"],
            identifiers=n["identifiers"],
            profiles=n["profiles"],
            as_of=as_of,
            config=config,
            run_id=run_id,
        ),
        events=activity.events,
        orders=activity.orders,
        items=activity.items,
        identifiers=identifiers.select("customer_id"),
        profiles=profiles.select("customer_id"),
    )
    return frames.select(*[F.col(f.name).cast(f.dataType) for f in FEATURES_SCHEMA.fields])


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
        activity, identifiers=identifiers, profiles=profiles, as_of=as_of, config=config, run_id=run_id
    )
