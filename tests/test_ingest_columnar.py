"""The columnar read of plain lines (lakecdp.ingest.columnar) against the line parser.

The oracle is the line parser the embedded batch ingest used for every line
(:func:`lakecdp.ingest.embedded.parse_json_line` + :func:`~lakecdp.ingest.embedded.as_read`,
:func:`lakecdp.ingest.embedded_batch.parse_csv_line`; checked against Spark's reader by the engine
tests): on generated nasty lines -- escapes, control characters, repeated and unknown keys, every
kind of JSON number, quotes, separators, NUL, short and long rows -- a line the columnar reader
reads must be one the line parser reads with no structural finding and the same fields; and on
generated nasty files (CRLF, lone CR, a BOM, blank lines, a header, quoted fields across lines,
invalid UTF-8) the whole read, then the validation, must give every row the same line number,
fields, reasons, warnings and detail with the columnar reader as without it. The hand-written
cases pin what the reader reads (so that it is not "read nothing", correct but slow).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import example, given, HealthCheck, settings
from hypothesis import strategies as st

from lakecdp.ingest.columnar import csv_fields, json_fields
from lakecdp.ingest.embedded import as_read, check_parsed, parse_json_line
from lakecdp.ingest.embedded_batch import _csv_layout, parse_csv_line, read_files
from lakecdp.ingest.landing import LandedFile
from lakecdp.ingest.sources import SourceConfig

AS_OF = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)

JSON_SOURCE = SourceConfig.model_validate(
    {
        "version": 1,
        "name": "web",
        "format": "jsonl",
        "path": "web/*.jsonl",
        "columns": [
            {"name": "event_id"},
            {"name": "ts", "type": "timestamp"},
            {"name": "price", "type": "double"},
            {"name": "n", "type": "int"},
            {"name": "ok", "type": "boolean"},
            {"name": "user", "type": "struct<email:string,customer_no:string>"},
        ],
        "primary_key": ["event_id"],
        "event_time": "ts",
        "target": "events",
        "required": ["event_id", "ts"],
        "checks": {"user.email": {"email": True, "on_invalid": "warn"}},
        "drop_existing_keys": True,
        "mapping": {"event_id": "event_id", "occurred_at": "ts"},
    }
)
CSV_SOURCE = SourceConfig.model_validate(
    {
        "version": 1,
        "name": "mail",
        "format": "csv",
        "options": {"sep": ",", "quote": '"', "escape": '"', "header": "true"},
        "path": "mail/*.csv",
        "columns": [{"name": "event_id"}, {"name": "email"}, {"name": "occurred_at", "type": "timestamp"}],
        "primary_key": ["event_id"],
        "event_time": "occurred_at",
        "target": "events",
        "required": ["event_id", "occurred_at"],
        "checks": {"email": {"email": True}},
        "drop_existing_keys": True,
        "mapping": {"event_id": "event_id", "occurred_at": "occurred_at", "email": "email"},
    }
)
HEADER = ["event_id", "email", "occurred_at"]


def _oracle_json(raw: str) -> dict | None:
    """The line parser's fields as read, or None when it finds something structural."""
    parsed = parse_json_line(raw)
    return None if parsed.structural else as_read(parsed.event, JSON_SOURCE)


# -- JSON lines -----------------------------------------------------------------------------------

#: number tokens of every kind: the ones as_text writes back as written, and the ones it does not
NUMBER = st.one_of(
    st.sampled_from(
        ["0", "-0", "0.0", "-0.0", "10.0", "10.50", "154.99", "1e5", "1E-2", "0.001", "0.0001", "1234567.0",
         "12345678.5", "0.1234567890123456", "123456789012345678", "1234567890123456789012", "01", "-1",
         ".5", "1.", "NaN", "Infinity", "-Infinity", "1.0000000000000002", "9999999.999999999"]
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)  # fmt: skip
TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_characters="\n\r"),
        st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\ufffd", "é", " ", ",", ":", "{", "}"]),
    ),
    max_size=8,
)
#: a JSON string token: plain, or with json.dumps' escapes (\", \\, \uXXXX)
STRING = st.one_of(
    TEXT.map(lambda t: '"' + t.replace('"', "").replace("\\", "") + '"'),
    TEXT.map(json.dumps),
    TEXT.map(lambda t: json.dumps(t, ensure_ascii=False)),
)
SCALAR = st.one_of(STRING, NUMBER, st.sampled_from(["null", "true", "false", "[]", '["a"]', "{}", '{"a":"b"}']))
INNER = st.lists(st.tuples(st.sampled_from(["email", "customer_no", "other", "event_id"]), SCALAR), max_size=3).map(
    lambda members: "{" + ",".join(f'"{k}":{v}' for k, v in members) + "}"
)
KEY = st.sampled_from(["event_id", "ts", "price", "n", "ok", "user", "extra", "Event_id", "ev\\u0065nt_id"])
MEMBER = st.tuples(KEY, st.one_of(SCALAR, INNER))
SPACE = st.sampled_from(["", "", "", " ", "\t", "  "])


