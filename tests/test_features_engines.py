"""One definition of every feature, two engines: the same hand-made inputs give the same
hand-written gold.customer_features rows on DuckDB (embedded) and on Spark.

The inputs cover each feature for a few customers (as of 2026-11-01 00:00 UTC, conf/features.yaml):
identity resolution (customer number before email before device, email normalised, unmatched
rows), RFM with a half-cent average (Spark rounds 1.005 to 1.01, DuckDB's own round to 1.0),
engagement windows, lifecycle rules, decayed affinities, recent views and trends, carts (open,
abandoned, emptied by a purchase), co-view recommendations with their confidence, and feedback
that suppresses a product, a category, or has expired.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from lakecdp import catalog
from lakecdp.delta_store import arrow_schema, conform, utc_timestamps
from lakecdp.features.config import load_features_config
from lakecdp.features.definitions import double_sql, string_sql, timestamp_sql
from lakecdp.features.embedded import compute_features_duckdb, connection

from conftest import REPO_ROOT

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def t(text: str) -> datetime:
    """'2026-10-31 22:30' (or a date) as an aware UTC datetime."""
    fmt = "%Y-%m-%d %H:%M" if " " in text else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


EVENTS_DDL = (
    "event_id string, event_type string, occurred_at timestamp, email string, device_id string, "
    "customer_number string, product_id string, category string, value double"
)
ORDERS_DDL = "order_id string, customer_number string, email string, ordered_at timestamp, status string, total double"
ITEMS_DDL = "order_id string, product_id string, category string, quantity int, unit_price double"
PRODUCTS_DDL = "product_id string, category string"
IDENTIFIERS_DDL = "identifier_type string, identifier_value string, customer_id string"
PROFILES_DDL = "customer_id string"

IDENTIFIERS = [
    ("customer_number", "S1", "c1"),
    ("email", "ann@x.com", "c1"),
    ("device_id", "d-1", "c1"),
    ("email", "bob@x.com", "c2"),
    ("device_id", "d-2", "c2"),
    ("email", "cy@x.com", "c3"),
]
PROFILES = [("c1",), ("c4",)]  # c4: a profile and nothing else
PRODUCTS = [("P1", "shoes"), ("P2", "socks"), ("P3", "hats"), ("P4", "bags")]
ORDERS = [
    ("o1", "S1", None, t("2026-10-20"), "completed", 2.00),  # c1
    ("o2", None, "ann@x.com", t("2026-08-01"), "completed", 0.01),  # c1: average 1.005
    ("o3", None, "bob@x.com", t("2025-01-01"), "completed", 200.0),  # c2, 669 days ago
    ("o4", None, "cy@x.com", t("2026-10-25"), "cancelled", 50.0),  # c3: never completed
    ("o5", None, "zed@x.com", t("2026-10-10"), "completed", 10.0),  # nobody we know
    ("o6", "S1", None, t("2026-11-02"), "completed", 99.0),  # after as_of
]
ITEMS = [
    ("o1", "P1", None, 1, 2.00),  # category from the catalog: shoes
    ("o2", "P2", "socks", 2, 0.005),
    ("o3", "P3", "hats", 1, 200.0),
    ("o5", "P1", "shoes", 1, 10.0),
]


def _event(number, event_type, when, *, email=None, device=None, customer_number=None, product=None, value=None):
    return (f"e{number}", event_type, t(when), email, device, customer_number, product, None, value)


EVENTS = [
    # c1 -- views (by device; one by customer number with someone else's email: the number wins)
    _event(1, "product_view", "2026-10-31 00:00", device="d-1", product="P1"),
    _event(2, "product_view", "2026-10-30 00:00", device="d-1", product="P4"),
    _event(3, "product_view", "2026-10-29 00:00", customer_number="S1", email="bob@x.com", product="P1"),
    # email: an open 4 days ago (address not normalised), a click 61 days ago, a send (done to them)
    _event(4, "email_open", "2026-10-28 00:00", email=" Ann@X.com "),
    _event(5, "email_click", "2026-09-01 00:00", email="ann@x.com"),
    _event(6, "email_send", "2026-10-31 23:00", email="ann@x.com"),
    _event(7, "email_open", "2026-11-05 00:00", email="ann@x.com"),  # after as_of
    # cart after the last purchase (20 Oct): 2 x P2 at the latest price 4.5; P4 added and removed
    _event(8, "add_to_cart", "2026-10-31 20:00", device="d-1", product="P2", value=4.0),
    _event(9, "add_to_cart", "2026-10-31 20:10", device="d-1", product="P2", value=4.5),
    _event(10, "add_to_cart", "2026-10-31 20:20", device="d-1", product="P4", value=10.0),
    _event(11, "remove_from_cart", "2026-10-31 20:30", device="d-1", product="P4", value=10.0),
    _event(12, "feedback_not_interested", "2026-10-15 00:00", email="ann@x.com", product="P3"),
    # c2 -- two views 12 days ago, feedback that has expired (123 days > 90), a cart emptied by o3
    _event(13, "product_view", "2026-10-20 00:00", device="d-2", product="P1"),
    _event(14, "product_view", "2026-10-20 00:00", device="d-2", product="P2"),
    _event(15, "feedback_not_interested", "2026-07-01 00:00", email="bob@x.com", product="P1"),
    _event(16, "add_to_cart", "2024-12-31 00:00", device="d-2", product="P4", value=3.0),
    # c3 -- three views, feedback on a whole category, a cart 30 minutes old
    _event(17, "product_view", "2026-10-21 00:00", email="cy@x.com", product="P1"),
    _event(18, "product_view", "2026-10-21 00:00", email="cy@x.com", product="P2"),
    _event(19, "product_view", "2026-10-21 00:00", email="cy@x.com", product="P3"),
    ("e20", "feedback_wrong_recommendation", t("2026-10-22 00:00"), "cy@x.com", None, None, None, "shoes", None),
    _event(21, "add_to_cart", "2026-10-31 23:30", email="cy@x.com", product="P3", value=12.0),
    # nobody
    _event(22, "page_view", "2026-10-31 00:00", email="nobody@x.com"),
]

INPUTS = {
    "events": (EVENTS_DDL, EVENTS),
    "orders": (ORDERS_DDL, ORDERS),
    "order_items": (ITEMS_DDL, ITEMS),
    "products": (PRODUCTS_DDL, PRODUCTS),
    "identifiers": (IDENTIFIERS_DDL, IDENTIFIERS),
    "profiles": (PROFILES_DDL, PROFILES),
}


def _decay(days: float) -> float:
    """A view's weight ``days`` before as_of (half-life 30 days)."""
    return 0.5 ** (days / 30)


