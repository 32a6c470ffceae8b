"""The DuckDB-side segment guard and the locked connection: attacker SQL is refused before it runs.

No Spark: the views are small Arrow tables in a locked DuckDB connection, as the embedded engine
builds them. Every payload is hand-written DuckDB SQL (what the embedded engine would run); each
must raise :class:`SqlRefused` and leave no trace (a sentinel file is never created).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from lakecdp.segments.definitions import SegmentDefinition, SegmentLimits
from lakecdp.segments.kinds import ConditionKind, QueryKind
from lakecdp.sqldialect.translate import condition_to_duckdb, jackson_string, java_double
from lakecdp.segments.duck_guard import check_duckdb_select
from lakecdp.segments.embedded import EmbeddedSettings, locked_connection, segment_matches
from lakecdp.segments.evaluate import SegmentBudgetExceeded
from lakecdp.sqldialect import SqlRefused

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
CUSTOMERS = 2_000  # more than SMALL_SIDE_ROWS, so a cross join of customers is refused


@pytest.fixture(scope="module")
def con():
    ids = [f"c{i}" for i in range(CUSTOMERS)]
    customers = pa.table(
        {
            "customer_id": ids,
            "total_spent": [float(i) for i in range(CUSTOMERS)],
            "order_count": pa.array([i % 5 for i in range(CUSTOMERS)], pa.int32()),
            "lifecycle_stage": [("new", "active", "loyal")[i % 3] for i in range(CUSTOMERS)],
            "last_purchase_at": pa.array([datetime(2026, 10, 1)] * CUSTOMERS, pa.timestamp("us")),
            "as_of": pa.array([datetime(2026, 11, 1)] * CUSTOMERS, pa.timestamp("us")),
        }
    )
    events = pa.table({"customer_id": ids[:10], "event_type": ["purchase"] * 10, "value": [1.0] * 10})
    connection = locked_connection(
        {
            "customers": customers,
            "profile": customers.select(["customer_id"]),
            "features": customers.select(["customer_id", "total_spent"]),
            "events": events,
        },
        EmbeddedSettings(memory_limit="256MB", threads=1),
    )
    yield connection
    connection.close()


def sentinel_payloads(path: str) -> list[str]:
    return [
        f"COPY (SELECT 1) TO '{path}'",
        f"SELECT * FROM customers; COPY customers TO '{path}'",
        f"EXPORT DATABASE '{path}'",
        f"ATTACH '{path}' AS x",
        "CREATE TABLE x AS SELECT 1",
    ]


REFUSED = [
    # file reads, table functions and replacement scans
    ("SELECT * FROM read_csv('/etc/passwd')", "table function"),
    ("SELECT * FROM read_parquet('/tmp/x.parquet')", "table function"),
    ("SELECT * FROM read_text('/etc/hostname')", "table function"),
    ("SELECT * FROM '/etc/passwd'", "table '/etc/passwd' is not allowed"),
    ("SELECT * FROM 'data.csv'", "is not allowed"),
    ("SELECT * FROM glob('/*')", "table function"),
    ("SELECT * FROM duckdb_settings()", "table function"),
    ("SELECT * FROM query('SELECT 1')", "table function"),
    ("SELECT * FROM query_table('customers')", "table function"),
    ("SELECT * FROM range(100000000000)", "table function"),
    ("SELECT * FROM generate_series(1, 100000000000)", "table function"),
    ("SELECT * FROM customers WHERE customer_id IN (SELECT * FROM read_csv('/etc/passwd'))", "table function"),
    ("SELECT list_transform([1], x -> (SELECT count(*) FROM read_csv('/etc/passwd')))", "table function"),
    ("SELECT * FROM main.customers", "other schemas"),
    ("SELECT * FROM memory.main.customers", "other schemas"),
    ("SELECT * FROM duckdb_tables", "is not allowed"),
    ("SELECT * FROM customers AT (VERSION => 1)", "time travel"),
    # statements other than one SELECT
    ("INSTALL httpfs", "only one read-only SELECT"),
    ("LOAD httpfs", "only one read-only SELECT"),
    ("PRAGMA version", "only one read-only SELECT"),
    ("SET memory_limit = '100GB'", "only one read-only SELECT"),
    ("SET enable_external_access = true", "only one read-only SELECT"),
    ("SELECT 1; SELECT 2", "exactly one SELECT"),
    ("CALL pragma_version()", "only one read-only SELECT"),
    ("DESCRIBE customers", "is not allowed"),
    ("PIVOT customers ON lifecycle_stage USING count(*)", "only one read-only SELECT"),
    # non-determinism, session and clock
    ("SELECT customer_id FROM customers WHERE random() < 0.5", "function 'random'"),
    ("SELECT uuid() AS customer_id", "function 'uuid'"),
    ("SELECT customer_id FROM customers WHERE now() > as_of", "function 'now'"),
    ("SELECT current_setting('threads') AS customer_id", "function 'current_setting'"),
    ("SELECT getvariable('x') AS customer_id", "function 'getvariable'"),
    ("SELECT customer_id FROM customers USING SAMPLE 10", "SAMPLE"),
    ("SELECT hash(customer_id) AS customer_id FROM customers", "differs between Spark and DuckDB"),
    ("SELECT json_serialize_sql('SELECT 1') AS customer_id", "function 'json_serialize_sql'"),
    ("SELECT main.lower(customer_id) AS customer_id FROM customers", "qualified function"),
    ("SELECT $1 AS customer_id", "parameters"),
    ("SELECT ? AS customer_id", "parameters"),
    # huge generated values and unbounded work
    ("SELECT repeat('x', 1000000000) AS customer_id", "constant size"),
    ("SELECT repeat(customer_id, CAST(total_spent AS INTEGER)) AS customer_id FROM customers", "constant size"),
    ("SELECT lpad('x', 100000, 'y') AS customer_id", "constant size"),
    ("SELECT range(100000000000) AS customer_id", "function 'range'"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n AS customer_id FROM r", "recursive"),
    ("SELECT a.customer_id FROM customers a, customers b", "without an equality"),
    ("SELECT a.customer_id FROM customers a JOIN customers b ON a.total_spent < b.total_spent", "without an equality"),
    ("SELECT a.customer_id FROM customers a CROSS JOIN customers b", "without an equality"),
]


@pytest.mark.parametrize("payload,reason", REFUSED, ids=[p for p, _ in REFUSED])
def test_attacker_sql_is_refused(con, payload, reason):
    with pytest.raises(SqlRefused) as refused:
        check_duckdb_select(con, payload)
    assert reason in str(refused.value)
    assert "DuckDB engine" in str(refused.value)


def test_writing_payloads_are_refused_and_never_run(con, tmp_path):
    sentinel = tmp_path / "sentinel"
    for payload in sentinel_payloads(str(sentinel)):
        with pytest.raises(SqlRefused):
            check_duckdb_select(con, payload)
    assert not sentinel.exists()


def test_the_connection_is_a_second_wall(con, tmp_path):
    """Even SQL that skipped the guard cannot read files or undo the lock on this connection."""
    sentinel = tmp_path / "sentinel.csv"
    for statement in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"COPY (SELECT 1) TO '{sentinel}'",
        "SET enable_external_access = true",
        "SET memory_limit = '100GB'",
        "INSTALL httpfs",
    ):
        with pytest.raises(Exception):
            con.execute(statement).fetchall()
    assert not sentinel.exists()
    assert (
        con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith("2")
    )  # 256MB -> "244.1 MiB"


ALLOWED = [
    "SELECT * FROM customers WHERE total_spent > 500 AND last_purchase_at > as_of - INTERVAL 30 DAYS",
    "SELECT customer_id, count(*) AS n FROM events WHERE event_type = 'purchase' GROUP BY customer_id",
    "SELECT c.customer_id FROM customers c JOIN events e ON c.customer_id = e.customer_id",
    "WITH big AS (SELECT customer_id FROM customers WHERE total_spent > 10) SELECT * FROM big",
    "SELECT customer_id FROM customers WHERE total_spent > (SELECT avg(total_spent) FROM customers)",
    "SELECT customer_id, row_number() OVER (PARTITION BY lifecycle_stage ORDER BY total_spent DESC) AS r FROM customers",
    "SELECT customer_id, repeat('*', 3) AS stars FROM customers WHERE lower(lifecycle_stage) LIKE 'lo%'",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_ordinary_segment_sql_passes(con, sql):
    check_duckdb_select(con, sql)


def test_shipped_sql_segments_pass_the_duckdb_guard(con):
    from pathlib import Path

    from lakecdp.segments.definitions import load_segments

    shipped = load_segments(Path(__file__).resolve().parents[1] / "conf" / "segments")
    sql_segments = [d for d in shipped.values() if d.kind != "event"]
    assert len(sql_segments) >= 7
    for definition in sql_segments:
        rows, _ = segment_matches(con, definition, AS_OF)
        assert "customer_id" in rows.column_names


def _definition(**kw) -> SegmentDefinition:
    # model_construct: skip the sqlglot check at load, so the DuckDB guard is what refuses
    base = {
        "version": 1,
        "id": "s",
        "schedule": None,
        "limits": SegmentLimits(),
        "exclude": [],
        "group": None,
        "priority": 0,
        "expire_after_days": None,
        "hold_if_change_exceeds": None,
        "emit_updates": False,
        "description": "",
    }
    condition, query = kw.pop("condition", None), kw.pop("query", None)
    base["spec"] = (
        ConditionKind.model_construct(condition) if condition is not None else QueryKind.model_construct(query)
    )
    return SegmentDefinition.model_construct(**{**base, **kw})


@pytest.mark.parametrize(
    "condition",
    [
        "1 = 1) UNION SELECT * FROM read_csv('/etc/passwd') --",
        "total_spent > 0 OR customer_id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
        "total_spent > 0 /* */ ; COPY customers TO '/tmp/x.csv'",
    ],
)
def test_conditions_cannot_escape_their_where_clause(con, condition):
    with pytest.raises(SqlRefused) as refused:
        segment_matches(con, _definition(condition=condition), AS_OF)
    assert "segment s" in str(refused.value)


def test_time_budget_interrupts_duckdb(con):
    heavy = (
        "SELECT a.customer_id, max(md5(a.customer_id || b.customer_id || c.customer_id)) AS h FROM customers a JOIN customers b ON a.lifecycle_stage = b.lifecycle_stage "
        "JOIN customers c ON b.lifecycle_stage = c.lifecycle_stage GROUP BY a.customer_id"
    )
    started = time.monotonic()
    with pytest.raises(SegmentBudgetExceeded, match="time budget of 0.5 s"):
        segment_matches(con, _definition(query=heavy, limits=SegmentLimits(max_seconds=0.5)), AS_OF)
    assert time.monotonic() - started < 30
    # the connection is usable afterwards
    assert con.execute("SELECT count(*) FROM customers").fetchall() == [(CUSTOMERS,)]


def test_row_budget(con):
    with pytest.raises(SegmentBudgetExceeded, match="row budget of 10"):
        segment_matches(con, _definition(condition="total_spent >= 0", limits=SegmentLimits(max_rows=10)), AS_OF)


def test_clock_is_the_runs_as_of():
    assert condition_to_duckdb("last_purchase_at > CURRENT_DATE - INTERVAL 30 DAYS", as_of=AS_OF) == (
        "last_purchase_at > CAST('2026-11-01' AS DATE) - INTERVAL '30' DAYS"
    )
    assert "2026-11-01 00:00:00.000000" in condition_to_duckdb("now() > last_purchase_at", as_of=AS_OF)
    assert "2026-11-01 00:00:00.000000" in condition_to_duckdb("current_timestamp() > last_purchase_at", as_of=AS_OF)


@pytest.mark.parametrize(
    "value,expected",
    [
        # Java's Double.toString, as Spark's to_json writes doubles
        (500.0, "500.0"),
        (0.1, "0.1"),
        (123.456, "123.456"),
        (1e7, "1.0E7"),
        (12345678.5, "1.23456785E7"),
        (0.001, "0.001"),
        (0.0001, "1.0E-4"),
        (-2.5, "-2.5"),
        (0.0, "0.0"),
        (9999999.0, "9999999.0"),
        (1.5e-10, "1.5E-10"),
        (float("nan"), '"NaN"'),
        (float("inf"), '"Infinity"'),
        (None, None),
    ],
)
def test_java_double(value, expected):
    assert java_double(value) == expected


def test_jackson_string():
    assert jackson_string('a "b" \\ é\n\t\x01') == '"a \\"b\\" \\\\ é\\n\\t\\u0001"'


def test_the_segments_step_runs_on_the_embedded_engine_without_spark(tmp_path, caplog):
    """engine: embedded + SQL-only segments: the pipeline step needs no SparkSession at all."""
    import yaml
    from deltalake import DeltaTable, write_deltalake

    from conftest import make_project
    from lakecdp.context import JobContext
    from lakecdp.segments.embedded import unsupported
    from lakecdp.segments.job import run

    conf = tmp_path / "conf"
    (conf / "segments").mkdir(parents=True)
    (conf / "segments" / "big.yaml").write_text(
        yaml.safe_dump({"version": 1, "id": "big", "condition": "total_spent > 500", "schedule": {"every_minutes": 5}})
    )
    project = make_project(tmp_path)
    project = project.model_copy(
        update={
            "conf_dir": conf,
            "environment": project.environment.model_copy(update={"engine": "embedded"}),
        }
    )
    warehouse = project.warehouse
    write_deltalake(str(warehouse / "gold" / "customer_profile"), pa.table({"customer_id": ["c1", "c2"]}))
    write_deltalake(
        str(warehouse / "gold" / "customer_features"),
        pa.table({"customer_id": ["c1", "c2"], "total_spent": [900.0, 10.0]}),
    )
    counts = run(JobContext(project=project, spark=None, as_of=AS_OF, run_id="r1"))  # type: ignore[arg-type]
    assert counts["entered"] == 1
    rows = DeltaTable(str(warehouse / "segments" / "changes")).to_pyarrow_table().to_pylist()
    assert [(r["segment_id"], r["customer_id"], r["reason"]) for r in rows] == [
        ("big", "c1", '{"rule":"total_spent > 500","values":{"total_spent":900.0}}')
    ]
    # event rules run here too (their SQL form); a kind without one (a plugin with only
    # spark_matches) sends the run to Spark
    from kind_plugins.customer_list import CustomerList

    event = SegmentDefinition.model_validate(
        {
            "version": 1,
            "id": "carts",
            "schedule": {"every_minutes": 5},
            "event": {"event_types": ["add_to_cart"], "within": "7d"},
        }
    )
    listed = _definition(id="beta", spec=CustomerList(customer_ids=["c1"]))
    assert unsupported({"carts": event, "big": _definition(condition="x > 1")}) == []
    assert unsupported({"carts": event, "beta": listed, "big": _definition(condition="x > 1")}) == ["beta"]
