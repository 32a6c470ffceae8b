"""Every feature, written once as Spark SQL over named inputs; Spark runs it, DuckDB runs its translation.

Each feature group is a function ``*_sql`` that returns a :class:`Sql` (common table expressions
and a final SELECT) over *relation names* given by the caller -- ``events``, ``orders``, ``items``
(purchased order lines), ``identifiers``, ``products``, ``profiles``. The Spark engine runs the text
with ``spark.sql(text, events=df, ...)`` (relation names ``{events}``: PySpark binds each DataFrame
to a temporary view for the one query); the embedded engine runs it on DuckDB over tables loaded
from Delta, translated by :func:`lakecdp.sqldialect.translate.query_to_duckdb` (see
:mod:`lakecdp.features.engines`). No feature exists in any other form.

Values enter the text only as literals rendered here: the as-of moment, windows, bounds and
weights from ``conf/features.yaml`` (numbers formatted by code; a double always with an exponent,
so that Spark reads a DOUBLE and not a DECIMAL), statuses and stage names as quoted string
literals, and lifecycle conditions re-written from their parse tree (never pasted as text).

Rules that keep both engines equal (checked by tests/test_features_engines.py):

- aggregate arrays are ``collect_list(x) FILTER (WHERE ...)`` of non-null values (DuckDB's
  ``list`` keeps NULLs), empty lists coalesced to ``array()``;
- sort keys of arrays of structs never hold NULL (Spark orders a NULL field first, DuckDB last);
- "the latest add's price" is ``max(named_struct(time, price))`` (DuckDB's ``arg_max`` skips NULL
  values where Spark's ``max_by`` returns them), equal times broken by the higher price;
- where one row is picked among several (an identifier or a product listed twice) the smallest
  value wins (Spark's ``dropDuplicates`` picked any).

Example:
    >>> rfm_sql(orders="{orders}", as_of=as_of, config=RfmConfig()).text()
    'WITH rfm_completed AS (SELECT ...) SELECT customer_id, recency_days, ...'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlglot import exp

from lakecdp import catalog
from lakecdp.features._time import as_of_utc
from lakecdp.features.config import (
    CartConfig,
    FeaturesConfig,
    InterestConfig,
    LifecycleConfig,
    RecommendationConfig,
    RfmConfig,
    condition_columns,
    parse_condition,
)


class LifecycleRuleError(ValueError):
    """A lifecycle rule refers to a column the features do not have."""


class Sql(NamedTuple):
    """A query as named CTEs and a final SELECT, so that queries can be composed into one."""

    ctes: tuple[tuple[str, str], ...]
    select: str

    def text(self) -> str:
        if not self.ctes:
            return self.select
        return "WITH " + ",\n".join(f"{name} AS (\n{body}\n)" for name, body in self.ctes) + "\n" + self.select


# -- literals -----------------------------------------------------------------------------


def timestamp_sql(moment: datetime) -> str:
    """A TIMESTAMP literal of ``moment`` in UTC, with its zone (any session time zone reads it right)."""
    return f"TIMESTAMP '{as_of_utc(moment).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00'"


def double_sql(value: float) -> str:
    """A DOUBLE literal (``30.0E0``): a plain ``30.0`` would be a DECIMAL in Spark and DuckDB."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a feature setting must be a finite number, got {value}")
    text = repr(number)
    return text if "e" in text else text + "E0"


