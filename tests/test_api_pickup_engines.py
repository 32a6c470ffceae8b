"""The intake pickup on both engines: the same log gives the same rows in every table.

The log is written by hand (the lines the service writes: an event record per line), so it can
hold what the service itself would refuse at the door (a missing timestamp, a bad price, a
non-object) -- events a pickup must still quarantine, with their reasons -- besides valid events,
a warning, a login that also makes a customer record, a feedback click mapped by the email
source's regular expressions, an unknown field, an event id logged twice and one re-delivered
after it was loaded.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project, on_engine

RECEIVED = "2026-11-01T09:00:00+00:00"
RUN_ID = "pickup-test-run"
#: wall-clock stamps (each engine writes its own moment): left out of the comparison
STAMPS = {"_ingested_at", "ingested_at", "quarantined_at", "at"}
TABLES = (
    "bronze/web_events",
    "bronze/email_events",
    "quarantine/web_events",
    "quarantine/email_events",
    "silver/events",
    "silver/customer_records",
    "ops/ingest_audit",
    "ops/api_intake",
)


def web(n: str, **changes) -> dict:
    event = {
        "event_id": f"w-{n}",
        "event_type": "add_to_cart",
        "ts": "2026-10-31T12:00:00Z",
        "anonymous_id": f"d-{n}",
        "session_id": "s-1",
        "product_id": "P00042",
        "price": 19.99,
        "user": {"email": f" Ada.{n}@Example.com ", "customer_no": None},
    }
    event.update(changes)
    return event


def email(n: str, **changes) -> dict:
    event = {
        "event_id": f"e-{n}",
        "event_type": "click",
        "email": f"bo.{n}@example.com",
        "campaign_id": "c-1",
        "occurred_at": "2026-10-30T08:00:00Z",
        "bounce_type": None,
        "url": "https://shop.example/x",
    }
    event.update(changes)
    return event


FIRST = [
    ("web_events", web("1")),
    # an invalid optional email: accepted, the field nulled, a warning
    ("web_events", web("2", user={"email": "not-an-email", "customer_no": "C-7"})),
    # a login: an event and a web customer record
    (
        "web_events",
        web("3", event_type="login", anonymous_id="d-login", user={"email": "Cy@Example.com", "customer_no": " 42 "}),
    ),
    # a login with a placeholder device id: an event only
    ("web_events", web("4", event_type="login", anonymous_id="n/a")),
    # an unknown field is rescued into bronze
    ("web_events", web("5", coupon="XMAS", price=5)),
    # refused: no timestamp; a price that is no number; an event far in the future; not an object
    ("web_events", web("6", ts=None)),
    ("web_events", web("7", price="abc")),
    ("web_events", web("8", ts="2027-06-01T00:00:00Z")),
    ("web_events", ["not", "an", "object"]),
    ("email_events", email("1")),
    (
        "email_events",
        email(
            "2",
            url="https://shop.example/x?lakecdp_feedback=not_interested.p.P00042&utm=1",
        ),
    ),
    ("email_events", email("3", event_type="Bounce", bounce_type=" HARD ")),
    ("email_events", email("4", email="bad@")),
    # the same event id twice in the log
    ("web_events", web("1")),
]
#: after the first pickup: a re-delivery of a loaded event, a newer login of the same device, a new event
SECOND = [
    ("email_events", email("1")),
    (
        "web_events",
        web(
            "9",
            event_type="login",
            anonymous_id="d-login",
            ts="2026-10-31T13:00:00Z",
            user={"email": "cy@example.com", "customer_no": "43"},
        ),
    ),
    ("web_events", web("10", event_type="page_view", price=None)),
]


#: picked up by the other engine than the one that wrote the warehouse so far
THIRD = [
    ("web_events", web("1")),
    ("web_events", web("11", event_type="login", anonymous_id="d-login", ts="2026-10-31T14:00:00Z")),
    ("web_events", web("12", price="NaN")),
    ("email_events", email("5", event_type="open")),
]


def write_log(root: Path, events: list[tuple[str, object]]) -> Path:
    log_dir = root / "intake"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "intake-00000001.log", "a", encoding="utf-8") as handle:
        for n, (source, event) in enumerate(events):
            record = {
                "source": source,
                "id": f"{source}-{n}",
                "event": event,
                "key": "test",
                "idem": None,
                "at": RECEIVED,
            }
            handle.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
    return log_dir


def embedded_context(root: Path):
    from lakecdp.context import JobContext

    project = make_project(root)
    project = on_engine(project, "embedded")
    return JobContext(project=project, spark=None, as_of=project.as_of(), run_id=RUN_ID)  # type: ignore[arg-type]


def rows(root: Path, table: str) -> list[dict]:
    path = root / "warehouse" / table
    if not DeltaTable.is_deltatable(str(path)):
        return []
    found = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    kept = [{k: v for k, v in r.items() if k not in STAMPS} for r in found]
    return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def pickup_embedded(root: Path, **kw) -> dict[str, int]:
    from lakecdp.api.pickup import pickup

    return pickup(embedded_context(root), root / "intake", engine="embedded", **kw)


def test_hand_written_rows_of_the_embedded_pickup(tmp_path):
    write_log(tmp_path, FIRST)
    counts = pickup_embedded(tmp_path)
    # 14 lines: 4 refused web + 1 refused email, the repeated w-1 a duplicate
    assert counts == {
        "rows_read": 14,
        "rows_loaded": 8,
        "rows_quarantined": 5,
        "duplicates_removed": 1,
        "rows_erased": 0,
    }
    events = {e["event_id"]: e for e in rows(tmp_path, "silver/events")}
    assert sorted(events) == ["e-1", "e-2", "e-3", "w-1", "w-2", "w-3", "w-4", "w-5"]
    assert events["w-1"] == {
        "event_id": "w-1",
        "source": "web_events",
        "event_type": "add_to_cart",
        "occurred_at": datetime(2026, 10, 31, 12, tzinfo=timezone.utc),
        "email": "ada.1@example.com",
        "device_id": "d-1",
        "customer_number": None,
        "session_id": "s-1",
        "product_id": "P00042",
        "category": None,
        "value": 19.99,
        "order_id": None,
        "campaign_id": None,
        "channel": "web",
        "bounce_type": None,
        "url": None,
        "run_id": RUN_ID,
    }
    assert events["w-2"]["email"] is None and events["w-2"]["customer_number"] == "C-7"
    assert events["w-3"]["customer_number"] == "42"
    assert events["w-4"]["device_id"] is None  # "n/a" is junk
    assert events["w-5"]["value"] == 5.0
    assert (events["e-2"]["event_type"], events["e-2"]["product_id"]) == ("feedback_not_interested", "P00042")
    assert (events["e-1"]["event_type"], events["e-3"]["event_type"], events["e-3"]["bounce_type"]) == (
        "email_click",
        "email_bounce",
        "hard",
    )
    [record] = rows(tmp_path, "silver/customer_records")
    assert {
        k: record[k]
        for k in (
            "record_id",
            "source",
            "source_record_id",
            "email",
            "customer_number",
            "device_ids",
            "updated_at",
            "warnings",
        )
    } == {
        "record_id": "web:d-login",
        "source": "web",
        "source_record_id": "d-login",
        "email": "cy@example.com",
        "customer_number": "42",
        "device_ids": ["d-login"],
        "updated_at": datetime(2026, 10, 31, 12, tzinfo=timezone.utc),
        "warnings": [],
    }
    quarantine = {
        json.loads(q["raw"]).get("event_id") if q["raw"].startswith("{") else q["raw"]: q
        for q in rows(tmp_path, "quarantine/web_events")
    }
    assert {k: (q["reasons"], q["detail"]) for k, q in quarantine.items()} == {
        "w-6": (["MISSING_REQUIRED"], "MISSING_REQUIRED(ts)"),
        "w-7": (["INVALID_TYPE"], "INVALID_TYPE(price)"),
        "w-8": (["FUTURE_TIMESTAMP"], "FUTURE_TIMESTAMP(ts)"),
        '["not","an","object"]': (["MALFORMED_LINE"], "MALFORMED_LINE"),
    }
    [bad_email] = rows(tmp_path, "quarantine/email_events")
    assert (bad_email["reasons"], bad_email["kafka_topic"]) == (["INVALID_EMAIL"], "lakecdp-api.email_events")
    bronze = {b["event_id"]: b for b in rows(tmp_path, "bronze/web_events")}
    assert bronze["w-5"]["_rescued"] == '{"coupon":"XMAS"}' and bronze["w-5"]["price"] == "5"
    assert bronze["w-2"]["user"] == {"email": "not-an-email", "customer_no": "C-7"}

    # the second pickup: a re-delivery is a duplicate, the newer login replaces the record
    write_log(tmp_path, SECOND)
    again = pickup_embedded(tmp_path)
    assert again == {"rows_read": 3, "rows_loaded": 2, "rows_quarantined": 0, "duplicates_removed": 1, "rows_erased": 0}
    [record] = rows(tmp_path, "silver/customer_records")
    assert (record["customer_number"], record["updated_at"]) == ("43", datetime(2026, 10, 31, 13, tzinfo=timezone.utc))


def test_a_pickup_killed_between_commits_replays_its_chunk_and_writes_nothing_twice(tmp_path):
    """Killed after the first source of a chunk was written (before the ledger's done row): the
    next pickup replays the chunk with the same bounds; every table ends as after one clean run."""
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for root in (clean, crashed):
        write_log(root, FIRST)
    pickup_embedded(clean)

    def die(point: str) -> None:
        if point == "after_email_events":
            raise KeyboardInterrupt("killed between the email and web commits of a chunk")

    with pytest.raises(KeyboardInterrupt):
        pickup_embedded(crashed, fault_hook=die)
    replay = pickup_embedded(crashed)
    # the replay finds the email events stored (duplicates), the web events new
    assert (replay["rows_loaded"], replay["duplicates_removed"]) == (5, 4)
    for root in (clean, crashed):
        write_log(root, SECOND)
        pickup_embedded(root)
    for table in TABLES:
        assert rows(crashed, table) == rows(clean, table), table


@pytest.mark.slow
def test_both_engines_pick_up_the_same_log_into_the_same_rows(tmp_path, spark):
    from lakecdp.api.pickup import pickup
    from lakecdp.context import JobContext

    on_spark, embedded = tmp_path / "spark", tmp_path / "embedded"
    for root in (on_spark, embedded):
        write_log(root, FIRST)
    spark_ctx = JobContext(
        project=make_project(on_spark), spark=spark, as_of=make_project(on_spark).as_of(), run_id=RUN_ID
    )
    first_spark = pickup(spark_ctx, on_spark / "intake", engine="spark")
    assert pickup_embedded(embedded) == first_spark
    for root in (on_spark, embedded):
        write_log(root, SECOND)
    assert pickup_embedded(embedded) == pickup(spark_ctx, on_spark / "intake", engine="spark")
    for table in TABLES:
        left, right = rows(on_spark, table), rows(embedded, table)
        assert left, table
        assert right == left, table
    # each engine continues the warehouse the other wrote: still the same rows
    for root in (on_spark, embedded):
        write_log(root, THIRD)
    assert pickup_embedded(on_spark) == pickup(
        JobContext(project=make_project(embedded), spark=spark, as_of=spark_ctx.as_of, run_id=RUN_ID),
        embedded / "intake",
        engine="spark",
    )
    for table in TABLES:
        assert rows(embedded, table) == rows(on_spark, table), table


def test_the_embedded_pickup_adds_the_log_position_to_a_bronze_table_the_batch_ingest_made(tmp_path):
    """bronze.web_events written by the batch ingest has no ``_kafka_*`` columns (Spark's pickup adds
    them with schema evolution); the embedded pickup adds them too and keeps the old rows."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from lakecdp.delta_store import TABLE_CONFIGURATION, arrow_schema

    batch_shape = (
        "event_id string, event_type string, ts string, anonymous_id string, session_id string, "
        "user struct<email:string,customer_no:string>, page_url string, product_id string, price string, "
        "revenue string, order_id string, _rescued string, _source_file string, _line bigint, "
        "_ingested_at timestamp, _run_id string, _row_hash string"
    )
    landed = {"event_id": "w-landed", "_source_file": "web_events/web_events_0.jsonl", "_line": 1, "_run_id": "r0"}
    write_deltalake(
        str(tmp_path / "warehouse" / "bronze" / "web_events"),
        pa.Table.from_pylist([landed], schema=arrow_schema(batch_shape)),
        configuration=TABLE_CONFIGURATION,
    )
    write_log(tmp_path, FIRST[:2])
    assert pickup_embedded(tmp_path)["rows_loaded"] == 2
    bronze = {b["event_id"]: b for b in rows(tmp_path, "bronze/web_events")}
    assert sorted(bronze) == ["w-1", "w-2", "w-landed"]
    assert (bronze["w-landed"]["_kafka_offset"], bronze["w-landed"]["_line"]) == (None, 1)
    assert (bronze["w-2"]["_kafka_topic"], bronze["w-2"]["_kafka_partition"], bronze["w-2"]["_line"]) == (
        "lakecdp-api.web_events",
        1,
        None,
    )
    # a second pickup of the same lines (the ledger lost) finds them by their position: nothing twice
    (tmp_path / "warehouse" / "ops" / "api_intake").rename(tmp_path / "ledger-lost")
    assert pickup_embedded(tmp_path)["rows_loaded"] == 0
    assert len(rows(tmp_path, "bronze/web_events")) == 3


def test_mappings_run_on_a_locked_connection_holding_only_the_rows():
    """A source mapping is config text: on the embedded engine it runs where no file, network or
    extension can be reached and no setting changed (what the mapping itself sees, read back)."""
    import pyarrow as pa

    from lakecdp import catalog
    from lakecdp.ingest.embedded_silver import map_rows

    typed = pa.table({"_row": pa.array([0], pa.int64()), "event_id": ["e1"]})
    mapping = {
        "event_id": "event_id",
        "email": "current_setting('enable_external_access')",
        "device_id": "current_setting('lock_configuration')",
    }
    (row,) = map_rows(typed, mapping, catalog.EVENTS.ddl, as_of=datetime(2026, 11, 1, tzinfo=timezone.utc)).to_pylist()
    assert (row["event_id"], row["email"], row["device_id"]) == ("e1", "false", "true")


def order(n: str, **changes) -> dict:
    event = {
        "order_id": f"O-{n}",
        "customer_no": f"C-{n}",
        "email": f" Ann.{n}@Example.COM ",
        "ordered_at": "2026-10-31T10:00:00Z",
        "status": "paid",
        "currency": " gbp",
        "total": 12.5,
        "items": [{"sku": "P00042", "qty": 2, "unit_price": 5.0}, None, {"sku": "P00007", "qty": 1, "unit_price": 2.5}],
    }
    event.update(changes)
    return event


ORDERS = [
    ("shop_orders", order("1")),
    ("shop_orders", order("2", customer_no="n/a", email="not-an-email", currency=None, items=[])),
    ("shop_orders", order("3", total=None)),  # refused: total is required
    ("shop_orders", order("1")),  # the same order twice in the log
    ("web_events", web("1")),
]
ORDER_TABLES = (
    "bronze/shop_orders",
    "quarantine/shop_orders",
    "silver/orders",
    "silver/order_items",
    "ops/ingest_audit",
)


def test_orders_are_picked_up_embedded_as_written_by_hand(tmp_path):
    from lakecdp.api.embedded_pickup import unsupported_reason
    from lakecdp.ingest.sources import load_sources

    # orders (nested items, emails, currencies) no longer need Spark
    assert unsupported_reason(load_sources(Path(__file__).resolve().parents[1] / "conf")["shop_orders"]) is None
    write_log(tmp_path, ORDERS)
    counts = pickup_embedded(tmp_path)
    assert counts == {
        "rows_read": 5,
        "rows_loaded": 3,
        "rows_quarantined": 1,
        "duplicates_removed": 1,
        "rows_erased": 0,
    }
    orders = {o["order_id"]: o for o in rows(tmp_path, "silver/orders")}
    assert sorted(orders) == ["O-1", "O-2"]
    assert (orders["O-1"]["email"], orders["O-1"]["customer_number"], orders["O-1"]["currency"]) == (
        "ann.1@example.com",
        "C-1",
        "GBP",
    )
    assert (orders["O-2"]["email"], orders["O-2"]["customer_number"], orders["O-2"]["currency"]) == (None, None, None)
    assert orders["O-1"]["ordered_at"] == datetime(2026, 10, 31, 10, tzinfo=timezone.utc)
    items = [(i["order_id"], i["line_number"], i["product_id"], i["quantity"], i["unit_price"]) for i in rows(
        tmp_path, "silver/order_items")]  # fmt: skip
    # the null line is dropped but keeps its number
    assert sorted(items) == [("O-1", 1, "P00042", 2, 5.0), ("O-1", 3, "P00007", 1, 2.5)]
    [refused] = rows(tmp_path, "quarantine/shop_orders")
    assert refused["reasons"] == ["MISSING_REQUIRED"]
    # a second pickup of nothing new changes nothing
    assert pickup_embedded(tmp_path)["rows_read"] == 0
    assert len(rows(tmp_path, "silver/order_items")) == 2


@pytest.mark.slow
def test_both_engines_pick_up_the_same_orders_into_the_same_rows(tmp_path, spark):
    from lakecdp.api.pickup import pickup
    from lakecdp.context import JobContext

    on_spark, embedded = tmp_path / "spark", tmp_path / "embedded"
    for root in (on_spark, embedded):
        write_log(root, ORDERS)
    spark_ctx = JobContext(
        project=make_project(on_spark), spark=spark, as_of=make_project(on_spark).as_of(), run_id=RUN_ID
    )
    assert pickup_embedded(embedded) == pickup(spark_ctx, on_spark / "intake", engine="spark")
    for table in ORDER_TABLES:
        left, right = rows(on_spark, table), rows(embedded, table)
        assert left, table
        assert right == left, table
    # a line whose quantity is text: the embedded pickup hands that chunk to Spark, same rows
    late = [("shop_orders", order("4", items=[{"sku": "P1", "qty": "2", "unit_price": 1.0}]))]
    for root in (on_spark, embedded):
        write_log(root, late)
    assert pickup(
        JobContext(project=make_project(embedded), spark=spark, as_of=spark_ctx.as_of, run_id=RUN_ID),
        embedded / "intake",
        engine="embedded",
    ) == pickup(spark_ctx, on_spark / "intake", engine="spark")
    for table in ORDER_TABLES:
        assert rows(embedded, table) == rows(on_spark, table), table
