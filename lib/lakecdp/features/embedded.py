"""The features on the embedded engine: the definitions of :mod:`lakecdp.features.definitions`
run on DuckDB over tables loaded from Delta with delta-rs, no JVM.

:func:`compute_features_duckdb` works on tables of a DuckDB connection (a test can fill them
from Arrow); :func:`load_inputs` fills them from the warehouse (the live Parquet files the Delta
log lists, read by DuckDB, through :meth:`lakecdp.delta_store.DeltaStore.load`, timestamps in UTC).

Example:
    >>> con = connection()
    >>> load_inputs(con, store)
    >>> features, unmatched = compute_features_duckdb(con, as_of=as_of, config=config, run_id="r1")
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from lakecdp import catalog
from lakecdp.features.config import FeaturesConfig
from lakecdp.features.definitions import (
    IDENTIFIER_PRECEDENCE,
    Sql,
    activity_events_sql,
    activity_items_sql,
    activity_orders_sql,
    features_sql,
)
from lakecdp.features.engines import duckdb_create, duckdb_query, prepare_connection

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from lakecdp.delta_store import DeltaStore

logger = logging.getLogger(__name__)

_IDENTIFIERS = tuple(column for column, _ in IDENTIFIER_PRECEDENCE)

#: input table of the connection -> (catalogue table, columns read; those a table lacks are left out)
INPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "events": (
        catalog.EVENTS.name,
        (*_IDENTIFIERS, "event_type", "occurred_at", "product_id", "category", "value"),
    ),
    "orders": (catalog.ORDERS.name, (*_IDENTIFIERS, "order_id", "ordered_at", "status", "total")),
    "order_items": (catalog.ORDER_ITEMS.name, ("order_id", "product_id", "category", "quantity", "unit_price")),
    "products": (catalog.PRODUCTS.name, ("product_id", "category")),
    "identifiers": (catalog.IDENTIFIERS.name, ("identifier_type", "identifier_value", "customer_id")),
    "profiles": (catalog.CUSTOMER_PROFILE.name, ("customer_id",)),
}
#: inputs that may not exist yet: read as empty
OPTIONAL = ("products", "profiles")


class Unmatched(NamedTuple):
    events: int
    orders: int


def connection() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    prepare_connection(con)
    return con


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f'DESCRIBE "{table}"').fetchall()]


def load_inputs(con: duckdb.DuckDBPyConnection, store: DeltaStore) -> None:
    """The :data:`INPUTS` as tables of ``con`` (missing optional ones empty, with their columns)."""
    from lakecdp.delta_store import arrow_schema

    for target, (name, wanted) in INPUTS.items():
        if not store.exists(name):
            if target not in OPTIONAL:
                raise RuntimeError(f"{name} does not exist at {store.path(name)}; run the step that writes it first")
            schema = arrow_schema(catalog.table(name).ddl)
            empty = schema.empty_table().select([c for c in wanted if c in schema.names])
            con.register("_empty_input", empty)
            con.execute(f'CREATE OR REPLACE TABLE "{target}" AS SELECT * FROM _empty_input')
            con.unregister("_empty_input")
            continue
        present = {field.name for field in store.table(name).schema().fields}
        store.load(con, f'"{target}"', name, columns=[c for c in wanted if c in present])


def compute_features_duckdb(
    con: duckdb.DuckDBPyConnection,
    *,
    as_of: datetime,
    config: FeaturesConfig,
    run_id: str | None,
) -> tuple[pa.Table, Unmatched]:
    """gold.customer_features rows (Arrow, the catalogue's columns) from the :data:`INPUTS` tables
    of ``con`` (prepared by :func:`connection`), and the events and orders no identifier resolved."""
    duckdb_create(
        con,
        "activity_events",
        activity_events_sql(
            events="events",
            columns=_columns(con, "events"),
            identifiers="identifiers",
            products="products",
            as_of=as_of,
        ),
    )
    duckdb_create(
        con,
        "activity_orders",
        activity_orders_sql(orders="orders", columns=_columns(con, "orders"), identifiers="identifiers", as_of=as_of),
    )
    duckdb_create(
        con,
        "activity_items",
        activity_items_sql(
            orders="activity_orders",
            order_items="order_items",
            products="products",
            as_of=as_of,
            completed_statuses=config.rfm.completed_statuses,
        ),
    )
    features = duckdb_query(
        con,
        features_sql(
            events="activity_events",
            orders="activity_orders",
            items="activity_items",
            identifiers="identifiers",
            profiles="profiles",
            as_of=as_of,
            config=config,
            run_id=run_id,
        ),
    )
    counts = duckdb_query(
        con,
        Sql(
            (),
            "SELECT (SELECT count(1) FROM activity_events WHERE customer_id IS NULL) AS events, "
            "(SELECT count(1) FROM activity_orders WHERE customer_id IS NULL) AS orders",
        ),
    ).to_pylist()[0]
    return features, Unmatched(int(counts["events"]), int(counts["orders"]))
