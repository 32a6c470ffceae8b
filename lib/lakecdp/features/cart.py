"""The open shopping cart and whether it was abandoned (definition:
:func:`lakecdp.features.definitions.cart_state_sql`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import DataFrame

from lakecdp.columns import require_columns
from lakecdp.features.config import CartConfig
from lakecdp.features.definitions import CART_CLOSING_EVENTS, CART_EVENTS, cart_state_sql
from lakecdp.features.engines import spark_query

__all__ = ["CART_CLOSING_EVENTS", "CART_COLUMNS", "CART_EVENTS", "cart_state"]

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
    config = CartConfig(abandon_after_minutes=abandon_after_minutes)
    return spark_query(
        events.sparkSession,
        lambda n: cart_state_sql(events=n["events"], as_of=as_of, config=config, closing_events=closing_events),
        events=events,
    )
