"""The open shopping cart and whether it was abandoned."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import as_of_lit, up_to

CART_EVENTS = ("add_to_cart", "remove_from_cart")
# a completed purchase empties the cart; ``checkout`` only starts one and does not
CART_CLOSING_EVENTS = ("purchase",)
CART_COLUMNS = ("customer_id", "cart_open", "cart_value", "cart_product_ids", "cart_abandoned_at")


def cart_state(
    events: DataFrame,
    *,
    as_of: datetime,
    abandon_after_minutes: int,
    closing_events: Sequence[str] = CART_CLOSING_EVENTS,
) -> DataFrame:
    """The cart each customer holds at ``as_of``.

    Only cart events after the customer's last purchase (up to as_of) count. A product is in
    the cart when it was added more times than removed since then; its price is the ``value``
    of its latest ``add_to_cart``. The cart is abandoned when it is open and its last add or
    remove is ``abandon_after_minutes`` or more before as_of; ``cart_abandoned_at`` is the time
    of that last cart event (when the customer walked away).

    Args:
        events: events with ``customer_id, event_type, occurred_at, product_id, value``.
        closing_events: event types that empty the cart.

    Returns:
        :data:`CART_COLUMNS` for customers with a cart event after their last purchase;
        ``cart_open`` false (value 0, no products) when everything was removed again.

    Example:
        >>> cart_state(events, as_of=as_of, abandon_after_minutes=60)
    """
    if abandon_after_minutes <= 0:
        raise ValueError(f"abandon_after_minutes must be positive, got {abandon_after_minutes}")
    require_columns(events, ("customer_id", "event_type", "occurred_at", "product_id", "value"), what="events")
    past = up_to(events, "occurred_at", as_of)
    last_purchase = (
        past.where(F.col("event_type").isin(list(closing_events)))
        .groupBy("customer_id")
        .agg(F.max("occurred_at").alias("last_purchase_at"))
    )
    since_purchase = (
        past.where(F.col("event_type").isin(list(CART_EVENTS)) & F.col("product_id").isNotNull())
        .join(last_purchase, "customer_id", "left")
        .where(F.col("last_purchase_at").isNull() | (F.col("occurred_at") > F.col("last_purchase_at")))
    )
    is_add = F.col("event_type") == F.lit("add_to_cart")
    per_product = since_purchase.groupBy("customer_id", "product_id").agg(
        (F.count(F.when(is_add, F.lit(1))) - F.count(F.when(~is_add, F.lit(1)))).alias("quantity"),
        F.max_by(F.when(is_add, F.col("value")), F.when(is_add, F.col("occurred_at"))).alias("price"),
        F.max("occurred_at").alias("last_event_at"),
    )
    in_cart = F.col("quantity") > 0
    carts = per_product.groupBy("customer_id").agg(
        F.array_sort(F.collect_list(F.when(in_cart, F.col("product_id")))).alias("cart_product_ids"),
        F.round(
            F.coalesce(
                F.sum(F.when(in_cart, F.col("quantity") * F.coalesce(F.col("price"), F.lit(0.0)))),
                F.lit(0.0),
            ),
            2,
        ).alias("cart_value"),
        F.max("last_event_at").alias("last_cart_event_at"),
    )
    cart_open = F.size("cart_product_ids") > 0
    threshold = as_of_lit(as_of) - F.make_interval(mins=F.lit(abandon_after_minutes))
    abandoned = cart_open & (F.col("last_cart_event_at") <= threshold)
    return carts.select(
        "customer_id",
        cart_open.alias("cart_open"),
        F.col("cart_value").cast("double").alias("cart_value"),
        "cart_product_ids",
        F.when(abandoned, F.col("last_cart_event_at")).alias("cart_abandoned_at"),
    )