@st.composite
def json_line(draw: st.DrawFn) -> str:
    members = draw(st.lists(MEMBER, max_size=7))
    glue = draw(SPACE)
    body = "{" + ",".join(f'{glue}"{k}"{draw(SPACE)}:{v}' for k, v in members) + "}"
    return draw(
        st.sampled_from(
            [body, body, body, " " + body, body + " ", body[:-1], body + "x", f"[{body}]", body.replace(":", "", 1)]
        )
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"event_id":"w-1","ts":"2026-05-04T11:58:17.524+02:00","price":154.99,"n":12,"ok":true,'
        '"user":{"email":"a@b.de","customer_no":"S1"}}',
        '{"event_id":"","price":10.0,"user":null}',
        '{"user":{"email":"é@b.de"},"price":0.001,"n":-5}',
        '{"event_id":"a:b,c","ok":false,"user":{}}',  # a separator inside a text: no member
        "{}",
    ],
)
def test_plain_json_lines_are_read_as_the_line_parser_reads_them(raw: str) -> None:
    assert json_fields([raw], JSON_SOURCE) == [_oracle_json(raw)]
    assert _oracle_json(raw) is not None


@pytest.mark.parametrize(
    "raw",
    [
        '{"event_id":"a","event_id":"b"}',  # the line parser keeps the last, DuckDB the first
        '{"user":{"email":"a","email":"b"}}',
        '{"event_id":null,"event_id":null}',  # a repeated key, null both times
        '{"user":null,"user":{"email":"a"}}',
        '{"user":{"email":"a"},"user":{"customer_no":"b"}}',  # the same object key, other fields
        '{"price":10.50}',  # as read: 10.5
        '{"price":1e5}',  # as read: 100000.0
        '{"n":-0}',  # as read: 0
        '{"event_id":"a\\"b"}',
        '{"event_id": "a"}',
        '{"extra":"x"}',  # rescued
        '{"event_id":{"a":"b"}}',
    ],
)
def test_lines_the_reader_cannot_prove_go_the_line_parser(raw: str) -> None:
    assert json_fields([raw], JSON_SOURCE) == [None]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_line(), min_size=1, max_size=30))
def test_json_lines_read_as_columns_equal_the_line_parser(raws: list[str]) -> None:
    for raw, read in zip(raws, json_fields(raws, JSON_SOURCE)):
        if read is not None:
            assert read == _oracle_json(raw), raw


def test_a_source_with_other_nested_columns_is_read_by_the_line_parser() -> None:
    source = JSON_SOURCE.model_copy(
        update={
            "columns": [
                *JSON_SOURCE.columns,
                JSON_SOURCE.columns[0].model_copy(update={"name": "tags", "type": "array<string>"}),
            ]
        }
    )
    assert json_fields(['{"event_id":"a"}'], source) == [None]


# -- CSV lines ------------------------------------------------------------------------------------

FIELD = st.text(st.sampled_from(["a", "é", " ", '"', ",", "\x00", "1", "@", "\ufffd", "\t"]), max_size=5)


@st.composite
def csv_line(draw: st.DrawFn) -> str:
    return ",".join(draw(st.lists(FIELD, min_size=1, max_size=5)))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(csv_line(), min_size=1, max_size=30), st.permutations(HEADER))
def test_csv_lines_read_as_columns_equal_the_line_parser(raws: list[str], header: list[str]) -> None:
    layout = _csv_layout(CSV_SOURCE, header)
    got = csv_fields(raws, CSV_SOURCE, header)
    for raw, read in zip(raws, got):
        parsed = parse_csv_line(raw, CSV_SOURCE, header, layout)
        if read is not None:
            assert parsed.structural == ()
            assert read == parsed.event, raw
    # a quote-free line of the header's field count is always read here
    assert all(
        r is not None for raw, r in zip(raws, got) if '"' not in raw and "\x00" not in raw and raw.count(",") == 2
    )


