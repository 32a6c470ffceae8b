"""SQL guard and segment definitions: no Spark needed."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from lakecdp.config import ConfigError
from lakecdp.segments.definitions import Schedule, is_due, load_segments
from lakecdp.segments.guard import SqlRefused, check_condition, check_query, conjuncts

REPO_CONF = Path(__file__).resolve().parents[1] / "conf" / "segments"

# condition text -> columns the guard reports (they go into the reason JSON)
GOOD_CONDITIONS = [
    ("total_spent > 500 AND last_purchase_at > as_of - INTERVAL 30 DAYS", ("as_of", "last_purchase_at", "total_spent")),
    (
        "lifecycle_stage = 'active' and array_contains(recent_product_views, 'P1')",
        ("lifecycle_stage", "recent_product_views"),
    ),
    ("customer_id IN (SELECT customer_id FROM events WHERE event_type = 'purchase')", ("customer_id", "event_type")),
    (
        "cast(total_spent as decimal(10,2)) > 5 AND datediff(as_of, last_purchase_at) > 60",
        ("as_of", "last_purchase_at", "total_spent"),
    ),
    (
        "exists(recent_product_views, p -> p = 'P1') OR coalesce(cart_open, false)",
        ("cart_open", "recent_product_views"),
    ),
    # the seed's own example: the clock is accepted (the plan check binds it to as_of)
    (
        "last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500",
        ("last_purchase_date", "total_spent"),
    ),
    ("last_purchase_at > current_date() OR last_purchase_at > now() - INTERVAL 1 DAY", ("last_purchase_at",)),
]

# condition text -> (line, column, reason fragment)
BAD_CONDITIONS = [
    ("1=1; DROP TABLE x", 1, 1, "exactly one statement allowed, found 2"),
    ("reflect('java.lang.Runtime', 'getRuntime') IS NOT NULL", 1, 1, "'reflect' calls a Java method"),
    ("total_spent >\n  java_method('java.lang.System', 'exit', 0) ", 2, 3, "'java_method' calls a Java method"),
    ("x IN (SELECT * FROM read_files('/etc/passwd'))", 1, 21, "'read_files' reads files"),
    ("input_file_name() <> ''", 1, 1, "'input_file_name' reads files"),
    ("my_udf(total_spent) > 1", 1, 1, "'my_udf' is not on the allow-list"),
    ("total_spent > 1 AND db.score(customer_id) > 0", 1, 24, "qualified function 'score' (UDF)"),
    ("`strange fn`(total_spent) > 1", 1, 1, "quoted function name `strange fn` (UDF)"),
    ("rand() < 0.1", 1, 1, "'rand' reads a random source"),
    ("customer_id IN (SELECT customer_id FROM parquet.`/data/x`)", 1, 41, "qualified table"),
    ("customer_id IN (SELECT customer_id FROM delta.`/w/gold/x`)", 1, 41, "qualified table"),
    ("1=1 UNION SELECT customer_id FROM secrets", 1, 35, "table 'secrets' is not allowed"),
    ("total_spent > (", 1, 15, "syntax error"),
    ("1=1 LIMIT 3", 1, 1, "a condition must be a boolean expression only"),
]

# full query -> (line, column, reason fragment); None = accepted
QUERIES = [
    ("SELECT customer_id FROM customers WHERE total_spent > 10", None),
    ("WITH t AS (SELECT customer_id FROM profile)\nSELECT customer_id FROM t", None),
    ("SELECT e.customer_id, e.product_id AS member_key FROM events e WHERE e.event_type = 'product_view'", None),
    # "AS t(id)" names the columns of an inline table: not a function call
    ("SELECT customer_id FROM customers WHERE customer_id IN (SELECT * FROM VALUES ('c1'), ('c2') AS t(id))", None),
    ("INSERT INTO profile SELECT * FROM profile", (1, 1, "only a read-only SELECT is allowed, got INSERT")),
    ("CREATE TABLE x AS SELECT 1", (1, 1, "got CREATE")),
    ("DELETE FROM profile WHERE 1=1", (1, 1, "got DELETE")),
    ("ADD JAR /tmp/evil.jar", (1, 1, "command 'ADD JAR' is not a read-only query")),
    ("SET spark.sql.ansi.enabled=false", (1, 1, "got SET")),
    ("SELECT 1; SELECT 2", (1, 1, "exactly one statement")),
    ("SELECT customer_id\nFROM customers c JOIN secrets s USING (customer_id)", (2, 23, "table 'secrets'")),
]


@pytest.mark.parametrize(("condition", "columns"), GOOD_CONDITIONS)
def test_guard_accepts_read_only_conditions(condition, columns):
    assert check_condition(condition).columns == columns


@pytest.mark.parametrize(("condition", "line", "column", "reason"), BAD_CONDITIONS)
def test_guard_refuses_with_position_and_reason(condition, line, column, reason):
    with pytest.raises(SqlRefused) as caught:
        check_condition(condition)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
    assert reason in caught.value.reason


@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_guard_on_full_queries(query, expected):
    if expected is None:
        assert "customer_id" in check_query(query).columns
        return
    with pytest.raises(SqlRefused) as caught:
        check_query(query)
    line, column, reason = expected
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
    assert reason in caught.value.reason


def test_conjuncts_split_top_level_and():
    assert conjuncts("a > 1 AND (b < 2 OR c) AND d = 'x'") == ["a > 1", "b < 2 OR c", "d = 'x'"]


def test_shipped_segments_cover_the_mission():
    segments = load_segments(REPO_CONF)
    assert {sid: d.kind for sid, d in segments.items()} == {
        "cart_abandoners": "event",
        "churn_risk": "condition",
        "high_value_recent_buyers": "condition",
        "interested_in_product": "event",
        "lifecycle_active": "condition",
        "lifecycle_at_risk": "condition",
        "lifecycle_churned": "condition",
        "lifecycle_loyal": "condition",
        "lifecycle_new": "condition",
        "recent_browsers": "event",
        "vip": "event",
    }
    browsers = segments["recent_browsers"]
    assert browsers.event is not None and browsers.event.within == timedelta(hours=48)
    assert browsers.rule == "product_view >= 3 within 2d; no purchase within 2d"
    assert segments["interested_in_product"].event.per_product is True
    assert segments["churn_risk"].expire_after_days == 90
    assert segments["churn_risk"].exclude == ["vip"]
    assert [segments[f"lifecycle_{s}"].priority for s in ("loyal", "new", "active", "at_risk", "churned")] == [
        50,
        40,
        30,
        20,
        10,
    ]


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


VALID = "version: 1\nid: {id}\ncondition: total_spent > 1\nschedule: {{every_minutes: 60}}\n"

# file body -> message fragments (file name is checked too)
BAD_FILES = [
    (
        "version: 1\nid: bad\ncondition: |\n  total_spent > 1 AND\n  reflect('a', 'b') = 1\nschedule: {every_minutes: 5}\n",
        "condition: Value error, SQL refused at line 2, column 1: function 'reflect' calls a Java method",
    ),
    (
        "version: 1\nid: bad\ncondition: total_spent > 1\nschedule: {every_minutes: 5}\ncolour: red\n",
        "colour: Extra inputs are not permitted",
    ),
    (
        "version: 1\nid: bad\nevent: {event_types: [product_view], within: 2 weeks}\nschedule: {every_minutes: 5}\n",
        "event.within: Value error, duration must look like '30m', '48h' or '7d'",
    ),
    (
        "version: 1\nid: bad\nevent: {event_types: [teleport], within: 1d}\nschedule: {every_minutes: 5}\n",
        "event.event_types[0]: Input should be",
    ),
    (
        "version: 1\nid: bad\ncondition: total_spent > 1\nschedule: {cron: '61 * *'}\n",
        "schedule.cron: Value error, cron must have 5 fields",
    ),
    (
        "version: 1\nid: bad\ncondition: total_spent > 1\nquery: SELECT customer_id FROM profile\nschedule: {every_minutes: 5}\n",
        "give exactly one of condition, query or event (got ['condition', 'query'])",
    ),
    (
        "version: 1\nid: other_name\ncondition: total_spent > 1\nschedule: {every_minutes: 5}\n",
        "id: 'other_name' must equal the file name 'bad'",
    ),
    (
        "version: 1\nid: bad\ncondition: total_spent > 1\nexclude: [nowhere]\nschedule: {every_minutes: 5}\n",
        "exclude[0]: unknown segment 'nowhere'",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_FILES)
def test_bad_definitions_name_file_and_field(tmp_path, body, message):
    _write(tmp_path, "ok_one", VALID.format(id="ok_one"))
    _write(tmp_path, "bad", body)
    with pytest.raises(ConfigError) as caught:
        load_segments(tmp_path)
    assert "bad.yaml" in str(caught.value)
    assert message in str(caught.value)


def test_exclusion_cycle_is_refused(tmp_path):
    for name, other in (("a_seg", "b_seg"), ("b_seg", "a_seg")):
        _write(tmp_path, name, VALID.format(id=name) + f"exclude: [{other}]\n")
    with pytest.raises(ConfigError, match=r"exclusion cycle between segments \['a_seg', 'b_seg'\]"):
        load_segments(tmp_path)


@pytest.mark.parametrize(
    ("schedule", "last_run_at", "now", "due"),
    [
        ({"every_minutes": 15}, None, "2026-11-01 00:00", True),
        ({"every_minutes": 15}, "2026-11-01 00:00", "2026-11-01 00:14", False),
        ({"every_minutes": 15}, "2026-11-01 00:00", "2026-11-01 00:15", True),
        # daily at 03:00
        ({"cron": "0 3 * * *"}, "2026-11-01 03:00", "2026-11-02 02:59", False),
        ({"cron": "0 3 * * *"}, "2026-11-01 03:00", "2026-11-02 03:00", True),
        # Mondays 04:00 (2026-11-02 is a Monday)
        ({"cron": "0 4 * * 1"}, "2026-10-31 12:00", "2026-11-02 03:59", False),
        ({"cron": "0 4 * * 1"}, "2026-10-31 12:00", "2026-11-02 04:00", True),
        # every 20 minutes between 8 and 9 o'clock
        ({"cron": "*/20 8-9 * * *"}, "2026-11-01 08:01", "2026-11-01 08:19", False),
        ({"cron": "*/20 8-9 * * *"}, "2026-11-01 08:01", "2026-11-01 08:20", True),
    ],
)
def test_refresh_schedule(schedule, last_run_at, now, due):
    last = None if last_run_at is None else datetime.fromisoformat(last_run_at)
    assert is_due(Schedule(**schedule), last_run_at=last, now=datetime.fromisoformat(now)) is due