# c1's affinities: views of shoes 1 and 3 days ago, of bags 2 days ago; 1 pair of shoes bought
# 12 days ago (3 per unit), 2 pairs of socks 92 days ago
_C1 = {"bags": _decay(2), "shoes": _decay(1) + _decay(3) + 3 * _decay(12), "socks": 6 * _decay(92)}

NO_ACTIVITY = {
    "as_of": AS_OF,
    "recency_days": None,
    "frequency": 0,
    "monetary": 0.0,
    "r_score": None,
    "f_score": None,
    "m_score": None,
    "rfm_score": None,
    "total_spent": 0.0,
    "order_count": 0,
    "avg_order_value": None,
    "first_purchase_at": None,
    "last_purchase_at": None,
    **{f"{kind}_{days}d": 0 for kind in ("opens", "clicks") for days in (7, 30, 90)},
    "last_engagement_at": None,
    "last_activity_at": None,
    "lifecycle_stage": "prospect",
    "category_affinities": [],
    "recent_product_views": [],
    "trending_interests": [],
    "cart_open": False,
    "cart_value": 0.0,
    "cart_product_ids": [],
    "cart_abandoned_at": None,
    "recommendations": [],
    "recommendation_feedback": [],
    "run_id": "r1",
}


def _row(customer_id: str, **features) -> dict:
    unknown = set(features) - set(NO_ACTIVITY)
    assert not unknown, unknown
    return {"customer_id": customer_id, **NO_ACTIVITY, **features}


