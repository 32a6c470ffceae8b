"""Batch ingest on both engines: the same landing files give the same rows in every table.

The landing files are written by hand (bytes, so that line endings and bad encoding are exact):
a CSV with a quoted field across two lines, a line that is not UTF-8, a line with a field too
many, a future timestamp, an event id twice, a feedback click and a bounce; JSON lines with a
warning, a login (also a customer record), an unknown field, a malformed line, a blank line and
CRLF endings. The Spark engine is the oracle; a few rows are also checked against values written
here. Sources the embedded engine does not map yet (customer records, orders, products, Parquet)
have no files here: the run would hand them to Spark.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project, on_engine
from test_api_pickup_engines import web as _web  # the same web events the pickup test posts

RUN_ID = "ingest-engines-run"
SOURCES = ["email_events", "web_events", "products", "shop_orders", "shop_customers"]
TABLES = (
    "bronze/web_events",
    "bronze/email_events",
    "quarantine/web_events",
    "quarantine/email_events",
    "silver/events",
    "silver/customer_records",
    "ops/ingest_audit",
    "ops/data_quality",
    "ops/ingest_files",
    "bronze/products",
    "bronze/shop_orders",
    "bronze/shop_customers",
    "quarantine/products",
    "quarantine/shop_orders",
    "quarantine/shop_customers",
    "silver/orders",
    "silver/order_items",
    "silver/products",
)
#: run ids are the same on both engines here; nothing else may differ
STAMPS: set[str] = set()

EMAIL_HEADER = b"event_id,event_type,email,campaign_id,occurred_at,bounce_type,url\n"
EMAIL_DAY_1 = (
    EMAIL_HEADER
    + b"e-1,click,Bo.1@Example.com,c-1,2026-10-30T08:00:00Z,,https://shop.example/x\n"
    # a quoted field across two physical lines: both halves are malformed lines
    + b'e-2,open,bo.2@example.com,c-1,2026-10-30T08:01:00Z,,"https://shop.example/a\n'
    + b'b"\n'
    # not UTF-8 (latin-1 e acute)
    + b"e-3,open,caf\xe9@example.com,c-1,2026-10-30T08:02:00Z,,\n"
    # one field too many
    + b"e-4,open,bo.4@example.com,c-1,2026-10-30T08:03:00Z,,,extra\n"
    # far in the future
    + b"e-5,open,bo.5@example.com,c-1,2027-06-01T00:00:00Z,,\n"
    # the same event id again: a duplicate
    + b"e-1,click,Bo.1@Example.com,c-1,2026-10-30T08:00:00Z,,https://shop.example/x\n"
    + b"e-6,click,bo.6@example.com,c-2,2026-10-30T09:00:00Z,,"
    + b"https://shop.example/y?lakecdp_feedback=not_interested.p.P00042&u=1\n"
    + b'e-7,Bounce,"bo.7@example.com",c-2,2026-10-30T09:30:00Z, HARD ,\n'
    + b"   \n"
    + b"e-8,open,not-an-email,c-2,2026-10-30T09:40:00Z,,\n"
)
EMAIL_DAY_2 = (
    EMAIL_HEADER
    # loaded on day 1: a duplicate against the keys already loaded
    + b"e-1,click,Bo.1@Example.com,c-1,2026-10-30T08:00:00Z,,https://shop.example/x\n"
    + b"e-9,open,bo.9@example.com,c-3,2026-10-31T10:00:00Z,,\n"
)


def _jsonl(*lines: object) -> bytes:
    return "\r\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines).encode() + b"\r\n"


WEB_DAY_1 = _jsonl(
    _web("1"),
    _web("2", user={"email": "not-an-email", "customer_no": "C-7"}),
    _web("3", event_type="login", anonymous_id="d-login", user={"email": "Cy@Example.com", "customer_no": " 42 "}),
    _web("5", coupon="XMAS", price=5),
    "",
    '{"event_id": "w-6", "event_type": ',
    _web("7", price="abc"),
    _web("8", ts=None),
    _web("1"),
)
WEB_DAY_2 = _jsonl(
    _web("1"),
    _web("9", event_type="login", anonymous_id="d-login", ts="2026-10-31T13:00:00Z",
         user={"email": "cy@example.com", "customer_no": "43"}),
    _web("10", event_type="page_view", price=None),
)  # fmt: skip


PRODUCTS = (
    b"product_id,name,category,price\n"
    + b"P00042, Kettle ,kitchen,19.99\n"
    + b'P00043,"Mug, large",,NaN\n'
    + b"P00044,Plate,kitchen,abc\n"
    + b"P00045,Bowl,kitchen,4.5\n"
)


def _order(n: str, **changes) -> dict:
    order = {
        "order_id": f"o-{n}",
        "customer_no": "C-1",
        "email": "Ada@Example.com",
        "ordered_at": "2026-10-20T10:00:00Z",
        "status": "paid",
        "currency": " eur ",
        "total": 24.49,
        "items": [
            {"sku": "P00042", "qty": 1, "unit_price": 19.99},
            None,
            {"sku": "P00045", "qty": 1, "unit_price": 4.5},
        ],
    }
    order.update(changes)
    return order


ORDERS_DAY_1 = _jsonl(
    _order("1"),
    _order("2", items=[], total=0),
    _order("3", total="NaN"),
    _order("4", items=[{"sku": "P00099", "qty": 2, "unit_price": 1.0}]),
    _order("1", status="shipped"),
)
ORDERS_DAY_2 = _jsonl(_order("1", status="delivered"), _order("5", email="junk"))


def _customer(n: str, **changes) -> dict:
    customer = {
        "customer_no": f"C-{n}",
        "email": f" Ada.{n}@Example.COM",
        "name": {"first": " ada ", "last": "LOVELACE"},
        "phone": "020 7946 0018",
        "birth_date": "1990-02-03",
        "address": {"line1": "1 High St", "zip": "sw1a 1aa", "city": "London", "country_code": "GB"},
        "marketing_consent": True,
        "sms_consent": "yes",
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2026-10-01T00:00:00Z",
    }
    customer.update(changes)
    return customer


CUSTOMERS_DAY_1 = _jsonl(
    _customer("1"),
    _customer("1", updated_at="2026-10-05T00:00:00Z", email="ada.new@example.com"),
    _customer("2", birth_date="2090-01-01"),
    _customer("3", phone="n/a", address=None, updated_at="1970-01-01T00:00:00Z"),
    _customer("4", name={"first": "x" * 201, "last": "Long"}),
    _customer("6", birth_date="1975-02-30"),
)
CUSTOMERS_DAY_2 = _jsonl(
    _customer("1", updated_at="2026-09-01T00:00:00Z", email="older@example.com"),
    _customer("5", email="not-an-email"),
)


def land(root: Path, day: int) -> None:
    landing = root / "landing"
    first = day == 1
    for folder, name, data in (
        ("email_events", f"email_events_{day}.csv", EMAIL_DAY_1 if first else EMAIL_DAY_2),
        ("web_events", f"web_events_{day}.jsonl", WEB_DAY_1 if first else WEB_DAY_2),
        ("products", f"products_{day}.csv", PRODUCTS if first else PRODUCTS.replace(b"4.5", b"5.0")),
        ("shop_orders", f"orders_{day}.jsonl", ORDERS_DAY_1 if first else ORDERS_DAY_2),
        ("shop_customers", f"customers_{day}.jsonl", CUSTOMERS_DAY_1 if first else CUSTOMERS_DAY_2),
    ):
        (landing / folder).mkdir(parents=True, exist_ok=True)
        (landing / folder / name).write_bytes(data)


def context(root: Path, engine: str, spark=None):
    from lakecdp.context import JobContext

    project = make_project(root)
    project = on_engine(project, engine)
    return JobContext(project=project, spark=spark, as_of=project.as_of(), run_id=RUN_ID)  # type: ignore[arg-type]


def ingest(root: Path, engine: str, spark=None) -> dict[str, int]:
    from lakecdp.ingest.job import ingest as run

    return run(context(root, engine, spark), only=SOURCES)


def rows(root: Path, table: str) -> list[dict]:
    path = root / "warehouse" / table
    if not DeltaTable.is_deltatable(str(path)):
        return []
    found = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    kept = [{k: v for k, v in r.items() if k not in STAMPS} for r in found]
    return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True, default=str))


#: the columns the catalogue keeps per-file statistics of (delta.dataSkippingStatsColumns), by table
STATS_COLUMNS = {
    "bronze/shop_customers": "_source_file,_line,_ingested_at,_run_id",
    "quarantine/web_events": "source_file,line,kafka_topic,kafka_partition,kafka_offset,run_id,quarantined_at",
    "silver/customer_records": "record_id,source,updated_at,run_id,ingested_at",
}


def assert_statistics_columns(root: Path) -> None:
    """Each table of STATS_COLUMNS was created with its statistics columns and every file added
    has statistics of those columns only; silver.events keeps Delta's default (no property)."""
    for table, wanted in STATS_COLUMNS.items():
        path = root / "warehouse" / table
        configuration = DeltaTable(str(path)).metadata().configuration
        assert configuration.get("delta.dataSkippingStatsColumns") == wanted, table
        # the add actions of the commits, as written (the log's JSON: no checkpoint this early)
        added = [
            json.loads(json.loads(line)["add"]["stats"])
            for commit in sorted((path / "_delta_log").glob("*.json"))
            for line in commit.read_text().splitlines()
            if line.startswith('{"add"')
        ]
        assert added, table
        for stats in added:
            assert stats["nullCount"] and set(stats["nullCount"]) <= set(wanted.split(",")), (table, stats)
    events = DeltaTable(str(root / "warehouse" / "silver/events")).metadata().configuration
    assert "delta.dataSkippingStatsColumns" not in events


