"""Segment SQL as an attacker writes it: every payload is refused before anything runs.

Each payload of the corpus is given to the evaluator as a segment whose definition skipped
the sqlglot check (``model_construct``), so the plan check alone must stop it. Each case
asserts the refusal message, that no Spark job ran, and that the sentinel file the payload
would create does not exist. The secret is a JVM system property set here: Spark would
expand ``${system:...}`` if variable substitution were on (the positive control shows it).
Expected members are worked out by hand from the tiny tables below.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lakecdp.context import JobContext
from lakecdp.segments.definitions import SegmentDefinition, SegmentLimits, load_segments
from lakecdp.segments.evaluate import (
    SegmentBudgetExceeded,
    SegmentInputs,
    check_segments,
    evaluate_segments,
    register_views,
)
from lakecdp.segments.guard import SqlRefused
from lakecdp.segments.plan_guard import guarded_condition
from lakecdp.segments.kinds import ConditionKind, QueryKind

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
SECRET_PROPERTY = "lakecdp.test.secret"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# A past as_of, far from the real clock: CURRENT_DATE must be this day, not today.
AS_OF = ts("2025-03-15 12:00")
PROFILE = "customer_id string, email string, run_id string"
FEATURES = "customer_id string, total_spent double, last_purchase_at timestamp, run_id string"
EVENTS = (
    "event_id string, event_type string, occurred_at timestamp, customer_id string, product_id string, value double"
)

PROFILE_ROWS = [(c, f"{c}@x.io", "r0") for c in ("c1", "c2", "c3", "c4", "c5")]
FEATURE_ROWS = [
    # customer, total_spent, last_purchase_at  (CURRENT_DATE = 2025-03-15; - 30 days = 2025-02-13)
    ("c1", 600.0, ts("2025-03-01 09:00"), "r0"),  # recent and > 500: in
    ("c2", 900.0, ts("2025-02-13 23:00"), "r0"),  # day 02-13 is not after 02-13: out
    ("c3", 500.0, ts("2025-03-15 01:00"), "r0"),  # 500 is not > 500: out
    ("c4", 501.0, ts("2025-02-14 00:00"), "r0"),  # day 02-14 is after 02-13: in
    ("c5", 0.0, None, "r0"),  # never bought: out
]
EVENT_ROWS = [
    ("e1", "purchase", ts("2025-03-14 10:00"), "c1", "P1", 600.0),
    ("e2", "product_view", ts("2025-03-10 10:00"), "c2", "P2", None),
    ("e3", "product_view", ts("2025-03-11 10:00"), "c3", "P2", None),
]


@pytest.fixture
def inputs(spark) -> SegmentInputs:
    return SegmentInputs(
        profile=spark.createDataFrame(PROFILE_ROWS, PROFILE),
        features=spark.createDataFrame(FEATURE_ROWS, FEATURES),
        events=spark.createDataFrame(EVENT_ROWS, EVENTS),
        as_of=AS_OF,
    )


@pytest.fixture
def secret(spark):
    """A secret only the JVM knows (a system property), removed afterwards."""
    value = f"s3cr3t-{uuid.uuid4().hex}"
    system = spark._jvm.java.lang.System
    system.setProperty(SECRET_PROPERTY, value)
    yield value
    system.clearProperty(SECRET_PROPERTY)


def unchecked(segment_id: str, *, condition: str | None = None, query: str | None = None, **extra) -> SegmentDefinition:
    """A definition that skipped the sqlglot check: only the plan check stands in the way."""
    spec = ConditionKind.model_construct(condition) if condition is not None else QueryKind.model_construct(query)
    return SegmentDefinition.model_construct(
        version=1,
        id=segment_id,
        description="",
        spec=spec,
        expire_after_days=None,
        exclude=[],
        group=None,
        priority=0,
        schedule=None,
        hold_if_change_exceeds=None,
        emit_updates=False,
        limits=extra.pop("limits", SegmentLimits()),
        **extra,
    )


def members(candidates) -> list[tuple[str, str]]:
    return sorted((r["segment_id"], r["customer_id"]) for r in candidates.filter("status = 'member'").collect())


def jobs_run_by(spark, action) -> list[int]:
    """Run ``action`` in its own job group; the Spark job ids it started."""
    context = spark.sparkContext
    group = f"guard-check-{uuid.uuid4().hex[:8]}"
    context.setJobGroup(group, "guard check")
    try:
        action()
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    return list(context.statusTracker().getJobIdsForGroup(group))


# (kind, payload with {sentinel}/{warehouse}, reason fragment)
PAYLOADS = [
    (
        "query",
        "SELECT TRANSFORM(customer_id) USING 'sh -c \"touch {sentinel}\"' AS (customer_id string) FROM customers",
        "script transformation is not allowed",
    ),
    (
        "condition",
        "customer_id IN (SELECT TRANSFORM(customer_id) USING 'sh -c \"touch {sentinel}\"' "
        "AS (customer_id string) FROM customers)",
        "script transformation is not allowed",
    ),
    ("condition", "java_method('java.lang.System', 'getenv', 'HOME') IS NOT NULL", "'java_method' calls a Java method"),
    (
        "condition",
        "reflect('java.lang.System', 'getProperty', 'lakecdp.test.secret') IS NOT NULL",
        "'reflect' calls a Java method",
    ),
    (
        "query",
        "SELECT java_method('java.lang.System', 'getProperty', 'lakecdp.test.secret') AS customer_id",
        "'java_method' calls a Java method",
    ),
    ("query", "SELECT value AS customer_id FROM text.`/etc/hostname`", "table 'text./etc/hostname' is not allowed"),
    (
        "query",
        "SELECT email AS customer_id FROM delta.`{warehouse}/silver/customer_records`",
        "file paths, other catalogs and databases are refused",
    ),
    (
        "condition",
        "customer_id IN (SELECT email FROM parquet.`{warehouse}/gold/customer_profile`)",
        "file paths, other catalogs and databases are refused",
    ),
    ("query", "SELECT * FROM read_files('/etc/passwd')", "table-valued function is not allowed"),
    ("query", "SELECT id AS customer_id FROM range(10)", "table-valued function is not allowed"),
    ("query", "DROP TABLE customers", "DropTable is not allowed"),
    ("query", "INSERT INTO features SELECT * FROM features", "InsertIntoStatement is not allowed"),
    ("query", "CREATE TABLE stolen AS SELECT * FROM profile", "is not allowed"),
    ("query", "DELETE FROM profile WHERE true", "is not allowed"),
    ("query", "ADD JAR /tmp/evil.jar", "is not allowed"),
    ("query", "SELECT customer_id FROM customers; DROP TABLE customers", "syntax error"),
    ("condition", "1=1; DROP TABLE customers", "syntax error"),
    ("query", "DECLARE VARIABLE leak STRING DEFAULT 'x'", "CreateVariable is not allowed"),
    ("query", "SET VAR leak = 'x'", "is not allowed"),
    ("query", "SET spark.sql.variable.substitute=true", "SetCommand is not allowed"),
    ("query", "EXECUTE IMMEDIATE 'DROP TABLE customers'", "is not allowed"),
    ("query", "SELECT a.customer_id FROM customers a, events b", "cross join"),
    ("query", "SELECT a.customer_id FROM customers a CROSS JOIN events b CROSS JOIN profile c", "cross join"),
    ("condition", "size(sequence(1, 1000000000)) > 0", "sequence() must have constant bounds"),
    (
        "query",
        "SELECT customer_id FROM customers LATERAL VIEW explode(sequence(1, 100000000)) t AS n",
        "sequence() must have constant bounds",
    ),
    ("condition", "repeat('x', 2000000000) <> ''", "must be a constant of at most 10000"),
    ("condition", "customer_id IN (SELECT customer_id FROM secrets)", "table 'secrets' is not allowed"),
    ("query", "SELECT customer_id FROM spark_catalog.default.customers", "file paths, other catalogs"),
    ("condition", "input_file_name() <> ''", "'input_file_name' is not on the allow-list"),
    ("condition", "my_udf(total_spent) > 1", "'my_udf' is not on the allow-list"),
    ("condition", "rand() < 2", "'rand' is not on the allow-list"),
    ("query", "SELECT customer_id FROM customers WHERE total_spent > :limit", "NamedParameter is not allowed"),
    ("query", "SELECT /*+ REPARTITION(100000) */ customer_id FROM customers", "UnresolvedHint is not allowed"),
    (
        "query",
        "SELECT email AS customer_id FROM IDENTIFIER('delta.`{warehouse}/gold/customer_profile`')",
        "is not allowed",
    ),
    (
        "condition",
        "try_reflect('java.lang.System', 'getProperty', 'lakecdp.test.secret') IS NOT NULL",
        "'try_reflect' calls a Java method",
    ),
]


@pytest.mark.parametrize(("kind", "payload", "reason"), PAYLOADS, ids=[p[1][:60] for p in PAYLOADS])
def test_payload_is_refused_and_nothing_runs(spark, inputs, project, secret, tmp_path, kind, payload, reason):
    sentinel = tmp_path / "SENTINEL"
    text = payload.format(sentinel=sentinel, warehouse=project.warehouse)
    segment = unchecked("attack", **{kind: text})
    caught: list[SqlRefused] = []

    def evaluate() -> None:
        try:
            evaluate_segments(spark, {"attack": segment}, inputs).collect()
        except SqlRefused as exc:
            caught.append(exc)

    assert jobs_run_by(spark, evaluate) == []
    assert caught, f"not refused: {text}"
    assert reason in caught[0].reason, str(caught[0])
    assert str(caught[0]).startswith("segment attack: ")
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def gold_tables(spark, tmp_path_factory):
    """A project whose gold.customer_profile and gold.customer_features are Delta tables,
    written once for the tests that only read them."""
    from conftest import make_project

    project = make_project(tmp_path_factory.mktemp("gold-tables"))
    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-delta")
    ctx.tables.overwrite(spark.createDataFrame(PROFILE_ROWS, PROFILE), "gold.customer_profile")
    ctx.tables.overwrite(spark.createDataFrame(FEATURE_ROWS, FEATURES), "gold.customer_features")
    return project


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("SELECT a.customer_id FROM customers a CROSS JOIN customers b", "cross join"),
        (
            "SELECT customer_id FROM customers WHERE java_method('java.lang.System', 'getenv', 'HOME') <> ''",
            "calls a Java method",
        ),
    ],
    ids=["cross join", "java_method"],
)
def test_refusal_over_delta_tables_starts_no_job(spark, gold_tables, payload, reason):
    """Over the Delta tables a run reads, the accepted segments' plan checks (optimising plans
    over Delta scans: file listing, table state) start no Spark job before the refusal either."""
    from lakecdp.segments.job import load_inputs

    inputs = load_inputs(JobContext.create(gold_tables, spark, as_of=AS_OF, run_id="run-delta"))
    accepted = {"version": 1, "schedule": {"every_minutes": 5}}
    segments = {
        "big": SegmentDefinition.model_validate({**accepted, "id": "big", "condition": "total_spent > 500"}),
        "in_events": SegmentDefinition.model_validate(
            {**accepted, "id": "in_events", "condition": "customer_id IN (SELECT customer_id FROM events)"}
        ),
        "counted": SegmentDefinition.model_validate(
            {
                **accepted,
                "id": "counted",
                "query": "SELECT customer_id FROM customers WHERE total_spent > (SELECT avg(total_spent) FROM features)",
            }
        ),
        "attack": unchecked("attack", query=payload),
    }
    caught: list[SqlRefused] = []

    def evaluate() -> None:
        try:
            evaluate_segments(spark, segments, inputs).collect()
        except SqlRefused as exc:
            caught.append(exc)

    assert jobs_run_by(spark, evaluate) == []
    assert caught and reason in caught[0].reason, caught
    assert str(caught[0]).startswith("segment attack: ")


SHELL_QUERY = (
    "SELECT customer_id FROM customers\nWHERE customer_id IN (SELECT TRANSFORM(customer_id) "
    "USING 'sh -c \"touch {sentinel}\"' AS (customer_id string) FROM customers)"
)


# ~21 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_segments_step_and_dry_run_never_run_refused_sql(spark, project, inputs, tmp_path):
    """A definition sqlglot lets through (it reads TRANSFORM as a function) stops at the plan check."""
    from lakecdp.segments.inspect import dry_run
    from lakecdp.segments.job import CHANGES, evaluate_and_write

    sentinel = tmp_path / "SENTINEL"
    shell = SegmentDefinition.model_validate(
        {"version": 1, "id": "shell", "query": SHELL_QUERY.format(sentinel=sentinel), "schedule": {"every_minutes": 5}}
    )
    fine = SegmentDefinition.model_validate(
        {"version": 1, "id": "fine", "condition": "total_spent > 0", "schedule": {"every_minutes": 5}}
    )
    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-shell")
    with pytest.raises(SqlRefused, match=r"^segment shell: line 2, column 23: SELECT TRANSFORM \.\.\. USING"):
        evaluate_and_write(ctx, {"fine": fine, "shell": shell}, inputs)
    assert ctx.tables.read(spark, CHANGES).count() == 0
    with pytest.raises(SqlRefused, match=r"^segment shell: "):
        dry_run(ctx, {"fine": fine, "shell": shell}, inputs)
    assert not sentinel.exists()


def test_refusal_gives_line_and_column_of_the_author_text(spark, inputs):
    register_views(spark, inputs)
    with pytest.raises(SqlRefused) as caught:
        guarded_condition(
            spark,
            "total_spent > 1\n  AND customer_id IN (SELECT TRANSFORM(customer_id) "
            "USING 'cat' AS (customer_id string) FROM customers)",
            as_of=AS_OF,
        )
    assert (caught.value.line, caught.value.column) == (2, 23)
    with pytest.raises(SqlRefused) as caught:
        guarded_condition(spark, "last_purchase_at > CURRENT_DATE AND\n   java_method('a', 'b') = 1", as_of=AS_OF)
    # after the clock literal was put in: the position is still the author's
    assert (caught.value.line, caught.value.column) == (2, 4)


def test_dollar_comment_trick_is_only_a_comment(spark, inputs, secret, tmp_path):
    """Spark with substitution on would turn the comment's ${...} into a line break."""
    sentinel = tmp_path / "SENTINEL"
    condition = (
        "total_spent > 550 -- ${system:line.separator} OR java_method('java.lang.System', 'getProperty', "
        "'lakecdp.test.secret') IS NOT NULL"
    )
    query = (
        "SELECT customer_id FROM customers WHERE total_spent > 550 -- ${system:line.separator} UNION ALL "
        f"SELECT TRANSFORM(customer_id) USING 'sh -c \"touch {sentinel}\"' AS (customer_id string) FROM customers"
    )
    segments = {
        "by_condition": unchecked("by_condition", condition=condition),
        "by_query": unchecked("by_query", query=query),
    }
    assert members(evaluate_segments(spark, segments, inputs)) == [
        ("by_condition", "c1"),
        ("by_condition", "c2"),
        ("by_query", "c1"),
        ("by_query", "c2"),
    ]
    assert not sentinel.exists()


