"""The silver mappers on the embedded engine (DuckDB + Arrow) against hand-written values and Spark.

The same typed rows go through :func:`lakecdp.ingest.embedded_silver.to_silver` and through the
Spark mappers of :mod:`lakecdp.ingest.standardise` (the oracle): every column of every row must
be equal. A fast test without Spark holds hand-written expectations.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lakecdp.delta_store import arrow_type
from lakecdp.ingest.embedded_silver import EmbeddedSilverUnsupported, java_date_reader, to_order_items, to_silver
from lakecdp.ingest.sources import SourceConfig, load_sources

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = load_sources(REPO_ROOT / "conf")
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
INGESTED = datetime(2026, 11, 1, 12, 30, tzinfo=timezone.utc)

#: decomposed é (e + U+0301): NFC makes it one character
JOSE = "  Jose\u0301  "

CRM_ROWS: list[dict[str, Any]] = [
    {
        "CustomerID": "C1",
        "FirstName": JOSE,
        "LastName": "Smi\u200bth",  # zero-width space
        "Email": " ANN@X.COM ",
        "Phone": "07700 900123",
        "DOB": date(1985, 3, 2),
        "Street": "1  High\u00a0St ",
        "PostCode": "sw1a  1aa",
        "Town": "London",
        "Country": "United Kingdom",
        "EmailOptIn": "Y",
        "LastModified": datetime(2026, 1, 1, 10),
        "_warnings": [],
        "_as_read": {"DOB": "02/03/1985"},
    },
    {
        "CustomerID": " C2 ",
        "FirstName": "n/a",
        "LastName": "\ufeffO'Brien\u200e",  # BOM, left-to-right mark
        "Email": "n/a",
        "Phone": "n/a",
        "DOB": None,
        "Street": "a\tb",
        "PostCode": "straße 1",
        "Town": "\u2003",
        "Country": "Deutschland",
        "EmailOptIn": "n",
        "LastModified": datetime(2026, 1, 2),
        "_warnings": ["INVALID_DATE"],
        "_as_read": {"DOB": "31/02/1980"},
    },
    {
        "CustomerID": "C3",
        "FirstName": "İlkay",
        "LastName": "ΟΔΟΣ",
        "Email": "ΟΔΟΣ@X.GR",
        "Phone": "0151 12345678",
        "DOB": None,
        "Street": None,
        "PostCode": " ",
        "Town": "Köln",
        "Country": "de",
        "EmailOptIn": None,
        "LastModified": None,
        "_warnings": None,
        "_as_read": {"DOB": "  "},
    },
    {
        "CustomerID": "C4",
        "FirstName": "Zoë\u00a0 Ann",
        "LastName": "x",
        "Email": "a@b.c\u200b",
        "Phone": "+44 (0) 20 7946 0958",
        "DOB": None,
        "Street": "",
        "PostCode": "d02 x285",
        "Town": "Dublin",
        "Country": "Narnia",
        "EmailOptIn": "Y",
        "LastModified": datetime(2026, 1, 3),
        "_warnings": [],
        "_as_read": {"DOB": "1980-01-01"},
    },
    {
        "CustomerID": "C5",
        "FirstName": None,
        "LastName": None,
        "Email": "ÄNN@X.DE",
        "Phone": "0000000000",
        "DOB": None,
        "Street": None,
        "PostCode": None,
        "Town": None,
        "Country": "u.k.",
        "EmailOptIn": None,
        "LastModified": None,
        "_warnings": [],
        "_as_read": {"DOB": None},
    },
    {
        "CustomerID": "C6",
        "FirstName": "Ann",
        "LastName": "Lee",
        "Email": "ann@x.com",
        "Phone": "0044 20 7946 0958",
        "DOB": None,
        "Street": None,
        "PostCode": None,
        "Town": None,
        "Country": "IE",
        "EmailOptIn": None,
        "LastModified": None,
        "_warnings": [],
        "_as_read": {"DOB": "1/2/1980"},
    },
]

WEB_ROWS: list[dict[str, Any]] = [
    {"event_id": "e1", "event_type": "login", "ts": datetime(2026, 1, 1), "anonymous_id": "d1",
     "user": {"email": " A@B.COM", "customer_no": " C1 "}, "page_url": None, "price": None},
    {"event_id": "e2", "event_type": "login", "ts": datetime(2026, 1, 2), "anonymous_id": "  ",
     "user": {"email": "b@c.de", "customer_no": None}, "page_url": None, "price": 1.5},
    {"event_id": "e3", "event_type": "login", "ts": datetime(2026, 1, 3), "anonymous_id": "n/a",
     "user": None, "page_url": None, "price": None},
    {"event_id": "e4", "event_type": "login", "ts": datetime(2026, 1, 4), "anonymous_id": "d\u200b4",
     "user": None, "page_url": None, "price": None},
    {"event_id": "e5", "event_type": "page_view", "ts": datetime(2026, 1, 5), "anonymous_id": "d5",
     "user": {"email": "n/a", "customer_no": "null"}, "page_url": "https://x/p", "price": None},
    {"event_id": "e6", "event_type": "login", "ts": datetime(2026, 1, 6), "anonymous_id": "-",
     "user": None, "page_url": None, "price": None},
]  # fmt: skip

ORDER_ROWS: list[dict[str, Any]] = [
    {"order_id": "O1", "customer_no": "C1", "email": "A@B.COM", "ordered_at": datetime(2026, 1, 1), "status": "paid",
     "currency": " gbp", "total": 10.0,
     "items": [{"sku": "S1", "qty": 1, "unit_price": 2.5}, None, {"sku": "S2", "qty": 3, "unit_price": 1.0}]},
    {"order_id": "O2", "customer_no": "n/a", "email": None, "ordered_at": datetime(2026, 1, 2), "status": None,
     "currency": None, "total": 1.0, "items": []},
    {"order_id": "O3", "customer_no": None, "email": None, "ordered_at": datetime(2026, 1, 3), "status": None,
     "currency": "eur", "total": 2.0, "items": None},
]  # fmt: skip

THIRD_PARTY_ROWS: list[dict[str, Any]] = [
    {"ext_id": "T1", "full_name": "SMITH, John", "dob": None, "address": "1 High St", "postcode": "sw1a 1aa",
     "city": "London", "_as_read": {"dob": "19461302"}},
    {"ext_id": "T2", "full_name": "  Mary Ann\u00a0Jones ", "dob": date(1950, 1, 2), "address": None, "postcode": None,
     "city": None, "_as_read": {"dob": "19500102"}},
]  # fmt: skip

PRODUCT_ROWS: list[dict[str, Any]] = [
    {"product_id": "P1", "name": "  Red\u200b  Shoe ", "category": "shoes\t", "price": 10.0},
    {"product_id": "P2", "name": "", "category": None, "price": None},
]


def _typed(rows: list[dict[str, Any]], source: SourceConfig) -> pa.Table:
    """The typed table the pickup / batch ingest hands over: _row, the source's columns, extras."""
    naive = {"timestamp": pa.timestamp("us")}
    columns: dict[str, pa.Array] = {"_row": pa.array(range(len(rows)), pa.int64())}
    for column in source.columns:
        kind = naive.get(column.type) or arrow_type(column.type)
        columns[column.name] = pa.array([r.get(column.name) for r in rows], kind)
    if any("_warnings" in r for r in rows):
        columns["_warnings"] = pa.array([r.get("_warnings") for r in rows], pa.list_(pa.string()))
    if any("_as_read" in r for r in rows):
        names = sorted({k for r in rows for k in (r.get("_as_read") or {})})
        kind = pa.struct([(n, pa.string()) for n in names])
        columns["_as_read"] = pa.array([r.get("_as_read") for r in rows], kind)
    return pa.table(columns)


