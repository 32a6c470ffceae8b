"""Two engines, one result: the Spark segments job and the embedded one (DuckDB + delta-rs).

Same inputs, same run ids and as_of -> identical segments.changes / segments.membership rows
(ids, reasons, timestamps), both ways of continuing a warehouse the other engine wrote emit
nothing, and a re-run or a killed run of the embedded engine writes nothing twice.

The inputs are tiny hand-made tables; expected members and the reasons checked by hand are
worked out next to the rows.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project
from lakecdp.context import JobContext
from lakecdp.segments.definitions import SegmentDefinition
from lakecdp.segments.embedded import evaluate_and_write_embedded
from lakecdp.segments.writes import CHANGES_APP_ID
from lakecdp.segments.job import CHANGES, MEMBERSHIP, RUNS, evaluate_and_write, load_inputs

# each test runs both engines over the same warehouse: minutes, full suite only
pytestmark = pytest.mark.slow


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


PROFILE = "customer_id string, first_name string, email string, run_id string"
FEATURES = (
    "customer_id string, as_of timestamp, total_spent double, order_count int, last_purchase_at timestamp, "
    "last_activity_at timestamp, lifecycle_stage string, opens_30d int, run_id string"
)
EVENTS = "event_id string, event_type string, occurred_at timestamp, email string, customer_number string, value double"
IDENTIFIERS = "identifier_type string, identifier_value string, customer_id string, run_id string"
ID_CHANGES = (
    "run_id string, change_type string, old_customer_id string, new_customer_id string, "
    "record_count int, changed_at timestamp"
)

PROFILE_ROWS = [(c, c.upper(), f"{c}@x.io", "r0") for c in ("c1", "c2", "c3", "c4", "c5", "c6")]


def feature_rows(as_of: datetime, changed: bool = False):
    rows = [
        # customer, total_spent, orders, last purchase, last activity, stage, opens
        ("c1", 120.0, 2, ts("2026-08-01"), ts("2026-09-01"), "active", 0),
        ("c2", 80.0, 1, ts("2026-10-31 10:00"), ts("2026-10-31 10:00"), "new", 5),
        ("c3", 0.0, 0, None, None, "at_risk", 4),
        ("c4", 900.0, 4, ts("2026-10-30 12:00"), ts("2026-10-30 12:00"), "active", 1),
        ("c5", 300.0, 3, ts("2026-07-01"), ts("2026-07-01"), "churned", 0),
        ("c6", 12345678.5, 9, ts("2026-10-29 08:30:15.25"), ts("2026-10-29 08:30:15.25"), "loyal", 2),
    ]
    if changed:
        # run 2: c4 spends more (update), c2 stops opening (exit), c3 buys a lot (enters)
        rows[3] = ("c4", 1500.0, 5, ts("2026-11-01 09:00"), ts("2026-11-01 09:00"), "active", 1)
        rows[1] = ("c2", 80.0, 1, ts("2026-10-31 10:00"), ts("2026-10-31 10:00"), "new", 0)
        rows[2] = ("c3", 700.0, 1, ts("2026-11-01 10:00"), ts("2026-11-01 10:00"), "at_risk", 4)
    return [(c, as_of, s, o, lp, la, st, op, "r0") for c, s, o, lp, la, st, op in rows]


EVENT_ROWS = [
    ("e1", "purchase", ts("2026-10-31 10:00"), "c2@x.io", None, 80.0),
    ("e2", "page_view", ts("2026-07-15 10:00"), None, "S5", None),  # c5 last active 07-15
]
IDENTIFIER_ROWS = [("email", "c2@x.io", "c2", "r0"), ("customer_number", "S5", "c5", "r0")]


def segment(**kw) -> SegmentDefinition:
    return SegmentDefinition.model_validate({"version": 1, "schedule": {"every_minutes": 5}, **kw})


SEGMENTS = {
    d.id: d
    for d in [
        # as_of 2026-11-01: c4, c6 (c6 bought 2026-10-29)
        segment(
            id="big_recent",
            condition="total_spent > 500 AND last_purchase_at > CURRENT_DATE - INTERVAL 30 DAYS",
            emit_updates=True,
        ),
        # order_count >= 2: c1, c4, c5, c6; expiry 90 days: c5's last activity 2026-07-01 -> expired
        segment(id="repeat_buyers", condition="order_count >= 2", expire_after_days=90, exclude=["big_recent"]),
        segment(id="stage_active", condition="lifecycle_stage = 'active'", group="stage", priority=10),
        segment(id="stage_any", condition="lifecycle_stage IS NOT NULL", group="stage", priority=5),
        segment(
            id="openers", query="SELECT customer_id, opens_30d AS opens, first_name FROM customers WHERE opens_30d >= 3"
        ),
        segment(
            id="event_buyers",
            query=(
                "SELECT customer_id, count(*) AS purchases, max(value) AS top FROM events "
                "WHERE event_type = 'purchase' GROUP BY customer_id"
            ),
        ),
    ]
}


def _write_inputs(spark, ctx, *, changed: bool, merges: bool = False) -> None:
    tables = ctx.tables
    tables.overwrite(spark.createDataFrame(PROFILE_ROWS, PROFILE), "gold.customer_profile")
    tables.overwrite(spark.createDataFrame(feature_rows(ctx.as_of, changed), FEATURES), "gold.customer_features")
    tables.overwrite(spark.createDataFrame(EVENT_ROWS, EVENTS), "silver.events")
    tables.overwrite(spark.createDataFrame(IDENTIFIER_ROWS, IDENTIFIERS), "identity.identifiers")
    id_changes = [("i2", "merge", "c1", "c9", 1, ts("2026-11-01 12:00"))] if merges else []
    tables.overwrite(spark.createDataFrame(id_changes, ID_CHANGES), "identity.id_changes")
    if merges:
        # c1's records now belong to c9 (same person)
        rows = [("c9" if r[0] == "c1" else r[0],) + r[1:] for r in PROFILE_ROWS]
        tables.overwrite(spark.createDataFrame(rows, PROFILE), "gold.customer_profile")
        features = [("c9" if r[0] == "c1" else r[0],) + r[1:] for r in feature_rows(ctx.as_of, changed)]
        tables.overwrite(spark.createDataFrame(features, FEATURES), "gold.customer_features")


def _run(engine: str, spark, project, run_id: str, as_of: datetime, **kw) -> dict[str, int]:
    ctx = JobContext(project=project, spark=spark, as_of=as_of, run_id=run_id)
    if engine == "spark":
        return evaluate_and_write(ctx, SEGMENTS, load_inputs(ctx), mode="batch", **kw)
    return evaluate_and_write_embedded(ctx, SEGMENTS, mode="batch", **kw)


def _rows(project, name: str, *, drop: tuple[str, ...] = ()) -> list[tuple]:
    """A table's rows read with delta-rs (the engine-neutral reader), sorted."""
    table = DeltaTable(str(project.warehouse / name.replace(".", "/"))).to_pyarrow_table()
    columns = [c for c in table.column_names if c not in drop]
    return sorted(tuple(r[c] for c in columns) for r in table.select(columns).to_pylist())