def dictionary_columns(table: Path) -> dict[str, bool]:
    """Per column of ``table``'s Parquet files: whether any of them holds it dictionary-encoded."""
    import pyarrow.parquet as pq

    found: dict[str, bool] = {}
    for file in table.rglob("*.parquet"):
        group = pq.ParquetFile(file).metadata.row_group(0)
        for i in range(group.num_columns):
            column = group.column(i)
            encoded = any("DICTIONARY" in e for e in column.encodings)
            found[column.path_in_schema] = found.get(column.path_in_schema, False) or encoded
    return found


def test_spark_writes_unique_and_many_valued_columns_without_a_dictionary(tmp_path, spark):
    """lakecdp's Spark session writes Parquet dictionaries of at most 128 KiB a column and none
    for the columns unique by construction (lakecdp.spark, _COMMON_CONF); Parquet's defaults
    would give ``many`` a dictionary: 20,000 values of 14 bytes, each three times, fit in 1 MiB
    and take a third of the plain values' size; and ``record_id`` and ``_line`` one too, were
    their values repeated as here (they never are: a dictionary of unique values is filled,
    then dropped)."""
    frame = spark.range(60_000).selectExpr(
        "concat('customer-', lpad(cast(id % 20000 as string), 5, '0')) as many",
        "concat('crm:', cast(id % 100 as string)) as record_id",
        "cast(id % 7 as string) as few",
        "id % 100 as _line",
    )
    path = tmp_path / "layout"
    frame.coalesce(1).write.format("delta").save(str(path))
    assert dictionary_columns(path) == {"many": False, "record_id": False, "few": True, "_line": False}


