"""The embedded batch ingest's row picks and line counts, without an engine: which row per key
silver keeps (the first event per event id; the latest record version per record id), the
classification of a batch's rows (read as columns or by the line parser) and the landing scan's
non-blank line count with and without CR line breaks. Expected values by hand."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow as pa

from lakecdp.ingest.embedded import CheckedRow, ReadColumns, Reads
from lakecdp.ingest.embedded_batch import classify_rows
from lakecdp.ingest.landing import _scan
from lakecdp.ingest.sources import SourceConfig
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
    # the last: whether the bytes hold no carriage return (read_lines then splits at LF alone)
    for data, lines, first_filled, lf_only in [
        (b"\xef\xbb\xbfa\nb\n\n   \nc", 3, True, True),
        (b"\xef\xbb\xbf  \r\na\rb\r\n\r\n", 2, False, False),
        (b"a\r\n \nb\n", 2, True, False),
        (b"a\nb\rc", 3, True, False),
        (b"", 0, False, True),
        (b"\n\n", 0, False, True),
    ]:
        _hash, counted, filled, no_cr = _scan(io.BytesIO(data), count_lines=True)
        assert (counted, filled, no_cr) == (lines, first_filled, lf_only), data
    # a carriage return in a later 1 MiB block counts too
    assert _scan(io.BytesIO(b"a\n" * (1 << 20) + b"b\rc\n"), count_lines=True)[1:] == ((1 << 20) + 2, True, False)
    # not text (Parquet): no line is counted and no line break claimed
    assert _scan(io.BytesIO(b"PAR1\n"), count_lines=False)[1:] == (0, False, False)


def test_scan_counts_lines_across_blocks_as_a_plain_split_does() -> None:
    """LF-only blocks are counted in numpy: random files (BOMs, blanks, CRs, lines past 1 MiB)
    against a count written here with ``re.split`` over the whole bytes."""
    import random
    import re

    def oracle(data: bytes) -> tuple[int, bool, bool]:
        pieces = re.split(rb"\r\n|\r|\n", data)
        if pieces and pieces[-1] == b"":
            pieces = pieces[:-1]
        pieces = [p.removeprefix(b"\xef\xbb\xbf") if i == 0 else p for i, p in enumerate(pieces)]
        filled = [p.strip(b" ") != b"" for p in pieces]
        return sum(filled), bool(filled and filled[0]), b"\r" not in data

    pick = random.Random(26)
    bits = [b"a", b" ", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"x,y", b"  \n", b"\n\n"]
    lines = [b"abc,def\n", b"   \n", b"\n", b"x" * 300 + b"\n"]
    big = b"".join(pick.choice(lines) for _ in range(12000))  # ~1.2 MiB: two blocks
    cases = [b"".join(pick.choice(bits) for _ in range(pick.randint(0, 30))) for _ in range(2000)]
    cases += [big, b"\xef\xbb\xbf" + big, big + b"tail", b" " * (1 << 20) + b"\n" + big, big + b"\r\n" + big]
    for data in cases:
        assert _scan(io.BytesIO(data), count_lines=True)[1:] == oracle(data), data[:60]


def test_lf_lines_and_their_blanks_as_a_plain_split_finds_them() -> None:
    """LF positions found a block at a time, and which lines hold a byte other than a space (by
    their first byte, or every byte past 4,096 lines opening with a space), against ``bytes.split``."""
    import random

    import numpy as np

    from lakecdp.ingest.landing import filled_lf_lines, lf_ends

    def oracle(data: bytes, skip: int) -> tuple[list[int], list[bool]]:
        ends = [k for k, byte in enumerate(data) if byte == 10]
        pieces = data.split(b"\n")[:-1]
        return ends, [bool((p[skip:] if k == 0 else p).strip(b" ")) for k, p in enumerate(pieces)]

    pick = random.Random(27)
    bits = [b"", b" ", b"  ", b"a", b" a", b"a ", b"  b  ", b"\xef\xbb\xbf", b" \xef", b"x\ty"]
    cases = [b"\n".join(pick.choice(bits) for _ in range(pick.randint(1, 30))) + b"\n" for _ in range(1500)]
    cases += [b"\xef\xbb\xbf" + case for case in cases[:300]]
    # past one block, and past 4,096 space-led lines (then every byte is looked at)
    cases += [b"".join(pick.choice([b"  x\n", b"   \n", b"\n", b"y\n"]) for _ in range(300_000))]
    for data in cases:
        skip = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        octets = np.frombuffer(data, np.uint8)
        ends, filled = oracle(data, skip)
        assert lf_ends(octets).tolist() == ends
        assert filled_lf_lines(octets, np.asarray(ends, np.int64), skip=skip).tolist() == filled, data[:60]


# -- classification: versions ranked over rows read as columns and rows read by the line parser ------

RECORDS = SourceConfig.model_validate(
    {
        "version": 1,
        "name": "people",
        "format": "jsonl",
        "path": "people/*.jsonl",
        "columns": [{"name": "id"}, {"name": "ts", "type": "timestamp"}],
        "primary_key": ["id"],
        "event_time": "ts",
        "target": "customer_records",
        "mapping": {"source_record_id": "id", "updated_at": "ts"},
    }
)


def _row(line: int, *, refused: bool = False) -> CheckedRow:
    return CheckedRow(
        "raw", "people/f.jsonl", 0, line, _at(9), None, ["MISSING_REQUIRED"] if refused else [], [], None, frozenset()
    )


def _reads(source: SourceConfig, dicts: dict[int, str | None], columns: dict[int, str | None]) -> Reads:
    """Rows ``dicts`` as the line parser's fields, rows ``columns`` as read as columns (ids only)."""
    table = pa.table({"id": pa.array(list(columns.values()), pa.string()), "ts": pa.nulls(len(columns), pa.string())})
    return Reads({i: {"id": v, "ts": None} for i, v in dicts.items()}, source, ReadColumns(list(columns), table, True))


def test_the_latest_version_per_record_id_is_loaded_a_null_id_is_one_key() -> None:
    # rows 0, 1, 3 by the line parser (ids a, a, b), 4, 5, 6 as columns (c, c, null); row 2 refused
    reads = _reads(RECORDS, {0: "a", 1: "a", 3: "b"}, {4: "c", 5: "c", 6: None})
    checked = [_row(n + 1, refused=n == 2) for n in range(7)]
    # valid rows 0, 1, 3, 4, 5, 6: a's newer version is row 1; c's two have no time: the later line wins
    stamps = pa.array([_at(1), _at(3), _at(2), None, None, _at(1)], pa.timestamp("us"))
    status = classify_rows(checked, stamps, RECORDS, set(), {6}, reads)
    assert status == ["duplicate", "loaded", "quarantined", "loaded", "duplicate", "loaded", "erased"]


def test_an_event_id_loaded_before_or_earlier_in_the_run_is_a_duplicate() -> None:
    events = RECORDS.model_copy(update={"target": "events", "drop_existing_keys": True})
    reads = _reads(events, {0: "a", 2: "b"}, {1: "a", 3: "c", 4: "b"})
    checked = [_row(n + 1) for n in range(5)]
    # the first line per id is loaded unless the id was loaded by a completed file (c)
    status = classify_rows(checked, None, events, {("c",)}, set(), reads)
    assert status == ["loaded", "duplicate", "loaded", "duplicate", "duplicate"]