def int_sql(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return str(int(value))


def string_sql(value: str) -> str:
    """A quoted Spark string literal (quotes and backslashes escaped by sqlglot)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return exp.Literal.string(value).sql(dialect="spark")


def strings_sql(values: Sequence[str]) -> str:
    return ", ".join(string_sql(v) for v in values)


def up_to_sql(column: str, as_of: datetime) -> str:
    """Rows whose time is known and at or before as_of: the point-in-time cut of every group."""
    return f"({column} IS NOT NULL AND {column} <= {timestamp_sql(as_of)})"


def within_days_sql(column: str, as_of: datetime, days: int) -> str:
    """``column`` in the ``days`` days ending at as_of: (as_of - days, as_of]."""
    moment = timestamp_sql(as_of)
    return f"({column} > {moment} - INTERVAL {int_sql(days)} DAYS AND {column} <= {moment})"


def age_days_sql(column: str, as_of: datetime) -> str:
    """Fractional days from ``column`` to as_of (positive in the past)."""
    return f"((unix_micros({timestamp_sql(as_of)}) - unix_micros({column})) / 8.64E10)"


# -- who an event or order belongs to -----------------------------------------------------

# (column on the event/order, identifier_type in identity.identifiers), strongest first:
# a customer number is issued by the shop to one customer; an email can be shared by a
# household; a device id is a browser that several people may use
IDENTIFIER_PRECEDENCE: tuple[tuple[str, str], ...] = (
    ("customer_number", "customer_number"),
    ("email", "email"),
    ("device_id", "device_id"),
)


def _quoted(column: str) -> str:
    """A column name as a Spark identifier (any name a caller's DataFrame has)."""
    return "`" + column.replace("`", "``") + "`"


def _normalised(column: str) -> str:
    # emails are stored lower-case by ingest; lower-casing again keeps a hand-made input from
    # silently missing its customer
    return f"lower(trim(r.{column}))" if column == "email" else f"trim(r.{column})"


def resolve_customer_sql(*, rows: str, columns: Sequence[str], identifiers: str) -> Sql:
    """``rows`` (every column in ``columns``) with ``customer_id`` (NULL when no identifier matches)
    and ``matched_by``, looked up by customer_number, then email, then device_id (those of them
    ``columns`` has); the first match wins."""
    usable = [(column, kind) for column, kind in IDENTIFIER_PRECEDENCE if column in columns]
    if not usable:
        raise ValueError(
            "events/orders need at least one of the columns "
            f"{[c for c, _ in IDENTIFIER_PRECEDENCE]} to find their customer; got {list(columns)}"
        )
    ctes = []
    joins = []
    for position, (column, kind) in enumerate(usable):
        lookup = f"resolve_by_{kind}"
        ctes.append(
            (
                lookup,
                f"SELECT identifier_value AS key, min(customer_id) AS customer_id FROM {identifiers}\n"
                f"WHERE identifier_type = {string_sql(kind)} GROUP BY identifier_value",
            )
        )
        joins.append(f"LEFT JOIN {lookup} k{position} ON {_normalised(column)} = k{position}.key")
    found = [f"k{position}.customer_id" for position in range(len(usable))]
    matched_by = " ".join(
        f"WHEN k{position}.customer_id IS NOT NULL THEN {string_sql(kind)}" for position, (_, kind) in enumerate(usable)
    )
    kept = ", ".join(f"r.{_quoted(c)}" for c in columns if c != "customer_id")
    customer = found[0] if len(found) == 1 else f"coalesce({', '.join(found)})"
    select = (
        f"SELECT {kept}, {customer} AS customer_id, CASE {matched_by} END AS matched_by\n"
        f"FROM {rows} r\n" + "\n".join(joins)
    )
    return Sql(tuple(ctes), select)


def with_category_sql(*, rows: str, columns: Sequence[str], products: str) -> Sql:
    """``rows`` with a missing ``category`` filled from the product catalog (events often carry only the id)."""
    kept = ", ".join(f"r.{c}" for c in columns if c != "category")
    own = "r.category" if "category" in columns else "CAST(NULL AS STRING)"
    return Sql(
        (("catalog_category", f"SELECT product_id, min(category) AS category FROM {products} GROUP BY product_id"),),
        f"SELECT {kept}, coalesce({own}, c.category) AS category\n"
        f"FROM {rows} r LEFT JOIN catalog_category c ON r.product_id = c.product_id",
    )


def purchased_items_sql(*, orders: str, order_items: str, as_of: datetime, completed_statuses: Sequence[str]) -> Sql:
    """Order lines of completed orders placed up to as_of, with the order's customer and time:
    ``customer_id, order_id, ordered_at, product_id, category, quantity, unit_price``."""
    return Sql(
        (),
        "SELECT o.customer_id, o.order_id, o.ordered_at, i.product_id, i.category, i.quantity, i.unit_price\n"
        f"FROM {orders} o JOIN {order_items} i ON o.order_id = i.order_id\n"
        f"WHERE {up_to_sql('o.ordered_at', as_of)} AND o.status IN ({strings_sql(completed_statuses)})",
    )


ACTIVITY_EVENT_COLUMNS = ("customer_id", "matched_by", "event_type", "occurred_at", "product_id", "category", "value")
ACTIVITY_ORDER_COLUMNS = ("customer_id", "matched_by", "order_id", "ordered_at", "status", "total")


def _chain(*steps: tuple[str, Sql]) -> tuple[tuple[str, str], ...]:
    """The CTEs of each step, then the step itself as a CTE of its name."""
    ctes: list[tuple[str, str]] = []
    for name, sql in steps:
        ctes.extend(sql.ctes)
        ctes.append((name, sql.select))
    return tuple(ctes)


def activity_events_sql(
    *, events: str, columns: Sequence[str], identifiers: str, products: str, as_of: datetime
) -> Sql:
    """Events up to as_of with their ``customer_id`` (NULL: no identifier matched; a job counts
    them) and ``matched_by``, ``category`` filled from the catalog: :data:`ACTIVITY_EVENT_COLUMNS`.

    Args:
        columns: the columns of ``events`` (``event_type`` and ``occurred_at`` at least; those of
            ``product_id, category, value`` it lacks are NULL).
    """
    wanted = ("product_id", "category", "value")
    typed = {"product_id": "STRING", "category": "STRING", "value": "DOUBLE"}
    identifier_columns = [c for c, _ in IDENTIFIER_PRECEDENCE if c in columns]
    selected = [*identifier_columns, "event_type", "occurred_at"] + [
        c if c in columns else f"CAST(NULL AS {typed[c]}) AS {c}" for c in wanted
    ]
    cut = Sql((), f"SELECT {', '.join(selected)} FROM {events} WHERE {up_to_sql('occurred_at', as_of)}")
    names = [*identifier_columns, "event_type", "occurred_at", *wanted]
    resolved_columns = [c for c in names if c not in identifier_columns]
    resolved = resolve_customer_sql(rows="activity_events_cut", columns=names, identifiers=identifiers)
    filled = with_category_sql(
        rows="activity_events_resolved", columns=[*resolved_columns, "customer_id", "matched_by"], products=products
    )
    return Sql(
        _chain(
            ("activity_events_cut", cut), ("activity_events_resolved", resolved), ("activity_events_filled", filled)
        ),
        f"SELECT {', '.join(ACTIVITY_EVENT_COLUMNS)} FROM activity_events_filled",
    )


def activity_orders_sql(*, orders: str, columns: Sequence[str], identifiers: str, as_of: datetime) -> Sql:
    """Orders up to as_of with their ``customer_id`` and ``matched_by``: :data:`ACTIVITY_ORDER_COLUMNS`."""
    identifier_columns = [c for c, _ in IDENTIFIER_PRECEDENCE if c in columns]
    names = [*identifier_columns, "order_id", "ordered_at", "status", "total"]
    cut = Sql((), f"SELECT {', '.join(names)} FROM {orders} WHERE {up_to_sql('ordered_at', as_of)}")
    resolved = resolve_customer_sql(rows="activity_orders_cut", columns=names, identifiers=identifiers)
    return Sql(
        _chain(("activity_orders_cut", cut), ("activity_orders_resolved", resolved)),
        f"SELECT {', '.join(ACTIVITY_ORDER_COLUMNS)} FROM activity_orders_resolved",
    )


def activity_items_sql(
    *, orders: str, order_items: str, products: str, as_of: datetime, completed_statuses: Sequence[str]
) -> Sql:
    """Purchased lines of resolved ``orders`` (:func:`activity_orders_sql`), categories filled from
    the catalog (see :func:`purchased_items_sql`)."""
    lines = Sql((), f"SELECT order_id, product_id, category, quantity, unit_price FROM {order_items}")
    filled = with_category_sql(
        rows="activity_lines",
        columns=["order_id", "product_id", "category", "quantity", "unit_price"],
        products=products,
    )
    customer_orders = Sql((), f"SELECT * FROM {orders} WHERE customer_id IS NOT NULL")
    bought = purchased_items_sql(
        orders="activity_customer_orders",
        order_items="activity_lines_filled",
        as_of=as_of,
        completed_statuses=completed_statuses,
    )
    return Sql(
        _chain(
            ("activity_lines", lines), ("activity_lines_filled", filled), ("activity_customer_orders", customer_orders)
        ),
        bought.select,
    )


# -- RFM ----------------------------------------------------------------------------------


def _recency_score(column: str, upper_bounds: Sequence[int]) -> str:
    best = len(upper_bounds) + 1
    whens = " ".join(
        f"WHEN {column} <= {int_sql(bound)} THEN {best - position}" for position, bound in enumerate(upper_bounds)
    )
    return f"CASE {whens} ELSE 1 END"


def _at_least_score(column: str, lower_bounds: Sequence[float], literal) -> str:
    steps = " + ".join(f"CASE WHEN {column} >= {literal(bound)} THEN 1 ELSE 0 END" for bound in lower_bounds)
    return f"(1 + {steps})"


def rfm_sql(*, orders: str, as_of: datetime, config: RfmConfig) -> Sql:
    """Recency, frequency, monetary value and their fixed-bin scores from completed orders.

    ``recency_days``: whole days since the last completed order; ``frequency`` / ``monetary``:
    completed orders of the last ``window_days``; ``order_count`` / ``total_spent`` /
    ``avg_order_value``: every completed order up to as_of. One row per customer with one.
    """
    in_window = within_days_sql("ordered_at", as_of, config.window_days)
    return Sql(
        (
            (
                "rfm_completed",
                f"SELECT customer_id, ordered_at, total FROM {orders}\n"
                f"WHERE {up_to_sql('ordered_at', as_of)} AND status IN ({strings_sql(config.completed_statuses)})",
            ),
            (
                "rfm_summary",
                "SELECT customer_id, CAST(count(1) AS INT) AS order_count, round(sum(total), 2) AS total_spent,\n"
                "min(ordered_at) AS first_purchase_at, max(ordered_at) AS last_purchase_at,\n"
                f"CAST(count(1) FILTER (WHERE {in_window}) AS INT) AS frequency,\n"
                f"round(coalesce(sum(total) FILTER (WHERE {in_window}), 0.0E0), 2) AS monetary\n"
                "FROM rfm_completed GROUP BY customer_id",
            ),
            (
                "rfm_scored",
                "SELECT *,\n"
                f"CAST(floor({age_days_sql('last_purchase_at', as_of)}) AS INT) AS recency_days,\n"
                "round(total_spent / order_count, 2) AS avg_order_value\n"
                "FROM rfm_summary",
            ),
        ),
        "SELECT customer_id, recency_days, frequency, monetary,\n"
        f"{_recency_score('recency_days', config.recency_days)} AS r_score,\n"
        f"{_at_least_score('frequency', config.frequency, int_sql)} AS f_score,\n"
        f"{_at_least_score('monetary', config.monetary, double_sql)} AS m_score,\n"
        f"concat(CAST({_recency_score('recency_days', config.recency_days)} AS STRING), "
        f"CAST({_at_least_score('frequency', config.frequency, int_sql)} AS STRING), "
        f"CAST({_at_least_score('monetary', config.monetary, double_sql)} AS STRING)) AS rfm_score,\n"
        "total_spent, order_count, avg_order_value, first_purchase_at, last_purchase_at\n"
        "FROM rfm_scored",
    )


# -- engagement -----------------------------------------------------------------------------

ENGAGEMENT_WINDOWS = (7, 30, 90)
ENGAGEMENT_EVENTS = ("email_open", "email_click")
# events the customer did not do themselves: a send or a bounce says nothing about whether
# they are still around, so they do not move last_activity_at
NOT_CUSTOMER_ACTIVITY = ("email_send", "email_bounce")


def engagement_sql(*, events: str, as_of: datetime) -> Sql:
    """Email opens and clicks in the 7/30/90 days up to as_of, the latest open or click, and the
    latest event the customer did (sends and bounces are done *to* them)."""
    counts = []
    for kind, event_type in (("opens", "email_open"), ("clicks", "email_click")):
        for days in ENGAGEMENT_WINDOWS:
            hit = f"event_type = {string_sql(event_type)} AND {within_days_sql('occurred_at', as_of, days)}"
            counts.append(f"CAST(count(1) FILTER (WHERE {hit}) AS INT) AS {kind}_{days}d")
    return Sql(
        (),
        "SELECT customer_id,\n" + ",\n".join(counts) + ",\n"
        f"max(occurred_at) FILTER (WHERE event_type IN ({strings_sql(ENGAGEMENT_EVENTS)})) AS last_engagement_at,\n"
        f"max(occurred_at) FILTER (WHERE NOT event_type IN ({strings_sql(NOT_CUSTOMER_ACTIVITY)})) AS last_activity_at\n"
        f"FROM {events} WHERE {up_to_sql('occurred_at', as_of)} GROUP BY customer_id",
    )


# -- interests ------------------------------------------------------------------------------


def category_affinities_sql(
    *,
    events: str,
    items: str,
    as_of: datetime,
    half_life_days: float,
    view_weight: float = 1.0,
    purchase_weight: float = 3.0,
    lookback_days: int | None = None,
) -> Sql:
    """Share of each category in a customer's decayed product views and purchased units.

    A view weighs ``view_weight``, a unit bought ``purchase_weight``; both halve every
    ``half_life_days`` before as_of; activity older than ``lookback_days`` is not read. The map's
    values sum to 1, its keys in name order.
    """
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}")
    half_life = double_sql(half_life_days)
    views_within = "" if lookback_days is None else f"\nAND {within_days_sql('occurred_at', as_of, lookback_days)}"
    bought_within = "" if lookback_days is None else f"\nAND {within_days_sql('ordered_at', as_of, lookback_days)}"

    def decay(column: str) -> str:
        return f"pow(0.5E0, {age_days_sql(column, as_of)} / {half_life})"

    return Sql(
        (
            (
                "affinity_weights",
                f"SELECT customer_id, category, {double_sql(view_weight)} * {decay('occurred_at')} AS weight\n"
                f"FROM {events} WHERE {up_to_sql('occurred_at', as_of)} AND event_type = 'product_view'\n"
                f"AND category IS NOT NULL{views_within}\n"
                "UNION ALL\n"
                f"SELECT customer_id, category, {double_sql(purchase_weight)} * coalesce(quantity, 1) "
                f"* {decay('ordered_at')} AS weight\n"
                f"FROM {items} WHERE {up_to_sql('ordered_at', as_of)} AND category IS NOT NULL{bought_within}",
            ),
            (
                "affinity_per_category",
                "SELECT customer_id, category, sum(weight) AS weight FROM affinity_weights GROUP BY customer_id, category",
            ),
            (
                "affinity_shares",
                "SELECT customer_id, category, weight, sum(weight) OVER (PARTITION BY customer_id) AS total\n"
                "FROM affinity_per_category",
            ),
        ),
        "SELECT customer_id, map_from_entries(array_sort(collect_list("
        "named_struct('category', category, 'share', weight / total)))) AS category_affinities\n"
        "FROM affinity_shares WHERE total > 0 GROUP BY customer_id",
    )


def product_interest_sql(*, events: str, as_of: datetime, config: InterestConfig) -> Sql:
    """Recently viewed products and categories whose views are rising.

    ``recent_product_views``: distinct products viewed, latest view first (ties by id), at most
    ``recent_views_limit``. ``trending_interests``: categories viewed at least
    ``trend_min_recent_views`` times in the last ``trend_recent_days`` whose daily view rate there
    is above ``trend_min_lift`` times the rate of the ``trend_baseline_days`` before; most views
    first (ties by name), at most ``trending_limit``. A row for every customer with a product view.
    """
    in_recent = within_days_sql("occurred_at", as_of, config.trend_recent_days)
    in_baseline = (
        f"NOT {in_recent} AND "
        f"{within_days_sql('occurred_at', as_of, config.trend_recent_days + config.trend_baseline_days)}"
    )
    empty = "CAST(array() AS ARRAY<STRING>)"
    return Sql(
        (
            (
                "interest_views",
                f"SELECT customer_id, occurred_at, product_id, category FROM {events}\n"
                f"WHERE {up_to_sql('occurred_at', as_of)} AND event_type = 'product_view'",
            ),
            (
                "interest_last_view",
                "SELECT customer_id, product_id, max(occurred_at) AS viewed_at FROM interest_views\n"
                "WHERE product_id IS NOT NULL GROUP BY customer_id, product_id",
            ),
            (
                "interest_recent",
                "SELECT customer_id, product_id,\n"
                "row_number() OVER (PARTITION BY customer_id ORDER BY viewed_at DESC, product_id) AS position\n"
                "FROM interest_last_view",
            ),
            (
                "interest_recent_lists",
                "SELECT customer_id, transform(array_sort(collect_list("
                "named_struct('position', position, 'product_id', product_id))), r -> r.product_id) "
                "AS recent_product_views\n"
                f"FROM interest_recent WHERE position <= {int_sql(config.recent_views_limit)} GROUP BY customer_id",
            ),
            (
                "interest_per_category",
                f"SELECT customer_id, category, count(1) FILTER (WHERE {in_recent}) AS recent_views,\n"
                f"count(1) FILTER (WHERE {in_baseline}) AS baseline_views\n"
                "FROM interest_views WHERE category IS NOT NULL GROUP BY customer_id, category",
            ),
            (
                "interest_rising",
                "SELECT customer_id, category,\n"
                "row_number() OVER (PARTITION BY customer_id ORDER BY recent_views DESC, category) AS position\n"
                f"FROM interest_per_category WHERE recent_views >= {int_sql(config.trend_min_recent_views)}\n"
                f"AND recent_views / {double_sql(config.trend_recent_days)} > "
                f"baseline_views / {double_sql(config.trend_baseline_days)} * {double_sql(config.trend_min_lift)}",
            ),
            (
                "interest_trending",
                "SELECT customer_id, transform(array_sort(collect_list("
                "named_struct('position', position, 'category', category))), r -> r.category) AS trending_interests\n"
                f"FROM interest_rising WHERE position <= {int_sql(config.trending_limit)} GROUP BY customer_id",
            ),
            ("interest_viewers", "SELECT DISTINCT customer_id FROM interest_views"),
        ),
        "SELECT v.customer_id,\n"
        f"coalesce(r.recent_product_views, {empty}) AS recent_product_views,\n"
        f"coalesce(t.trending_interests, {empty}) AS trending_interests\n"
        "FROM interest_viewers v\n"
        "LEFT JOIN interest_recent_lists r ON v.customer_id = r.customer_id\n"
        "LEFT JOIN interest_trending t ON v.customer_id = t.customer_id",
    )


# -- cart -----------------------------------------------------------------------------------

CART_EVENTS = ("add_to_cart", "remove_from_cart")
# a completed purchase empties the cart; ``checkout`` only starts one and does not
CART_CLOSING_EVENTS = ("purchase",)


def cart_state_sql(
    *, events: str, as_of: datetime, config: CartConfig, closing_events: Sequence[str] = CART_CLOSING_EVENTS
) -> Sql:
    """The cart each customer holds at as_of.

    Only cart events after the customer's last purchase count. A product is in the cart when it
    was added more times than removed since; its price is the ``value`` of its latest add (no
    value: 0). The cart is abandoned when open and its last add or remove is
    ``abandon_after_minutes`` or more before as_of; ``cart_abandoned_at`` is that event's time.
    A row for every customer with a cart event after their last purchase.
    """
    moment = timestamp_sql(as_of)
    return Sql(
        (
            (
                "cart_past",
                f"SELECT customer_id, event_type, occurred_at, product_id, value FROM {events}\n"
                f"WHERE {up_to_sql('occurred_at', as_of)}",
            ),
            (
                "cart_last_purchase",
                "SELECT customer_id, max(occurred_at) AS last_purchase_at FROM cart_past\n"
                f"WHERE event_type IN ({strings_sql(closing_events)}) GROUP BY customer_id",
            ),
            (
                "cart_since_purchase",
                "SELECT p.customer_id, p.event_type, p.occurred_at, p.product_id, p.value\n"
                "FROM cart_past p LEFT JOIN cart_last_purchase l ON p.customer_id = l.customer_id\n"
                f"WHERE p.event_type IN ({strings_sql(CART_EVENTS)}) AND p.product_id IS NOT NULL\n"
                "AND (l.last_purchase_at IS NULL OR p.occurred_at > l.last_purchase_at)",
            ),
            (
                "cart_per_product",
                "SELECT customer_id, product_id,\n"
                "count(1) FILTER (WHERE event_type = 'add_to_cart') "
                "- count(1) FILTER (WHERE event_type <> 'add_to_cart') AS quantity,\n"
                "max(named_struct('added_at', occurred_at, 'price', coalesce(value, 0.0E0))) "
                "FILTER (WHERE event_type = 'add_to_cart') AS latest_add,\n"
                "max(occurred_at) AS last_event_at\n"
                "FROM cart_since_purchase GROUP BY customer_id, product_id",
            ),
            (
                "cart_totals",
                "SELECT customer_id,\n"
                "coalesce(array_sort(collect_list(product_id) FILTER (WHERE quantity > 0)), "
                "CAST(array() AS ARRAY<STRING>)) AS cart_product_ids,\n"
                "round(coalesce(sum(quantity * coalesce(latest_add.price, 0.0E0)) FILTER (WHERE quantity > 0), "
                "0.0E0), 2) AS cart_value,\n"
                "max(last_event_at) AS last_cart_event_at\n"
                "FROM cart_per_product GROUP BY customer_id",
            ),
        ),
        "SELECT customer_id, size(cart_product_ids) > 0 AS cart_open, cart_value, cart_product_ids,\n"
        "CASE WHEN size(cart_product_ids) > 0 AND last_cart_event_at <= "
        f"{moment} - INTERVAL {int_sql(config.abandon_after_minutes)} MINUTES THEN last_cart_event_at END "
        "AS cart_abandoned_at\n"
        "FROM cart_totals",
    )


# -- recommendations and feedback -------------------------------------------------------------

#: silver.events types a customer's recommendation feedback arrives as (reason after the prefix)
FEEDBACK_EVENT_TYPES = ("feedback_not_interested", "feedback_wrong_recommendation")


def recommendation_feedback_sql(*, events: str, as_of: datetime, suppression_days: int) -> Sql:
    """The feedback in force at as_of, one row per customer and product (or category).

    Feedback with a ``product_id`` suppresses the product; with only a ``category``, the category
    (product feedback has ``category`` NULL). In force from ``occurred_at`` for ``suppression_days``;
    the latest feedback on the same thing counts. Columns ``customer_id, product_id, category,
    reason, given_at, suppressed_until``.
    """
    return Sql(
        (
            (
                "feedback_given",
                "SELECT customer_id, product_id, CASE WHEN product_id IS NULL THEN category END AS category,\n"
                "regexp_replace(event_type, '^feedback_', '') AS reason, occurred_at AS given_at\n"
                f"FROM {events} WHERE {up_to_sql('occurred_at', as_of)}\n"
                f"AND event_type IN ({strings_sql(FEEDBACK_EVENT_TYPES)}) AND customer_id IS NOT NULL\n"
                f"AND {within_days_sql('occurred_at', as_of, suppression_days)}",
            ),
            (
                "feedback_ranked",
                "SELECT *, row_number() OVER (PARTITION BY customer_id, product_id, category "
                "ORDER BY given_at DESC, reason) AS feedback_position\n"
                "FROM feedback_given WHERE product_id IS NOT NULL OR category IS NOT NULL",
            ),
        ),
        "SELECT customer_id, product_id, category, reason, given_at,\n"
        f"given_at + INTERVAL {int_sql(suppression_days)} DAYS AS suppressed_until\n"
        "FROM feedback_ranked WHERE feedback_position = 1",
    )


def feedback_per_customer_sql(*, feedback: str) -> Sql:
    """``customer_id, recommendation_feedback``: each customer's feedback in force, newest first
    (equal times: by product id, then category, descending)."""
    return Sql(
        (),
        "SELECT customer_id, transform(sort_array(collect_list(named_struct("
        "'given', given_at, 'product_key', coalesce(product_id, ''), 'category_key', coalesce(category, ''), "
        "'item', named_struct('product_id', product_id, 'category', category, 'reason', reason, "
        "'given_at', given_at, 'suppressed_until', suppressed_until))), false), r -> r.item) "
        "AS recommendation_feedback\n"
        f"FROM {feedback} GROUP BY customer_id",
    )


def _rules_ctes(basket: str) -> tuple[tuple[str, str], ...]:
    """Item-to-item rules A -> B over ``basket`` (distinct customer_id, product_id): support = the
    customers holding both, confidence = P(B | A)."""
    return (
        (
            f"{basket}_support",
            f"SELECT product_id AS antecedent, count(1) AS antecedent_count FROM {basket} GROUP BY product_id",
        ),
        (
            f"{basket}_pairs",
            "SELECT a.product_id AS antecedent, b.product_id AS consequent, count(1) AS support\n"
            f"FROM {basket} a JOIN {basket} b ON a.customer_id = b.customer_id AND a.product_id <> b.product_id\n"
            "GROUP BY a.product_id, b.product_id",
        ),
    )


def recommendations_sql(
    *, events: str, items: str, feedback: str, as_of: datetime, config: RecommendationConfig
) -> Sql:
    """Top-N products per customer from co-view and co-purchase rules.

    Baskets are the products each customer viewed, and separately bought, in the
    ``lookback_days`` up to as_of. A rule A -> B has confidence P(B | A) within one kind of basket;
    pairs held by fewer than ``min_support`` customers are dropped and the stronger of the two
    kinds is kept (at least ``min_confidence``). A customer is offered every B of a rule whose A
    they viewed or bought, scored by the best such rule, except products they ever bought and
    products (or categories) their feedback in force (``feedback``, see
    :func:`recommendation_feedback_sql`) suppresses; best first (ties by product id), at most
    ``top_n``. ``events`` and ``items`` need a ``category`` column (may be NULL).
    """
    days = config.lookback_days
    rules = []
    for basket in ("rec_viewed", "rec_bought"):
        rules.append(
            f"SELECT p.antecedent, p.consequent, p.support / s.antecedent_count AS confidence\n"
            f"FROM {basket}_pairs p JOIN {basket}_support s ON p.antecedent = s.antecedent\n"
            f"WHERE p.support >= {int_sql(config.min_support)}"
        )
    return Sql(
        (
            (
                "rec_viewed",
                f"SELECT DISTINCT customer_id, product_id FROM {events}\n"
                f"WHERE {up_to_sql('occurred_at', as_of)} AND event_type = 'product_view' AND product_id IS NOT NULL\n"
                f"AND {within_days_sql('occurred_at', as_of, days)}",
            ),
            (
                "rec_ever_bought",
                f"SELECT DISTINCT customer_id, product_id FROM {items}\n"
                f"WHERE {up_to_sql('ordered_at', as_of)} AND product_id IS NOT NULL",
            ),
            (
                "rec_bought",
                f"SELECT DISTINCT customer_id, product_id FROM {items}\n"
                f"WHERE {up_to_sql('ordered_at', as_of)} AND product_id IS NOT NULL\n"
                f"AND {within_days_sql('ordered_at', as_of, days)}",
            ),
            *_rules_ctes("rec_viewed"),
            *_rules_ctes("rec_bought"),
            (
                "rec_rules",
                "SELECT antecedent, consequent, max(confidence) AS confidence FROM (\n"
                + "\nUNION ALL\n".join(rules)
                + f"\n) GROUP BY antecedent, consequent HAVING max(confidence) >= {double_sql(config.min_confidence)}",
            ),
            (
                "rec_interacted",
                "SELECT customer_id, product_id FROM rec_viewed UNION SELECT customer_id, product_id FROM rec_bought",
            ),
            (
                "rec_catalog",
                "SELECT product_id, min(category) AS category FROM (\n"
                f"SELECT product_id, category FROM {events} UNION ALL SELECT product_id, category FROM {items}\n"
                ") WHERE product_id IS NOT NULL AND category IS NOT NULL GROUP BY product_id",
            ),
            (
                "rec_candidates",
                "SELECT i.customer_id, r.consequent, max(r.confidence) AS confidence\n"
                "FROM rec_interacted i JOIN rec_rules r ON i.product_id = r.antecedent\n"
                "LEFT ANTI JOIN rec_ever_bought o ON i.customer_id = o.customer_id AND r.consequent = o.product_id\n"
                "GROUP BY i.customer_id, r.consequent",
            ),
            (
                "rec_kept",
                "SELECT c.customer_id, c.consequent, c.confidence\n"
                "FROM rec_candidates c LEFT JOIN rec_catalog k ON c.consequent = k.product_id\n"
                f"LEFT ANTI JOIN {feedback} fp ON fp.product_id IS NOT NULL AND c.customer_id = fp.customer_id "
                "AND c.consequent = fp.product_id\n"
                f"LEFT ANTI JOIN {feedback} fc ON fc.product_id IS NULL AND c.customer_id = fc.customer_id "
                "AND k.category = fc.category",
            ),
            (
                "rec_ranked",
                "SELECT customer_id, consequent, confidence,\n"
                "row_number() OVER (PARTITION BY customer_id ORDER BY confidence DESC, consequent) AS position\n"
                "FROM rec_kept",
            ),
        ),
        "SELECT customer_id, transform(array_sort(collect_list(named_struct("
        "'position', position, 'product_id', consequent, 'confidence', confidence))), "
        "r -> named_struct('product_id', r.product_id, 'confidence', CAST(r.confidence AS DOUBLE))) AS recommendations\n"
        f"FROM rec_ranked WHERE position <= {int_sql(config.top_n)} GROUP BY customer_id",
    )


# -- lifecycle --------------------------------------------------------------------------------


def lifecycle_stage_sql(config: LifecycleConfig, *, available: Sequence[str]) -> str:
    """The CASE giving ``lifecycle_stage``: the stage of the first rule whose condition holds (a
    NULL condition counts as false), else ``default_stage``.

    Raises:
        LifecycleRuleError: a condition names a column not in ``available``.
    """
    known = set(available)
    whens = []
    for position, rule in enumerate(config.rules):
        unknown = sorted(condition_columns(rule.condition) - known)
        if unknown:
            raise LifecycleRuleError(
                f"lifecycle.rules[{position}] ({rule.stage}): condition {rule.condition!r} "
                f"refers to unknown column(s) {unknown}"
            )
        # re-written from the parse tree: one expression, no comment can swallow the rest of the query
        condition = parse_condition(rule.condition).sql(dialect="spark", comments=False)
        whens.append(f"WHEN coalesce(({condition}), false) THEN {string_sql(rule.stage)}")
    return f"CASE {' '.join(whens)} ELSE {string_sql(config.default_stage)} END"


# -- all features -----------------------------------------------------------------------------

FEATURE_COLUMNS = tuple(name for name, _, _ in catalog.ddl_fields(catalog.CUSTOMER_FEATURES.ddl))

# what a customer with no activity of a kind gets (NULL where "no value" is the honest answer:
# recency, scores and averages of someone who never bought)
_DEFAULTS = {
    "frequency": "0",
    "monetary": "0.0E0",
    "total_spent": "0.0E0",
    "order_count": "0",
    "opens_7d": "0",
    "opens_30d": "0",
    "opens_90d": "0",
    "clicks_7d": "0",
    "clicks_30d": "0",
    "clicks_90d": "0",
    "cart_open": "false",
    "cart_value": "0.0E0",
    "category_affinities": "CAST(map() AS MAP<STRING, DOUBLE>)",
    "recent_product_views": "CAST(array() AS ARRAY<STRING>)",
    "trending_interests": "CAST(array() AS ARRAY<STRING>)",
    "cart_product_ids": "CAST(array() AS ARRAY<STRING>)",
    "recommendations": "CAST(array() AS ARRAY<STRUCT<product_id: STRING, confidence: DOUBLE>>)",
    "recommendation_feedback": (
        "CAST(array() AS ARRAY<STRUCT<product_id: STRING, category: STRING, reason: STRING, "
        "given_at: TIMESTAMP, suppressed_until: TIMESTAMP>>)"
    ),
}

#: the groups joined onto the customers, each with the columns it gives
GROUPS = (
    ("rfm", ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "rfm_score",
             "total_spent", "order_count", "avg_order_value", "first_purchase_at", "last_purchase_at")),
    ("engagement", ("opens_7d", "opens_30d", "opens_90d", "clicks_7d", "clicks_30d", "clicks_90d",
                    "last_engagement_at", "last_activity_at")),
    ("affinities", ("category_affinities",)),
    ("interest", ("recent_product_views", "trending_interests")),
    ("cart", ("cart_open", "cart_value", "cart_product_ids", "cart_abandoned_at")),
    ("recommended", ("recommendations",)),
    ("feedback_lists", ("recommendation_feedback",)),
)  # fmt: skip


