"""The row rules as DuckDB expressions (lakecdp.ingest.screen) against the Python rules.

The oracle is :func:`lakecdp.ingest.python_rules.validate_events` (itself checked against the
Spark validator in tests/test_api_validation.py): on generated values -- nulls, blanks, odd
whitespace, Unicode digits, bad dates, overflow, NaN, JSON numbers and objects -- every event the
screen passes must be one the Python rules find nothing in, and the screened validation must give
every event exactly the Python rules' findings; a text DuckDB casts must get the Python typing's
value (lakecdp.ingest.embedded._typed, the column's Java pattern). The hand-written cases below pin what the
screen passes (so that it is not "flag everything", which would be correct but slow).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.examples import examples

from lakecdp.ingest.embedded import _typed, as_read
from lakecdp.ingest.python_rules import formatted_parser, validate_events
from lakecdp.ingest.screen import cast_rows, passing, validate_screened
from lakecdp.ingest.sources import SourceConfig

AS_OF = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)

SOURCE = SourceConfig.model_validate(
    {
        "version": 1,
        "name": "screened",
        "format": "jsonl",
        "path": "screened/*.jsonl",
        "columns": [
            {"name": "id"},
            {"name": "n_int", "type": "int"},
            {"name": "n_big", "type": "bigint"},
            {"name": "amount", "type": "double"},
            {"name": "flag", "type": "boolean"},
            {"name": "day", "type": "date"},
            {"name": "at", "type": "timestamp"},
            {"name": "dob", "type": "date", "format": "dd/MM/yyyy"},
            {"name": "modified", "type": "timestamp", "format": "yyyy-MM-dd HH:mm:ss"},
            {"name": "email"},
            {"name": "name"},
            {"name": "user", "type": "struct<email:string,no:string>"},
            {"name": "tags", "type": "array<string>"},
        ],
        "primary_key": ["id"],
        "event_time": "at",
        "target": "events",
        "required": ["id", "at"],
        "checks": {
            "email": {"email": True},
            "user.email": {"email": True, "on_invalid": "warn"},
            "name": {"max_length": 10},
            "day": {"min_date": "1900-01-02", "not_future": True},
            "dob": {"min_date": "1900-01-02", "not_future": True},
        },
        "junk_values": ["none@example.com"],
        "mapping": {"event_id": "id", "occurred_at": "at"},
    }
)

GOOD = {
    "id": "e-1",
    "n_int": "12",
    "n_big": "-9000000000",
    "amount": 154.99,
    "flag": "Yes",
    "day": "2026-02-28",
    "at": "2026-05-04T11:58:17.524+02:00",
    "dob": "14/02/1939",
    "modified": "2026-03-26 23:41:42",
    "email": " Theo.Pearce503445@Gmail.com ",
    "name": "Theo",
    "user": {"email": "a@b.de", "no": "S1"},
    "tags": ["x"],
}


def _checked(field: str, value: object) -> tuple[bool, list[str]]:
    event = {**GOOD, field: value}
    clean = passing([event], SOURCE, as_of=AS_OF)
    assert clean is not None
    return clean[0], [p.code for p in validate_events([event], SOURCE, as_of=AS_OF)[0]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_int", " -2147483 "),
        ("n_int", None),
        ("n_int", "  "),
        ("amount", "1.5e10"),
        ("amount", 3),
        ("flag", "F"),
        ("at", "2026-11-02 11:59:59"),
        ("at", "1970-01-02T00:00:01Z"),
        ("dob", "29/02/2000"),
        ("modified", "1999-12-31 00:00:00"),
        ("day", "1900-01-02"),
        ("email", None),
        ("name", "abcdefghij"),
        ("id", "0x"),
    ],
)
def test_common_shapes_pass_the_screen(field, value):
    assert _checked(field, value) == (True, [])


@pytest.mark.parametrize(
    ("field", "value", "codes"),
    [
        ("n_int", "2147483648", ["INVALID_TYPE"]),
        ("n_big", "9223372036854775808", ["INVALID_TYPE"]),
        ("amount", "1e400", ["NON_FINITE_NUMBER"]),
        ("amount", float("nan"), ["NON_FINITE_NUMBER"]),
        ("flag", "maybe", ["INVALID_TYPE"]),
        ("day", "2023-02-29", ["INVALID_DATE"]),
        ("at", "2026-11-02T12:00:01Z", ["FUTURE_TIMESTAMP"]),
        ("at", "1970-01-01T05:00:00Z", ["PLACEHOLDER_TIMESTAMP"]),
        ("at", "", ["MISSING_REQUIRED"]),
        ("dob", "31/04/2000", ["INVALID_DATE"]),
        ("dob", "01/01/1899", ["IMPOSSIBLE_DATE"]),
        ("modified", "2026-03-26T23:41:42", ["INVALID_TIMESTAMP"]),
        ("email", "theo@@x.de", ["INVALID_EMAIL"]),
        ("name", "abcdefghijk", ["FIELD_TOO_LONG"]),
        ("id", " N/A ", ["INVALID_KEY"]),
        ("id", "a\u200bb", ["INVALID_KEY"]),
        ("user", "text", ["MALFORMED_LINE"]),
    ],
)
def test_broken_rules_are_flagged(field, value, codes):
    assert _checked(field, value) == (False, codes)


def _digits(low: int, high: int, width: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: str(n).zfill(width))


_PAD = st.sampled_from(["", " ", "  ", "\t", "\u00a0", "\n"])
_ISO_DATE = st.builds(
    lambda y, m, d, sep: f"{y}{sep}{m}{sep}{d}",
    _digits(0, 10000, 4),
    _digits(0, 13, 2),
    _digits(0, 32, 2),
    st.sampled_from(["-", "-", "/"]),
)
_ISO_TIMESTAMP = st.builds(
    lambda day, t, hh, mm, ss, frac, zone: f"{day}{t}{hh}:{mm}:{ss}{frac}{zone}",
    _ISO_DATE,
    st.sampled_from(["T", " ", "t"]),
    _digits(0, 25, 2),
    _digits(0, 61, 2),
    _digits(0, 61, 2),
    st.sampled_from(["", ".5", ".524", ".123456", ".1234567", "."]),
    st.sampled_from(["", "Z", "+02:00", "-18:00", "+18:00", "+19:00", "+05:60", "+0530", " UTC", "+05:30:00"]),
)
_PATTERN_DATE = st.builds(
    lambda d, m, y, sep: f"{d}{sep}{m}{sep}{y}",
    st.one_of(_digits(0, 32, 2), _digits(1, 9, 1)),
    st.one_of(_digits(0, 13, 2), _digits(1, 9, 1)),
    st.one_of(_digits(0, 10000, 4), _digits(0, 99, 2)),
    st.sampled_from(["/", "/", "-"]),
)
_NEAR_EDGES = st.sampled_from(
    [
        "1970-01-01T00:00:00Z",
        "1970-01-02T00:00:00Z",
        "1970-01-02T00:00:00.000001Z",
        "1969-12-31T00:00:00Z",
        "1900-01-02T00:00:00Z",
        "1900-01-01T23:59:59.999999Z",
        "2026-11-02T12:00:00Z",
        "2026-11-02T12:00:00.000001Z",
        "2026-11-02T14:00:00+02:00",
        "2026-11-02 12:00:00",
        "2026-11-02 12:00:01",
        "2026-11-01",
        "2026-11-02",
        "2026-11-03",
        "01/11/2026",
        "02/11/2026",
        "02/01/1900",
        "01/01/1900",
    ]
)
_NUMBER_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["1e400", "-1e308", "1.7976931348623157e308", "NaN", "Infinity", "1d", ".5", "5.", "+", "٣", "1_0"]
    ),
    st.text(alphabet="0123456789+-.eE dDfF٣", max_size=45),
)
_WORDS = st.sampled_from(
    ["", " ", "null", " N/A ", "n.a.", "000", "-", "??", "\\N", "true", "Y", "yes", "no", "0", "1", "TRUE", "yeſ"]
)
_EMAIL = st.one_of(
    st.builds(
        lambda local, domain, tld: f"{local}@{domain}.{tld}",
        st.text(alphabet="abcXYZ09._%+-é ", min_size=0, max_size=70),
        st.text(alphabet="ab-9.", min_size=0, max_size=70),
        st.text(alphabet="deKK", min_size=0, max_size=3),
    ),
    st.sampled_from(["none@example.com", " NONE@example.com ", "a@b", "a@b.c\n", "a b@c.de", "a@b..de"]),
)
TEXT = st.one_of(
    st.none(),
    _WORDS,
    _NUMBER_TEXT,
    _ISO_DATE,
    _ISO_TIMESTAMP,
    _PATTERN_DATE,
    _NEAR_EDGES,
    _EMAIL,
    st.text(max_size=14),
    st.builds(lambda pad, text, end: pad + text + end, _PAD, st.one_of(_ISO_TIMESTAMP, _NUMBER_TEXT, _WORDS), _PAD),
)
VALUE = st.one_of(
    TEXT,
    TEXT,
    TEXT,
    st.booleans(),
    st.integers(-(2**1100), 2**1100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dictionaries(st.sampled_from(["email", "no", "x"]), st.one_of(TEXT, st.integers()), max_size=3),
    st.lists(st.integers(), max_size=2),
)
EVENT = st.dictionaries(st.sampled_from(sorted(GOOD)), VALUE, max_size=6).map(lambda changed: {**GOOD, **changed})


@settings(max_examples=examples(200), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, min_size=1, max_size=25))
def test_screened_findings_are_the_python_rules(events):
    assert validate_screened(events, SOURCE, as_of=AS_OF) == validate_events(events, SOURCE, as_of=AS_OF)


@settings(max_examples=examples(200), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(GOOD)), VALUE)
def test_a_value_the_screen_passes_breaks_no_rule(field, value):
    clean, codes = _checked(field, value)
    if clean:
        assert codes == []


_TYPED = [c for c in SOURCE.columns if c.is_scalar and c.type != "string"]


def _python_typed(name: str, text: str | None) -> object:
    """The Python typing of one text (lakecdp.ingest.embedded._typed, or the column's Java pattern)."""
    parse = formatted_parser(SOURCE, name)
    if parse is not None:
        return None if text is None else parse(text)
    return _typed(text, SOURCE.column(name).type)


@settings(max_examples=examples(200), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({c.name: TEXT for c in _TYPED}), min_size=1, max_size=20))
def test_a_duckdb_cast_is_the_python_typing(texts):
    reads = {i: {**as_read(GOOD, SOURCE), **row} for i, row in enumerate(texts)}
    table, left = cast_rows(reads, sorted(reads), SOURCE)
    assert sorted([*table["_row"].to_pylist(), *left]) == sorted(reads)
    for row in table.to_pylist():
        for column in _TYPED:
            expected = _python_typed(column.name, reads[row["_row"]][column.name])
            got = row[column.name]
            assert (got, type(got)) == (expected, type(expected)), (column.name, reads[row["_row"]][column.name])


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("n_int", " -12 ", -12),
        ("amount", "1.0E-4", 0.0001),
        ("flag", "Yes", True),
        ("day", "2024-02-29", date(2024, 2, 29)),
        ("at", "2026-05-04T11:58:17.524+02:00", datetime(2026, 5, 4, 9, 58, 17, 524000)),
        ("dob", "14/02/1939", date(1939, 2, 14)),
        ("modified", "2026-03-26 23:41:42", datetime(2026, 3, 26, 23, 41, 42)),
    ],
)
def test_common_shapes_are_cast_by_duckdb(name, text, value):
    table, left = cast_rows({0: {**as_read(GOOD, SOURCE), name: text}}, [0], SOURCE)
    assert (table.column(name).to_pylist(), left) == ([value], [])