RUN1 = ts("2026-11-01")
RUN2 = ts("2026-11-02")

# run 1 members, by hand from the rows above
RUN1_MEMBERS = sorted(
    [
        ("big_recent", "c4"),
        ("big_recent", "c6"),
        ("repeat_buyers", "c1"),  # c4, c6 excluded by big_recent; c5 expired (last activity 07-15, 109 days)
        ("stage_active", "c1"),
        ("stage_active", "c4"),
        ("stage_any", "c2"),
        ("stage_any", "c3"),
        ("stage_any", "c5"),
        ("stage_any", "c6"),
        ("openers", "c2"),
        ("openers", "c3"),
        ("event_buyers", "c2"),
    ]
)


def _warehouses(tmp_path, spark):
    spark_wh = make_project(tmp_path / "spark")
    embedded_wh = make_project(tmp_path / "embedded")
    for project in (spark_wh, embedded_wh):
        _write_inputs(spark, JobContext(project=project, spark=spark, as_of=RUN1, run_id="w"), changed=False)
    return spark_wh, embedded_wh


def _assert_readable_by_delta_rs(project) -> None:
    """Protocol pinned so both engines read every table: no deletion vectors, CDF readable."""
    for name in ("gold.customer_features", MEMBERSHIP, CHANGES, RUNS):
        table = DeltaTable(str(project.warehouse / name.replace(".", "/")))
        protocol = table.protocol()
        assert "deletionVectors" not in (protocol.reader_features or []), name
        assert table.metadata().configuration.get("delta.enableDeletionVectors", "false") == "false", name
    membership = DeltaTable(str(project.warehouse / "segments/membership"))
    feed = membership.load_cdf(starting_version=0).read_all()
    assert feed.num_rows >= len(RUN1_MEMBERS)