def _embedded(table: pa.Table, key: str) -> list[dict[str, Any]]:
    out = []
    for row in table.to_pylist():
        row.pop("_row")
        out.append(
            {
                k: (v.astimezone(timezone.utc).replace(tzinfo=None) if isinstance(v, datetime) else v)
                for k, v in row.items()
            }
        )
    return sorted(out, key=lambda r: tuple(str(r[k]) for k in key.split(",")))


def _by_id(table: pa.Table, key: str = "record_id") -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in _embedded(table, key)}


# -- hand-written expectations (no Spark) --------------------------------------------------------


def test_customer_records_standardised_as_written_by_hand():
    crm = _by_id(
        to_silver(_typed(CRM_ROWS, SOURCES["crm"]), SOURCES["crm"], run_id="r1", ingested_at=INGESTED, as_of=AS_OF)
    )
    one = crm["crm:C1"]
    assert (one["first_name"], one["last_name"], one["email"], one["phone"]) == (
        "Jos\u00e9",
        "Smith",
        "ann@x.com",
        "+447700900123",
    )
    assert (one["address_line1"], one["postcode"], one["country"], one["crm_id"]) == (
        "1 High St",
        "SW1A 1AA",
        "GB",
        "C1",
    )
    assert (one["email_consent"], one["updated_at"], one["run_id"], one["ingested_at"]) == (
        True,
        datetime(2026, 1, 1, 10),
        "r1",
        datetime(2026, 11, 1, 12, 30),
    )
    assert (one["date_of_birth"], one["date_of_birth_text"], one["warnings"]) == (date(1985, 3, 2), None, [])
    two = crm["crm: C2 "]
    # junk identifiers (a name is not an identifier: "n/a" stays), invisible characters, a tab
    # (a control character: removed, not a space), ß upper-cased
    assert (two["first_name"], two["last_name"], two["email"], two["phone"]) == ("n/a", "O'Brien", None, None)
    assert (two["address_line1"], two["postcode"], two["city"], two["country"]) == ("ab", "STRASSE 1", None, "DE")
    assert (two["crm_id"], two["email_consent"], two["warnings"]) == ("C2", False, ["INVALID_DATE"])
    assert two["date_of_birth_text"] == "31/02/1980"  # not a date: kept as written
    three = crm["crm:C3"]
    assert (three["phone"], three["country"], three["postcode"], three["date_of_birth_text"]) == (
        "+4915112345678",
        "DE",
        None,
        None,
    )
    assert three["warnings"] == []
    four = crm["crm:C4"]
    # an unknown country reads the phone in the source's default region (GB); "(0)" is dropped
    assert (four["first_name"], four["email"], four["phone"], four["country"]) == (
        "Zoë Ann",
        None,
        "+442079460958",
        None,
    )
    assert four["date_of_birth_text"] == "1980-01-01"  # not dd/MM/yyyy
    five = crm["crm:C5"]
    assert (five["email"], five["phone"], five["country"]) == ("änn@x.de", None, "GB")
    six = crm["crm:C6"]
    # 0044: the international prefix; "1/2/1980" is not dd/MM/yyyy (two digits each)
    assert (six["phone"], six["date_of_birth_text"]) == ("+442079460958", "1/2/1980")