def test_a_csv_header_with_unknown_columns_reads_no_line_as_columns() -> None:
    assert csv_fields(["a,b,c,d"], CSV_SOURCE, [*HEADER, "extra"]) == [None]
    assert csv_fields(["a,,c"], CSV_SOURCE, HEADER) == [{"event_id": "a", "email": None, "occurred_at": "c"}]


# -- whole files: line numbers, structure and validation ------------------------------------------

BREAK = st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\n  \n"])


@st.composite
def landed_bytes(draw: st.DrawFn, line: st.SearchStrategy[str], header: str | None) -> bytes:
    lines = draw(st.lists(line, max_size=12))
    text = ""
    for one in lines:
        text += one + draw(BREAK)
    data = text.encode("utf-8")
    if data and draw(st.booleans()):
        # invalid UTF-8 somewhere after the header (U+FFFD once decoded: BAD_ENCODING)
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82"])) + data[at:]
    if header is not None:
        data = header.encode("utf-8") + draw(BREAK).encode("utf-8") + data
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


def _both_ways(tmp: Path, source: SourceConfig, data: bytes) -> None:
    path = tmp / "f.txt"
    path.write_bytes(data)
    _read_both_ways(source, LandedFile(path, "f.txt", len(data), "h"))


def _read_both_ways(source: SourceConfig, file: LandedFile) -> None:
    ctx = SimpleNamespace(as_of=AS_OF)
    columnar = read_files(ctx, source, [file], columnar=True)  # type: ignore[arg-type]
    lines = read_files(ctx, source, [file], columnar=False)  # type: ignore[arg-type]
    assert columnar.rows == lines.rows  # the physical line numbers and raw texts
    assert columnar.header_problems == lines.header_problems
    assert all(line is not None for line in lines.parsed)
    read = columnar.columns
    fields = dict(zip(read.rows, read.table.to_pylist())) if read.rows else {}
    for i, (ours, theirs) in enumerate(zip(columnar.parsed, lines.parsed, strict=True)):
        if ours is None:
            # read as columns: no structural finding, the line parser's fields as read
            assert theirs.structural == ()
            assert fields[i] == as_read(theirs.event, source)
        else:
            assert i not in fields
            assert (ours.event, ours.structural, ours.detail) == (theirs.event, theirs.structural, theirs.detail)
    ours_checked = check_parsed(columnar.rows, columnar.parsed, source, as_of=AS_OF, columns=read)
    their_checked = check_parsed(lines.rows, lines.parsed, source, as_of=AS_OF)
    for ours_row, their_row in zip(ours_checked, their_checked, strict=True):
        assert (ours_row.topic, ours_row.offset) == (their_row.topic, their_row.offset)
        assert (ours_row.reasons, ours_row.warnings, ours_row.detail, ours_row.nulled) == (
            their_row.reasons, their_row.warnings, their_row.detail, their_row.nulled,
        )  # fmt: skip
        if ours_row.reasons or ours_row.warnings:
            # a row with a finding carries the line parser's object
            assert ours_row.event == their_row.event