def _prefixed(sql: Sql, name: str) -> tuple[tuple[str, str], ...]:
    """``sql``'s CTEs then its SELECT as CTE ``name``."""
    return (*sql.ctes, (name, sql.select))


def features_sql(
    *,
    events: str,
    orders: str,
    items: str,
    identifiers: str,
    profiles: str,
    as_of: datetime,
    config: FeaturesConfig,
    run_id: str | None,
) -> Sql:
    """gold.customer_features rows (:data:`FEATURE_COLUMNS`, in order) for every customer of
    ``identifiers`` and ``profiles``.

    Args:
        events: resolved events (``customer_id`` not NULL; ``event_type, occurred_at, product_id,
            category, value``), categories filled from the catalog.
        orders: resolved orders (``customer_id`` not NULL; ``order_id, ordered_at, status, total``).
        items: purchased lines (:func:`purchased_items_sql`).
        identifiers, profiles: relations with a ``customer_id`` column.
    """
    statuses = strings_sql(config.rfm.completed_statuses)
    resolved_events, resolved_orders = events, orders
    events, orders = "customer_events", "customer_orders"
    purchases = (
        f"SELECT customer_id, event_type, occurred_at, product_id, value FROM {events}\n"
        "UNION ALL\n"
        "SELECT customer_id, 'purchase' AS event_type, ordered_at AS occurred_at, CAST(NULL AS STRING) AS product_id,\n"
        f"CAST(NULL AS DOUBLE) AS value FROM {orders} WHERE status IN ({statuses})"
    )
    ctes = (
        (events, f"SELECT * FROM {resolved_events} WHERE customer_id IS NOT NULL"),
        (orders, f"SELECT * FROM {resolved_orders} WHERE customer_id IS NOT NULL"),
        (
            "customers",
            f"SELECT customer_id FROM {identifiers} WHERE customer_id IS NOT NULL\n"
            f"UNION SELECT customer_id FROM {profiles} WHERE customer_id IS NOT NULL",
        ),
        *_prefixed(rfm_sql(orders=orders, as_of=as_of, config=config.rfm), "rfm"),
        *_prefixed(engagement_sql(events=events, as_of=as_of), "engagement"),
        *_prefixed(
            category_affinities_sql(
                events=events,
                items=items,
                as_of=as_of,
                half_life_days=config.affinity.half_life_days,
                view_weight=config.affinity.view_weight,
                purchase_weight=config.affinity.purchase_weight,
                lookback_days=config.affinity.lookback_days,
            ),
            "affinities",
        ),
        *_prefixed(product_interest_sql(events=events, as_of=as_of, config=config.interest), "interest"),
        ("cart_events", purchases),
        *_prefixed(cart_state_sql(events="cart_events", as_of=as_of, config=config.cart), "cart"),
        *_prefixed(
            recommendation_feedback_sql(
                events=events, as_of=as_of, suppression_days=config.recommendations.feedback_suppression_days
            ),
            "feedback",
        ),
        *_prefixed(
            recommendations_sql(
                events=events, items=items, feedback="feedback", as_of=as_of, config=config.recommendations
            ),
            "recommended",
        ),
        *_prefixed(feedback_per_customer_sql(feedback="feedback"), "feedback_lists"),
    )
    source = {column: group for group, columns in GROUPS for column in columns}
    joins = "\n".join(f"LEFT JOIN {group} ON c.customer_id = {group}.customer_id" for group, _ in GROUPS)
    filled = []
    for column in FEATURE_COLUMNS:
        if column == "customer_id":
            filled.append("c.customer_id")
        elif column == "as_of":
            filled.append(f"{timestamp_sql(as_of)} AS as_of")
        elif column == "run_id":
            filled.append(f"{'CAST(NULL AS STRING)' if run_id is None else string_sql(run_id)} AS run_id")
        elif column == "lifecycle_stage":
            continue
        elif column in _DEFAULTS:
            filled.append(f"coalesce({source[column]}.{column}, {_DEFAULTS[column]}) AS {column}")
        else:
            filled.append(f"{source[column]}.{column}")
    available = [c for c in FEATURE_COLUMNS if c != "lifecycle_stage"]
    stage = lifecycle_stage_sql(config.lifecycle, available=available)
    return Sql(
        (
            *ctes,
            ("filled", "SELECT " + ",\n".join(filled) + "\nFROM customers c\n" + joins),
        ),
        "SELECT "
        + ", ".join(f"{stage} AS lifecycle_stage" if c == "lifecycle_stage" else c for c in FEATURE_COLUMNS)
        + "\nFROM filled",
    )