def test_login_extra_keeps_only_usable_ids_as_written_by_hand():
    source = SOURCES["web_events"]
    records = _by_id(
        to_silver(
            _typed(WEB_ROWS, source), source, extra=source.also[0], run_id="r1", ingested_at=INGESTED, as_of=AS_OF
        )
    )
    # blank, n/a, a zero-width character and "-" are not ids of one person; e5 is not a login
    assert list(records) == ["web:d1"]
    record = records["web:d1"]
    assert (record["source"], record["email"], record["customer_number"], record["device_ids"]) == (
        "web",
        "a@b.com",
        "C1",
        ["d1"],
    )
    assert (record["first_name"], record["phone"], record["updated_at"]) == (None, None, datetime(2026, 1, 1))


def test_events_orders_items_and_products_as_written_by_hand():
    web = SOURCES["web_events"]
    events = _by_id(to_silver(_typed(WEB_ROWS, web), web, run_id="r1", ingested_at=INGESTED, as_of=AS_OF), "event_id")
    assert (events["e5"]["email"], events["e5"]["customer_number"], events["e5"]["device_id"]) == (None, None, "d5")
    assert (events["e2"]["value"], events["e2"]["device_id"], events["e2"]["channel"]) == (1.5, None, "web")
    orders_source = SOURCES["shop_orders"]
    typed = _typed(ORDER_ROWS, orders_source)
    orders = _by_id(to_silver(typed, orders_source, run_id="r1", ingested_at=INGESTED, as_of=AS_OF), "order_id")
    assert (orders["O1"]["currency"], orders["O1"]["email"], orders["O2"]["customer_number"]) == (
        "GBP",
        "a@b.com",
        None,
    )
    items = [(r["order_id"], r["line_number"], r["product_id"], r["quantity"]) for r in _embedded(
        to_order_items(typed, orders_source, as_of=AS_OF), "order_id,line_number")]  # fmt: skip
    # the null element is dropped but keeps its place: lines 1 and 3
    assert items == [("O1", 1, "S1", 1), ("O1", 3, "S2", 3)]
    products_source = SOURCES["products"]
    products = _by_id(
        to_silver(
            _typed(PRODUCT_ROWS, products_source), products_source, run_id=None, ingested_at=INGESTED, as_of=AS_OF
        ),
        "product_id",
    )
    assert (products["P1"]["name"], products["P1"]["category"], products["P2"]["name"]) == ("Red Shoe", "shoes", None)