GOOD_JSON = st.sampled_from(
    [
        '{"event_id":"w-1","ts":"2026-05-04T11:58:17.524+02:00","price":154.99,"user":{"email":"a@b.de"}}',
        '{"event_id":"w-2","ts":"2026-05-04T11:58:17Z","user":{"email":"not an email"}}',
        '{"event_id":"w-3","ts":"2099-01-01T00:00:00Z"}',
        '{"event_id":"w-4"}',
    ]
)
CSV_FILE_LINE = st.one_of(
    csv_line(),
    st.sampled_from(["e-1,a@b.de,2026-05-04T11:58:17Z", 'e-2,"a,b",2026-05-04T11:58:17Z', 'e-3,"multi', 'line",x']),
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=landed_bytes(st.one_of(json_line(), GOOD_JSON), None))
def test_a_json_file_reads_and_validates_alike_with_columns(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    _both_ways(tmp_path_factory.mktemp("j"), JSON_SOURCE, data)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=landed_bytes(CSV_FILE_LINE, ",".join(HEADER)))
def test_a_csv_file_reads_and_validates_alike_with_columns(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    _both_ways(tmp_path_factory.mktemp("c"), CSV_SOURCE, data)


# -- Parquet files of texts: read as columns from the file itself ------------------------------------

PARQUET_SOURCE = JSON_SOURCE.model_copy(
    update={"format": "parquet", "path": "web/*.parquet", "columns": [c for c in JSON_SOURCE.columns if c.is_scalar]}
)
PARQUET_TEXT = st.one_of(st.none(), TEXT, st.sampled_from(['a"b', "a\\b", "x\ny", "\x01", "\ufffd", "", " "]))


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(PARQUET_TEXT, PARQUET_TEXT, PARQUET_TEXT), max_size=12),
    names=st.sampled_from([("event_id", "ts", "price"), ("ok", "ts", "event_id"), ("event_id", "ts", "extra")]),
)
def test_a_parquet_file_of_texts_reads_and_validates_alike_with_columns(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple], names: tuple[str, str, str]
) -> None:
    """Every row of a file of text columns the source names is read as columns (a column the
    source does not name, ``extra``, sends the file the line parser's way); either way the same
    fields, reasons, warnings and details as the lines (Spark's to_json) parsed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("p") / "f.parquet"
    columns = list(zip(*rows)) if rows else [(), (), ()]
    pq.write_table(pa.table({n: pa.array(list(c), pa.string()) for n, c in zip(names, columns)}), path)
    file = LandedFile(path, "f.parquet", path.stat().st_size, "h")
    read = read_files(SimpleNamespace(as_of=AS_OF), PARQUET_SOURCE, [file], columnar=True)  # type: ignore[arg-type]
    assert read.columns.rows == ([] if "extra" in names else list(range(len(rows))))
    _read_both_ways(PARQUET_SOURCE, file)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8)),
    header=st.booleans(),
    bom=st.booleans(),
    last_break=st.booleans(),
)
def test_a_files_lines_cut_from_its_bytes_are_its_raws(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], header: bool, bom: bool, last_break: bool
) -> None:
    """The Arrow lines the columnar readers get equal the line list's raws (blank lines, the
    header and a BOM left out); they are cut from the bytes only for UTF-8 with LF breaks ending in one."""
    from lakecdp.ingest.embedded_batch import _file_lines

    text = "\n".join(lines) + ("\n" if last_break else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    path = tmp_path_factory.mktemp("l") / "f.txt"
    path.write_bytes(data)
    out, array = _file_lines(LandedFile(path, "f.txt", len(data), "h"), skip_header=header)
    # the line list by hand: 1-based physical lines, not blank (spaces only), the header skipped
    pieces = text.split("\n")
    expected = [(n, raw) for n, raw in enumerate(pieces, start=1) if raw.strip(" ") and not (header and n == 1)]
    assert out == expected
    if text.endswith("\n") and expected:
        assert array is not None
        assert array.to_pylist() == [raw for _n, raw in expected]
    else:
        assert array is None


def test_a_file_with_a_carriage_return_or_bad_utf8_has_no_lines_cut_from_bytes(tmp_path: Path) -> None:
    from lakecdp.ingest.embedded_batch import _file_lines

    for name, data in (("cr", b"a\r\nb\n"), ("bad", b"a\xff\nb\n")):
        path = tmp_path / name
        path.write_bytes(data)
        out, array = _file_lines(LandedFile(path, name, len(data), "h"), skip_header=False)
        assert array is None
        assert out == ([(1, "a"), (2, "b")] if name == "cr" else [(1, "a\ufffd"), (2, "b")])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.binary(max_size=6).map(lambda b: b.replace(b"\r", b" ").replace(b"\n", b" "))),
    header=st.booleans(),
    bom=st.booleans(),
)
@example(lines=[b"\xef\xbb\xbfa"], header=False, bom=False)  # a first line that begins with a BOM
def test_a_files_lines_with_any_bytes_are_the_decoded_lines(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], header: bool, bom: bool
) -> None:
    """Any bytes (invalid UTF-8 too, spaces, a BOM) with LF breaks: the line list is the file
    decoded with U+FFFD for what is not UTF-8, split at LF, blank lines (spaces only) and the
    header left out; Arrow lines only when the bytes are valid UTF-8."""
    from lakecdp.ingest.embedded_batch import _file_lines

    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + b"\n" for line in lines)
    path = tmp_path_factory.mktemp("b") / "f.txt"
    path.write_bytes(data)
    out, array = _file_lines(LandedFile(path, "f.txt", len(data), "h"), skip_header=header)
    if not bom and lines and lines[0].startswith(b"\xef\xbb\xbf"):
        # the file begins with a byte order mark all the same: not part of line 1
        lines = [lines[0][3:], *lines[1:]]
    # by hand: each line decoded on its own (a break is never part of an invalid sequence)
    texts = [line.decode("utf-8", errors="replace") for line in lines]
    expected = [(n, raw) for n, raw in enumerate(texts, start=1) if raw.strip(" ") and not (header and n == 1)]
    assert out == expected
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert array is None
    else:
        assert (array.to_pylist() if array is not None else []) == [raw for _n, raw in expected]