def test_embedded_batch_ingest_hand_written_rows(tmp_path):
    land(tmp_path, 1)
    counts = ingest(tmp_path, "embedded")
    # email: 10 non-blank lines after the header; web: 8; products 4; orders 5; customers 6
    assert counts["rows_read"] == 10 + 8 + 4 + 5 + 6
    quarantine = {(r["line"], tuple(r["reasons"]), r["detail"]) for r in rows(tmp_path, "quarantine/email_events")}
    assert quarantine == {
        (3, ("MALFORMED_LINE",), "MALFORMED_LINE"),
        (4, ("MALFORMED_LINE",), "MALFORMED_LINE"),
        (5, ("BAD_ENCODING",), "BAD_ENCODING"),
        (6, ("WRONG_FIELD_COUNT",), "WRONG_FIELD_COUNT: expected 7 fields, got 8"),
        (7, ("FUTURE_TIMESTAMP",), "FUTURE_TIMESTAMP(occurred_at)"),
        (12, ("INVALID_EMAIL",), "INVALID_EMAIL(email)"),
    }
    web_quarantine = {(r["line"], tuple(r["reasons"])) for r in rows(tmp_path, "quarantine/web_events")}
    assert web_quarantine == {(6, ("MALFORMED_LINE",)), (7, ("INVALID_TYPE",)), (8, ("MISSING_REQUIRED",))}
    events = {r["event_id"]: r for r in rows(tmp_path, "silver/events")}
    assert sorted(events) == ["e-1", "e-6", "e-7", "w-1", "w-2", "w-3", "w-5"]
    assert events["e-1"]["email"] == "bo.1@example.com"
    assert events["e-6"]["event_type"] == "feedback_not_interested"
    assert events["e-6"]["product_id"] == "P00042"
    assert (events["e-7"]["event_type"], events["e-7"]["bounce_type"]) == ("email_bounce", "hard")
    assert events["w-2"]["email"] is None and events["w-3"]["customer_number"] == "42"
    bronze = {r["_line"]: r for r in rows(tmp_path, "bronze/web_events")}
    assert sorted(bronze) == [1, 2, 3, 4, 9]
    assert bronze[4]["_rescued"] == '{"coupon":"XMAS"}'
    records = {r["record_id"]: r for r in rows(tmp_path, "silver/customer_records")}
    assert (records["web:d-login"]["email"], records["web:d-login"]["customer_number"]) == ("cy@example.com", "42")
    # the later version of C-1 wins within the file; names trimmed (case kept), emails, phones, postcodes standardised
    ada = records["shop_customers:C-1"]
    assert (ada["email"], ada["first_name"], ada["last_name"]) == ("ada.new@example.com", "ada", "LOVELACE")
    assert (ada["phone"], ada["postcode"], ada["sms_consent"]) == ("+442079460018", "SW1A 1AA", True)
    # C-2's birth date in the future: an optional field, nulled with a warning; C-3 (epoch
    # updated_at) and C-4 (a first name too long) are quarantined
    assert sorted(records) == ["shop_customers:C-1", "shop_customers:C-2", "shop_customers:C-6", "web:d-login"]
    # a birth date that is no date: nulled with a warning, kept as written
    c6 = records["shop_customers:C-6"]
    assert (c6["date_of_birth"], c6["date_of_birth_text"], c6["warnings"]) == (None, "1975-02-30", ["INVALID_DATE"])
    assert (records["shop_customers:C-2"]["date_of_birth"], records["shop_customers:C-2"]["warnings"]) == (
        None,
        ["IMPOSSIBLE_DATE"],
    )
    products = {r["product_id"]: r for r in rows(tmp_path, "silver/products")}
    assert (products["P00042"]["name"], products["P00042"]["price"]) == ("Kettle", 19.99)
    assert sorted(products) == ["P00042", "P00045"]
    items = {(r["order_id"], r["line_number"]): r for r in rows(tmp_path, "silver/order_items")}
    # a null item is dropped, positions kept; the category comes from silver.products
    assert sorted(items) == [("o-1", 1), ("o-1", 3), ("o-4", 1)]
    assert (items[("o-1", 3)]["category"], items[("o-4", 1)]["category"]) == ("kitchen", None)
    orders = {r["order_id"]: r for r in rows(tmp_path, "silver/orders")}
    # o-1 twice at the same ordered_at: the later line wins (records keep the latest version)
    assert (orders["o-1"]["status"], orders["o-1"]["currency"]) == ("shipped", "EUR")
    audit = {r["source_file"]: r for r in rows(tmp_path, "ops/ingest_audit")}
    email_audit = audit["email_events/email_events_1.csv"]
    assert (email_audit["rows_read"], email_audit["rows_loaded"], email_audit["rows_quarantined"]) == (10, 3, 6)
    assert email_audit["duplicates_removed"] == 1
    assert_statistics_columns(tmp_path)