def test_a_mapping_duckdb_cannot_run_is_refused_naming_the_column():
    # soundex is a Spark function DuckDB does not have (and lakecdp does not translate)
    third_party = SOURCES["third_party"]
    source = third_party.model_copy(update={"mapping": {**third_party.mapping, "first_name": "soundex(full_name)"}})
    with pytest.raises(EmbeddedSilverUnsupported, match="mapping of first_name .*soundex"):
        to_silver(_typed(THIRD_PARTY_ROWS, source), source, run_id="r1", ingested_at=INGESTED, as_of=AS_OF)


def test_java_date_patterns():
    parses = java_date_reader("dd/MM/yyyy")
    assert [parses(t) for t in ("02/03/1985", "31/02/1980", "29/02/2000", "29/02/1900", "1/2/1980")] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert java_date_reader("yyyyMMdd")("19461302") is False
    with pytest.raises(EmbeddedSilverUnsupported, match="'EEE'"):
        java_date_reader("EEE dd/MM/yyyy")


# -- Spark is the oracle ---------------------------------------------------------------------------


def _spark_frame(spark, rows: list[dict[str, Any]], source: SourceConfig):
    typed = _typed(rows, source)
    ddl = []
    for field in typed.schema:
        if field.name == "_row":
            continue
        if field.name == "_warnings":
            ddl.append("_warnings array<string>")
        elif field.name == "_as_read":
            ddl.append("_as_read struct<" + ",".join(f"{f.name}:string" for f in field.type) + ">")
        else:
            ddl.append(f"`{field.name}` {source.column(field.name).type}")
    data = [tuple(r[n] for n in typed.column_names if n != "_row") for r in typed.to_pylist()]
    return typed, spark.createDataFrame(data, ", ".join(ddl))


def _spark_rows(frame, key: str) -> list[dict[str, Any]]:
    return sorted(
        (r.asDict(recursive=True) for r in frame.collect()), key=lambda r: tuple(str(r[k]) for k in key.split(","))
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source_name", "rows", "key"),
    [
        ("crm", CRM_ROWS, "record_id"),
        ("web_events", WEB_ROWS, "event_id"),
        ("shop_orders", ORDER_ROWS, "order_id"),
        ("products", PRODUCT_ROWS, "product_id"),
    ],
)
def test_to_silver_equals_the_spark_mappers(spark, source_name, rows, key):
    from lakecdp.ingest.standardise import MAPPERS

    source = SOURCES[source_name]
    typed, frame = _spark_frame(spark, rows, source)
    mapper = MAPPERS[source.target]
    stamps = {} if source.target == "products" else {"run_id": "r1", "ingested_at": INGESTED.replace(tzinfo=None)}
    expected = _spark_rows(frame.transform(mapper, source, **stamps), key)
    got = _embedded(to_silver(typed, source, run_id="r1", ingested_at=INGESTED, as_of=AS_OF), key)
    assert got == expected


