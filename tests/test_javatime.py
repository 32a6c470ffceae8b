"""Java date/time patterns as Spark's try_to_date / try_to_timestamp read them (lakecdp.ingest.javatime).

The expectations are written by hand from Spark 4.2's answers (CORRECTED parser policy, UTC
session), probed once with ``try_to_date(v, pattern)`` / ``try_to_timestamp(v, pattern)``;
tests/test_ingest_engines.py compares a whole crm ingest with Spark's.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from lakecdp.ingest.javatime import UnsupportedPattern, java_time_parser

D = date
T = datetime


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("dd/MM/yyyy", "01/02/2020", D(2020, 2, 1)),
        ("dd/MM/yyyy", "29/02/2020", D(2020, 2, 29)),
        ("dd/MM/yyyy", "29/02/2019", None),  # STRICT: no 29 February in 2019
        ("dd/MM/yyyy", "31/02/2020", None),
        ("dd/MM/yyyy", "32/01/2020", None),
        ("dd/MM/yyyy", "00/01/2020", None),
        ("dd/MM/yyyy", "01/13/2020", None),
        ("dd/MM/yyyy", "1/2/2020", None),  # dd and MM: exactly two digits
        ("dd/MM/yyyy", "01/2/2020", None),
        ("dd/MM/yyyy", "01/02/20", None),  # two-digit year
        ("dd/MM/yyyy", "01/02/020", None),
        ("dd/MM/yyyy", "01/02/02020", None),  # more than four digits only after a +
        ("dd/MM/yyyy", "01/02/20200", None),
        ("dd/MM/yyyy", "01/02/+2020", None),
        ("dd/MM/yyyy", " 01/02/2020", None),  # not trimmed
        ("dd/MM/yyyy", "01/02/2020 ", None),
        ("dd/MM/yyyy", "", None),
        ("dd/MM/yyyy", "01-02-2020", None),
        ("dd/MM/yyyy", "2020-02-01", None),
        ("dd/MM/yyyy", "01/02/2020 10:00", None),
        ("dd/MM/yyyy", "01/02/2020T", None),
        ("dd/MM/yyyy", "\u0660\u0661/\u0660\u0662/\u0662\u0660\u0662\u0660", None),  # ASCII digits only
        ("d/M/yyyy", "1/2/2020", D(2020, 2, 1)),
        ("d/M/yyyy", "01/2/2020", D(2020, 2, 1)),
        ("d/M/yyyy", "31/02/2020", None),
        ("yyyyMMdd", "20200201", D(2020, 2, 1)),
        ("yyyyMMdd", "00010101", D(1, 1, 1)),
        ("yyyyMMdd", "2020021", None),
        ("yyyyMMdd", "202002011", None),
        ("yyyyMMdd", "19461302", None),
        ("yyyyMMdd", "20200230", None),
        ("yyyyMMdd", "+20200201", None),
        ("yyyyMMdd", " 20200201", None),
        ("MM/dd/yyyy", "02/01/2020", D(2020, 2, 1)),
        ("MM/dd/yyyy", "13/01/2020", None),
        ("MM/dd/yyyy", "02/30/2020", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 10:11:12", T(2020, 2, 1, 10, 11, 12)),
        ("yyyy-MM-dd HH:mm:ss", "1970-01-01 00:00:00", T(1970, 1, 1)),
        ("yyyy-MM-dd HH:mm:ss", "9999-12-31 23:59:59", T(9999, 12, 31, 23, 59, 59)),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01T10:11:12", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 10:11", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 24:00:00", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 23:59:60", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-2-1 10:11:12", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 10:11:12.5", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 10:11:12Z", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01 10:11:12+01:00", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01  10:11:12", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-30 10:11:12", None),
        ("yyyy-MM-dd HH:mm:ss", "2020-02-01", None),
        ("yyyy-MM-dd'T'HH:mm:ss", "2020-02-01t10:11:12", T(2020, 2, 1, 10, 11, 12)),  # case-insensitive
    ],
)
def test_what_parses_as_on_spark(pattern: str, text: str, expected: date | datetime | None) -> None:
    type_name = "timestamp" if "H" in pattern else "date"
    assert java_time_parser(pattern, type_name)(text) == expected


def test_a_date_pattern_with_a_time_gives_the_day() -> None:
    assert java_time_parser("yyyy-MM-dd HH:mm:ss", "date")("2020-02-01 23:59:59") == D(2020, 2, 1)


def test_the_known_difference_years_python_cannot_hold() -> None:
    # Spark reads these as proleptic years (-2020-02-01, 0000-02-01); a Python date cannot hold them
    parse = java_time_parser("dd/MM/yyyy", "date")
    assert (parse("01/02/-2020"), parse("01/02/0000")) == (None, None)


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("dd/MM/yy", "'yy'"),
        ("dd MMM yyyy", "'MMM'"),
        ("EEE dd/MM/yyyy", "'EEE'"),
        ("yyyy-MM-dd HH:mm:ss.SSS", "'SSS'"),
        ("yyyy-MM-dd hh:mm:ss a", "'hh'"),
        ("yyyy-MM-dd HH:mm:ssXXX", "'XXX'"),
        ("yyyy-MM-dd[ HH:mm:ss]", r"'\[ '"),
        ("yyyyMd", "'M' right after a number"),
        ("MM/yyyy", "does not give year, month and day"),
    ],
)
def test_a_letter_not_translated_is_refused(pattern: str, named: str) -> None:
    with pytest.raises(UnsupportedPattern, match=named):
        java_time_parser(pattern, "date")
