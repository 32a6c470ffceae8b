"""Who an event or order belongs to: resolved through ``identity.identifiers`` (definitions:
:func:`lakecdp.features.definitions.resolve_customer_sql`,
:func:`~lakecdp.features.definitions.purchased_items_sql`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features.definitions import IDENTIFIER_PRECEDENCE, purchased_items_sql, resolve_customer_sql
from lakecdp.features.engines import spark_query

__all__ = ["IDENTIFIER_PRECEDENCE", "attach_customer_id", "purchased_items", "resolve_customer_id", "unmatched_rows"]

_IDENTIFIER_COLUMNS = ("identifier_type", "identifier_value", "customer_id")


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
    columns = list(df.columns)
    return spark_query(
        df.sparkSession,
        lambda n: resolve_customer_sql(rows=n["rows"], columns=columns, identifiers=n["identifiers"]),
        rows=df,
        identifiers=identifiers,
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
    return spark_query(
        orders.sparkSession,
        lambda n: purchased_items_sql(
            orders=n["orders"], order_items=n["items"], as_of=as_of, completed_statuses=completed_statuses
        ),
        orders=orders,
        items=order_items,
    )