@pytest.mark.slow
def test_yyyymmdd_birth_dates_equal_the_spark_mapper(spark):
    from lakecdp.ingest.standardise import to_customer_records

    source = SOURCES["third_party"]
    typed, frame = _spark_frame(spark, THIRD_PARTY_ROWS, source)
    stamps = {"run_id": "r1", "ingested_at": INGESTED.replace(tzinfo=None)}
    expected = _spark_rows(to_customer_records(frame, source, **stamps), "record_id")
    got = _embedded(to_silver(typed, source, run_id="r1", ingested_at=INGESTED, as_of=AS_OF), "record_id")
    assert got == expected
    assert [r["date_of_birth_text"] for r in got] == ["19461302", None]


@pytest.mark.slow
def test_login_extra_and_order_items_equal_the_spark_mappers(spark):
    from lakecdp.ingest.standardise import to_customer_records
    from lakecdp.ingest.standardise import to_order_items as spark_order_items

    web = SOURCES["web_events"]
    typed, frame = _spark_frame(spark, WEB_ROWS, web)
    expected = _spark_rows(
        to_customer_records(frame, web, run_id="r1", ingested_at=INGESTED.replace(tzinfo=None), extra=web.also[0]),
        "record_id",
    )
    got = _embedded(
        to_silver(typed, web, extra=web.also[0], run_id="r1", ingested_at=INGESTED, as_of=AS_OF), "record_id"
    )
    assert got == expected
    orders = SOURCES["shop_orders"]
    typed, frame = _spark_frame(spark, ORDER_ROWS, orders)
    key = "order_id,line_number"
    assert _embedded(to_order_items(typed, orders, as_of=AS_OF), key) == _spark_rows(
        spark_order_items(frame, orders), key
    )


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])
def test_mappings_that_are_a_column_of_the_silver_type_as_written_by_hand(order):
    # "FirstName" (string), "Seen" (a timestamp without zone: UTC), "OptIn" and "Born" are taken as
    # they are (no DuckDB) when the rows are in _row order; "firstname" (another spelling), the
    # expressions and the literal run on DuckDB; rows out of _row order all run there: the same rows
    from lakecdp import catalog
    from lakecdp.ingest.embedded_silver import map_rows

    rows = [
        {"_row": 0, "FirstName": "Ann", "Seen": datetime(2026, 10, 1, 8, 0), "OptIn": True, "Born": date(1980, 1, 2)},
        {"_row": 1, "FirstName": None, "Seen": None, "OptIn": None, "Born": None},
        {"_row": 2, "FirstName": "Bo", "Seen": datetime(2026, 10, 2, 9, 30), "OptIn": False, "Born": date(1990, 5, 6)},
    ]
    schema = pa.schema(
        [("_row", pa.int64()), ("FirstName", pa.string()), ("Seen", pa.timestamp("us")), ("OptIn", pa.bool_())]
        + [("Born", pa.date32())]
    )
    typed = pa.Table.from_pylist([rows[i] for i in order], schema=schema)
    mapping = {
        "first_name": "FirstName",
        "last_name": "firstname",
        "city": "upper(FirstName)",
        "updated_at": "Seen",
        "email_consent": "OptIn",
        "date_of_birth": "Born",
        "region": "'north'",
    }
    mapped = map_rows(typed, mapping, catalog.CUSTOMER_RECORDS.ddl, as_of=AS_OF)
    utc = timezone.utc
    assert mapped.to_pylist() == [
        {
            "_row": 0,
            "first_name": "Ann",
            "last_name": "Ann",
            "date_of_birth": date(1980, 1, 2),
            "city": "ANN",
            "email_consent": True,
            "updated_at": datetime(2026, 10, 1, 8, 0, tzinfo=utc),
            "region": "north",
        },
        {
            "_row": 1,
            "first_name": None,
            "last_name": None,
            "date_of_birth": None,
            "city": None,
            "email_consent": None,
            "updated_at": None,
            "region": "north",
        },
        {
            "_row": 2,
            "first_name": "Bo",
            "last_name": "Bo",
            "date_of_birth": date(1990, 5, 6),
            "city": "BO",
            "email_consent": False,
            "updated_at": datetime(2026, 10, 2, 9, 30, tzinfo=utc),
            "region": "north",
        },
    ]
    assert mapped.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