def test_substitution_positive_control_and_refusal_when_on(spark, inputs, secret):
    """The payloads are real: with substitution on Spark expands them. The guard then refuses."""
    assert spark.conf.get("spark.sql.variable.substitute") == "false"
    register_views(spark, inputs)
    spark.conf.set("spark.sql.variable.substitute", "true")
    try:
        assert spark.sql(f"SELECT '${{system:{SECRET_PROPERTY}}}' AS s").first()["s"] == secret
        with pytest.raises(SqlRefused, match="variable substitution is on"):
            guarded_condition(spark, "total_spent > 1", as_of=AS_OF)
    finally:
        spark.conf.set("spark.sql.variable.substitute", "false")


# ~47 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_secret_in_a_literal_stays_a_literal_everywhere(spark, project, inputs, secret):
    """The whole job writes membership with the literal text, and no file holds the secret."""
    from lakecdp.segments.job import evaluate_and_write

    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-secret")
    query = f"SELECT customer_id, '${{system:{SECRET_PROPERTY}}}' AS note FROM customers WHERE customer_id = 'c1'"
    condition = f"customer_id = 'c2' AND '${{system:{SECRET_PROPERTY}}}' <> ''"
    segments = {
        "noted": SegmentDefinition.model_validate(
            {"version": 1, "id": "noted", "query": query, "schedule": {"every_minutes": 60}}
        ),
        "literal": SegmentDefinition.model_validate(
            {"version": 1, "id": "literal", "condition": condition, "schedule": {"every_minutes": 60}}
        ),
    }
    counts = evaluate_and_write(ctx, segments, inputs)
    assert counts["entered"] == 2
    membership = {
        r["segment_id"]: (r["customer_id"], json.loads(r["reason"]))
        for r in ctx.tables.read(spark, "segments.membership").collect()
    }
    assert membership["noted"][0] == "c1"
    assert membership["noted"][1]["values"] == {"note": f"${{system:{SECRET_PROPERTY}}}"}
    assert membership["literal"][0] == "c2"
    files = [p for p in Path(project.warehouse).rglob("*") if p.is_file()]
    assert len(files) > 5
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []


