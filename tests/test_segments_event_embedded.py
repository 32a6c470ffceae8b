"""Event segments on the embedded engine (DuckDB + delta-rs), no JVM.

1. The shipped ``conf/segments`` (4 event rules, 7 conditions) through the segments step with
   ``engine: embedded``: the scenario of ``tests/test_segments.py`` (members, rekeys, exits, holds
   worked out by hand there), copied here so input and expected rows sit together. The step must
   not fall back to Spark (the context has no SparkSession).
2. Hand-made event rules at their edges: window bounds, ``min_count``, ``min_value``, "did not
   buy" in the rule's window or its own, since the last trigger (same instant, before, after),
   ``per_product`` with quoted product ids, categories, as_of in another time zone. Expected
   members and reasons are written by hand next to the events.

The same rules on both engines, row for row: ``tests/test_segments_engines.py`` (slow tier).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import make_project, on_engine
from lakecdp.context import JobContext
from lakecdp.segments.definitions import SegmentDefinition
from lakecdp.delta_store import arrow_schema
from lakecdp.segments.embedded import evaluate_and_write_embedded, unsupported
from lakecdp.segments.job import APPROVALS, CHANGES, MEMBERSHIP, run
from lakecdp.segments.kinds import EventRule


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


PROFILE = "customer_id string, first_name string, email string, run_id string"
FEATURES = (
    "customer_id string, as_of timestamp, total_spent double, order_count int, last_purchase_at timestamp, "
    "last_activity_at timestamp, lifecycle_stage string, run_id string"
)
EVENTS = (
    "event_id string, event_type string, occurred_at timestamp, email string, device_id string, "
    "customer_number string, product_id string, category string, value double"
)
IDENTIFIERS = "identifier_type string, identifier_value string, customer_id string, run_id string"
ID_CHANGES = (
    "run_id string, change_type string, old_customer_id string, new_customer_id string, "
    "record_count int, changed_at timestamp"
)


def embedded_project(root):
    project = make_project(root)
    return on_engine(project, "embedded")


def write(project, name: str, rows: list[tuple], schema: str, *, mode: str = "overwrite") -> None:
    arrow = arrow_schema(schema)
    table = pa.Table.from_pylist([dict(zip(arrow.names, row)) for row in rows], schema=arrow)
    write_deltalake(str(project.warehouse / name.replace(".", "/")), table, mode=mode)


def rows(project, name: str, columns: list[str]) -> list[tuple]:
    table = DeltaTable(str(project.warehouse / name.replace(".", "/"))).to_pyarrow_table(columns=columns)
    return sorted(tuple(r[c] for c in columns) for r in table.to_pylist())


def context(project, as_of: datetime, run_id: str) -> JobContext:
    return JobContext(project=project, spark=None, as_of=as_of, run_id=run_id)  # type: ignore[arg-type]


# -- 1. the shipped segments through the step ------------------------------------------------

PROFILE_ROWS = [(c, c.upper(), f"{c}@x.io", "r0") for c in ("c1", "c2", "c3", "c4", "c5")]
FEATURE_ROWS = [
    # customer, as_of, total_spent, order_count, last_purchase_at, last_activity_at, stage
    ("c1", ts("2026-11-01"), 120.0, 2, ts("2026-08-01"), ts("2026-08-01"), "active", "r0"),
    ("c2", ts("2026-11-01"), 80.0, 1, ts("2026-10-31 10:00"), ts("2026-10-31 10:00"), "new", "r0"),
    ("c3", ts("2026-11-01"), 0.0, 0, None, None, "at_risk", "r0"),
    ("c4", ts("2026-11-01"), 900.0, 4, ts("2026-10-30 12:00"), ts("2026-10-30 12:00"), "active", "r0"),
    ("c5", ts("2026-11-01"), 300.0, 3, ts("2026-07-01"), ts("2026-07-01"), "churned", "r0"),
]
IDENTIFIER_ROWS = [
    ("customer_number", "S1", "c1", "r0"),
    ("email", "c2@x.io", "c2", "r0"),
    ("device_id", "d3", "c3", "r0"),
    ("customer_number", "S4", "c4", "r0"),
    ("email", "c5@x.io", "c5", "r0"),
]


def ev(event_id, event_type, at, *, email=None, device=None, number=None, product=None, category=None, value=None):
    return (event_id, event_type, ts(at), email, device, number, product, category, value)


EVENT_ROWS = [
    # c1 (customer_number S1): 3 product views on 10-31, a purchase after run 1's as_of
    ev("e1", "product_view", "2026-10-31 10:00", number="S1", product="P1"),
    ev("e2", "product_view", "2026-10-31 11:00", number="S1", product="P2"),
    ev("e3", "product_view", "2026-10-31 12:00", number="S1", product="P3"),
    ev("e4", "purchase", "2026-11-02 09:00", number="S1", value=50.0),
    # c2 (email): 3 views of P1, then a purchase -> not a recent browser
    ev("e5", "product_view", "2026-10-30 12:00", email="c2@x.io", product="P1"),
    ev("e6", "product_view", "2026-10-30 13:00", email="c2@x.io", product="P1"),
    ev("e7", "product_view", "2026-10-31 09:00", email="c2@x.io", product="P1"),
    ev("e8", "purchase", "2026-10-31 10:00", email="c2@x.io", value=80.0),
    # c3 (device d3): 3 views of P4, then add to cart and nothing after -> cart abandoner
    ev("e9", "product_view", "2026-10-31 18:00", device="d3", product="P4"),
    ev("e10", "product_view", "2026-10-31 18:30", device="d3", product="P4"),
    ev("e11", "product_view", "2026-10-31 19:00", device="d3", product="P4"),
    ev("e12", "add_to_cart", "2026-10-31 20:00", device="d3", product="P4"),
    # c4: add to cart, checkout, purchase of a 600 item -> vip, not an abandoner
    ev("e13", "add_to_cart", "2026-10-30 11:00", number="S4", product="P9"),
    ev("e14", "checkout", "2026-10-30 11:30", number="S4"),
    ev("e15", "purchase", "2026-10-30 12:00", number="S4", product="P9", value=600.0),
    # an anonymous device nobody resolves
    ev("e16", "product_view", "2026-10-31 12:00", device="d9", product="P1"),
]

# run 1, as_of 2026-11-01 00:00: (segment, customer, member_key)
RUN1_MEMBERS = [
    ("cart_abandoners", "c3", ""),
    ("churn_risk", "c1", ""),  # c5 matches too but has had no activity for 123 days (> 90)
    ("high_value_recent_buyers", "c4", ""),
    ("interested_in_product", "c1", "P1"),
    ("interested_in_product", "c1", "P2"),
    ("interested_in_product", "c1", "P3"),
    ("interested_in_product", "c2", "P1"),
    ("interested_in_product", "c3", "P4"),
    ("lifecycle_active", "c1", ""),
    ("lifecycle_active", "c4", ""),
    ("lifecycle_at_risk", "c3", ""),
    ("lifecycle_churned", "c5", ""),
    ("lifecycle_new", "c2", ""),
    ("recent_browsers", "c1", ""),  # c3 browsed too but is excluded as a cart abandoner
    ("vip", "c4", ""),
]


def test_shipped_segments_run_on_the_embedded_engine_without_spark(tmp_path):
    project = embedded_project(tmp_path)
    write(project, "gold.customer_profile", PROFILE_ROWS, PROFILE)
    write(project, "gold.customer_features", FEATURE_ROWS, FEATURES)
    write(project, "silver.events", EVENT_ROWS, EVENTS)
    write(project, "identity.identifiers", IDENTIFIER_ROWS, IDENTIFIERS)

    # -- run 1: every membership enters (the step itself: no SparkSession, no fallback) ----------
    counts = run(context(project, ts("2026-11-01"), "run-1"))
    assert (counts["entered"], counts["exited"], counts["held"]) == (15, 0, 0)
    changes = rows(project, CHANGES, ["segment_id", "customer_id", "member_key", "change_type", "reason"])
    assert [c[:3] for c in changes] == sorted(RUN1_MEMBERS)
    reasons = {(c[0], c[1], c[2]): c[4] for c in changes}
    # Spark's to_json byte for byte: struct order, milliseconds + Z, Java doubles
    assert reasons[("recent_browsers", "c1", "")] == (
        '{"rule":"product_view >= 3 within 2d; no purchase within 2d",'
        '"values":{"event_count":3,"last_event_at":"2026-10-31T12:00:00.000Z"}}'
    )
    assert reasons[("vip", "c4", "")] == (
        '{"rule":"purchase >= 1 within 365d with value >= 500",'
        '"values":{"event_count":1,"last_event_at":"2026-10-30T12:00:00.000Z","max_value":600.0}}'
    )
    assert reasons[("cart_abandoners", "c3", "")] == (
        '{"rule":"add_to_cart >= 1 within 7d; no checkout|purchase since last trigger",'
        '"values":{"event_count":1,"last_event_at":"2026-10-31T20:00:00.000Z"}}'
    )
    assert reasons[("interested_in_product", "c2", "P1")] == (
        '{"rule":"product_view >= 1 within 1d per product",'
        '"values":{"event_count":1,"last_event_at":"2026-10-31T09:00:00.000Z"}}'
    )

    # -- run 2 (as_of 11-03): time passes, c3 is merged into c2, c1 buys -----------------------
    features2 = [
        ("c1", ts("2026-11-03"), 700.0, 3, ts("2026-11-02 09:00"), ts("2026-11-02 09:00"), "active", "r1"),
        *[(r[0], ts("2026-11-03"), *r[2:7], "r1") for r in FEATURE_ROWS if r[0] in ("c2", "c4", "c5")],
    ]
    write(project, "gold.customer_profile", [r for r in PROFILE_ROWS if r[0] != "c3"], PROFILE)
    write(project, "gold.customer_features", features2, FEATURES)
    write(
        project,
        "silver.events",
        [ev("e17", "add_to_cart", "2026-11-02 10:00", email="c2@x.io", product="P5")],
        EVENTS,
        mode="append",
    )
    write(
        project,
        "identity.identifiers",
        [("device_id", "d3", "c2", "r1") if r[1] == "d3" else r for r in IDENTIFIER_ROWS],
        IDENTIFIERS,
    )
    write(project, "identity.id_changes", [("id-2", "merge", "c3", "c2", 2, ts("2026-11-02 23:00"))], ID_CHANGES)
    run(context(project, ts("2026-11-03"), "run-2"))

    run2 = [
        c
        for c in rows(
            project,
            CHANGES,
            ["run_id", "segment_id", "customer_id", "member_key", "change_type", "previous_customer_id", "reason"],
        )
        if c[0] == "run-2"
    ]
    assert sorted(c[1:6] for c in run2) == sorted(
        [
            ("recent_browsers", "c1", "", "exited", None),  # views left the 48 h window
            ("interested_in_product", "c1", "P1", "exited", None),  # no view in the last 24 h
            ("interested_in_product", "c1", "P2", "exited", None),
            ("interested_in_product", "c1", "P3", "exited", None),
            ("interested_in_product", "c2", "P1", "exited", None),
            ("cart_abandoners", "c2", "", "rekeyed", "c3"),  # c3's memberships move to c2 ...
            ("interested_in_product", "c2", "P4", "rekeyed", "c3"),
            ("lifecycle_at_risk", "c2", "", "rekeyed", "c3"),
            ("interested_in_product", "c2", "P4", "exited", None),  # ... and leave where c2 does not qualify
            ("lifecycle_at_risk", "c2", "", "exited", None),  # c2 is 'new' (exclusive lifecycle group)
            ("high_value_recent_buyers", "c1", "", "entered", None),  # 700 spent, bought 11-02
            ("churn_risk", "c1", "", "exited", None),  # bought recently
        ]
    )
    by_key = {(c[1], c[2], c[3], c[4]): c[6] for c in run2}
    # an exit names the old rule (read from the stay's reason); a rekey carries the old reason
    assert json.loads(by_key[("recent_browsers", "c1", "", "exited")]) == {
        "rule": "product_view >= 3 within 2d; no purchase within 2d",
        "exit": "no_longer_matches",
    }
    # (c2's own stage is 'new': the rekeyed stay no longer matches)
    assert json.loads(by_key[("lifecycle_at_risk", "c2", "", "exited")]) == {
        "rule": "lifecycle_stage = 'at_risk'",
        "exit": "no_longer_matches",
    }
    assert by_key[("cart_abandoners", "c2", "", "rekeyed")] == reasons[("cart_abandoners", "c3", "")]
    d1, d3 = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc)
    assert rows(
        project,
        MEMBERSHIP,
        ["segment_id", "customer_id", "member_key", "entered_at", "entered_run_id", "exited_run_id", "is_current"],
    ) == sorted(
        [
            ("cart_abandoners", "c3", "", d1, "run-1", "run-2", False),
            ("cart_abandoners", "c2", "", d1, "run-2", None, True),  # moved: keeps c3's entered_at
            ("churn_risk", "c1", "", d1, "run-1", "run-2", False),
            ("high_value_recent_buyers", "c4", "", d1, "run-1", None, True),
            ("high_value_recent_buyers", "c1", "", d3, "run-2", None, True),
            ("interested_in_product", "c1", "P1", d1, "run-1", "run-2", False),
            ("interested_in_product", "c1", "P2", d1, "run-1", "run-2", False),
            ("interested_in_product", "c1", "P3", d1, "run-1", "run-2", False),
            ("interested_in_product", "c2", "P1", d1, "run-1", "run-2", False),
            ("interested_in_product", "c3", "P4", d1, "run-1", "run-2", False),
            ("interested_in_product", "c2", "P4", d1, "run-2", "run-2", False),
            ("lifecycle_active", "c1", "", d1, "run-1", None, True),
            ("lifecycle_active", "c4", "", d1, "run-1", None, True),
            ("lifecycle_at_risk", "c3", "", d1, "run-1", "run-2", False),
            ("lifecycle_at_risk", "c2", "", d1, "run-2", "run-2", False),
            ("lifecycle_churned", "c5", "", d1, "run-1", None, True),
            ("lifecycle_new", "c2", "", d1, "run-1", None, True),
            ("recent_browsers", "c1", "", d1, "run-1", "run-2", False),
            ("vip", "c4", "", d1, "run-1", None, True),
        ]
    )
    # the moved stay keeps c3's reason
    moved = [
        r
        for r in rows(project, MEMBERSHIP, ["segment_id", "customer_id", "is_current", "reason"])
        if r[:3] == ("cart_abandoners", "c2", True)
    ]
    assert [r[3] for r in moved] == [reasons[("cart_abandoners", "c3", "")]]
    # high_value_recent_buyers went 1 -> 2 members (100% > 50%): held
    assert rows(project, APPROVALS, ["run_id", "segment_id", "previous_size", "new_size", "status"]) == [
        ("run-2", "high_value_recent_buyers", 1, 2, "held")
    ]


# -- 2. hand-made rules at their edges ---------------------------------------------------------

AS_OF = ts("2026-11-01")


def rule(segment_id: str, *, emit_updates: bool = False, **event) -> SegmentDefinition:
    return SegmentDefinition.model_validate(
        {"version": 1, "id": segment_id, "schedule": {"every_minutes": 5}, "emit_updates": emit_updates, "event": event}
    )


EDGE_SEGMENTS = {
    d.id: d
    for d in [
        rule("seen_24h", event_types=["page_view"], within="24h"),
        rule(
            "browsed_no_buy",
            event_types=["product_view"],
            min_count=3,
            within="48h",
            absent=[{"event_types": ["purchase"]}],
        ),
        rule(
            "browsed_no_buy_7d",
            event_types=["product_view"],
            min_count=3,
            within="48h",
            absent=[{"event_types": ["purchase"], "within": "7d"}],
        ),
        rule(
            "abandoned",
            event_types=["add_to_cart"],
            within="7d",
            absent=[{"event_types": ["checkout", "purchase"], "since_last_trigger": True}],
        ),
        rule("big_buyer", event_types=["purchase"], within="365d", min_value=500, emit_updates=True),
        rule(
            "product_interest",
            event_types=["product_view"],
            within="24h",
            per_product=True,
            product_ids=["P'1\\x", "P2"],
            absent=[{"event_types": ["purchase"], "since_last_trigger": True}],
        ),
        rule("shoe_browser", event_types=["product_view"], within="48h", categories=["shoes"]),
    ]
}

# every event belongs to one customer (customer_number = customer id upper-cased); as_of 2026-11-01 00:00
EDGE_EVENTS = [
    # seen_24h: the window is (10-31 00:00, 11-01 00:00]
    ev("w1", "page_view", "2026-10-31 00:00:00", number="W1"),  # exactly 24 h old: out
    ev("w2", "page_view", "2026-10-31 00:00:00.001", number="W2"),  # 1 ms inside: in
    ev("w3", "page_view", "2026-11-01 00:00:00", number="W3"),  # at as_of: in
    ev("w4", "page_view", "2026-11-01 00:00:00.001", number="W4"),  # after as_of: not seen yet
    # browsed_no_buy (window (10-30 00:00, 11-01 00:00]): 3 views, no purchase in the window
    ev("b1a", "product_view", "2026-10-30 12:00", number="B1"),
    ev("b1b", "product_view", "2026-10-31 01:00", number="B1"),
    ev("b1c", "product_view", "2026-10-31 02:00", number="B1"),
    ev("b1p", "purchase", "2026-10-29 23:00", number="B1", value=20.0),  # before the window: b1 in, but 7d: out
    ev("b2a", "product_view", "2026-10-30 12:00", number="B2"),
    ev("b2b", "product_view", "2026-10-31 01:00", number="B2"),
    ev("b2c", "product_view", "2026-10-31 02:00", number="B2"),
    ev("b2p", "purchase", "2026-10-31 23:00", number="B2", value=20.0),  # bought: out of both
    ev("b3a", "product_view", "2026-10-29 23:59:59.999", number="B3"),  # outside: only 2 count
    ev("b3b", "product_view", "2026-10-31 01:00", number="B3"),
    ev("b3c", "product_view", "2026-10-31 02:00", number="B3"),
    ev("b4a", "product_view", "2026-10-30 00:00:00.001", number="B4"),
    ev("b4b", "product_view", "2026-10-31 01:00", number="B4"),
    ev("b4c", "product_view", "2026-11-01 00:00", number="B4"),
    ev("b4p", "purchase", "2026-11-01 00:00:00.001", number="B4", value=20.0),  # after as_of: in both
    # abandoned: add_to_cart in 7 d, no checkout/purchase at or after the last one
    ev("a1c", "add_to_cart", "2026-10-30 10:00", number="A1"),
    ev("a1p", "purchase", "2026-10-30 09:00", number="A1", value=20.0),  # before: in
    ev("a2c", "add_to_cart", "2026-10-30 10:00", number="A2"),
    ev("a2p", "purchase", "2026-10-30 10:00", number="A2", value=20.0),  # same instant: out
    ev("a3c", "add_to_cart", "2026-10-28 10:00", number="A3"),
    ev("a3k", "checkout", "2026-10-29 10:00", number="A3"),
    ev("a3d", "add_to_cart", "2026-10-31 10:00:00.123456", number="A3"),  # a new cart after the checkout: in
    ev("a4c", "add_to_cart", "2026-10-31 10:00", number="A4"),
    ev("a4k", "checkout", "2026-10-31 11:00", number="A4"),  # out
    # big_buyer: a purchase worth >= 500 in (2025-11-01, 2026-11-01]
    ev("v1", "purchase", "2026-10-01 08:00", number="V1", value=500.0),  # equal: in
    ev("v2", "purchase", "2026-10-01 08:00", number="V2", value=499.99),  # out
    ev("v3", "purchase", "2026-10-01 08:00", number="V3"),  # no value: out
    ev("v4a", "purchase", "2026-06-01 08:00", number="V4", value=600.0),
    ev("v4b", "purchase", "2026-09-01 08:00", number="V4", value=12345678.9),  # in, 2 events
    ev("v4c", "purchase", "2026-10-01 08:00", number="V4", value=20.0),  # below 500: not counted
    ev("v5", "purchase", "2025-11-01 00:00", number="V5", value=700.0),  # exactly 365 d old: out
    # product_interest: per product among P'1\x and P2, no purchase at or after that product's last view
    ev("p1a", "product_view", "2026-10-31 10:00", number="P1", product="P'1\\x"),
    ev("p1b", "product_view", "2026-10-31 12:00", number="P1", product="P2"),
    ev("p1c", "product_view", "2026-10-31 12:00", number="P1", product="P3"),  # not a listed product
    ev("p1p", "purchase", "2026-10-31 11:00", number="P1", value=20.0),  # after P'1\x, before P2
    ev("p2a", "product_view", "2026-10-31 12:00", number="P2", category="shoes"),  # no product id
    ev("p2b", "product_view", "2026-10-29 12:00", number="P2", product="P2", category="shoes"),  # too old
]
EDGE_CUSTOMERS = sorted({e[5].lower() for e in EDGE_EVENTS})

EDGE_MEMBERS = sorted(
    [
        ("seen_24h", "w2", ""),
        ("seen_24h", "w3", ""),
        ("browsed_no_buy", "b1", ""),
        ("browsed_no_buy", "b4", ""),
        ("browsed_no_buy_7d", "b4", ""),
        ("abandoned", "a1", ""),
        ("abandoned", "a3", ""),
        ("big_buyer", "v1", ""),
        ("big_buyer", "v4", ""),
        ("product_interest", "p1", "P2"),
        ("shoe_browser", "p2", ""),
    ]
)


def test_event_rules_at_their_edges(tmp_path):
    project = embedded_project(tmp_path)
    write(project, "gold.customer_profile", [(c, c.upper(), None, "r0") for c in EDGE_CUSTOMERS], PROFILE)
    write(
        project,
        "gold.customer_features",
        [(c, AS_OF, 0.0, 0, None, None, "new", "r0") for c in EDGE_CUSTOMERS],
        FEATURES,
    )
    write(project, "silver.events", EDGE_EVENTS, EVENTS)
    write(
        project, "identity.identifiers", [("customer_number", c.upper(), c, "r0") for c in EDGE_CUSTOMERS], IDENTIFIERS
    )
    assert unsupported(EDGE_SEGMENTS) == []

    counts = evaluate_and_write_embedded(context(project, AS_OF, "run-1"), EDGE_SEGMENTS)
    assert counts["entered"] == len(EDGE_MEMBERS)
    changes = rows(project, CHANGES, ["segment_id", "customer_id", "member_key", "reason"])
    assert sorted(c[:3] for c in changes) == sorted(EDGE_MEMBERS)
    values = {(c[0], c[1], c[2]): json.loads(c[3])["values"] for c in changes}
    assert values[("seen_24h", "w2", "")] == {"event_count": 1, "last_event_at": "2026-10-31T00:00:00.001Z"}
    assert values[("browsed_no_buy", "b4", "")] == {"event_count": 3, "last_event_at": "2026-11-01T00:00:00.000Z"}
    # microseconds are cut to milliseconds, as Spark's to_json does
    assert values[("abandoned", "a3", "")] == {"event_count": 2, "last_event_at": "2026-10-31T10:00:00.123Z"}
    assert values[("big_buyer", "v1", "")] == {
        "event_count": 1,
        "last_event_at": "2026-10-01T08:00:00.000Z",
        "max_value": 500.0,
    }
    reason_v4 = next(c[3] for c in changes if c[:2] == ("big_buyer", "v4"))
    assert reason_v4 == (
        '{"rule":"purchase >= 1 within 365d with value >= 500",'
        '"values":{"event_count":2,"last_event_at":"2026-09-01T08:00:00.000Z","max_value":1.23456789E7}}'
    )
    assert json.loads(next(c[3] for c in changes if c[0] == "product_interest"))["rule"] == (
        "product_view >= 1 within 1d on products P'1\\x,P2 per product; no purchase since last trigger"
    )

    # a day later (as_of 11-02) windows move on and v1 buys again; the run is killed after its
    # changes and re-run: the recovery closes stays with their reasons, as the run would have
    write(
        project,
        "silver.events",
        [ev("v1b", "purchase", "2026-11-01 10:00", number="V1", value=900.0)],
        EVENTS,
        mode="append",
    )

    class Killed(RuntimeError):
        pass

    def kill(stage: str) -> None:
        if stage == "after_changes":
            raise Killed(stage)

    with pytest.raises(Killed):
        evaluate_and_write_embedded(
            context(project, AS_OF + timedelta(days=1), "run-2"), EDGE_SEGMENTS, fault_hook=kill
        )
    later = evaluate_and_write_embedded(context(project, AS_OF + timedelta(days=1), "run-2"), EDGE_SEGMENTS)
    assert (later["recovered_runs"], later["entered"]) == (1, 0)
    run2 = {
        (c[0], c[1], c[2], c[3]): c[5]
        for c in rows(project, CHANGES, ["segment_id", "customer_id", "member_key", "change_type", "run_id", "reason"])
        if c[4] == "run-2"
    }
    assert sorted(run2) == sorted(
        [
            ("seen_24h", "w4", "", "entered"),  # 11-01 00:00:00.001 is seen now
            ("seen_24h", "w2", "", "exited"),
            ("seen_24h", "w3", "", "exited"),  # exactly 24 h old now
            # (10-31 00:00, 11-02 00:00] holds 2 of their views
            ("browsed_no_buy", "b1", "", "exited"),
            ("browsed_no_buy", "b4", "", "exited"),
            ("browsed_no_buy_7d", "b4", "", "exited"),
            ("product_interest", "p1", "P2", "exited"),  # the view is older than 24 h
            ("big_buyer", "v1", "", "updated"),  # emit_updates: 2 purchases now
            # abandoned (7 d), big_buyer (365 d) and shoe_browser (48 h: p2a at 10-31 12:00) stay
        ]
    )
    assert run2[("big_buyer", "v1", "", "updated")] == (
        '{"rule":"purchase >= 1 within 365d with value >= 500",'
        '"values":{"event_count":2,"last_event_at":"2026-11-01T10:00:00.000Z","max_value":900.0}}'
    )
    assert run2[("product_interest", "p1", "P2", "exited")] == (
        '{"rule":"product_view >= 1 within 1d on products P\'1\\\\x,P2 per product; no purchase since last trigger",'
        '"exit":"no_longer_matches"}'
    )
    # every stay keeps the reason it had: closed ones their entry's, the updated one the new
    stays = {
        (r[0], r[1], r[2], r[3]): r[4]
        for r in rows(project, MEMBERSHIP, ["segment_id", "customer_id", "member_key", "is_current", "reason"])
    }
    entered = {(c[0], c[1], c[2]): c[3] for c in changes}
    for key in [("seen_24h", "w2", ""), ("browsed_no_buy", "b4", ""), ("product_interest", "p1", "P2")]:
        assert stays[(*key, False)] == entered[key]
    assert stays[("big_buyer", "v1", "", True)] == run2[("big_buyer", "v1", "", "updated")]
    assert stays[("abandoned", "a3", "", True)] == entered[("abandoned", "a3", "")]


@pytest.mark.parametrize("as_of", [AS_OF, datetime(2026, 11, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))])
def test_event_window_is_in_utc_whatever_the_zone_of_as_of(as_of):
    spec = EventRule.model_validate({"event_types": ["purchase"], "within": "48h"})
    assert "occurred_at > TIMESTAMP_NTZ '2026-10-30 00:00:00.000000'" in spec.matches_sql(as_of=as_of)
