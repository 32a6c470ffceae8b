"""Who an event or order belongs to: resolved through ``identity.identifiers``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features._columns import up_to

# (column on the event/order, identifier_type in identity.identifiers), strongest first:
# a customer number is issued by the shop to one customer; an email can be shared by a
# household; a device id is a browser that several people may use
IDENTIFIER_PRECEDENCE: tuple[tuple[str, str], ...] = (
    ("customer_number", "customer_number"),
    ("email", "email"),
    ("device_id", "device_id"),
)

_IDENTIFIER_COLUMNS = ("identifier_type", "identifier_value", "customer_id")


def _normalised(column: str) -> Column:
    value = F.trim(F.col(column))
    # emails are stored lower-case by ingest; lower-casing again costs nothing and
    # keeps a hand-made input from silently missing its customer
    return F.lower(value) if column == "email" else value


def resolve_customer_id(df: DataFrame, identifiers: DataFrame) -> DataFrame:
    """Add ``customer_id`` (null when no identifier matches) and ``matched_by`` to every row.

    Looks the row up by ``customer_number``, then ``email``, then ``device_id`` (whichever of
    those columns ``df`` has); the first match wins.

    Args:
        df: events or orders with at least one of the identifier columns.
        identifiers: ``identity.identifiers`` (identifier_type, identifier_value, customer_id).

    Returns:
        ``df`` with ``customer_id string`` and ``matched_by string`` (the identifier type used).
    """
    require_columns(identifiers, _IDENTIFIER_COLUMNS, what="identifiers")
    usable = [(col, kind) for col, kind in IDENTIFIER_PRECEDENCE if col in df.columns]
    if not usable:
        raise ValueError(
            "events/orders need at least one of the columns "
            f"{[c for c, _ in IDENTIFIER_PRECEDENCE]} to find their customer; got {df.columns}"
        )
    if "customer_id" in df.columns:
        df = df.drop("customer_id")
    resolved = df
    found: list[tuple[str, Column]] = []
    for position, (column, kind) in enumerate(usable):
        key, found_name = f"_key_{position}", f"_customer_{position}"
        lookup = (
            identifiers.where(F.col("identifier_type") == F.lit(kind))
            .select(F.col("identifier_value").alias(key), F.col("customer_id").alias(found_name))
            .dropDuplicates([key])
        )
        resolved = resolved.withColumn(key, _normalised(column)).join(lookup, key, "left")
        found.append((kind, F.col(found_name)))
    (first_kind, first_id), *rest = found
    matched_by = F.when(first_id.isNotNull(), F.lit(first_kind))
    for kind, found_id in rest:
        matched_by = matched_by.when(found_id.isNotNull(), F.lit(kind))
    return resolved.select(
        *df.columns,
        F.coalesce(*[found_id for _, found_id in found]).alias("customer_id"),
        matched_by.alias("matched_by"),
    )


def attach_customer_id(df: DataFrame, identifiers: DataFrame) -> DataFrame:
    """Keep the rows of ``df`` that resolve to a customer, with their ``customer_id``.

    Precedence: customer_number, then email, then device_id. Rows with no match are left
    out; :func:`unmatched_rows` gives them (the job counts them into ``ops.runs``).

    Example:
        >>> orders.transform(attach_customer_id, identifiers)
    """
    return resolve_customer_id(df, identifiers).where(F.col("customer_id").isNotNull()).drop("matched_by")


def unmatched_rows(df: DataFrame, identifiers: DataFrame) -> DataFrame:
    """The rows of ``df`` :func:`attach_customer_id` leaves out (no identifier matched)."""
    return resolve_customer_id(df, identifiers).where(F.col("customer_id").isNull()).drop("customer_id", "matched_by")


def purchased_items(
    orders: DataFrame,
    order_items: DataFrame,
    *,
    as_of: datetime,
    completed_statuses: Sequence[str] = ("completed",),
) -> DataFrame:
    """Order lines of completed orders placed up to ``as_of``, with the order's customer and time.

    Args:
        orders: orders with ``customer_id`` (see :func:`attach_customer_id`).
        order_items: ``silver.order_items``.

    Returns:
        ``customer_id, order_id, ordered_at, product_id, category, quantity, unit_price``.
    """
    require_columns(orders, ("order_id", "customer_id", "ordered_at", "status"), what="orders")
    require_columns(
        order_items,
        ("order_id", "product_id", "category", "quantity", "unit_price"),
        what="order_items",
    )
    completed = up_to(orders, "ordered_at", as_of).where(F.col("status").isin(list(completed_statuses)))
    return (
        completed.select("order_id", "customer_id", "ordered_at")
        .join(
            order_items.select("order_id", "product_id", "category", "quantity", "unit_price"),
            "order_id",
        )
        .select("customer_id", "order_id", "ordered_at", "product_id", "category", "quantity", "unit_price")
    )
