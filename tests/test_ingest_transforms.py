"""Pure ingest transforms: source configs, parse_and_validate reason codes, standardisation tables."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakecdp.config import ConfigError
from lakecdp.ingest.sources import SourceConfig, load_sources
from lakecdp.ingest.standardise import (
    clean_name,
    country_code,
    normalise_email,
    normalise_phone,
    to_customer_records,
    to_events,
    to_order_items,
    to_orders,
)
from lakecdp.ingest.validate import parse_and_validate

REPO_ROOT = Path(__file__).resolve().parents[1]

SOURCES = load_sources(REPO_ROOT / "conf")
CRM_HEADER = "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified"


def test_all_seven_sources_load():
    assert sorted(SOURCES) == [
        "crm",
        "email_events",
        "products",
        "shop_customers",
        "shop_orders",
        "third_party",
        "web_events",
    ]
    assert SOURCES["crm"].target == "customer_records"
    assert SOURCES["shop_orders"].items.column == "items"


def test_source_config_errors_name_file_and_field(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    text = (REPO_ROOT / "conf/sources/products.yaml").read_text()
    (folder / "products.yaml").write_text(text.replace("price: price", "price: cost"))
    with pytest.raises(ConfigError, match=r"products\.yaml.*mapping\.price.*unknown column 'cost'"):
        load_sources(tmp_path)
    (folder / "products.yaml").write_text(text + "colour: red\n")
    with pytest.raises(ConfigError, match=r"products\.yaml: colour: Extra inputs are not permitted"):
        load_sources(tmp_path)
    (folder / "products.yaml").write_text(
        text.replace("mapping:\n  product_id: product_id", "mapping:\n  product_id: (SELECT 1)")
    )
    with pytest.raises(ConfigError, match="only expressions are allowed"):
        load_sources(tmp_path)


def _lines(spark, lines, file):
    """Rows of raw text with their physical line numbers, as the job produces them."""
    return spark.createDataFrame(
        [(text, file, number) for number, text in lines], "raw string, source_file string, line bigint"
    )


def test_crm_csv_reason_codes_and_warnings(spark):
    ok = "C1,Ann,Smith,ann@x.com,07700 900123,02/03/1985,1 High St,SW1A 1AA,London,UK,Y,2026-01-01 10:00:00"
    raw = _lines(
        spark,
        [
            (2, ok),
            (3, 'C2,"Bro,ken,Smith,a@b.com,,,,,,,N,2026-01-01 10:00:00'),  # quote never closes
            (4, "C3,Bob,Smith,a@b.com,,,,,,UK,N,2026-01-01 10:00:00,extra"),  # 13 fields
            (5, "C4,Bob,Smith,a@b.com,,,,,,UK,N"),  # 11 fields
            (6, ",Bob,Smith,a@b.com,,,,,,UK,N,2026-01-01 10:00:00"),  # no CustomerID
            (7, "C6,Bob,Smith,a@b.com,,,,,,UK,N,01/01/2026 10:00"),  # bad LastModified
            (8, "C7,Bob,Smith,bob at x.com,,,,,,UK,N,2026-01-01 10:00:00"),  # optional email
            (9, "C8,Bob,Smith,a@b.com,,31/02/1980,,,,UK,N,2026-01-01 10:00:00"),  # no 31 Feb
            (10, "C9,Bob,Smith,a@b.com,,01/01/1900,,,,UK,N,2026-01-01 10:00:00"),  # placeholder
            (11, "C10,Bob,Smith,a@b.com,,05/05/2031,,,,UK,N,2026-01-01 10:00:00"),  # future
            (12, "C11," + "A" * 201 + ",Smith,a@b.com,,,,,,UK,N,2026-01-01 10:00:00"),  # too long
            (13, "C12,B\ufffdb,Smith,a@b.com,,,,,,UK,N,2026-01-01 10:00:00"),  # bad bytes
            (14, 'C13,"Smith, Jr",Bob,n/a,,,,,,UK,N,2026-01-01 10:00:00'),  # junk email: fine
        ],
        "crm/crm_customers_0.csv",
    )
    out = parse_and_validate(raw, SOURCES["crm"], header=CRM_HEADER.split(","), as_of=date(2026, 11, 1))
    assertDataFrameEqual(
        out.select("line", "CustomerID", "FirstName", "Email", "DOB", "_reasons", "_warnings"),
        [
            (2, "C1", "Ann", "ann@x.com", date(1985, 3, 2), [], []),
            (3, "C2", "Bro,ken,Smith,a@b.com,,,,,,,N,2026-01-01 10:00:00", None, None, ["MALFORMED_LINE"], []),
            (4, "C3", "Bob", "a@b.com", None, ["WRONG_FIELD_COUNT"], []),
            (5, "C4", "Bob", "a@b.com", None, ["WRONG_FIELD_COUNT"], []),
            (6, None, "Bob", "a@b.com", None, ["MISSING_REQUIRED"], []),
            (7, "C6", "Bob", "a@b.com", None, ["INVALID_TIMESTAMP"], []),
            (8, "C7", "Bob", None, None, [], ["INVALID_EMAIL"]),
            (9, "C8", "Bob", "a@b.com", None, [], ["INVALID_DATE"]),
            (10, "C9", "Bob", "a@b.com", None, [], ["IMPOSSIBLE_DATE"]),
            (11, "C10", "Bob", "a@b.com", None, [], ["IMPOSSIBLE_DATE"]),
            (12, "C11", "A" * 201, "a@b.com", None, ["FIELD_TOO_LONG"], []),
            (13, "C12", "B\ufffdb", "a@b.com", None, ["BAD_ENCODING"], []),
            (14, "C13", "Smith, Jr", "n/a", None, [], []),
        ],
    )


def test_json_reason_codes_nested_warning_and_rescued_column(spark):
    raw = _lines(
        spark,
        [
            (
                1,
                '{"event_id":"w1","event_type":"login","ts":"2026-10-01T12:34:56.123+01:00",'
                '"anonymous_id":"d-1","user":{"email":"Ann@X.com ","customer_no":"S1"},"coupon":"X"}',
            ),
            (2, '{"event_id":"w2","event_type":"page_view","ts":"2026-10-01T12:00:00Z","price":"abc"}'),
            (3, '{"event_id":"w3","event_type":"page_view","ts":'),
            (4, '{"event_id":"w4","event_type":"page_view","ts":"yesterday"}'),
            (5, '{"event_id":"w5","ts":"2026-10-01T12:00:00Z"}'),
            (
                6,
                '{"event_id":"w6","event_type":"login","ts":"2026-10-01T12:00:00Z",'
                '"user":{"email":"a@@b.com","customer_no":"S6"},"price":19.5}',
            ),
            (7, '["not", "an", "object"]'),
            # a blank line (or an empty Kafka message) is malformed, not a parser crash
            (8, "   "),
        ],
        "web_events/web_events_0.jsonl",
    )
    out = parse_and_validate(raw, SOURCES["web_events"])
    assertDataFrameEqual(
        out.select("line", "event_id", "ts", "user", "price", "_rescued", "_reasons", "_warnings"),
        [
            (1, "w1", datetime(2026, 10, 1, 11, 34, 56, 123000), ("Ann@X.com ", "S1"), None, '{"coupon":"X"}', [], []),
            (2, "w2", datetime(2026, 10, 1, 12), None, None, None, ["INVALID_TYPE"], []),
            (3, None, None, None, None, None, ["MALFORMED_LINE"], []),
            (4, "w4", None, None, None, None, ["INVALID_TIMESTAMP"], []),
            (5, "w5", datetime(2026, 10, 1, 12), None, None, None, ["MISSING_REQUIRED"], []),
            (6, "w6", datetime(2026, 10, 1, 12), (None, "S6"), 19.5, None, [], ["INVALID_EMAIL"]),
            (7, None, None, None, None, None, ["MALFORMED_LINE"], []),
            (8, None, None, None, None, None, ["MALFORMED_LINE"], []),
        ],
    )


def test_validation_plan_parses_a_json_line_once_for_its_columns_and_holds_no_interpreted_function(spark):
    # profiled (bench/RESULTS.md, "Spark ingest: the executor's work per row"): a parse per column
    # and higher-order functions (run by Spark's interpreter) were on 42 % of the executor's samples
    def optimized_plan(source, line, file, header=None):
        checked = parse_and_validate(_lines(spark, [(1, line)], file), SOURCES[source], header=header)
        return checked._jdf.queryExecution().optimizedPlan().toString()

    web = optimized_plan("web_events", '{"event_id":"w1"}', "web_events/web_events_0.jsonl")
    # the columns' struct (one parse) and the full parse MALFORMED_LINE reads (null, _corrupt_record);
    # main had 13 (one per field read): this assertion fails there
    assert web.count("from_json(StructField(") == 3
    # unknown keys: the map of every field (and map_filter) only under the branch for lines that may rescue
    assert re.findall(r"\b(?:filter|transform|exists|aggregate|array_compact)\(", web) == []
    crm = optimized_plan("crm", "C1,Ann", "crm/crm_customers_0.csv", header=CRM_HEADER.split(","))
    assert re.findall(r"\b(?:filter|map_filter|transform|exists|aggregate|array_compact)\(", crm) == []


def test_standardisation_tables(spark):
    rows = [
        # email in                  email out       phone in            country          phone out         name in                 name out     country out
        (
            "  Ann.Smith@Example.COM ",
            "ann.smith@example.com",
            "07700 900123",
            "United Kingdom",
            "+447700900123",
            "Ann\u200b",
            "Ann",
            "GB",
        ),
        ("bob@@x.com", None, "+44 7700 900123", "UK", "+447700900123", "  Bob   Lee ", "Bob Lee", "GB"),
        ("bob smith@x.com", None, "(020) 7946 0018", "gb", "+442079460018", "Zo\u00eb", "Zo\u00eb", "GB"),
        ("n/a", None, "087 123 4567", "Ireland", "+353871234567", "Zoe\u0308", "Zo\u00eb", "IE"),
        ("TEST@TEST.COM", None, "030 123456", "Deutschland", "+4930123456", "\u00a0Max\u0007", "Max", "DE"),
        ("noat.example.com", None, "0000000000", "DE", None, "\ufeffJosé", "José", "DE"),
        (None, None, "n/a", "Atlantis", None, "\u200d", None, None),
    ]
    df = spark.createDataFrame(
        rows,
        "email string, email_out string, phone string, country string, phone_out string, "
        "name string, name_out string, country_out string",
    )
    iso = country_code(F.col("country"))
    actual = df.select(
        "email",
        normalise_email(F.col("email")).alias("e"),
        "phone",
        normalise_phone(F.col("phone"), iso).alias("p"),
        "name",
        clean_name(F.col("name")).alias("n"),
        "country",
        iso.alias("c"),
    )
    assertDataFrameEqual(
        actual,
        [(r[0], r[1], r[2], r[4], r[5], r[6], r[3], r[7]) for r in rows],
    )


def test_mappers_to_unified_schemas(spark):
    crm_raw = _lines(
        spark,
        [
            (
                2,
                "C1, Ann\u200b ,SMITH,ANN@X.COM,07700 900123,02/03/1985,1  High St,sw1a  1aa,London,"
                "United Kingdom,Y,2026-01-01 10:00:00",
            ),
        ],
        "crm/crm_customers_0.csv",
    )
    crm = parse_and_validate(crm_raw, SOURCES["crm"], as_of=date(2026, 11, 1))
    at = datetime(2026, 11, 1)
    assertDataFrameEqual(
        crm.transform(to_customer_records, SOURCES["crm"], run_id="r1", ingested_at=at),
        [
            (
                "crm:C1",
                "crm",
                "C1",
                "Ann",
                "SMITH",
                "ann@x.com",
                "+447700900123",
                date(1985, 3, 2),
                "1 High St",
                "SW1A 1AA",
                "London",
                "GB",
                [],
                "C1",
                None,
                True,
                datetime(2026, 1, 1, 10),
                [],
                "r1",
                at,
                None,
                None,
                None,
                None,
                None,
            )
        ],  # sms_consent: the CRM carries none
    )
    web_raw = _lines(
        spark,
        [
            (
                1,
                '{"event_id":"w1","event_type":"login","ts":"2026-10-01T12:00:00Z","anonymous_id":"d-1",'
                '"session_id":"s-1","user":{"email":"Ann@X.com","customer_no":"S1"}}',
            ),
            (
                2,
                '{"event_id":"w2","event_type":"product_view","ts":"2026-10-01T12:01:00Z",'
                '"anonymous_id":"d-1","product_id":"P1","price":19.99,"page_url":"/p/1"}',
            ),
        ],
        "web_events/web_events_0.jsonl",
    )
    web = parse_and_validate(web_raw, SOURCES["web_events"])
    assertDataFrameEqual(
        web.transform(to_events, SOURCES["web_events"], run_id="r1", ingested_at=at),
        [
            (
                "w1",
                "web_events",
                "login",
                datetime(2026, 10, 1, 12),
                "ann@x.com",
                "d-1",
                "S1",
                "s-1",
                None,
                None,
                None,
                None,
                None,
                "web",
                None,
                None,
                "r1",
                at,
            ),
            (
                "w2",
                "web_events",
                "product_view",
                datetime(2026, 10, 1, 12, 1),
                None,
                "d-1",
                None,
                None,
                "P1",
                None,
                19.99,
                None,
                None,
                "web",
                None,
                "/p/1",
                "r1",
                at,
            ),
        ],
    )
    logins = to_customer_records(
        web, SOURCES["web_events"], extra=SOURCES["web_events"].also[0], run_id="r1", ingested_at=at
    )
    assertDataFrameEqual(
        logins.select(
            "record_id", "source", "source_record_id", "email", "device_ids", "customer_number", "updated_at"
        ),
        [("web:d-1", "web", "d-1", "ann@x.com", ["d-1"], "S1", datetime(2026, 10, 1, 12))],
    )
    orders_raw = _lines(
        spark,
        [
            (
                1,
                '{"order_id":"O1","customer_no":"S1","email":"a@x.com","ordered_at":"2026-10-01T12:34:56Z",'
                '"status":"completed","currency":"gbp","total":59.97,'
                '"items":[{"sku":"P1","qty":2,"unit_price":19.99},{"sku":"P2","qty":1,"unit_price":19.99}]}',
            ),
        ],
        "shop_orders/orders_0.jsonl",
    )
    orders = parse_and_validate(orders_raw, SOURCES["shop_orders"])
    assertDataFrameEqual(
        orders.transform(to_orders, SOURCES["shop_orders"], run_id="r1", ingested_at=at),
        [
            (
                "O1",
                "shop_orders",
                "S1",
                "a@x.com",
                datetime(2026, 10, 1, 12, 34, 56),
                "completed",
                "GBP",
                59.97,
                "r1",
                at,
            )
        ],
    )
    assertDataFrameEqual(
        orders.transform(to_order_items, SOURCES["shop_orders"]),
        [("O1", 1, "P1", None, 2, 19.99), ("O1", 2, "P2", None, 1, 19.99)],
    )


def test_source_config_model_is_strict():
    with pytest.raises(ValueError, match="not a customer_records column"):
        SourceConfig.model_validate(
            {
                "version": 1,
                "name": "x",
                "format": "csv",
                "path": "x/*.csv",
                "columns": [{"name": "id"}],
                "primary_key": ["id"],
                "target": "customer_records",
                "mapping": {"customer_id": "id"},
            }
        )


def test_on_kafka_future_is_judged_by_the_receive_time(spark):
    # a stream runs for days: "future" is later than when the broker received the message
    from datetime import timezone

    received = datetime(2026, 11, 20, 10, 5, tzinfo=timezone.utc)
    raw = spark.createDataFrame(
        [
            ('{"event_id":"w1","event_type":"page_view","ts":"2026-11-20T10:00:00Z"}', 1, received),
            ('{"event_id":"w2","event_type":"page_view","ts":"2026-11-22T10:00:00Z"}', 2, received),
        ],
        "raw string, line bigint, received timestamp",
    )
    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)
    by_receipt = parse_and_validate(raw, SOURCES["web_events"], as_of=as_of, received_at="received")
    assertDataFrameEqual(by_receipt.select("line", "_reasons"), [(1, []), (2, ["FUTURE_TIMESTAMP"])])
    by_as_of = parse_and_validate(raw, SOURCES["web_events"], as_of=as_of)
    assertDataFrameEqual(by_as_of.select("line", "_reasons"), [(1, ["FUTURE_TIMESTAMP"]), (2, ["FUTURE_TIMESTAMP"])])


def test_email_rfc_lengths_and_invisible_characters(spark):
    cases = [
        ("a" * 64 + "@x.com", "a" * 64 + "@x.com"),
        ("a" * 65 + "@x.com", None),
        ("ann@" + "b" * 63 + ".com", "ann@" + "b" * 63 + ".com"),
        ("ann@" + "b" * 64 + ".com", None),
        ("a" * 64 + "@" + ".".join(["b" * 62] * 3) + ".com", None),  # 257 octets
        ("Ann\u200b@x.com", None),
        ("ann@x.com\u200d", None),
        ("\ufeffann@x.com", None),
        ("an\u00adn@x.com", None),
        ("ann@\u202ex.com", None),
        ("ann\u00a0@x.com", None),
        ("\u00e9" * 32 + "@x.com", "\u00e9" * 32 + "@x.com"),  # 64 octets
        ("\u00e9" * 33 + "@x.com", None),  # 66 octets
    ]
    df = spark.createDataFrame(cases, "email string, expected string")
    assertDataFrameEqual(df.select("email", normalise_email(F.col("email")).alias("expected")), cases)


def test_phone_numbers_parsed_once_per_distinct_value_give_each_row_its_own_answer(monkeypatch):
    """The phone UDF's body on an Arrow batch (no Spark): every row gets the answer for its own
    number and region, and phonenumbers parses a distinct (number, region) at most once -- the
    common shapes not at all (the embedded engine's ``e164_array``, on both engines)."""
    import pyarrow as pa

    from lakecdp.ingest import phones, standardise

    parsed: list[tuple[object, object]] = []
    real = phones.e164

    def counting(number, region):
        parsed.append((number, region))
        return real(number, region)

    monkeypatch.setattr(phones, "e164", counting)
    numbers = [
        "07700 900123",
        "07700 900123",
        "0151 496 0000",
        "07700 900123",
        "1111111111",
        None,
        "tel:+44 7700 900124",
    ]
    regions = ["GB", "GB", "GB", "IE", "GB", "GB", "GB"]
    out = standardise._e164.func(pa.array(numbers, pa.string()), pa.array(regions, pa.string()))
    assert out.to_pylist() == [
        "+447700900123",
        "+447700900123",
        "+441514960000",
        "+3537700900123",
        None,
        None,
        "+447700900124",
    ]
    # "tel:..." is not of the simple shape: parsed, once; the others are answered without a parse
    # or deferred to one parse each
    assert ("tel:+44 7700 900124", "GB") in parsed
    assert len(parsed) == len(set(parsed))


def test_classify_ranks_the_keys_only_when_a_key_repeats_among_the_rows_that_passed(spark):
    # the batch job keeps a source's validated rows and ranks them by key (a shuffle and a sort of
    # every row) only when a key repeats (lakecdp.ingest.job._classified)
    from lakecdp.ingest.classify import classify, keys_repeat

    crm = SOURCES["crm"]

    def validated(lines):
        raw = _lines(spark, lines, "crm/crm_customers_0.csv")
        checked = parse_and_validate(raw, crm, header=CRM_HEADER.split(","), as_of=date(2026, 11, 1))
        return checked.withColumn("_file_order", F.lit(0))

    tail = ",Ann,Smith,ann@x.com,,,,,,UK,Y,"
    unique = validated(
        [
            (2, "C1" + tail + "2026-01-01 10:00:00"),
            (3, "C2" + tail + "2026-01-02 10:00:00"),
            # C2 again, but quarantined (bad timestamp): not ranked, so no repeat
            (4, "C2" + tail + "01/01/2026"),
        ]
    )
    assert keys_repeat(unique, crm) is False
    unranked = classify(unique, crm, None, keys_repeat=False)
    assert "Window" not in unranked._jdf.queryExecution().optimizedPlan().toString()
    assertDataFrameEqual(unranked.select("line", "_status"), [(2, "loaded"), (3, "loaded"), (4, "quarantined")])

    repeated = validated(
        [
            (2, "C1" + tail + "2026-01-01 10:00:00"),
            (3, "C1" + tail + "2026-01-03 10:00:00"),  # the later version of C1 loads
            (4, "C2" + tail + "2026-01-02 10:00:00"),
        ]
    )
    assert keys_repeat(repeated, crm) is True
    assertDataFrameEqual(
        classify(repeated, crm, None).select("line", "_status"),
        [(2, "duplicate"), (3, "loaded"), (4, "loaded")],
    )


def test_a_record_id_is_the_key_only_when_it_maps_the_one_string_key_as_it_is():
    # then the rows classify loads hold one row per record id: silver.customer_records is written
    # without picking the latest row per record id (a window: a sort, a shuffle, a sort)
    from lakecdp.ingest.writes import _record_id_is_key

    crm = SOURCES["crm"]
    assert [_record_id_is_key(SOURCES[name]) for name in ("crm", "shop_customers", "third_party")] == [True] * 3
    # two keys "C1" and "C1 " would be one record: trimmed ids are not the key as read
    trimmed = crm.model_copy(update={"mapping": {**crm.mapping, "source_record_id": "trim(CustomerID)"}})
    assert _record_id_is_key(trimmed) is False
    assert _record_id_is_key(crm.model_copy(update={"mapping": {**crm.mapping, "source_record_id": "`CustomerID`"}}))
    # a typed key: "01" and "1" are two keys as read, one number
    numbered = crm.model_copy(
        update={
            "columns": [c.model_copy(update={"type": "bigint"}) if c.name == "CustomerID" else c for c in crm.columns]
        }
    )
    assert _record_id_is_key(numbered) is False
    two_keys = crm.model_copy(update={"primary_key": ["CustomerID", "Email"]})
    assert _record_id_is_key(two_keys) is False


def test_a_csv_separator_is_split_on_literally():
    # one character is split on by Java's String.split without the regex engine: the character,
    # or a backslash and it when it is special; anything else quoted
    from lakecdp.ingest.validate import _literal_pattern

    assert [_literal_pattern(sep) for sep in (",", ";", "\t", "|", ".", "]", "::", "a")] == [
        ",",
        ";",
        "\t",
        "\\|",
        "\\.",
        "\\]",
        "\\Q::\\E",
        "\\Qa\\E",
    ]
    line = "a|b.c::d]e;f\tg"
    for sep in ("|", ".", "]", ";", "\t", "::"):
        assert re.split(_literal_pattern(sep).replace("\\Q", "").replace("\\E", ""), line) == line.split(sep)


def test_text_of_printable_ascii_is_only_trimmed_and_the_rest_cleaned_in_full(spark):
    # clean_text / clean_name trim printable ASCII without two spaces in a row and clean the rest
    # with the two replacements: the same answers (written by hand) as the embedded engine's cleaners
    import pyarrow as pa

    from lakecdp.ingest import cleaners
    from lakecdp.ingest.standardise import clean_text

    cases = [
        (" Ann Lee ", "Ann Lee"),  # plain: trimmed
        ("~Ann-Lee~", "~Ann-Lee~"),
        ("   ", None),
        ("", None),
        ("Ann  Lee", "Ann Lee"),  # two spaces: collapsed
        ("Ann\tLee", "AnnLee"),  # a tab is a control character: removed
        ("Ann\x7fLee", "AnnLee"),
        ("Ann\u00a0Lee ", "Ann Lee"),  # no-break space: a space
        ("Ann\u200b Lee", "Ann Lee"),
        (None, None),
    ]
    df = spark.createDataFrame([(text,) for text, _ in cases], "text string")
    spark_out = [row[0] for row in df.select(clean_text(F.col("text"))).collect()]
    expected = [want for _, want in cases]
    assert spark_out == expected
    assert [row[0] for row in df.select(clean_name(F.col("text"))).collect()] == expected
    assert cleaners.clean_text(pa.array([text for text, _ in cases], pa.string())).to_pylist() == expected