EXPECTED = [
    _row(
        "c1",
        # last completed order 12 days ago -> r 5; 2 orders -> f 2; 2.01 -> m 1; average 1.005 -> 1.01
        recency_days=12,
        frequency=2,
        monetary=2.01,
        r_score=5,
        f_score=2,
        m_score=1,
        rfm_score="521",
        total_spent=2.01,
        order_count=2,
        avg_order_value=1.01,
        first_purchase_at=t("2026-08-01"),
        last_purchase_at=t("2026-10-20"),
        opens_7d=1,
        opens_30d=1,
        opens_90d=1,
        clicks_90d=1,
        last_engagement_at=t("2026-10-28"),
        last_activity_at=t("2026-10-31 20:30"),  # the cart's last event; the send does not count
        lifecycle_stage="active",  # first purchase 92 days ago (not new), 12 days quiet
        category_affinities=[(name, weight / sum(_C1.values())) for name, weight in sorted(_C1.items())],
        recent_product_views=["P1", "P4"],
        trending_interests=["shoes"],  # 2 views in 7 days, none in the 30 before; bags: 1 view
        cart_open=True,
        cart_value=9.0,
        cart_product_ids=["P2"],
        cart_abandoned_at=t("2026-10-31 20:30"),
        # P1 -> P2 and P2 -> P1 are the only rules: c1 bought both
        recommendation_feedback=[
            {
                "product_id": "P3",
                "category": None,
                "reason": "not_interested",
                "given_at": t("2026-10-15"),
                "suppressed_until": t("2027-01-13"),
            }
        ],
    ),
    _row(
        "c2",
        recency_days=669,
        r_score=1,
        f_score=1,
        m_score=1,
        rfm_score="111",
        total_spent=200.0,
        order_count=1,
        avg_order_value=200.0,
        first_purchase_at=t("2025-01-01"),
        last_purchase_at=t("2025-01-01"),
        last_activity_at=t("2026-10-20"),
        lifecycle_stage="churned",
        # the hats bought 669 days ago are outside the 365-day lookback
        category_affinities=[("shoes", 0.5), ("socks", 0.5)],
        recent_product_views=["P1", "P2"],  # viewed at the same time: by product id
        # co-view: P1 viewed by c1, c2, c3; P2 by c2, c3 -> P2 -> P1: 2/2, P1 -> P2: 2/3.
        # The feedback on P1 expired; P3 (bought) is in no rule anyway
        recommendations=[{"product_id": "P1", "confidence": 1.0}, {"product_id": "P2", "confidence": 2 / 3}],
    ),
    _row(
        "c3",
        last_activity_at=t("2026-10-31 23:30"),
        category_affinities=[("hats", 1 / 3), ("shoes", 1 / 3), ("socks", 1 / 3)],
        recent_product_views=["P1", "P2", "P3"],
        cart_open=True,
        cart_value=12.0,
        cart_product_ids=["P3"],  # 30 minutes old: not abandoned
        # P1 is shoes, a category c3 said was a wrong recommendation
        recommendations=[{"product_id": "P2", "confidence": 2 / 3}],
        recommendation_feedback=[
            {
                "product_id": None,
                "category": "shoes",
                "reason": "wrong_recommendation",
                "given_at": t("2026-10-22"),
                "suppressed_until": t("2027-01-20"),
            }
        ],
    ),
    _row("c4"),
]
EXPECTED_UNMATCHED = {"events": 1, "orders": 1}  # nobody@x.com's page view, zed@x.com's order


def _arrow(ddl: str, rows: list[tuple]) -> pa.Table:
    schema = arrow_schema(ddl)
    return pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows], schema=schema)


def _rows(table: pa.Table) -> list[dict]:
    """Rows in the catalogue's types, by customer (maps as lists of pairs: their order counts)."""
    return sorted(conform(table, catalog.CUSTOMER_FEATURES.ddl).to_pylist(), key=lambda r: r["customer_id"])


def _close(actual, expected, path: str = "") -> list[str]:
    """Differences between two values; doubles equal to 1e-12 relative (sums in another order)."""
    if isinstance(expected, float) and isinstance(actual, float):
        return (
            []
            if math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-15)
            else [f"{path}: {actual!r} != {expected!r}"]
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(actual) != set(expected):
            return [f"{path}: keys {sorted(actual)} != {sorted(expected)}"]
        return [d for key in expected for d in _close(actual[key], expected[key], f"{path}.{key}")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(actual) != len(expected):
            return [f"{path}: {actual!r} != {expected!r}"]
        return [d for i, (a, e) in enumerate(zip(actual, expected, strict=True)) for d in _close(a, e, f"{path}[{i}]")]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]


def assert_rows(actual: list[dict], expected: list[dict]) -> None:
    assert [r["customer_id"] for r in actual] == [r["customer_id"] for r in expected]
    differences = [d for a, e in zip(actual, expected, strict=True) for d in _close(a, e, a["customer_id"])]
    assert not differences, "\n".join(differences)


def run_embedded() -> tuple[list[dict], dict[str, int]]:
    config = load_features_config(REPO_ROOT / "conf" / "features.yaml")
    con = connection()
    try:
        for name, (ddl, rows) in INPUTS.items():
            con.register("_input", _arrow(ddl, rows))
            con.execute(f'CREATE TABLE "{name}" AS SELECT {utc_timestamps(con, "_input")} FROM _input')
            con.unregister("_input")
        features, unmatched = compute_features_duckdb(con, as_of=AS_OF, config=config, run_id="r1")
    finally:
        con.close()
    return _rows(features), unmatched._asdict()