def test_both_engines_write_identical_rows_and_continue_each_other(spark, tmp_path):
    spark_wh, embedded_wh = _warehouses(tmp_path, spark)

    # run 1 on each engine
    spark_counts = _run("spark", spark, spark_wh, "run-1", RUN1)
    # (this Spark run is also the one that shows Spark's tables are readable by delta-rs)
    _assert_readable_by_delta_rs(spark_wh)
    embedded_counts = _run("embedded", spark, embedded_wh, "run-1", RUN1)
    members = sorted((r[0], r[1]) for r in _rows(embedded_wh, MEMBERSHIP))
    assert members == RUN1_MEMBERS
    assert _rows(embedded_wh, CHANGES) == _rows(spark_wh, CHANGES)
    assert _rows(embedded_wh, MEMBERSHIP) == _rows(spark_wh, MEMBERSHIP)
    assert _rows(embedded_wh, RUNS, drop=("applied_at",)) == _rows(spark_wh, RUNS, drop=("applied_at",))
    assert (
        {k: embedded_counts[k] for k in ("entered", "exited", "members")}
        == {k: spark_counts[k] for k in ("entered", "exited", "members")}
        == {"entered": 12, "exited": 0, "members": 12}
    )

    # reasons by hand: Spark's to_json formats (columns sorted by name, 1.23456785E7, millis + Z)
    reasons = {(r[2], r[3]): r[8] for r in _rows(embedded_wh, CHANGES)}
    assert reasons[("big_recent", "c6")] == (
        '{"rule":"total_spent > 500 AND last_purchase_at > CURRENT_DATE - INTERVAL 30 DAYS",'
        '"values":{"last_purchase_at":"2026-10-29T08:30:15.250Z","total_spent":1.23456785E7}}'
    )
    assert json.loads(reasons[("openers", "c3")]) == {
        "rule": "SELECT customer_id, opens_30d AS opens, first_name FROM customers WHERE opens_30d >= 3",
        "values": {"opens": 4, "first_name": "C3"},
    }
    assert reasons[("event_buyers", "c2")].endswith('"values":{"purchases":1,"top":80.0}}')

    # switching engines is a full run that emits nothing
    assert _run("embedded", spark, spark_wh, "run-switch", RUN1)["entered"] == 0
    assert _run("spark", spark, embedded_wh, "run-switch", RUN1)["entered"] == 0
    for project in (spark_wh, embedded_wh):
        assert {r[1] for r in _rows(project, CHANGES)} == {"run-1"}

    # run 2 with changed features and an identity merge, each warehouse continued by the other engine
    for project in (spark_wh, embedded_wh):
        _write_inputs(
            spark, JobContext(project=project, spark=spark, as_of=RUN2, run_id="w"), changed=True, merges=True
        )
    _run("embedded", spark, spark_wh, "run-2", RUN2)
    _run("spark", spark, embedded_wh, "run-2", RUN2)
    assert _rows(embedded_wh, CHANGES) == _rows(spark_wh, CHANGES)
    assert _rows(embedded_wh, MEMBERSHIP) == _rows(spark_wh, MEMBERSHIP)
    run2 = {(r[2], r[3], r[5]): r for r in _rows(embedded_wh, CHANGES) if r[1] == "run-2"}
    assert sorted(run2) == sorted(
        [
            ("big_recent", "c3", "entered"),  # 700 spent, bought 2026-11-01
            ("big_recent", "c4", "updated"),  # emit_updates: total_spent 900 -> 1500
            ("openers", "c2", "exited"),
            ("repeat_buyers", "c9", "rekeyed"),  # c1 -> c9
            ("stage_active", "c9", "rekeyed"),
        ]
    )
    assert json.loads(run2[("openers", "c2", "exited")][8]) == {
        "rule": "SELECT customer_id, opens_30d AS opens, first_name FROM customers WHERE opens_30d >= 3",
        "exit": "no_longer_matches",
    }
    assert run2[("repeat_buyers", "c9", "rekeyed")][6] == "c1"


