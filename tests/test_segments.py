"""Segments on Spark + Delta: evaluation, exactly-once changes, rekeys, holds, time travel, CLI.

The inputs are tiny, hand-made tables; every expected row below was worked out by hand
from them (as_of and windows noted next to the events).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakecdp.context import JobContext
from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.evaluate import SegmentInputs, apply_policies, evaluate_segments, resolve_events
from lakecdp.segments.job import (
    APPROVALS,
    CHANGES,
    MEMBERSHIP,
    RUNS,
    membership_as_of_run,
    releasable_changes,
    run,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def ev(event_id, event_type, at, *, email=None, device=None, number=None, product=None, value=None):
    return (event_id, event_type, ts(at), email, device, number, product, None, value)


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


def _write_inputs(ctx, *, profile, features, events, identifiers) -> None:
    spark, tables = ctx.spark, ctx.tables
    tables.overwrite(spark.createDataFrame(profile, PROFILE), "gold.customer_profile")
    tables.overwrite(spark.createDataFrame(features, FEATURES), "gold.customer_features")
    tables.append(spark.createDataFrame(events, EVENTS), "silver.events")
    tables.overwrite(spark.createDataFrame(identifiers, IDENTIFIERS), "identity.identifiers")


class Killed(RuntimeError):
    pass


def _kill_after_changes(stage: str) -> None:
    if stage == "after_changes":
        raise Killed("killed between the changes and the membership write")


def _test_conf(tmp_path: Path, project, as_of: str) -> Path:
    """A conf folder whose environment points at the test's warehouse (for the CLI)."""
    conf = tmp_path / "cli_conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "segments").symlink_to(REPO_ROOT / "conf" / "segments")
    env = {
        "version": 1,
        "name": "test",
        "spark": {"mode": "local", "master": "local[2]", "conf": dict(project.environment.spark.conf)},
        "storage": {"warehouse": str(project.warehouse)},
        "landing": str(project.landing),
        "checkpoints": str(project.checkpoints),
        "as_of": as_of,
    }
    (conf / "environments" / "test.yaml").write_text(yaml.safe_dump(env), encoding="utf-8")
    return conf