def test_embedded_engine_gives_the_hand_written_rows():
    rows, unmatched = run_embedded()
    assert_rows(rows, EXPECTED)
    assert unmatched == EXPECTED_UNMATCHED


# slow tier: a Spark run of ~30-120 s on 2 loaded cores; the full suite (CI) runs it
@pytest.mark.slow
def test_spark_engine_gives_the_same_hand_written_rows(spark):
    from lakecdp.features.compute import prepare_activity, features_from_activity

    config = load_features_config(REPO_ROOT / "conf" / "features.yaml")
    frames = {name: spark.createDataFrame(rows, ddl) for name, (ddl, rows) in INPUTS.items()}
    activity = prepare_activity(
        events=frames["events"],
        orders=frames["orders"],
        order_items=frames["order_items"],
        products=frames["products"],
        identifiers=frames["identifiers"],
        as_of=AS_OF,
        config=config,
    )
    features = features_from_activity(
        activity,
        identifiers=frames["identifiers"],
        profiles=frames["profiles"],
        as_of=AS_OF,
        config=config,
        run_id="r1",
    )
    assert_rows(_rows(features.toArrow()), EXPECTED)
    unmatched = {
        "events": activity.events.where("customer_id IS NULL").count(),
        "orders": activity.orders.where("customer_id IS NULL").count(),
    }
    assert unmatched == EXPECTED_UNMATCHED


def test_literals_are_rendered_by_code():
    """Config values reach the SQL only through these: a double keeps its type (``30.0`` would be a
    DECIMAL), text is quoted, a moment is UTC with its zone."""
    assert double_sql(30) == "30.0E0"
    assert double_sql(1e-05) == "1e-05"
    with pytest.raises(ValueError, match="finite"):
        double_sql(float("inf"))
    with pytest.raises(TypeError):
        double_sql("30")  # type: ignore[arg-type]
    assert string_sql("it's") == "'it\\'s'"
    assert timestamp_sql(datetime(2026, 11, 1, 1, 0)) == "TIMESTAMP '2026-11-01 01:00:00.000000+00:00'"


@pytest.mark.slow
def test_both_engines_write_the_same_features_on_the_demo_world(spark, tmp_path_factory, tmp_path):
    """The demo world (tests/support/worlds.py) as of a new moment: the features step on Spark and
    on the embedded engine writes the same gold.customer_features, row for row; switched to the
    other engine with nothing changed, the step writes nothing; the embedded engine continues the
    table Spark wrote, and Spark reads what it wrote."""
    from conftest import make_project
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore
    from lakecdp.features.job import run
    from lakecdp.tables import Tables
    from tests.support.worlds import copy_demo_world

    def on_engine(root, engine: str):
        base = make_project(root)
        return base.model_copy(update={"environment": base.environment.model_copy(update={"engine": engine})})

    as_of = t("2026-10-25 12:00")
    rows, counts = {}, {}
    for engine in ("spark", "embedded"):
        root = tmp_path / engine
        copy_demo_world(spark, tmp_path_factory, root)
        counts[engine] = run(JobContext.create(on_engine(root, engine), spark, as_of=as_of, run_id="r-world"))
        store = DeltaStore(JobContext.create(on_engine(root, "embedded"), spark, run_id="r-read"), label="test")
        rows[engine] = _rows(store.read("gold.customer_features"))
    assert counts["spark"] == counts["embedded"]
    assert counts["spark"]["skipped"] == 0 and counts["spark"]["customers"] > 100
    # every feature is exercised by the world, not only defaults
    assert sum(1 for r in rows["spark"] if r["recommendations"]) > 10
    assert sum(1 for r in rows["spark"] if r["cart_open"]) > 0
    assert len({r["lifecycle_stage"] for r in rows["spark"]}) >= 3
    assert_rows(rows["embedded"], rows["spark"])

    # the Spark-written warehouse on the embedded engine: same inputs, as-of and config -> nothing
    switched = on_engine(tmp_path / "spark", "embedded")
    assert run(JobContext.create(switched, spark, as_of=as_of, run_id="r-switch"))["skipped"] == 1
    # a new as-of: delta-rs overwrites the table Spark wrote; Spark reads the new version
    before = Tables(switched).version(spark, "gold.customer_features")
    later = run(JobContext.create(switched, spark, as_of=t("2026-10-28 00:00"), run_id="r-later"))
    assert later["skipped"] == 0
    assert Tables(switched).version(spark, "gold.customer_features") > before
    assert Tables(switched).read(spark, "gold.customer_features").count() == later["customers"]