def test_embedded_rerun_and_killed_run_write_nothing_twice(spark, project):
    _write_inputs(spark, JobContext(project=project, spark=spark, as_of=RUN1, run_id="w"), changed=False)

    class Killed(RuntimeError):
        pass

    def kill(stage: str) -> None:
        if stage == "after_changes":
            raise Killed(stage)

    with pytest.raises(Killed):
        _run("embedded", spark, project, "run-1", RUN1, fault_hook=kill)
    changes_path = str(project.warehouse / "segments/changes")
    assert DeltaTable(changes_path).transaction_version(CHANGES_APP_ID + "run-1") == 1
    assert len(_rows(project, CHANGES)) == 12
    assert _rows(project, MEMBERSHIP) == []  # killed before membership

    # the same run id again: the stored changes are applied, nothing appended
    counts = _run("embedded", spark, project, "run-1", RUN1)
    assert counts["recovered_runs"] == 1 and counts["entered"] == 0
    assert len(_rows(project, CHANGES)) == 12
    assert sorted((r[0], r[1]) for r in _rows(project, MEMBERSHIP)) == RUN1_MEMBERS
    assert DeltaTable(changes_path).transaction_version(CHANGES_APP_ID + "run-1") == 1

    # and once more, finished: nothing changes anywhere
    version = DeltaTable(changes_path).version()
    assert _run("embedded", spark, project, "run-1", RUN1)["entered"] == 0
    assert DeltaTable(changes_path).version() == version
    assert [r[0] for r in _rows(project, RUNS)] == ["run-1"]


def test_a_run_killed_on_spark_is_recovered_by_the_embedded_engine(spark, project):
    """Spark writes run-1's changes and dies; the embedded engine applies them and adds nothing.

    (Regression: delta-rs' filtered dataset read returned no rows of Spark-written files, so the
    recovery found no stored changes and the re-run appended all 12 again.)
    """
    _write_inputs(spark, JobContext(project=project, spark=spark, as_of=RUN1, run_id="w"), changed=False)

    class Killed(RuntimeError):
        pass

    def kill(stage: str) -> None:
        if stage == "after_changes":
            raise Killed(stage)

    with pytest.raises(Killed):
        _run("spark", spark, project, "run-1", RUN1, fault_hook=kill)
    assert len(_rows(project, CHANGES)) == 12 and _rows(project, MEMBERSHIP) == []

    counts = _run("embedded", spark, project, "run-1", RUN1)
    assert counts["recovered_runs"] == 1 and counts["entered"] == 0
    assert len(_rows(project, CHANGES)) == 12
    assert sorted((r[0], r[1]) for r in _rows(project, MEMBERSHIP)) == RUN1_MEMBERS
    assert [(r[0], r[1]) for r in _rows(project, RUNS)] == [("run-1", "recovered")]