def test_seed_example_runs_verbatim_with_the_clock_bound_to_as_of(spark, inputs):
    seed = "last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500"
    segments = {
        "seed": SegmentDefinition.model_validate(
            {"version": 1, "id": "seed", "condition": seed, "schedule": {"every_minutes": 60}}
        ),
        # as_of 2025-03-15 12:00: one day back is 2025-03-14 12:00 -> c3 (03-15 01:00) only
        "last_day": SegmentDefinition.model_validate(
            {
                "version": 1,
                "id": "last_day",
                "schedule": {"every_minutes": 60},
                "condition": "last_purchase_at > CURRENT_TIMESTAMP - INTERVAL 1 DAY AND last_purchase_at <= now()",
            }
        ),
        # the date of as_of, whatever today is
        "today": SegmentDefinition.model_validate(
            {
                "version": 1,
                "id": "today",
                "schedule": {"every_minutes": 60},
                "query": "SELECT customer_id FROM events WHERE to_date(occurred_at) = current_date() - 1",
            }
        ),
    }
    assert members(evaluate_segments(spark, segments, inputs)) == [
        ("last_day", "c3"),
        ("seed", "c1"),
        ("seed", "c4"),
        ("today", "c1"),
    ]


def test_time_budget_cancels_the_segment_and_names_it(spark, inputs):
    # 5 customers x 10,000 x 10,000 x 10,000 rows: hours of work, cancelled after 2 s
    # (two explodes, 5e8 rows, finish in about 2 s on an idle box with codegen)
    slow = (
        "SELECT customer_id FROM customers LATERAL VIEW explode(sequence(1, 10000)) a AS x "
        "LATERAL VIEW explode(sequence(1, 10000)) b AS y "
        "LATERAL VIEW explode(sequence(1, 10000)) c AS z WHERE x * y * z = -1"
    )
    segment = SegmentDefinition.model_validate(
        {"version": 1, "id": "slow", "query": slow, "schedule": {"every_minutes": 60}, "limits": {"max_seconds": 2}}
    )
    started = time.monotonic()
    with pytest.raises(SegmentBudgetExceeded, match=r"segment slow: ran longer than its time budget of 2 s"):
        evaluate_segments(spark, {"slow": segment}, inputs)
    assert time.monotonic() - started < 60
    # the session is still usable, the job group was released
    assert spark.range(3).count() == 3
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None


