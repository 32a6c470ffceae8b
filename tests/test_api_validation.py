"""The intake's row-level validator against the Spark validator (the oracle) on the same messages.

Every case also carries the reasons written by hand: (refused codes, warning codes).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from lakecdp.api.app import ApiError, parse_json_body
from lakecdp.ingest.python_rules import (
    _parse_timestamp_text,
    java_regex,
    parse_timestamp,
    validate_event,
    validate_events,
)
from lakecdp.ingest.sources import FieldCheck, load_sources
from lakecdp.ingest.stream import as_json_messages
from conftest import REPO_ROOT

#: the receive time both validators judge "future" against
AS_OF = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
OK = ([], [])
GOOD_WEB = {
    "event_id": "w-1",
    "event_type": "purchase",
    "ts": "2026-10-01T12:34:56.123+01:00",
    "anonymous_id": "d-1",
    "user": {"email": "ada@example.com", "customer_no": "S1"},
    "revenue": 59.97,
}
GOOD_EMAIL = {
    "event_id": "e-1",
    "event_type": "open",
    "email": "ada@example.com",
    "occurred_at": "2026-10-01T10:00:00Z",
}
# a JSON text (str) is sent as it is: NaN / Infinity / 1e400 tokens json.dumps cannot write
CASES = [
    ("web_events", GOOD_WEB, OK),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01"}, OK),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01 12:34:56"}, OK),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01T12:34:56Z"}, OK),
    ("web_events", {**GOOD_WEB, "ts": "01/10/2026"}, (["INVALID_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "2026-02-30T00:00:00Z"}, (["INVALID_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": None}, (["MISSING_REQUIRED"], [])),
    ("web_events", {**GOOD_WEB, "event_id": "  "}, (["MISSING_REQUIRED"], [])),
    ("web_events", {**GOOD_WEB, "price": "19.99"}, OK),
    ("web_events", {**GOOD_WEB, "price": "cheap"}, (["INVALID_TYPE"], [])),
    ("web_events", {**GOOD_WEB, "price": 3}, OK),
    ("web_events", {**GOOD_WEB, "user": {"email": "ada at example.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "user": {"email": "N/A"}}, OK),
    ("web_events", {**GOOD_WEB, "user": {"email": "a@@b.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "event_id": 42}, OK),
    # emails: invisible characters and RFC 5321's byte limits (an optional field: a warning)
    ("web_events", {**GOOD_WEB, "user": {"email": "ada\u200b@example.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "user": {"email": "ada@exam\u00a0ple.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "user": {"email": "a" * 65 + "@example.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "user": {"email": "a" * 64 + "@example.com"}}, OK),
    # 33 characters, 66 bytes
    ("web_events", {**GOOD_WEB, "user": {"email": "\u00e9" * 33 + "@example.com"}}, ([], ["INVALID_EMAIL"])),
    ("web_events", {**GOOD_WEB, "user": {"email": "\u00e9" * 32 + "@example.com"}}, OK),
    ("web_events", {**GOOD_WEB, "user": {"email": "ada@" + "b" * 64 + ".com"}}, ([], ["INVALID_EMAIL"])),
    # 254 bytes in all (64 + 1 + 61 + 1 + 61 + 1 + 61 + 4), then 255
    ("web_events", {**GOOD_WEB, "user": {"email": "a" * 64 + "@" + ("b" * 61 + ".") * 3 + "com"}}, OK),
    (
        "web_events",
        {**GOOD_WEB, "user": {"email": "a" * 64 + "@" + "b" * 62 + "." + ("b" * 61 + ".") * 2 + "com"}},
        ([], ["INVALID_EMAIL"]),
    ),
    # null-like and invisible primary keys
    ("web_events", {**GOOD_WEB, "event_id": "N/A"}, (["INVALID_KEY"], [])),
    ("web_events", {**GOOD_WEB, "event_id": " null "}, (["INVALID_KEY"], [])),
    ("web_events", {**GOOD_WEB, "event_id": 0}, (["INVALID_KEY"], [])),
    ("web_events", {**GOOD_WEB, "event_id": "\\N"}, (["INVALID_KEY"], [])),
    ("web_events", {**GOOD_WEB, "event_id": "w\u200b1"}, (["INVALID_KEY"], [])),
    ("web_events", {**GOOD_WEB, "event_id": "n/a-1"}, OK),
    # a NaN token in a text field is the quoted word "NaN" (with its quotes) to Spark
    ("web_events", json.dumps({**GOOD_WEB, "event_id": "x"}).replace('"x"', "NaN"), OK),
    ("web_events", json.dumps({**GOOD_WEB, "event_id": "x"}).replace('"x"', "-Infinity"), OK),
    # non-finite numbers: as text and as JSON tokens
    ("web_events", {**GOOD_WEB, "price": "NaN"}, (["NON_FINITE_NUMBER"], [])),
    ("web_events", {**GOOD_WEB, "price": "1e400"}, (["NON_FINITE_NUMBER"], [])),
    ("web_events", {**GOOD_WEB, "price": "-Infinity"}, (["NON_FINITE_NUMBER"], [])),
    ("web_events", json.dumps(GOOD_WEB)[:-1] + ', "price": NaN}', (["NON_FINITE_NUMBER"], [])),
    ("web_events", json.dumps(GOOD_WEB)[:-1] + ', "price": 1e400}', (["NON_FINITE_NUMBER"], [])),
    ("web_events", json.dumps(GOOD_WEB)[:-1] + ', "price": -Infinity}', (["NON_FINITE_NUMBER"], [])),
    ("web_events", {**GOOD_WEB, "price": "1e300"}, OK),
    # future (the default tolerance is a day past AS_OF) and placeholder timestamps
    ("web_events", {**GOOD_WEB, "ts": "2099-01-01T00:00:00Z"}, (["FUTURE_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "2026-12-01T11:59:00Z"}, OK),
    ("web_events", {**GOOD_WEB, "ts": "2026-12-01T12:01:00Z"}, (["FUTURE_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "1970-01-01T00:00:00Z"}, (["PLACEHOLDER_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "1970-01-01"}, (["PLACEHOLDER_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "1969-12-31T20:00:00-05:00"}, (["PLACEHOLDER_TIMESTAMP"], [])),
    ("web_events", {**GOOD_WEB, "ts": "1970-01-02T00:00:01Z"}, OK),
    ("web_events", {**GOOD_WEB, "ts": "1900-01-01T00:00:00Z"}, (["PLACEHOLDER_TIMESTAMP"], [])),
    # web_events with price `on_invalid: warn` and a one-hour tolerance
    ("web_warn", {**GOOD_WEB, "price": "NaN"}, ([], ["NON_FINITE_NUMBER"])),
    ("web_warn", json.dumps(GOOD_WEB)[:-1] + ', "price": 1e400}', ([], ["NON_FINITE_NUMBER"])),
    ("web_warn", {**GOOD_WEB, "price": "cheap"}, ([], ["INVALID_TYPE"])),
    ("web_warn", {**GOOD_WEB, "ts": "2026-11-30T12:59:00Z"}, OK),
    ("web_warn", {**GOOD_WEB, "ts": "2026-11-30T13:01:00Z"}, (["FUTURE_TIMESTAMP"], [])),
    ("email_events", GOOD_EMAIL, OK),
    ("email_events", {**GOOD_EMAIL, "email": "ada at example.com"}, (["INVALID_EMAIL"], [])),
    (
        "email_events",
        {**GOOD_EMAIL, "email": "", "occurred_at": "not a time"},
        (["INVALID_TIMESTAMP", "MISSING_REQUIRED"], []),
    ),
    # a required email: refused
    ("email_events", {**GOOD_EMAIL, "email": "ada\u200b@example.com"}, (["INVALID_EMAIL"], [])),
    ("email_events", {**GOOD_EMAIL, "email": "a" * 65 + "@example.com"}, (["INVALID_EMAIL"], [])),
    (
        "email_events",
        {**GOOD_EMAIL, "event_id": "N/A", "occurred_at": "2099-12-31T00:00:00Z"},
        (["FUTURE_TIMESTAMP", "INVALID_KEY"], []),
    ),
    # nested doubles: an order line's NaN price refuses the order
    ("shop_orders", "ORDER", OK),
    ("shop_orders", "ORDER_NAN", (["NON_FINITE_NUMBER"], [])),
]


def _sources() -> dict:
    sources = {
        n: as_json_messages(s)
        for n, s in load_sources(REPO_ROOT / "conf").items()
        if n in ("web_events", "email_events", "shop_orders")
    }
    web = sources["web_events"]
    sources["web_warn"] = web.model_copy(
        update={
            "checks": {**web.checks, "price": FieldCheck(on_invalid="warn")},
            "future_tolerance_minutes": 60,
        }
    )
    return sources


def _order_texts(source) -> dict[str, str]:
    """A valid shop_orders message built from its config, and the same with a NaN unit price."""
    order: dict = {}
    for column in source.columns:
        if column.name == "email":
            order["email"] = "ada@example.com"
        elif column.name == "items":
            order["items"] = [{"sku": "P1", "qty": 1, "unit_price": 9.5}]
        elif column.type == "timestamp":
            order[column.name] = "2026-10-01T10:00:00Z"
        elif column.type in ("double", "int", "bigint"):
            order[column.name] = 1
        elif column.type == "string":
            order[column.name] = f"{column.name}-1"
    text = json.dumps(order)
    return {"ORDER": text, "ORDER_NAN": text.replace("9.5", "NaN")}


# 17-21 s in make test (two workers on two cores): the full suite's tier
@pytest.mark.slow
def test_row_validator_gives_the_spark_validators_reasons(spark):
    from pyspark.sql import functions as F

    from lakecdp.ingest.validate import parse_and_validate

    sources = _sources()
    orders = _order_texts(sources["shop_orders"])
    texts = [orders.get(e, e) if isinstance(e, str) else json.dumps(e) for _, e, _ in CASES]
    for name in sources:
        cases = [i for i, (n, _, _) in enumerate(CASES) if n == name]
        raw = spark.createDataFrame([(texts[i], i) for i in cases], "raw string, line bigint")
        checked = (
            parse_and_validate(raw, sources[name], as_of=AS_OF)
            .select("line", F.array_sort("_reasons").alias("reasons"), F.array_sort("_warnings").alias("warnings"))
            .collect()
        )
        oracle = {r["line"]: (list(r["reasons"]), list(r["warnings"])) for r in checked}
        # the intake's decoder (orjson; the standard parser for NaN, Infinity and 1e400, which become floats)
        events = [parse_json_body(texts[i].encode()).value for i in cases]
        batch = validate_events(events, sources[name], as_of=AS_OF)
        for i, event, in_batch in zip(cases, events, batch):
            problems = validate_event(event, sources[name], as_of=AS_OF)
            assert in_batch == problems, f"case {i}: in a batch {in_batch}, alone {problems}"
            ours = (
                sorted({p.code for p in problems if p.refuses}),
                sorted({p.code for p in problems if not p.refuses}),
            )
            expected = (sorted(CASES[i][2][0]), sorted(CASES[i][2][1]))
            assert oracle[i] == expected, f"case {i} {texts[i]}: Spark {oracle[i]}, by hand {expected}"
            assert ours == expected, f"case {i} {texts[i]}: ours {ours}, by hand {expected}"


def test_java_patterns_keep_their_java_meaning():
    # Java's \s is ASCII: a no-break space is not \s (but it is \p{Z})
    assert java_regex(r"^\s$").search("\u00a0") is None
    assert java_regex(r"^[\s]$").search("\t") is not None
    assert java_regex(r"^[^\s]$").search("\u00a0") is not None
    assert java_regex(r"^[\p{Z}]$").search("\u00a0") is not None
    # Java's $ also matches before a final \r or U+2028, not only before \n
    assert java_regex(r"^a$").search("a\r") is not None
    assert java_regex(r"^a$").search("a\u2028") is not None
    assert java_regex(r"^a$").search("a\rb") is None
    # a ] first in a class is a member, and a $ inside a class is literal
    assert java_regex(r"^[]$]+$").search("]$") is not None


UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-31T12:00:00Z", datetime(2026, 10, 31, 12, tzinfo=UTC)),
        ("2026-10-31T12:00:00.1Z", datetime(2026, 10, 31, 12, 0, 0, 100000, tzinfo=UTC)),
        (
            "2026-10-31T12:00:00.123456-05:30",
            datetime(2026, 10, 31, 12, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2026-10-31T12:00:00+18:00", datetime(2026, 10, 31, 12, tzinfo=timezone(timedelta(hours=18)))),
        ("2026-10-31T12:00:00+00:00", datetime(2026, 10, 31, 12, tzinfo=UTC)),
        # beyond the fast path's shape: the text parser (7 fraction digits cut to 6, no zone: UTC, a space)
        ("2026-10-31T12:00:00.1234567Z", datetime(2026, 10, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-10-31 12:00:00", datetime(2026, 10, 31, 12, tzinfo=UTC)),
        (" 2026-10-31T12:00:00Z ", datetime(2026, 10, 31, 12, tzinfo=UTC)),
        # refused either way
        ("2026-10-31T12:00:00+19:00", None),
        ("2026-02-30T00:00:00Z", None),
        ("2026-10-31T24:00:00Z", None),
        ("2026-10-31T12:00:60Z", None),
        ("\u0662\u0660\u0662\u0666-10-31T12:00:00Z", datetime(2026, 10, 31, 12, tzinfo=UTC)),  # Arabic-Indic digits
    ],
)
def test_timestamps_parse_alike_on_the_fast_path_and_the_text_parser(text, expected):
    assert parse_timestamp(text) == expected
    assert _parse_timestamp_text(text) == expected


def test_a_batch_gives_each_event_its_own_findings():
    web = _sources()["web_events"]
    batch = [
        GOOD_WEB,
        {**GOOD_WEB, "event_id": "w-2", "ts": "yesterday", "price": "cheap"},
        "not an object",
        {**GOOD_WEB, "event_id": "w-4", "user": "ada"},
        {**GOOD_WEB, "event_id": "N/A", "user": {"email": "ada at example"}},
        {**GOOD_WEB, "event_id": "w-6"},
    ]
    found = [[(p.code, p.field, p.refuses) for p in problems] for problems in validate_events(batch, web, as_of=AS_OF)]
    assert found == [
        [],
        [("INVALID_TIMESTAMP", "ts", True), ("INVALID_TYPE", "price", True)],
        [("MALFORMED_LINE", "event", True)],
        [("MALFORMED_LINE", "user", True)],
        [("INVALID_KEY", "event_id", True), ("INVALID_EMAIL", "user.email", False)],
        [],
    ]


@pytest.mark.parametrize(
    ("raw", "strict", "expected"),
    [
        (b'{"price": 1.5, "n": 3}', True, {"price": 1.5, "n": 3}),
        # orjson refuses these tokens; the standard parser reads them, the validator names the field
        (b'{"price": NaN}', False, {"price": float("nan")}),
        (b'{"price": 1e400}', False, {"price": float("inf")}),
        (b'{"price": -Infinity}', False, {"price": float("-inf")}),
        # orjson would read these as floats (beyond 64 bits): the standard parser keeps the integers
        (b'{"n": 123456789012345678901}', False, {"n": 123456789012345678901}),
        (b'{"n": -9223372036854775809}', False, {"n": -9223372036854775809}),
    ],
)
def test_bodies_decode_as_the_standard_parser_reads_them(raw, strict, expected):
    body = parse_json_body(raw)
    assert body.strict is strict
    assert json.dumps(body.value) == json.dumps(expected)
    assert all(type(body.value[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b'{"a": 1', "MALFORMED_JSON", "body is not JSON: Expecting ',' delimiter at line 1 column 8"),
        (b'{"a": "\xff"}', "BAD_ENCODING", "body is not UTF-8 (byte 7)"),
        (b'{"a": "\\ud800"}', "BAD_ENCODING", "body holds a lone surrogate escape"),
    ],
)
def test_bodies_that_are_not_json_text_are_refused_whole(raw, code, message):
    with pytest.raises(ApiError) as refused:
        parse_json_body(raw)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert refused.value.message.startswith(message)