def test_event_segments_give_identical_rows_on_both_engines(spark, tmp_path):
    """The shipped conf/segments (4 event rules) and the hand-made edge rules of
    tests/test_segments_event_embedded.py (whose expected members are written by hand there) on
    both engines: identical changes, membership, runs and approvals, reasons byte for byte; a full
    run on the other engine emits nothing; run 2 (time passes, c3 merged into c2) continued by the
    other engine is identical again."""
    from test_segments_event_embedded import (
        EDGE_CUSTOMERS,
        EDGE_EVENTS,
        EDGE_MEMBERS,
        EDGE_SEGMENTS,
        EVENT_ROWS,
        EVENTS as EVENT_SCHEMA,
        FEATURE_ROWS,
        FEATURES as FEATURE_SCHEMA,
        ID_CHANGES as ID_CHANGE_SCHEMA,
        IDENTIFIER_ROWS,
        PROFILE_ROWS,
        RUN1_MEMBERS as SHIPPED_MEMBERS,
        embedded_project,
        ev,
        write,
    )

    from lakecdp.segments.definitions import load_segments
    from lakecdp.segments.job import APPROVALS

    segments = {**load_segments(Path(__file__).resolve().parents[1] / "conf" / "segments"), **EDGE_SEGMENTS}
    assert sum(d.kind == "event" for d in segments.values()) == 4 + len(EDGE_SEGMENTS)
    edge_profile = [(c, c.upper(), None, "r0") for c in EDGE_CUSTOMERS]
    edge_ids = [("customer_number", c.upper(), c, "r0") for c in EDGE_CUSTOMERS]

    def edge_features(as_of):
        return [(c, as_of, 0.0, 0, None, None, "new", "r0") for c in EDGE_CUSTOMERS]

    warehouses = {engine: embedded_project(tmp_path / engine) for engine in ("spark", "embedded")}
    for project in warehouses.values():
        write(project, "gold.customer_profile", PROFILE_ROWS + edge_profile, PROFILE)
        write(project, "gold.customer_features", FEATURE_ROWS + edge_features(RUN1), FEATURE_SCHEMA)
        write(project, "silver.events", EVENT_ROWS + EDGE_EVENTS, EVENT_SCHEMA)
        write(project, "identity.identifiers", IDENTIFIER_ROWS + edge_ids, IDENTIFIERS)

    def on(engine: str, project, run_id: str, as_of: datetime) -> dict[str, int]:
        ctx = JobContext(project=project, spark=spark, as_of=as_of, run_id=run_id)
        if engine == "spark":
            return evaluate_and_write(ctx, segments, load_inputs(ctx), mode="batch")
        return evaluate_and_write_embedded(ctx, segments, mode="batch")

    def same_tables(*, continued: bool = False) -> None:
        spark_wh, embedded_wh = warehouses["spark"], warehouses["embedded"]
        assert _rows(embedded_wh, CHANGES) == _rows(spark_wh, CHANGES)
        assert _rows(embedded_wh, MEMBERSHIP) == _rows(spark_wh, MEMBERSHIP)
        # membership_version counts commits: once the other engine continued a warehouse, the two
        # histories differ (the embedded engine appends opened stays and MERGEs the rest: two
        # commits where Spark's one MERGE makes one), though their rows are the same
        drop = ("applied_at", "membership_version") if continued else ("applied_at",)
        assert _rows(embedded_wh, RUNS, drop=drop) == _rows(spark_wh, RUNS, drop=drop)

    on("spark", warehouses["spark"], "run-1", RUN1)
    on("embedded", warehouses["embedded"], "run-1", RUN1)
    same_tables()
    members = {(r[0], r[1], r[2]) for r in _rows(warehouses["embedded"], MEMBERSHIP)}
    # the hand-written memberships: edge rules over edge customers, shipped event rules over c1..c5
    # (the two worlds share a warehouse here, so each rule also sees the other's customers)
    shipped_events = {sid for sid, d in segments.items() if d.kind == "event"} - set(EDGE_SEGMENTS)
    assert sorted(m for m in members if m[0] in EDGE_SEGMENTS and m[1] in EDGE_CUSTOMERS) == EDGE_MEMBERS
    assert sorted(m for m in members if m[0] in shipped_events and m[1] not in EDGE_CUSTOMERS) == sorted(
        m for m in SHIPPED_MEMBERS if m[0] in shipped_events
    )

    # switching engines is a full run that emits nothing
    for engine, project in (("embedded", warehouses["spark"]), ("spark", warehouses["embedded"])):
        counts = on(engine, project, "run-switch", RUN1)
        assert (counts["entered"], counts["exited"], counts["updated"], counts["rekeyed"]) == (0, 0, 0, 0)

    # run 2 (as_of 11-03): the shipped scenario's second run; each warehouse continued by the other engine
    run2 = ts("2026-11-03")
    features2 = [
        ("c1", run2, 700.0, 3, ts("2026-11-02 09:00"), ts("2026-11-02 09:00"), "active", "r1"),
        *[(r[0], run2, *r[2:7], "r1") for r in FEATURE_ROWS if r[0] in ("c2", "c4", "c5")],
    ]
    for project in warehouses.values():
        write(project, "gold.customer_profile", [r for r in PROFILE_ROWS if r[0] != "c3"] + edge_profile, PROFILE)
        write(project, "gold.customer_features", features2 + edge_features(run2), FEATURE_SCHEMA)
        write(
            project,
            "silver.events",
            [ev("e17", "add_to_cart", "2026-11-02 10:00", email="c2@x.io", product="P5")],
            EVENT_SCHEMA,
            mode="append",
        )
        write(
            project,
            "identity.identifiers",
            [("device_id", "d3", "c2", "r1") if r[1] == "d3" else r for r in IDENTIFIER_ROWS] + edge_ids,
            IDENTIFIERS,
        )
        write(
            project,
            "identity.id_changes",
            [("id-2", "merge", "c3", "c2", 2, ts("2026-11-02 23:00"))],
            ID_CHANGE_SCHEMA,
        )
    spark_counts = on("embedded", warehouses["spark"], "run-2", run2)
    embedded_counts = on("spark", warehouses["embedded"], "run-2", run2)
    assert spark_counts == embedded_counts
    # c3 -> c2 moves c3's six open stays: the shipped scenario's three (cart_abandoners,
    # interested_in_product P4, lifecycle_at_risk) and three edge rules c3's events also meet
    # (abandoned: its add_to_cart; browsed_no_buy and browsed_no_buy_7d: 3 views, no purchase)
    assert spark_counts["rekeyed"] == 6 and spark_counts["exited"] > 0
    same_tables(continued=True)
    assert _rows(warehouses["embedded"], APPROVALS, drop=("decided_at",)) == _rows(
        warehouses["spark"], APPROVALS, drop=("decided_at",)
    )