@pytest.mark.slow  # ~36 s: a runaway condition cancelled at its budget
def test_time_budget_names_a_slow_condition_evaluated_in_one_pass_with_others(spark, inputs, caplog):
    """Row-wise conditions run together in one pass, within the smallest budget among them; when
    it runs out each runs alone within its own, so the slow one is still named."""
    # per customer: 10,000 x a filter over 10,000 elements (interpreted lambdas), seconds per row
    slow = "aggregate(sequence(1, 10000), 0L, (a, x) -> a + size(filter(sequence(1, 10000), y -> y > x))) = -1"
    segments = {
        "fine": SegmentDefinition.model_validate(
            {"version": 1, "id": "fine", "condition": "total_spent >= 0", "schedule": {"every_minutes": 60}}
        ),
        "slow": SegmentDefinition.model_validate(
            {
                "version": 1,
                "id": "slow",
                "condition": slow,
                "schedule": {"every_minutes": 60},
                "limits": {"max_seconds": 2},
            }
        ),
    }
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="lakecdp.segments.evaluate"):
        with pytest.raises(SegmentBudgetExceeded, match=r"segment slow: ran longer than its time budget of 2 s"):
            evaluate_segments(spark, segments, inputs)
    assert "the 2 row-wise conditions did not finish in one pass within 2 s" in caplog.text
    assert time.monotonic() - started < 60
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None


