"""The embedded batch ingest's row picks and line counts, without an engine: which row per key
silver keeps (the first event per event id; the latest record version per record id), and the
landing scan's non-blank line count with and without CR line breaks. Expected values by hand."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow as pa

from lakecdp.ingest.landing import _scan
from lakecdp.ingest.writes import _first_per_key


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=timezone.utc)


def test_first_row_per_key_a_null_key_is_one_key() -> None:
    keys = pa.chunked_array([pa.array(["b", "a", None, "b", None, "c", "a"], pa.string())])
    assert _first_per_key(keys).to_pylist() == [0, 1, 2, 5]


def test_latest_row_per_key_nulls_last_first_of_equals() -> None:
    #           0       1        2       3       4        5       6       7
    ids = ["r1", "r1", "r1", "r2", "r2", "r3", "r3", "r4"]
    stamps = [_at(1), _at(3), _at(3), None, _at(2), None, None, _at(5)]
    keys = pa.chunked_array([pa.array(ids, pa.string())])
    latest = pa.chunked_array([pa.array(stamps, pa.timestamp("us", tz="UTC"))])
    # r1: day 3 first seen at 1 (2 is equal, not newer); r2: the dated row 4; r3: all null -> first; r4: 7
    assert _first_per_key(keys, latest_by=latest).to_pylist() == [1, 4, 5, 7]


def test_scan_counts_non_blank_lines_at_any_line_break() -> None:
    for data, lines, first_filled in [
        (b"\xef\xbb\xbfa\nb\n\n   \nc", 3, True),
        (b"\xef\xbb\xbf  \r\na\rb\r\n\r\n", 2, False),
        (b"a\r\n \nb\n", 2, True),
        (b"", 0, False),
        (b"\n\n", 0, False),
    ]:
        _hash, counted, filled = _scan(io.BytesIO(data), count_lines=True)
        assert (counted, filled) == (lines, first_filled), data