def test_spark_batch_runs_keep_the_run_state_no_op_and_incremental_like_embedded(spark, tmp_path, caplog):
    """The Spark job's batch run (``run_batch``) keeps the embedded engine's run state: a run on
    unchanged inputs is recorded without evaluating, a features-only change evaluates only the
    customers whose row differs -- with the rows the embedded engine writes (the oracle) -- and
    each engine honours the other's record."""
    import logging

    from lakecdp.segments.job import run_batch

    # conditions only, no subquery: row-wise, so a features-only change can be incremental
    row_wise = {sid: d for sid, d in SEGMENTS.items() if d.condition is not None}
    assert sorted(row_wise) == ["big_recent", "repeat_buyers", "stage_active", "stage_any"]
    spark_wh, embedded_wh = _warehouses(tmp_path, spark)

    def on(engine: str, project, run_id: str, as_of: datetime) -> dict[str, int]:
        ctx = JobContext(project=project, spark=spark, as_of=as_of, run_id=run_id)
        if engine == "spark":
            return run_batch(ctx, row_wise)
        return evaluate_and_write_embedded(ctx, row_wise, mode="batch")

    def same_tables() -> None:
        assert _rows(embedded_wh, CHANGES) == _rows(spark_wh, CHANGES)
        assert _rows(embedded_wh, MEMBERSHIP) == _rows(spark_wh, MEMBERSHIP)
        drop = ("applied_at", "membership_version")
        assert _rows(embedded_wh, RUNS, drop=drop) == _rows(spark_wh, RUNS, drop=drop)

    on("spark", spark_wh, "run-1", RUN1)
    on("embedded", embedded_wh, "run-1", RUN1)
    same_tables()

    # features change for c2, c3 and c4 only (feature_rows(changed=True)); as_of stays
    for project in (spark_wh, embedded_wh):
        ctx = JobContext(project=project, spark=spark, as_of=RUN1, run_id="w")
        ctx.tables.overwrite(
            spark.createDataFrame(feature_rows(RUN1, changed=True), FEATURES), "gold.customer_features"
        )
    with caplog.at_level(logging.INFO, logger="lakecdp.segments.job"):
        spark_counts = on("spark", spark_wh, "run-2", RUN1)
    assert "segments run run-2: 3 changed customers in gold.customer_features" in caplog.text
    embedded_counts = on("embedded", embedded_wh, "run-2", RUN1)
    same_tables()
    assert spark_counts == embedded_counts
    assert spark_counts["entered"] + spark_counts["exited"] + spark_counts["updated"] > 0

    # the same inputs again: neither engine evaluates, nothing is written but the run record
    versions = [(p, DeltaTable(str(p.warehouse / "segments/changes")).version()) for p in (spark_wh, embedded_wh)]
    runs_table, membership_table = (
        DeltaTable(str(spark_wh.warehouse / n)) for n in ("segments/runs", "segments/membership")
    )
    runs_version, membership_version = runs_table.version(), membership_table.version()
    # the Spark job's no-op runs no Spark job at all: what it read and its record are the Delta log
    # and one small file (delta-rs), as on the embedded engine
    spark.sparkContext.setJobGroup("segments-no-op", "the no-op run")
    assert on("spark", spark_wh, "run-3", RUN1)["skipped"] == 1
    assert spark.sparkContext.statusTracker().getJobIdsForGroup("segments-no-op") == []
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    # one commit: the run record (no write to membership)
    runs_table.update_incremental()
    membership_table.update_incremental()
    assert (runs_table.version(), membership_table.version()) == (runs_version + 1, membership_version)
    assert on("embedded", embedded_wh, "run-3", RUN1)["skipped"] == 1
    # and each engine honours the record the other wrote
    assert on("embedded", spark_wh, "run-4", RUN1)["skipped"] == 1
    assert on("spark", embedded_wh, "run-4", RUN1)["skipped"] == 1
    for project, version in versions:
        assert DeltaTable(str(project.warehouse / "segments/changes")).version() == version
    same_tables()
    assert [r[0] for r in _rows(spark_wh, RUNS)] == ["run-1", "run-2", "run-3", "run-4"]