def test_row_budget_and_everyone_warning(spark, inputs, caplog):
    everyone = {"version": 1, "id": "everyone", "condition": "total_spent >= 0", "schedule": {"every_minutes": 60}}
    with caplog.at_level(logging.WARNING, logger="lakecdp.segments.evaluate"):
        found = members(evaluate_segments(spark, {"everyone": SegmentDefinition.model_validate(everyone)}, inputs))
    assert [c for _, c in found] == ["c1", "c2", "c3", "c4", "c5"]
    assert "segment everyone matches every customer (5 of 5, 100%): check its rule" in caplog.text
    capped = SegmentDefinition.model_validate({**everyone, "limits": {"max_rows": 4}})
    with pytest.raises(
        SegmentBudgetExceeded, match=r"segment everyone: produced 5 rows, more than its row budget of 4"
    ):
        evaluate_segments(spark, {"everyone": capped}, inputs)


def test_limits_have_ceilings():
    with pytest.raises(ValueError, match="max_seconds"):
        SegmentDefinition.model_validate(
            {
                "version": 1,
                "id": "x",
                "condition": "1=1",
                "schedule": {"every_minutes": 1},
                "limits": {"max_seconds": 86400},
            }
        )


# SQL a marketer reasonably writes: none of it may be refused (kind, text)
ACCEPTED = [
    ("condition", "total_spent BETWEEN 100 AND 1000 AND email LIKE '%@x.io' AND email NOT ILIKE 'test%'"),
    ("condition", "year(last_purchase_at) = 2025 AND extract(MONTH FROM last_purchase_at) IN (2, 3)"),
    ("condition", "CASE WHEN total_spent > 500 THEN 'high' ELSE 'low' END = 'high' AND total_spent::int > 0"),
    ("condition", "total_spent > (SELECT avg(total_spent) FROM customers) AND last_purchase_at IS NOT NULL"),
    (
        "condition",
        "EXISTS (SELECT 1 FROM events e WHERE e.customer_id = customers.customer_id AND e.event_type = 'purchase')",
    ),
    ("condition", "customer_id NOT IN (SELECT customer_id FROM events WHERE event_type = 'product_view')"),
    ("condition", "datediff(CURRENT_DATE, last_purchase_date) < 60 AND coalesce(total_spent, 0) <=> 600"),
    ("condition", "size(sequence(1, 10)) = 10 AND lpad(customer_id, 6, '0') <> '' AND customer_id RLIKE '^c'"),
    (
        "query",
        "WITH buyers AS (SELECT customer_id, count(*) AS n FROM events WHERE event_type = 'purchase' "
        "GROUP BY customer_id HAVING count(*) >= 1)\nSELECT b.customer_id, n FROM buyers b "
        "JOIN customers c ON b.customer_id = c.customer_id WHERE c.total_spent > 100",
    ),
    (
        "query",
        "SELECT customer_id FROM (SELECT customer_id, row_number() OVER (PARTITION BY customer_id "
        "ORDER BY occurred_at DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS r FROM events) "
        "WHERE r = 1",
    ),
    (
        "query",
        "SELECT c.customer_id FROM customers c CROSS JOIN (SELECT avg(total_spent) AS a FROM customers) s "
        "WHERE c.total_spent > s.a",
    ),
    (
        "query",
        "SELECT DISTINCT customer_id, product_id AS member_key FROM events "
        "WHERE event_type = 'product_view' AND occurred_at > now() - INTERVAL 7 DAYS ORDER BY 1 LIMIT 100",
    ),
    (
        "query",
        "SELECT customer_id FROM customers UNION SELECT customer_id FROM profile EXCEPT SELECT customer_id FROM events",
    ),
    ("query", "SELECT customer_id FROM customers WHERE customer_id IN (SELECT * FROM VALUES ('c1'), ('c2') AS t(id))"),
    ("query", "SELECT e.customer_id, count(*) FILTER (WHERE e.value > 10) AS big FROM events e GROUP BY ALL"),
]