@pytest.mark.slow
def test_batch_job_exactly_once_rekey_hold_time_travel_and_cli(spark, project, tmp_path, capsys):
    ctx1 = JobContext.create(project, spark, as_of=ts("2026-11-01"), run_id="run-1")
    tables = ctx1.tables
    _write_inputs(ctx1, profile=PROFILE_ROWS, features=FEATURE_ROWS, events=EVENT_ROWS, identifiers=IDENTIFIER_ROWS)

    # -- run 1: every membership enters ------------------------------------------------
    counts = run(ctx1)
    assert {k: counts[k] for k in ("entered", "exited", "updated", "rekeyed", "held")} == {
        "entered": 15,
        "exited": 0,
        "updated": 0,
        "rekeyed": 0,
        "held": 0,
    }
    changes = tables.read(spark, CHANGES)
    assertDataFrameEqual(
        changes.select("segment_id", "customer_id", "member_key", "change_type", "previous_customer_id"),
        [(s, c, k, "entered", None) for s, c, k in RUN1_MEMBERS],
    )
    browsers = changes.filter("segment_id = 'recent_browsers'").first()
    # change_id = sha256 of run, segment, customer, key, type, previous customer (unit separated)
    assert (
        browsers["change_id"]
        == hashlib.sha256("\u001f".join(["run-1", "recent_browsers", "c1", "", "entered", ""]).encode()).hexdigest()
    )
    assert json.loads(browsers["reason"]) == {
        "rule": "product_view >= 3 within 2d; no purchase within 2d",
        "values": {"event_count": 3, "last_event_at": "2026-10-31T12:00:00.000Z"},
    }

    # -- run 2 (as_of 11-03): time passes, c3 is merged into c2, c1 buys ---------------
    # c2 adds to cart on 11-02; identity maps d3 to c2 now; c1's purchase (e4) shows in features
    ctx2 = JobContext.create(project, spark, as_of=ts("2026-11-03"), run_id="run-2")
    features2 = [
        ("c1", ts("2026-11-03"), 700.0, 3, ts("2026-11-02 09:00"), ts("2026-11-02 09:00"), "active", "r1"),
        *[(r[0], ts("2026-11-03"), *r[2:7], "r1") for r in FEATURE_ROWS if r[0] in ("c2", "c4", "c5")],
    ]
    _write_inputs(
        ctx2,
        profile=[r for r in PROFILE_ROWS if r[0] != "c3"],
        features=features2,
        events=[ev("e17", "add_to_cart", "2026-11-02 10:00", email="c2@x.io", product="P5")],
        identifiers=[("device_id", "d3", "c2", "r1") if r[1] == "d3" else r for r in IDENTIFIER_ROWS],
    )
    tables.append(
        spark.createDataFrame([("id-2", "merge", "c3", "c2", 2, ts("2026-11-02 23:00"))], ID_CHANGES),
        "identity.id_changes",
    )

    # killed between the two writes: changes are there, membership is not
    with pytest.raises(Killed):
        run(ctx2, fault_hook=_kill_after_changes)
    assert tables.read(spark, RUNS).filter("run_id = 'run-2'").isEmpty()

    # re-run of the same run id: the killed run's changes are applied first, then nothing
    # is left to emit (the exact list below would show any duplicate)
    rerun = run(ctx2)
    assert (rerun["recovered_runs"], rerun["entered"], rerun["exited"], rerun["rekeyed"]) == (1, 0, 0, 0)

    expected_run2 = [
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
    run2 = tables.read(spark, CHANGES).filter("run_id = 'run-2'")
    assertDataFrameEqual(
        run2.select("segment_id", "customer_id", "member_key", "change_type", "previous_customer_id"),
        expected_run2,
    )
    churn_exit = run2.filter("segment_id = 'churn_risk'").first()
    assert json.loads(churn_exit["reason"]) == {
        "rule": "order_count >= 2 AND last_purchase_at < as_of - INTERVAL 60 DAYS",
        "exit": "no_longer_matches",
    }

    # the whole membership history: (segment, customer, key, entered_at, entered run, exited run, current)
    # (Spark returns session-time-zone (UTC) timestamps as naive datetimes)
    d1, d3 = datetime(2026, 11, 1), datetime(2026, 11, 3)
    assertDataFrameEqual(
        tables.read(spark, MEMBERSHIP).select(
            "segment_id", "customer_id", "member_key", "entered_at", "entered_run_id", "exited_run_id", "is_current"
        ),
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
        ],
    )

    # membership as of run 1, by Delta time travel
    assertDataFrameEqual(
        membership_as_of_run(spark, tables, "run-1")
        .filter("is_current")
        .select("segment_id", "customer_id", "member_key"),
        RUN1_MEMBERS,
    )

    # high_value_recent_buyers went 1 -> 2 members (100% > 50%): held from activation
    approvals = tables.read(spark, APPROVALS)
    assertDataFrameEqual(
        approvals.select("run_id", "segment_id", "previous_size", "new_size", "change_share", "threshold", "status"),
        [("run-2", "high_value_recent_buyers", 1, 2, 1.0, 0.5, "held")],
    )
    held_out = run2.join(releasable_changes(run2, approvals), "change_id", "left_anti")
    assert [r["segment_id"] for r in held_out.collect()] == ["high_value_recent_buyers"]

    # -- CLI: explain, dry-run, approve --------------------------------------------------
    from lakecdp.cli import main

    conf = _test_conf(tmp_path, project, "2026-11-03T00:00:00Z")
    base = ["--conf", str(conf), "--env", "test", "segments"]
    assert main([*base, "explain", "--customer", "c5", "--segment", "churn_risk"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert {k: explained[k] for k in ("in_segment", "status", "detail", "checks", "values", "membership")} == {
        "in_segment": False,
        "status": "expired",
        "detail": "no activity for 90 days; last at 2026-07-01 00:00:00",
        "checks": [
            {"check": "order_count >= 2", "result": True},
            {"check": "last_purchase_at < as_of - INTERVAL '60' DAYS", "result": True},
        ],
        "values": {"as_of": "2026-11-03 00:00:00", "last_purchase_at": "2026-07-01 00:00:00", "order_count": 3},
        "membership": [],
    }

    assert main([*base, "dry-run", "--segment", "vip", "--segment", "lifecycle_active"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "segment                          size   before    +in   -out  moved  sample",
        "lifecycle_active                    2        2      0      0      0  c1, c4",
        "vip                                 1        1      0      0      0  c4",
        "overlaps (customers in both):",
        "  lifecycle_active & vip: 1",
    ]

    assert main([*base, "approve", "--segment", "high_value_recent_buyers"]) == 0
    assert capsys.readouterr().out.strip() == "approved high_value_recent_buyers: runs run-2"
    released = releasable_changes(run2, tables.read(spark, APPROVALS))
    assert released.count() == 12


def _definition(segment_id: str, **extra) -> SegmentDefinition:
    return SegmentDefinition.model_validate(
        {"version": 1, "id": segment_id, "condition": "1 = 1", "schedule": {"every_minutes": 60}, **extra}
    )


# 17-21 s in make test (two workers on two cores): the full suite's tier
@pytest.mark.slow
def test_policies_priority_exclusion_and_expiry(spark):
    segments = {
        d.id: d
        for d in (
            _definition("tier_gold", group="tier", priority=2),
            _definition("tier_silver", group="tier", priority=1),
            _definition("promo", exclude=["tier_gold"]),
            _definition("newsletter", exclude=["promo"]),
            _definition("winback", expire_after_days=30),
        )
    }
    matches = spark.createDataFrame(
        [
            ("tier_gold", "a", "", "{}"),
            ("tier_silver", "a", "", "{}"),
            ("tier_silver", "b", "", "{}"),
            ("promo", "a", "", "{}"),
            ("promo", "b", "", "{}"),
            ("newsletter", "a", "", "{}"),
            ("newsletter", "b", "", "{}"),
            ("winback", "a", "", "{}"),
            ("winback", "b", "", "{}"),
            ("winback", "c", "", "{}"),
        ],
        "segment_id string, customer_id string, member_key string, reason string",
    )
    activity = spark.createDataFrame(
        [("a", ts("2026-10-20")), ("b", ts("2026-09-01"))], "customer_id string, last_activity_at timestamp"
    )
    result = apply_policies(matches, segments, activity=activity, as_of=ts("2026-11-01"))
    assertDataFrameEqual(
        result.select("segment_id", "customer_id", "status", "status_detail"),
        [
            ("tier_gold", "a", "member", None),
            ("tier_silver", "a", "outranked", "group tier: higher-priority segment tier_gold"),
            ("tier_silver", "b", "member", None),
            ("promo", "a", "excluded", "excluded by tier_gold"),
            ("promo", "b", "member", None),
            # a is not blocked: its promo membership was itself excluded
            ("newsletter", "a", "member", None),
            ("newsletter", "b", "excluded", "excluded by promo"),
            ("winback", "a", "member", None),
            ("winback", "b", "expired", "no activity for 30 days; last at 2026-09-01 00:00:00"),
            ("winback", "c", "expired", "no activity for 30 days; last at never"),
        ],
    )


@pytest.mark.slow
def test_streaming_matches_batch_on_the_same_events(spark, project):
    from lakecdp.segments.streaming import event_segments, start_stream

    ctx = JobContext.create(project, spark, as_of=ts("2026-11-01"), run_id="unused")
    tables = ctx.tables
    segments = load_segments(REPO_ROOT / "conf" / "segments")
    # first the views (and c2's purchase), later the carts and c4's orders
    _write_inputs(ctx, profile=PROFILE_ROWS, features=FEATURE_ROWS, events=EVENT_ROWS[:11], identifiers=IDENTIFIER_ROWS)
    start_stream(ctx, segments=segments, trigger_available_now=True, as_of=ts("2026-11-01")).awaitTermination()
    tables.append(spark.createDataFrame(EVENT_ROWS[11:], EVENTS), "silver.events")
    start_stream(ctx, segments=segments, trigger_available_now=True, as_of=ts("2026-11-01")).awaitTermination()

    assertDataFrameEqual(
        tables.read(spark, CHANGES).select("run_id", "segment_id", "customer_id", "member_key", "change_type"),
        [
            # batch 0: views only; c3 browses without a cart yet
            ("stream-b00000000", "recent_browsers", "c1", "", "entered"),
            ("stream-b00000000", "recent_browsers", "c3", "", "entered"),
            ("stream-b00000000", "interested_in_product", "c1", "P1", "entered"),
            ("stream-b00000000", "interested_in_product", "c1", "P2", "entered"),
            ("stream-b00000000", "interested_in_product", "c1", "P3", "entered"),
            ("stream-b00000000", "interested_in_product", "c2", "P1", "entered"),
            ("stream-b00000000", "interested_in_product", "c3", "P4", "entered"),
            # batch 1: c3 adds to cart (and so leaves recent_browsers), c4 buys a 600 item
            ("stream-b00000001", "cart_abandoners", "c3", "", "entered"),
            ("stream-b00000001", "recent_browsers", "c3", "", "exited"),
            ("stream-b00000001", "vip", "c4", "", "entered"),
        ],
    )
    streamed = (
        tables.read(spark, MEMBERSHIP).filter("is_current").select("segment_id", "customer_id", "member_key", "reason")
    )
    identifiers = spark.createDataFrame(IDENTIFIER_ROWS, IDENTIFIERS)
    inputs = SegmentInputs(
        profile=spark.createDataFrame(PROFILE_ROWS, PROFILE),
        features=spark.createDataFrame(FEATURE_ROWS, FEATURES),
        events=resolve_events(spark.createDataFrame(EVENT_ROWS, EVENTS), identifiers),
        as_of=ts("2026-11-01"),
    )
    batch = evaluate_segments(spark, event_segments(segments), inputs).filter(F.col("status") == "member")
    assertDataFrameEqual(streamed, batch.select("segment_id", "customer_id", "member_key", "reason"))
    event_ids = set(event_segments(segments))
    assertDataFrameEqual(
        streamed.select("segment_id", "customer_id", "member_key"),
        [m for m in RUN1_MEMBERS if m[0] in event_ids],
    )


def test_one_scan_of_the_open_stays_gives_the_scoped_stays_and_every_segments_size(spark):
    """An incremental run reads the open stays once (scoped_stays_and_sizes): the scope's stays
    whole, every other stay counted. Sizes by hand: before = open stays of the segment, after =
    before - the scope's open stays + the scope's members now."""
    from lakecdp.segments.job import SizeChange, scoped_size_changes, scoped_stays_and_sizes

    stay = "segment_id string, customer_id string, member_key string, reason string, is_current boolean"
    membership = spark.createDataFrame(
        [
            ("a", "c1", "", "ra1", True),
            ("a", "c2", "", "ra2", True),
            ("a", "c3", "", "ra3", False),  # closed: neither kept nor counted
            ("b", "c1", "k", "rb1", True),
            ("b", "c4", "", "rb4", True),
            ("z", "c1", "", "rz1", True),  # a segment not evaluated now
        ],
        stay,
    )
    current = membership.filter(F.col("is_current") & F.col("segment_id").isin("a", "b"))
    scope = spark.createDataFrame([("c1",), ("c5",)], "customer_id string")
    candidates = spark.createDataFrame(
        [("a", "c5", "", "member"), ("b", "c5", "", "member"), ("b", "c1", "", "expired")],
        "segment_id string, customer_id string, member_key string, status string",
    )
    for small in (True, False):
        stays, sizes, in_scope = scoped_stays_and_sizes(current, scope, candidates, ["a", "b", "c"], small=small)
        assertDataFrameEqual(
            stays,
            spark.createDataFrame(
                [("a", "c1", "", "ra1"), ("b", "c1", "k", "rb1")],
                "segment_id string, customer_id string, member_key string, reason string",
            ),
        )
        assert in_scope == 2
        assert sizes == {"a": SizeChange("a", 2, 2), "b": SizeChange("b", 2, 2), "c": SizeChange("c", 0, 0)}
    # the two reads it replaces give the same sizes
    assert scoped_size_changes(membership, scope, candidates, ["a", "b", "c"]) == sizes