def erase(root: Path, *identifiers: tuple[str, str]) -> None:
    """ops.erasures holding the salted hashes of ``identifiers`` (type, value), as ``lakecdp erase``
    leaves them (the salt file of a local warehouse, written here)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from lakecdp import catalog
    from lakecdp.delta_store import arrow_schema
    from lakecdp.erasure import salted_hash

    salt = "test-salt"
    (root / "warehouse" / "ops").mkdir(parents=True, exist_ok=True)
    (root / "warehouse" / "ops" / "_erasure_salt").write_text(salt)
    rows = [
        {"salted_hash": salted_hash(salt.encode(), kind, value), "identifier_type": kind, "run_id": "erase"}
        for kind, value in identifiers
    ]
    write_deltalake(
        str(root / "warehouse" / "ops" / "erasures"),
        pa.Table.from_pylist(rows, schema=arrow_schema(catalog.ERASURES.ddl)),
        configuration={"delta.enableDeletionVectors": "false"},
    )


ERASED = (("email", "bo.6@example.com"), ("customer_number", "C-2"))


def test_embedded_batch_ingest_refuses_rows_of_erased_people(tmp_path):
    land(tmp_path, 1)
    erase(tmp_path, *ERASED)
    counts = ingest(tmp_path, "embedded")
    assert counts["rows_erased"] == 2
    events = [r["event_id"] for r in rows(tmp_path, "silver/events")]
    assert "e-6" not in events and "e-1" in events
    records = [r["record_id"] for r in rows(tmp_path, "silver/customer_records")]
    assert "shop_customers:C-2" not in records and "shop_customers:C-1" in records
    for table in ("bronze/email_events", "bronze/shop_customers", "quarantine/email_events"):
        assert not [
            r
            for r in rows(tmp_path, table)
            if "bo.6@" in json.dumps(r, default=str) or '"C-2"' in json.dumps(r, default=str)
        ], table
    quality = {(r["source_file"], r["reason"]): r["rows"] for r in rows(tmp_path, "ops/data_quality")}
    assert quality[("email_events/email_events_1.csv", "ERASED")] == 1
    assert quality[("shop_customers/customers_1.jsonl", "ERASED")] == 1


@pytest.mark.slow
def test_both_engines_ingest_the_same_files_into_the_same_rows_and_continue_each_other(tmp_path, spark):
    on_spark, embedded = tmp_path / "spark", tmp_path / "embedded"
    for root in (on_spark, embedded):
        land(root, 1)
        erase(root, *ERASED)
    assert ingest(embedded, "embedded") == ingest(on_spark, "spark", spark)
    for table in TABLES:
        assert rows(embedded, table) == rows(on_spark, table), table
    # both engines create the tables with the same statistics columns
    assert_statistics_columns(on_spark)
    assert_statistics_columns(embedded)
    # day 2 on the other engine each: nothing doubled or lost, still the same rows
    for root in (on_spark, embedded):
        land(root, 2)
    assert ingest(on_spark, "embedded") == ingest(embedded, "spark", spark)
    for table in TABLES:
        assert rows(embedded, table) == rows(on_spark, table), table
    loaded = [r["event_id"] for r in rows(embedded, "silver/events")]
    assert sorted(loaded) == ["e-1", "e-7", "e-9", "w-1", "w-10", "w-2", "w-3", "w-5", "w-9"]
    # a third run finds nothing new
    assert ingest(embedded, "embedded")["files_skipped"] == 2 * len(SOURCES)
    shutil.rmtree(tmp_path)