@pytest.mark.parametrize(("kind", "text"), ACCEPTED, ids=[a[1][:50] for a in ACCEPTED])
def test_common_sql_is_accepted(spark, inputs, kind, text):
    assert check_segments(spark, {"ok": unchecked("ok", **{kind: text})}, inputs) == {}


def test_every_shipped_segment_passes_the_plan_check(spark, project):
    """Zero false refusals: the shipped conf/segments against the documented table schemas."""
    from lakecdp.segments.job import validation_inputs

    segments = load_segments(REPO_CONF / "segments")
    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="validate")
    assert check_segments(spark, segments, validation_inputs(ctx)) == {}


def test_validate_cli_refuses_with_position(spark, project, tmp_path, capsys):
    import yaml

    from lakecdp.cli import main

    conf = tmp_path / "conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "segments").mkdir()
    env = {
        "version": 1,
        "name": "test",
        "spark": {"mode": "local", "master": "local[2]", "conf": dict(project.environment.spark.conf)},
        "storage": {"warehouse": str(project.warehouse)},
        "landing": str(project.landing),
        "checkpoints": str(project.checkpoints),
        "as_of": "2025-03-15T12:00:00Z",
    }
    (conf / "environments" / "test.yaml").write_text(yaml.safe_dump(env), encoding="utf-8")
    # passes sqlglot (transform is a higher-order function to it), refused by the plan check
    (conf / "segments" / "shell.yaml").write_text(
        "version: 1\nid: shell\nschedule: {every_minutes: 5}\nquery: |\n  SELECT customer_id FROM customers\n"
        "  WHERE customer_id IN (SELECT TRANSFORM(customer_id) USING 'cat' AS (customer_id string) FROM customers)\n",
        encoding="utf-8",
    )
    (conf / "segments" / "fine.yaml").write_text(
        "version: 1\nid: fine\nschedule: {every_minutes: 5}\n"
        "condition: last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500\n",
        encoding="utf-8",
    )
    assert main(["--conf", str(conf), "--env", "test", "segments", "validate"]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("ok  fine ")
    assert (
        "refused  segment shell: line 2, column 23: SELECT TRANSFORM ... USING runs a program on the Spark machine"
        in out.err
    )
