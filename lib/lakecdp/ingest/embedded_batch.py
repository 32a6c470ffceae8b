"""Batch ingest on the embedded engine: landing files -> bronze, quarantine, silver, ops; no JVM.

:func:`lakecdp.ingest.job.ingest` hands the run here when the run's engine is ``embedded``
(path-based tables). The job's rules are the Spark path's, evaluated in Python and DuckDB and
written with delta-rs (:class:`lakecdp.delta_store.DeltaStore`):

- **files**: :func:`lakecdp.ingest.landing.discover` (the same ledger / content-hash rules and
  refused files: symbolic link, unreadable, not a regular file);
- **lines**: a file's bytes decoded as UTF-8 (invalid bytes become U+FFFD, BAD_ENCODING), split at
  LF, CRLF or a lone CR with the same physical line numbers as :func:`lakecdp.ingest.reading.read_lines`
  (a leading BOM dropped, lines of spaces skipped, a CSV header skipped and checked as there);
- **Parquet rows**: read with pyarrow, each as Spark's ``to_json`` of the row with its 1-based row
  index as line (:func:`parquet_rows`), then parsed as a JSON line -- or, for a file whose columns
  are all texts the source names, read as columns from the file itself (what the line would parse to);
- **rows**: plain lines (a JSON object of known keys without escapes, a CSV line without quotes)
  read as columns for the whole file (:mod:`lakecdp.ingest.columnar`: the same fields, no finding);
  other JSON lines as :func:`~lakecdp.ingest.embedded.parse_json_line`, CSV lines as Spark's
  ``from_csv`` with the structural checks of :func:`lakecdp.ingest.validate._as_read_csv`
  (MALFORMED_LINE for an odd number of quotes -- a quoted field across lines --, WRONG_FIELD_COUNT);
  then the field rules through :func:`~lakecdp.ingest.embedded.check_parsed` (one rule definition,
  :mod:`lakecdp.ingest.python_rules`, whose agreement with the Spark validator is tested), run
  only on the rows :mod:`lakecdp.ingest.screen`'s DuckDB query over the batch's columns flags;
- **typing**: the valid rows' texts cast by DuckDB where they have a shape the screen knows
  (:func:`lakecdp.ingest.screen.cast_rows`, equal to the Python typing on generated values), the
  rest and rows with a nulled warn-level field by :func:`~lakecdp.ingest.embedded.typed_row`;
- **classification** as :func:`lakecdp.ingest.classify.classify`: erased first, then quarantined,
  then duplicates (within the run: the first by file and line for events, the latest by event
  time for records; against keys already loaded by completed files), else loaded;
- **writes**, each idempotent (insert-if-new on the Spark MERGEs' keys), in the Spark job's order
  (bronze, quarantine, silver per source; audit, data quality and the ledger last, once per run),
  with the audit checks (:func:`~lakecdp.ingest.audit.check_lines_read`,
  :func:`~lakecdp.ingest.audit.check_audit_counts`) before anything is written.

Sources the embedded engine does not map yet (:func:`embedded_reason`: ``drift: evolve``, a Java
date/time pattern :mod:`lakecdp.ingest.javatime` does not translate, an ``also`` target other than
customer records, a Parquet file with a column type not written as Spark writes it) are ingested
by the Spark job in the same run.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import logging
import operator
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import compress, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakecdp import catalog
from lakecdp.columns import MissingColumnsError
from lakecdp.ingest import embedded
from lakecdp.ingest.columnar import csv_columns, json_columns, read_schema, reads_as_columns
from lakecdp.ingest.audit import (
    COUNTS,
    ERASED,
    STATUS_COUNT,
    check_audit_counts,
    check_lines_read,
    source_counts,
    file_reasons,
)
from lakecdp.ingest.embedded import CheckedRow, ParsedLine, RawRow, ReadColumns, check_parsed, parse_json_line
from lakecdp.ingest.landing import BOM, LINE_BREAK, LandedFile, filled_lf_lines, lf_ends, natural_key, new_files
from lakecdp.ingest.python_rules import formatted_parser
from lakecdp.ingest.reading import csv_header, repeated_columns
from lakecdp.ingest.screen import cast_rows
from lakecdp.ingest.sources import SourceConfig, load_sources
from lakecdp.ingest.validate import (
    DUPLICATE,
    DUPLICATE_HEADER,
    MALFORMED_LINE,
    UNREADABLE_FILE,
    WRONG_FIELD_COUNT,
)
from lakecdp.ingest.writes import (
    LoadedFiles,
    WriteHook,
    redelivery_keeps_records,
    write_bronze_rows,
    write_ops,
    write_quarantine_rows,
    write_silver_rows,
)
from lakecdp.sqldialect.translate import JACKSON_PLAIN, jackson_string, java_double

if TYPE_CHECKING:
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore

logger = logging.getLogger(__name__)

LEDGER = catalog.INGEST_FILES.name
AUDIT = catalog.INGEST_AUDIT.name
DATA_QUALITY = catalog.DATA_QUALITY.name
LOADED = "loaded"
QUARANTINED = "quarantined"
_LINE_BREAK = re.compile(LINE_BREAK)


def embedded_reason(source: SourceConfig, *, landing: Path | None = None) -> str | None:
    """Why ``source`` is ingested through Spark on an embedded run, or None when it is not.

    A Parquet source's files under ``landing`` are looked at too (:func:`parquet_reason`)."""
    if source.format not in ("csv", "jsonl", "parquet"):
        return f"format {source.format}"
    if source.drift == "evolve":
        return "drift: evolve"
    for column in source.columns:
        if column.format and column.is_scalar and formatted_parser(source, column.name) is None:
            return f"column {column.name} has a Java date/time pattern not read embedded ({column.format})"
        if column.is_scalar and column.type not in embedded._SCALAR_ARROW:
            return f"column {column.name} of type {column.type}"
    for extra in source.also:
        if extra.target != "customer_records":
            return f"also target {extra.target}"
    if source.format == "parquet" and landing is not None:
        return parquet_reason(landing, source)
    return None


# -- Parquet rows as Spark's to_json writes them ---------------------------------------------------

#: Arrow types whose values :func:`_json_value` writes as Spark's ``to_json`` does (checked against
#: Spark in tests/test_ingest_parquet_engines.py); a file with any other column type (float, decimal,
#: binary, nested, a timestamp without zone or in nanoseconds ...) is read by Spark
_PLAIN_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_boolean, pa.types.is_date32)
_INTEGER_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
#: the days (since 1970-01-01) Python's dates hold: years 1-9999 (Spark writes later years with a sign)
_EARLIEST_DAY, _LATEST_DAY = -719_162, 2_932_896
_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000}


def _json_type(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        return _json_type(data_type.value_type)
    if any(check(data_type) for check in _PLAIN_TYPES) or data_type in _INTEGER_TYPES:
        return True
    if pa.types.is_float64(data_type):
        return True
    return (
        pa.types.is_timestamp(data_type) and data_type.tz in ("UTC", "+00:00") and data_type.unit in ("s", "ms", "us")
    )


def parquet_reason(landing: Path, source: SourceConfig) -> str | None:
    """Why the Parquet files matching ``source``'s glob are read by Spark, or None: a file pyarrow
    cannot open (Spark refuses it with its own message), a column of a type not written here as
    Spark's ``to_json`` writes it, two columns whose names differ only in case, a date or time
    outside years 1-9999. Only the footers are read (the dates and times: their columns)."""
    import pyarrow.parquet as pq

    for path in sorted(landing.glob(source.path)):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(landing).as_posix()
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            return f"Parquet file {relative} that pyarrow cannot open ({str(exc).splitlines()[0][:200]})"
        folded = [name.casefold() for name in schema.names]
        if len(set(folded)) != len(folded):
            return f"Parquet file {relative} with columns named alike ({', '.join(schema.names)})"
        for field in schema:
            if not _json_type(field.type):
                return f"Parquet file {relative} column {field.name} of type {field.type}"
        temporal = {f.name: f.type for f in schema if pa.types.is_date32(f.type) or pa.types.is_timestamp(f.type)}
        if temporal:
            table = pq.read_table(path, columns=list(temporal))
            for name, data_type in temporal.items():
                date_type = pa.types.is_date32(data_type)
                counts = table[name].cast(pa.int32() if date_type else pa.int64())
                days = pc.floor(pc.divide(counts.cast(pa.float64()), 1 if date_type else _PER_DAY[data_type.unit]))
                low, high = (v.as_py() for v in pc.min_max(days).values())
                if low is not None and not (_EARLIEST_DAY <= low and high <= _LATEST_DAY):
                    return f"Parquet file {relative} column {name} with a date outside years 1-9999"
    return None


def _json_value(value: Any) -> str:
    """One non-null value as Spark's ``to_json`` writes it (the types :func:`_json_type` allows)."""
    if isinstance(value, str):
        return jackson_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(java_double(value))
    if isinstance(value, datetime):
        # the session's zone is UTC; milliseconds, truncated
        moment = value.astimezone(timezone.utc)
        return f'"{moment.strftime("%Y-%m-%dT%H:%M:%S")}.{moment.microsecond // 1000:03d}Z"'
    if isinstance(value, date):
        return f'"{value.year:04d}-{value.month:02d}-{value.day:02d}"'
    raise TypeError(f"no to_json form for {type(value).__name__}")


def parquet_rows(file: LandedFile, source: SourceConfig) -> tuple[list[tuple[int, str]], pa.Table | None]:
    """``(line, raw)`` per row of a Parquet file, as :func:`lakecdp.ingest.reading.read_parquet_rows`
    makes them on Spark: ``line`` the 1-based row index, ``raw`` Spark's ``to_json`` of the row
    (every column of the file in file order, null fields left out, ``{}`` for a row of nulls); and
    the rows' fields as read when the file is only texts the source names (:func:`_parquet_as_read`),
    else None."""
    import pyarrow.parquet as pq

    table = pq.read_table(file.path)
    check_required(file, source, table.column_names)
    if not table.num_columns:
        return [(index + 1, "{}") for index in range(table.num_rows)], None
    # column by column: each value's "name":value, text (null for a null), then joined per row in Arrow
    # (nulls as empty texts: pyarrow 26's null_handling "skip" drops a row whose fields are all null)
    text = _TEXT
    fields = [_json_fields(name, table[name]) for name in table.column_names]
    joined = pc.binary_join_element_wise(*fields, pa.scalar("", text), null_handling="replace", null_replacement="")
    inner = pc.utf8_slice_codeunits(joined, 0, -1)  # the last field's comma
    rows = pc.binary_join_element_wise(pa.scalar("{", text), inner, pa.scalar("}", text), pa.scalar("", text))
    return list(enumerate(rows.to_pylist(), start=1)), _parquet_as_read(table, source)


#: a text Jackson writes as it is (:func:`jackson_string`'s test), whole, for Arrow's RE2
_JACKSON_PLAIN_RE2 = f"^{JACKSON_PLAIN.pattern}$"
#: the texts of a Parquet file's lines, built in Arrow (a file's texts may pass 2 GiB once quoted)
_TEXT = pa.large_string()


def _json_fields(name: str, column: pa.ChunkedArray) -> pa.Array:
    """Per value of a Parquet column, ``"name":value,`` as Spark's ``to_json`` writes the field
    (:func:`_json_value`), null for a null. Texts Jackson writes as they are (most of them) are
    quoted in Arrow; the others, and other types, go through :func:`_json_value` one by one."""
    prefix = jackson_string(name) + ":"
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        values = [None if v is None else prefix + _json_value(v) + "," for v in column.to_pylist()]
        return pa.array(values, _TEXT)
    text = _TEXT
    texts = column.cast(text).combine_chunks()
    quoted = pc.binary_join_element_wise(
        pa.scalar(prefix + '"', text), texts, pa.scalar('",', text), pa.scalar("", text)
    )
    escaped = pc.invert(pc.fill_null(pc.match_substring_regex(texts, _JACKSON_PLAIN_RE2), True))
    if pc.any(escaped).as_py():
        others = texts.filter(escaped).to_pylist()
        quoted = pc.replace_with_mask(
            quoted, escaped, pa.array([prefix + jackson_string(v) + "," for v in others], quoted.type)
        )
    return quoted


def _parquet_as_read(table: pa.Table, source: SourceConfig) -> pa.Table | None:
    """The rows' fields as read, when every column of the file is a text column the source names
    as a scalar: then a row's line (Spark's to_json of it) parses to those texts (a missing column
    or a null is null), with nothing rescued and nothing structural, so the rows are read as columns
    (:class:`lakecdp.ingest.embedded.ReadColumns`). None for any other file (its lines are parsed)."""
    from lakecdp.ingest.columnar import read_schema

    scalars = {c.name for c in source.columns if c.is_scalar}
    texts = (pa.types.is_string, pa.types.is_large_string)
    if not all(f.name in scalars and any(t(f.type) for t in texts) for f in table.schema):
        return None
    schema = read_schema(source)
    present = set(table.column_names)
    return pa.table(
        [table[f.name].cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in schema],
        schema=schema,
    )


def check_required(file: LandedFile, source: SourceConfig, present: list[str]) -> None:
    """:class:`MissingColumnsError` when the file lacks a required column (the run stops, as on Spark)."""
    missing = [n for n in source.required if n.split(".")[0] not in set(present)]
    if missing:
        raise MissingColumnsError(
            f"{file.relative}: required column(s) {', '.join(missing)} missing (file has: {', '.join(present)})"
        )


def _pattern_typed(
    typed: dict[str, Any], read: dict[str, Any], source: SourceConfig, nulled: frozenset[str]
) -> dict[str, Any]:
    """``typed`` with the columns that have a Java date/time pattern read by it (Spark's
    ``try_to_date`` / ``try_to_timestamp`` of the text as read, naive UTC), warn-level ones null."""
    for name, parse in _pattern_parsers(source):
        text = read[name]
        typed[name] = None if name in nulled or text is None else parse(text)
    return typed


_PARSERS: dict[int, tuple[SourceConfig, list[tuple[str, Any]]]] = {}


def _pattern_parsers(source: SourceConfig) -> list[tuple[str, Any]]:
    """(column, its Java pattern's parser) of ``source``'s patterned scalar columns (asked per row)."""
    cached = _PARSERS.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    parsers = []
    for column in source.columns:
        if column.format and column.is_scalar:
            parse = formatted_parser(source, column.name)
            if parse is None:
                raise ValueError(f"{source.name}: column {column.name}'s pattern is not read embedded")
            parsers.append((column.name, parse))
    _PARSERS[id(source)] = (source, parsers)
    return parsers


# -- reading --------------------------------------------------------------------------------------


def file_lines(file: LandedFile, *, skip_header: bool) -> list[tuple[int, str]]:
    """``(line, raw)`` of the file's non-blank physical lines, as :func:`lakecdp.ingest.reading.read_lines`."""
    return _file_lines(file, skip_header=skip_header)[0]


def _file_lines(file: LandedFile, *, skip_header: bool) -> tuple[list[tuple[int, str]], pa.Array | None]:
    """:func:`file_lines` and, when the file is valid UTF-8 with LF breaks ending in one, the same
    raws as an Arrow array cut from the file's bytes (for the columnar readers: building it from
    the Python strings encodes every line again, holding the GIL)."""
    numbers, raws, cut = _file_rows(file, skip_header=skip_header)
    return list(zip(numbers, raws)), None if cut is None else cut.array()


def _file_rows(file: LandedFile, *, skip_header: bool) -> tuple[list[int], list[str], _Cut | None]:
    """:func:`_file_lines` as the line numbers and the raws, two lists, and the lines' Arrow
    array to be cut when asked for (all of them, or those a re-delivery still parses)."""
    data = file.path.read_bytes()
    try:
        text, exact = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, exact = data.decode("utf-8", errors="replace"), False
    if "\r" not in text and data.endswith(b"\n"):
        # the common file: which lines are blank worked out on the bytes, the strings picked in C
        # (a Python loop over a million lines held the GIL the other sources' threads wait for)
        pieces = text.split("\n")
        pieces[0] = pieces[0].removeprefix(BOM)
        breaks = lf_ends(np.frombuffer(data, np.uint8))
        kept = _filled_lines(data, breaks, skip_header=skip_header)
        numbers = (kept + 1).tolist()
        raws = pieces[:-1] if len(kept) == len(pieces) - 1 else list(compress(pieces, _mask(kept, len(pieces))))
        # an invalid byte is replaced by U+FFFD, never with a break: the same lines, the same blanks
        return numbers, raws, _Cut(data, breaks, kept) if numbers and exact else None
    numbers, raws = [], []
    # without a CR every break is an LF: str.split gives the regular expression's pieces, ~10x faster
    pieces = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
    for number, raw in enumerate(pieces, start=1):
        if number == 1:
            raw = raw.removeprefix(BOM)
            if skip_header:
                continue
        if raw.strip(" ") != "":
            numbers.append(number)
            raws.append(raw)
    return numbers, raws, None


def _filled_lines(data: bytes, breaks: np.ndarray, *, skip_header: bool) -> np.ndarray:
    """The positions (0-based) of the lines of ``data`` (LF breaks at ``breaks``, ending in one)
    holding a byte other than a space (a BOM opening the file aside), line 1 left out when it is
    a header."""
    opening = BOM.encode("utf-8")
    skip = len(opening) if data.startswith(opening) else 0
    filled = filled_lf_lines(np.frombuffer(data, np.uint8), breaks, skip=skip)
    if skip_header and len(filled):
        filled[0] = False
    return np.flatnonzero(filled)


def _mask(kept: np.ndarray, count: int) -> list[bool]:
    """``count`` booleans, True at ``kept``."""
    mask = np.zeros(count, dtype=bool)
    mask[kept] = True
    return mask.tolist()


@dataclass(frozen=True)
class _Cut:
    """A file's kept lines (:func:`_file_rows`), as Arrow strings cut from its bytes when asked."""

    data: bytes
    breaks: np.ndarray
    kept: np.ndarray

    def array(self, picked: np.ndarray | None = None) -> pa.Array:
        """The lines (or those at ``picked``, positions among them, ascending)."""
        kept = self.kept if picked is None else self.kept[picked]
        return _lines_array(self.data, self.breaks, kept) if len(kept) else pa.array([], pa.string())


def _lines_array(data: bytes, breaks: np.ndarray, kept: np.ndarray) -> pa.Array:
    """Lines ``kept`` (positions, ascending, not empty) of ``data`` (UTF-8, LF breaks at ``breaks``,
    ending in one) as Arrow strings."""
    # each piece with its break, end to end (the empty last piece left out): one zero-copy array
    starts = np.concatenate([[0], breaks + 1]).astype(np.int64)
    if data.startswith(BOM.encode("utf-8")):
        starts[0] = 3
    with_breaks = pa.LargeStringArray.from_buffers(len(breaks), pa.py_buffer(starts.tobytes()), pa.py_buffer(data))
    first, last = int(kept[0]), int(kept[-1])
    # most files keep a run of lines (all but a header): a slice, no copy before the one that drops the breaks
    chosen = (
        with_breaks.slice(first, last - first + 1)
        if last - first + 1 == len(kept)
        else with_breaks.take(pa.array(kept, pa.int64()))
    )
    return pc.utf8_slice_codeunits(chosen, 0, -1).cast(pa.string())


@dataclass(frozen=True)
class _CsvLayout:
    """A source's CSV dialect and a file's header, worked out once per file (asked per line)."""

    sep: str
    quote: str
    quoted: re.Pattern[str]
    dialect: dict[str, Any]
    header: list[str]
    columns: list[str]
    known: frozenset[str]
    #: the header's names outside the source's columns (rescued)
    unknown: bool


def _csv_layout(source: SourceConfig, header: list[str]) -> _CsvLayout:
    sep = source.options.get("sep", source.options.get("delimiter", ","))
    quote = source.options.get("quote", '"')
    escape = source.options.get("escape", quote)
    q = re.escape(quote)
    known = frozenset(source.column_names)
    return _CsvLayout(
        sep=sep,
        quote=quote,
        quoted=re.compile(f"{q}([^{q}]|{q}{q})*{q}"),
        dialect={
            "delimiter": sep,
            "quotechar": quote,
            "doublequote": escape == quote,
            "escapechar": None if escape == quote else escape,
            "strict": False,
        },
        header=list(header),
        columns=source.column_names,
        known=known,
        unknown=any(name not in known for name in header),
    )


def parse_csv_line(raw: str, source: SourceConfig, header: list[str], layout: _CsvLayout | None = None) -> ParsedLine:
    """A CSV line as :func:`lakecdp.ingest.validate._as_read_csv` reads it: the configured columns
    by header position (empty -> null), unknown ones rescued, MALFORMED_LINE / WRONG_FIELD_COUNT.

    Args:
        layout: ``_csv_layout(source, header)``, when the caller reads many lines of one file."""
    if layout is None:
        layout = _csv_layout(source, header)
    sep, quote = layout.sep, layout.quote
    unbalanced = raw.count(quote) % 2 == 1
    unquoted = layout.quoted.sub("", raw) if quote in raw else raw
    fields = unquoted.count(sep) + 1
    structural: list[str] = []
    detail = None
    if unbalanced:
        structural.append(MALFORMED_LINE)
    elif fields != len(header):
        structural.append(WRONG_FIELD_COUNT)
        detail = f"expected {len(header)} fields, got {fields}"
    reader = csv.reader([raw], **layout.dialect)
    try:
        values: list[str | None] = list(next(reader, []))
    except csv.Error:
        values = []
    values = [v if v != "" else None for v in values][: len(header)]
    values += [None] * (len(header) - len(values))
    by_name = dict(zip(header, values))
    event = {name: by_name.get(name) for name in layout.columns}
    if not layout.unknown:
        return ParsedLine(event, tuple(structural), detail)
    known = layout.known
    extra = [(name, value) for name in header if name not in known and (value := by_name[name]) is not None]
    if extra:
        event["_rescued_json"] = "{" + ",".join(f"{jackson_string(k)}:{jackson_string(v)}" for k, v in extra) + "}"
    return ParsedLine(event, tuple(structural), detail)


@dataclass
class _Read:
    """The rows of a source's readable files, in file order then line."""

    rows: list[RawRow]
    #: per row: the line parser's reading, or None for a row read as columns (``columns``)
    parsed: list[ParsedLine | None]
    files: list[LandedFile]
    #: file -> what is wrong with its header (every row DUPLICATE_HEADER)
    header_problems: dict[str, str]
    #: re-delivered lines set apart (:class:`_KnownLines`): the row, then its stored bronze row's index
    known: list[tuple[RawRow, int]]
    #: re-delivered lines read as the others are (:attr:`_KnownLines.apart` false): their positions in ``rows``
    redelivered: list[int]
    #: per row, its line's SHA-256 when :class:`_KnownLines` computed it (None elsewhere; empty: none computed)
    hashes: list[str | None]
    #: the rows read as columns: positions and tables, file by file (see :attr:`columns`)
    column_rows: list[int]
    column_tables: list[pa.Table]
    exact: bool

    @property
    def columns(self) -> ReadColumns:
        """The rows read as columns and their fields (one table)."""
        tables = self.column_tables
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0] if tables else None
        return ReadColumns(self.column_rows, table if table is not None else pa.table({}), self.exact)


class _KnownLines:
    """Lines of a source whose rows are already in bronze from completed files, by row hash
    (bronze's ``_row_hash``: SHA-256 of the line as read), when no erasure is recorded (the
    caller checks). A CSV line counts only when its file's header is the stored row's file's
    header (the same line under other columns reads other fields).

    For a source whose rows are duplicates once their key is loaded (``drop_existing_keys``:
    events), such a line is set apart (``apart``): delivered again in a new file, it is a
    duplicate. It passed the same rules before (its bronze row was written by a run whose as-of
    is not later than this run's, so no time check can refuse it now) and its key is among the
    keys loaded. Its new bronze row is the stored row with the new file, line, run and time: the
    line is neither parsed, checked, typed nor mapped again.

    For a customer source whose re-delivered lines leave its records as they are
    (:func:`lakecdp.ingest.writes.redelivery_keeps_records`), such a line is checked and ranked
    as the others (its warnings count again, judged at this run's as-of; a newer version in the
    run still wins over it), but typed only when its key has another row in the run, and never
    standardised for silver (:attr:`_Read.redelivered`). Where the columnar readers read the
    file's lines and the stored row rescued no field, the line is not parsed again either: its
    fields as read are its stored bronze row's (:attr:`fields`, bronze holds the fields as read
    of every row it keeps), a row read as columns (:class:`lakecdp.ingest.embedded.ReadColumns`).
    As for events, a line keeps the reading it was stored with when the source's reading options
    change later."""

    def __init__(self, landing: Path, source: SourceConfig, stored: pa.Table) -> None:
        self.landing = landing
        self.source = source
        self.stored = stored
        self.apart = source.drop_existing_keys
        # the index: the stored digests a line's can equal, sorted by their first 64 bits, in Arrow
        # and numpy (a dict of a million Python strings held the GIL ~0.5 s, the other sources waiting)
        hashes = stored["_row_hash"].combine_chunks()
        digest = pc.fill_null(pc.match_substring_regex(hashes, "^[0-9a-f]{64}$"), False)
        self.hashes = hashes.filter(digest)
        keys = _hash_keys(self.hashes)
        # stable: among copies of a line (one delivered twice before has two), the first stored first
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.rows = np.flatnonzero(digest.to_numpy(zero_copy_only=False))[self.order]
        files = stored["_source_file"].combine_chunks().dictionary_encode()
        self.file_codes = files.indices.to_numpy(zero_copy_only=False)
        self.file_names: list[str] = files.dictionary.to_pylist()
        self._headers: dict[str, list[str] | None] = {}
        #: a customer source's stored fields as read (:func:`lakecdp.ingest.columnar.read_schema`)
        #: and, per stored row, whether they are a line's whole reading (its row rescued nothing)
        self.fields: pa.Table | None = None
        self.whole = np.zeros(0, dtype=bool)
        schema = read_schema(source)
        if not self.apart and {*schema.names, "_rescued"} <= set(stored.column_names):
            self.fields = stored.select(schema.names).cast(schema)
            self.whole = pc.is_null(stored["_rescued"]).to_numpy(zero_copy_only=False)

    @staticmethod
    def _columns(store: DeltaStore, name: str, source: SourceConfig) -> list[str] | None:
        """The bronze columns read: every one for a source whose lines are set apart; for the
        others the hash, file and time, with the fields as read when the columnar readers may
        read its lines (a table without some of them: a source given columns since)."""
        if source.drop_existing_keys:
            return None
        wanted = ["_source_file", "_ingested_at", "_row_hash"]
        if not reads_as_columns(source, None):
            return wanted
        stored = {f.name for f in store.table(name).schema().fields}
        fields = [*read_schema(source).names, "_rescued"]
        return wanted + fields if set(fields) <= stored else wanted

    @classmethod
    def load(cls, ctx: JobContext, store: DeltaStore, source: SourceConfig, done: set[str]) -> _KnownLines | None:
        name = catalog.BRONZE.named(source.name)
        if not done or not store.exists(name):
            return None
        # a line read again needs its hash and file (and its fields), one set apart its whole stored row
        stored = store.read(name, columns=cls._columns(store, name, source))
        kept = pc.and_(
            pc.is_in(stored["_source_file"], pa.array(sorted(done), pa.string())),
            pc.less_equal(stored["_ingested_at"], pa.scalar(_utc(ctx.as_of), stored.schema.field("_ingested_at").type)),
        )
        stored = stored.filter(pc.fill_null(kept, False))
        return cls(ctx.project.landing, source, stored) if stored.num_rows else None

    def _header(self, relative: str) -> list[str] | None:
        if relative not in self._headers:
            path = self.landing / relative
            try:
                self._headers[relative] = csv_header(LandedFile(path, relative, 0, ""), self.source)
            except OSError:
                self._headers[relative] = None
        return self._headers[relative]

    def match(self, raws: list[str], header: list[str] | None) -> tuple[list[int | None], list[str]]:
        """Per line of a file: its stored row, or None (a line not seen, or seen under another
        header); and its SHA-256 (bronze's ``_row_hash``, not computed again there)."""
        positions, hashes = self.stored_rows(raws, header)
        return [None if p < 0 else p for p in positions.tolist()], hashes

    def stored_rows(self, raws: list[str], header: list[str] | None) -> tuple[np.ndarray, list[str]]:
        """:meth:`match`, the stored rows in numpy (-1: none)."""
        sha256 = hashlib.sha256
        hashes = [sha256(raw.encode("utf-8")).hexdigest() for raw in raws]
        if not hashes or not len(self.keys):
            return np.full(len(hashes), -1, np.int64), hashes
        digests = pa.array(hashes, pa.string())
        probe = _hash_keys(digests)
        at = np.minimum(np.searchsorted(self.keys, probe), len(self.keys) - 1)
        lines = np.flatnonzero(self.keys[at] == probe)
        # the whole digest compared: two digests may share their first 64 bits (then only the
        # first stored is a candidate, and a line unequal to it is read as new: never a false match)
        equal = pc.equal(self.hashes.take(self.order[at[lines]]), digests.take(lines))
        lines = lines[equal.to_numpy(zero_copy_only=False)]
        rows = self.rows[at[lines]]
        if header is not None:
            # a CSV line counts only under its stored file's header
            codes = self.file_codes[rows]
            same = np.zeros(len(self.file_names), dtype=bool)
            for code in np.unique(codes).tolist():
                same[code] = self._header(self.file_names[code]) == header
            kept = same[codes]
            lines, rows = lines[kept], rows[kept]
        positions = np.full(len(hashes), -1, np.int64)
        positions[lines] = rows
        return positions, hashes


#: a hexadecimal digit's value by its ASCII code (255: not a lowercase hex digit)
_HEX_VALUE = np.full(256, 255, np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def _hash_keys(digests: pa.Array) -> np.ndarray:
    """The first 64 bits of SHA-256 digests written as 64 lowercase hexadecimal digits (no null),
    as unsigned integers, read from the array's bytes."""
    if not len(digests):
        return np.zeros(0, np.uint64)
    offset_type = np.int64 if pa.types.is_large_string(digests.type) else np.int32
    _, offsets_buffer, data = digests.buffers()
    offsets = np.frombuffer(offsets_buffer, offset_type)[digests.offset : digests.offset + len(digests) + 1]
    digits = np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]].reshape(len(digests), 64)
    # 16 digits -> 8 bytes -> one big-endian integer (small temporaries: fresh memory costs)
    values = _HEX_VALUE[digits[:, :16]]
    octets = np.ascontiguousarray((values[:, 0::2] << 4) | values[:, 1::2])
    return octets.view(">u8").ravel().astype(np.uint64)


def read_files(
    ctx: JobContext,
    source: SourceConfig,
    files: list[LandedFile],
    known: _KnownLines | None = None,
    *,
    columnar: bool = True,
) -> _Read:
    """Every line of ``files`` parsed (a line ``known`` holds is set apart unparsed); a file that
    cannot be read is refused (UNREADABLE_FILE).

    Args:
        columnar: False parses every line with the line parser (see :func:`parse_lines`)."""
    read = _Read([], [], [], {}, [], [], [], [], [], exact=source.format == "csv")
    csv_format = source.format == "csv"
    for order, file in enumerate(files):
        header = None
        as_read: pa.Table | None = None
        try:
            if csv_format and source.has_header:
                header = csv_header(file, source)
                problem = repeated_columns(header)
                if problem is None:
                    check_required(file, source, header)
                else:
                    read.header_problems[file.relative] = problem
                    header = [f"_repeated_{i}" if n in header[:i] else n for i, n in enumerate(header)]
            cut = None
            if source.format == "parquet":
                lines, as_read = parquet_rows(file, source)
                numbers, raws = [n for n, _raw in lines], [raw for _n, raw in lines]
            else:
                numbers, raws, cut = _file_rows(file, skip_header=header is not None)
        except OSError as exc:
            logger.warning("%s: %s cannot be read, quarantined: %s", source.name, file.relative, exc)
            read.files.append(file.refuse(UNREADABLE_FILE, f"{file.relative}: cannot be read: {exc.strerror}"))
            continue
        columns = header or source.column_names
        layout = _csv_layout(source, columns) if csv_format else None
        # a file whose header is refused has every row quarantined: none is known
        usable = known if known is not None and file.relative not in read.header_problems else None
        # RawRow tuples made in C
        rows = list(zip(raws, repeat(file.relative), repeat(order), numbers, repeat(ctx.as_of)))
        start = len(read.rows)
        hashes: list[str | None] | None = None
        #: the lines read from their stored bronze rows: positions in the file's rows, their rows
        #: in the stored fields, and those fields
        from_bronze: tuple[np.ndarray, np.ndarray, pa.Table] | None = None
        if usable is not None and usable.apart:
            stored, line_hashes = usable.match(raws, header)
            read.known += [(row, at) for row, at in zip(rows, stored) if at is not None]
            fresh = [row for row, at in zip(rows, stored) if at is None]
            hashes = [h for h, at in zip(line_hashes, stored) if at is None]
            array = None if cut is None else cut.array(np.flatnonzero([at is None for at in stored]))
        else:
            if usable is not None:
                positions, line_hashes = usable.stored_rows(raws, header)
                hashes = list(line_hashes)
                known_at = np.flatnonzero(positions >= 0)
                read.redelivered += (known_at + start).tolist()
                if usable.fields is not None and columnar and reads_as_columns(source, columns):
                    # the lines whose stored rows hold their whole reading: not parsed again
                    known_at = known_at[usable.whole[positions[known_at]]]
                    if len(known_at):
                        from_bronze = (known_at, positions[known_at], usable.fields)
            array = None if cut is None or from_bronze is not None else cut.array()
            fresh = rows
        if hashes is not None:
            read.hashes += [None] * (start - len(read.hashes)) + hashes
        read.rows += fresh
        if as_read is not None and columnar and len(fresh) == len(rows):
            # a Parquet file of texts: every row read as columns (no re-delivered line is known here)
            parsed: list[ParsedLine | None] = [None] * len(fresh)
            plain, table = list(range(len(fresh))), as_read
        elif from_bronze is not None:
            parsed, plain, table = _parsed_or_stored(raws, from_bronze, source, columns, layout, cut=cut)
        else:
            parsed, plain, table = parse_lines(
                raws if fresh is rows else [row[0] for row in fresh],
                source,
                columns,
                layout,
                columnar=columnar,
                array=array,
            )
        read.parsed += parsed
        if plain:
            read.column_rows += [start + k for k in plain]
            read.column_tables.append(table)
        read.files.append(file)
    return read


def _parsed_or_stored(
    raws: list[str],
    stored: tuple[np.ndarray, np.ndarray, pa.Table],
    source: SourceConfig,
    columns: list[str],
    layout: _CsvLayout | None,
    *,
    cut: _Cut | None,
) -> tuple[list[ParsedLine | None], list[int], pa.Table | None]:
    """:func:`parse_lines` of a file's lines, those at ``stored[0]`` (ascending) read as columns
    from their stored fields as read (rows ``stored[1]`` of ``stored[2]``) instead of being parsed."""
    known_at, rows, fields = stored
    unknown = np.ones(len(raws), dtype=bool)
    unknown[known_at] = False
    others = np.flatnonzero(unknown)
    listed = others.tolist()
    parsed_others, plain_others, table = parse_lines(
        [raws[k] for k in listed],
        source,
        columns,
        layout,
        array=None if cut is None else cut.array(others),
    )
    parsed: list[ParsedLine | None] = [None] * len(raws)
    for k, line in zip(listed, parsed_others):
        if line is not None:
            parsed[k] = line
    # the rows read as columns ascending: the parsed ones' and the stored ones' fields interleaved,
    # taken in one pass (the stored rows are not copied out first)
    positions = np.concatenate([others[np.asarray(plain_others, np.int64)], known_at])
    parsed_rows = 0 if table is None else table.num_rows
    picks = np.concatenate([np.arange(parsed_rows, dtype=np.int64), rows.astype(np.int64) + parsed_rows])
    tables = [fields] if table is None else [table, fields]
    order = np.argsort(positions, kind="stable")
    return parsed, positions[order].tolist(), pa.concat_tables(tables).take(pa.array(picks[order], pa.int64()))


def parse_lines(
    raws: list[str],
    source: SourceConfig,
    columns: list[str],
    layout: _CsvLayout | None,
    *,
    columnar: bool = True,
    array: pa.Array | None = None,
) -> tuple[list[ParsedLine | None], list[int], pa.Table | None]:
    """A file's lines parsed: the plain ones read as columns (:mod:`lakecdp.ingest.columnar`),
    the others by the line parser (:func:`parse_csv_line`, :func:`parse_json_line`).

    Args:
        columnar: False reads every line with the line parser (the oracle of the tests).
        array: ``raws`` as Arrow strings, when the caller has them.

    Returns:
        Per line its line parser's reading, or None for a line read as columns; the positions of
        those lines and their fields as read (a table, in that order; None when there are none)."""
    read: list[bool] = [False] * len(raws)
    table = None
    if columnar and source.format == "csv":
        read, table = csv_columns(raws, source, columns, array=array)
    elif columnar and source.format == "jsonl":
        read, table = json_columns(raws, source, array=array)
    # the positions picked in C: most lines are read as columns
    every = range(len(raws))
    plain = list(every) if all(read) else list(compress(every, read))
    parsed: list[ParsedLine | None] = [None] * len(raws)
    if len(plain) < len(raws):
        for k in compress(every, map(operator.not_, read)):
            parsed[k] = (
                parse_csv_line(raws[k], source, columns, layout) if source.format == "csv" else parse_json_line(raws[k])
            )
    return parsed, plain, table if plain else None


def _valid_columns(columns: ReadColumns, checked: list[CheckedRow]) -> ReadColumns | None:
    """The valid rows of ``columns`` (a row read as columns may have a refusing finding)."""
    if not columns.rows:
        return None
    keep = [checked[i].valid for i in columns.rows]
    if all(keep):
        return columns
    rows = [i for i, ok in zip(columns.rows, keep) if ok]
    return ReadColumns(rows, columns.table.filter(pa.array(keep, pa.bool_())), columns.exact)


def _rescued(row: CheckedRow, source: SourceConfig) -> str | None:
    if source.format == "csv":
        return row.event.get("_rescued_json") if isinstance(row.event, dict) else None
    return embedded._rescued(row.event, source) if isinstance(row.event, dict) else None


def erased_rows(ctx: JobContext, store: DeltaStore, source: SourceConfig, typed: pa.Table) -> set[int]:
    """Rows (``_row``) holding an identifier whose salted hash is in ``ops.erasures``, as
    :func:`lakecdp.ingest.classify.erased_condition`: email, phone, CRM id, customer number,
    device id(s) standardised as silver stores them (:func:`lakecdp.ingest.embedded_silver.to_silver`)
    and, for customer records, the trimmed source record id. (The name + birth date + postcode key
    is not checked here yet: an erasure by that key alone is honoured on Spark only.)"""
    from lakecdp.erasure import ERASURES_TABLE, erasure_salt, load_privacy_config, salted_hash
    from lakecdp.ingest.embedded_silver import to_silver

    if typed.num_rows == 0 or not store.exists(ERASURES_TABLE):
        return set()
    wanted: dict[str, set[str]] = {}
    for row in store.read(ERASURES_TABLE, columns=["salted_hash", "identifier_type"]).to_pylist():
        wanted.setdefault(row["identifier_type"], set()).add(row["salted_hash"])
    if not wanted:
        return set()
    salt = erasure_salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
    silver = to_silver(typed, source, run_id=None, ingested_at=ctx.as_of, as_of=ctx.as_of)
    kinds = [k for k in ("email", "phone", "crm_id", "customer_number", "device_id") if k in source.mapping]
    hit: set[int] = set()
    for row in silver.to_pylist():
        values: list[tuple[str, Any]] = [(kind, row.get(kind)) for kind in kinds]
        if source.target == "customer_records" and row.get("source_record_id") is not None:
            values.append(("source_record_id", row["source_record_id"].strip(" ")))
        values += [("device_id", d.strip(" ")) for d in row.get("device_ids") or [] if d is not None]
        if any(v is not None and k in wanted and salted_hash(salt, k, v) in wanted[k] for k, v in values):
            hit.add(row["_row"])
    return hit


# -- classification -------------------------------------------------------------------------------


_PASSED = frozenset({LOADED, "duplicate"})
_STATUS_NAMES = np.array(["quarantined", "duplicate", LOADED, "erased"], dtype=object)


def classify_rows(
    checked: list[CheckedRow],
    stamps: pa.Array | None,
    source: SourceConfig,
    existing_keys: set[tuple[Any, ...]],
    erased: set[int],
    reads: embedded.Reads,
) -> list[str]:
    """``erased`` | ``quarantined`` | ``duplicate`` | ``loaded`` per row, as
    :func:`lakecdp.ingest.classify.classify` (keys as read; an erased row still takes its rank).

    Args:
        stamps: the valid rows' typed event times, in row order (when versions are ranked by
            event time: a source that is not ``drop_existing_keys`` and has one).
        reads: the valid rows as read (:class:`embedded.Reads`); the keys are theirs.
    """
    # picked in C: the rows without a reason, their file and line
    valid = list(compress(range(len(checked)), map(operator.not_, map(attrgetter("reasons"), checked))))
    texts = reads.columns(valid) if valid else None
    kept = list(map(checked.__getitem__, valid))
    rows = pa.table(
        {
            "i": pa.array(valid, pa.int64()),
            "partition": pa.array(list(map(attrgetter("partition"), kept)), pa.int64()),
            "offset": pa.array(list(map(attrgetter("offset"), kept)), pa.int64()),
        }
    )
    keys: list[tuple[Any, ...]] | None = None
    if texts is not None and all(k in texts.column_names and texts[k].type == pa.string() for k in source.primary_key):
        # keys that are text columns: grouped by Arrow as they are (a null is one key, as None is)
        names = [f"key{n}" for n in range(len(source.primary_key))]
        for name, key in zip(names, source.primary_key):
            rows = rows.append_column(name, texts[key])
    else:
        # each distinct key as a number: the first row per key is then one Arrow group-by
        keys = list(zip(*(reads.column_values(k, valid) for k in source.primary_key))) if valid else []
        numbers: dict[tuple[Any, ...], int] = {}
        names = ["key"]
        rows = rows.append_column("key", pa.array([numbers.setdefault(k, len(numbers)) for k in keys], pa.int64()))
    if source.drop_existing_keys or source.event_time is None:
        order = [("partition", "ascending", "at_end"), ("offset", "ascending", "at_end")]
    else:
        assert stamps is not None
        rows = rows.append_column("stamp", stamps.cast(pa.timestamp("us")))
        # the event time descending (nulls last), then file and line descending
        order = [("stamp", "descending", "at_end"), ("partition", "descending", "at_end")]
        order.append(("offset", "descending", "at_end"))
    # use_threads=False: "first" is the first in the sorted order
    ranked = rows.sort_by(order).group_by(names, use_threads=False).aggregate([("i", "first")])
    # the status per row as a code, set by numpy: 0 quarantined, 1 duplicate, 2 loaded, 3 erased
    codes = np.zeros(len(checked), dtype=np.int8)
    codes[np.asarray(valid, dtype=np.int64)] = 1
    codes[ranked["i_first"].to_numpy()] = 2
    if existing_keys:
        if keys is None:
            keys = list(zip(*(reads.column_values(k, valid) for k in source.primary_key)))
        loaded_before = [i for i, k in zip(valid, keys) if k in existing_keys]
        codes[np.asarray(loaded_before, dtype=np.int64)] = 1
    codes[np.asarray(sorted(erased), dtype=np.int64)] = 3
    return _STATUS_NAMES[codes].tolist()


# -- the job --------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _without(rows: list[int], left_out: set[int]) -> list[int]:
    return [i for i in rows if i not in left_out] if left_out else rows


def _alone(rows: set[int], valid: list[int], reads: embedded.Reads, source: SourceConfig) -> set[int]:
    """The valid ones of ``rows`` whose primary key as read (one text column: a source of
    :func:`lakecdp.ingest.writes.redelivery_keeps_records`) no other valid row has (a null key
    is one key, as ``classify_rows`` groups them)."""
    if not rows:
        return set()
    keys = reads.columns(valid)[source.primary_key[0]].combine_chunks()
    if keys.type != pa.string():
        return set()
    counts = pc.value_counts(keys)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    shared = pc.is_in(keys, value_set=repeated, skip_nulls=False)
    return rows.intersection(compress(valid, pc.invert(shared).to_pylist()))


def _has_erasures(store: DeltaStore) -> bool:
    """Whether ``ops.erasures`` holds a row (then every row is checked against it)."""
    from lakecdp.erasure import ERASURES_TABLE

    return store.exists(ERASURES_TABLE) and store.read(ERASURES_TABLE, columns=["salted_hash"]).num_rows > 0


def _ledger(store: DeltaStore) -> list[dict[str, Any]]:
    if not store.exists(LEDGER):
        return []
    columns = [f.name for f in store.table(LEDGER).schema().fields]
    wanted = [c for c in ("source", "path", "content_hash", "status") if c in columns]
    return store.read(LEDGER, columns=wanted).to_pylist()


def _completed(source: SourceConfig, ledger: list[dict[str, Any]]) -> set[str]:
    """The files of ``source`` the ledger has loaded."""
    return {r["path"] for r in ledger if r["source"] == source.name and (r.get("status") or LOADED) == LOADED}


def _existing_keys(store: DeltaStore, source: SourceConfig, ledger: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Primary keys (as read) loaded from files the ledger has completed."""
    name = catalog.BRONZE.named(source.name)
    if not source.drop_existing_keys or not store.exists(name):
        return set()
    done = _completed(source, ledger)
    if not done:
        return set()
    bronze = store.read(name, columns=["_source_file", *source.primary_key])
    bronze = bronze.filter(pc.is_in(bronze["_source_file"], pa.array(sorted(done), pa.string())))
    return set(zip(*(bronze[k].to_pylist() for k in source.primary_key)))


def _counts(
    checked: list[CheckedRow], status: list[str], files: list[LandedFile]
) -> tuple[dict[str, dict[str, int]], list[tuple[str, str, int]]]:
    """:func:`lakecdp.ingest.audit.file_counts` over the rows in Python."""
    result = {f.relative: dict.fromkeys(COUNTS, 0) for f in files}
    for file in files:
        if file.refused:
            result[file.relative].update(rows_read=1, rows_quarantined=1)
    found: dict[tuple[str, str], int] = {}
    # rows per (file, status) counted in C; the codes only of the rows that have any
    for (topic, state), rows in Counter(zip(map(attrgetter("topic"), checked), status)).items():
        entry = result[topic]
        entry[STATUS_COUNT[state]] += rows
        entry["rows_read"] += rows
        if state in ("duplicate", "erased"):
            code = DUPLICATE if state == "duplicate" else ERASED
            found[(topic, code)] = found.get((topic, code), 0) + rows
    # the rows with a reason or a warning, picked in C
    every = range(len(checked))
    flagged = set(compress(every, map(attrgetter("reasons"), checked)))
    flagged.update(compress(every, map(attrgetter("warnings"), checked)))
    for i in flagged:
        row, state = checked[i], status[i]
        codes = row.reasons if state == "quarantined" else row.warnings if state == LOADED else []
        for code in codes:
            found[(row.topic, code)] = found.get((row.topic, code), 0) + 1
    reasons = file_reasons(files, result)
    return result, sorted([*reasons, *((file, code, rows) for (file, code), rows in found.items())])


def _load_source(
    ctx: JobContext, store: DeltaStore, source: SourceConfig, ledger: list[dict[str, Any]], hook: WriteHook
) -> tuple[LoadedFiles | None, dict[str, int]]:
    new, skipped = new_files(
        ctx.project.landing, source, {r["content_hash"] for r in ledger if r["source"] == source.name}
    )
    if not new:
        return None, source_counts([], {}, skipped=skipped)

    erasures = _has_erasures(store)
    known = None
    if (
        (source.drop_existing_keys or redelivery_keeps_records(source))
        and source.format in ("csv", "jsonl")
        and not erasures
    ):
        known = _KnownLines.load(ctx, store, source, _completed(source, ledger))
    read = read_files(ctx, source, [f for f in new if not f.refused], known)
    if known is not None and not known.apart:
        # its index (a string per stored line) freed for the rest of the run: only copies read it again
        known = None
    files = sorted([*read.files, *[f for f in new if f.refused]], key=lambda f: natural_key(f.relative))
    refused = [f for f in files if f.refused]
    for file in refused:
        logger.warning("%s: %s quarantined: %s", source.name, file.relative, file.detail)
    columns = read.columns
    checked = check_parsed(read.rows, read.parsed, source, as_of=ctx.as_of, columns=columns)
    for i, row in enumerate(checked):
        problem = read.header_problems.get(row.topic)
        if problem is not None:
            checked[i] = CheckedRow(
                row.raw, row.topic, row.partition, row.offset, row.received, row.event,
                [DUPLICATE_HEADER], [], f"{DUPLICATE_HEADER}: {problem}", frozenset(),
            )  # fmt: skip

    # a row read as columns keeps its table row; the others' fields as read from their objects
    reads = embedded.Reads(
        {
            i: embedded.as_read(checked[i].event, source)
            for i in compress(range(len(read.parsed)), read.parsed)  # the rows the line parser read
            if checked[i].valid
        },
        source,
        _valid_columns(columns, checked),
    )
    valid = sorted(reads)

    patterned = frozenset(name for name, _parse in _pattern_parsers(source))

    def typed_row(i: int) -> dict[str, Any]:
        row = embedded.typed_row(checked[i], reads[i], source, patterned)
        return _pattern_typed(row, reads[i], source, checked[i].nulled)

    def typed_table(rows: list[int]) -> pa.Table:
        """The typed columns of valid ``rows`` (ascending): cast by DuckDB where the texts have
        the screen's shapes, the rest (and rows with nulled fields) typed in Python."""
        table, left = cast_rows(reads, [i for i in rows if not checked[i].nulled], source)
        left = sorted([*left, *(i for i in rows if checked[i].nulled)])
        if not left:
            return table
        reads.fetch(left)
        typed = embedded._typed_table([typed_row(i) for i in left], left, source)
        return pa.concat_tables([table, typed]).sort_by("_row") if table.num_rows else typed

    # the keys loaded before matter only to rows read anew and valid (none in a file of re-delivered lines)
    existing = _existing_keys(store, source, ledger) if valid else set()
    # typed (the costly part of a row after validation) only where something reads it: the
    # event-time order of versions, the erasure check (every row), silver (the loaded rows); a
    # re-delivered event (its key already loaded) is a duplicate without being typed
    by_key_order = source.drop_existing_keys or source.event_time is None
    # a re-delivered customer line read again is typed only to be ranked against another row of its key
    redelivered = set(read.redelivered)
    untyped = _alone(redelivered, valid, reads, source)
    valid_typed = None if by_key_order and not erasures else typed_table(_without(valid, untyped))
    stamps = None
    if valid_typed is not None and source.event_time is not None:
        # the event times in the valid rows' order (null for a row not typed: alone with its key)
        at = pc.index_in(pa.array(valid, pa.int64()), value_set=valid_typed["_row"])
        stamps = valid_typed[source.event_time].take(at).combine_chunks()
    erased: set[int] = set()
    if erasures:
        typed = valid_typed if valid_typed is not None else typed_table(valid)
        # erasure is judged on every row a mapping can read, the rejected ones too (as on Spark):
        # rejected rows are mapped from their fields as read, typed where they parse
        rejected = [i for i, r in enumerate(checked) if not r.valid and isinstance(r.event, dict)]
        rejected_typed = embedded._typed_table(
            [
                _pattern_typed(
                    embedded._loose_typed(checked[i].event, source),
                    embedded.as_read(checked[i].event, source),
                    source,
                    frozenset(),
                )
                for i in rejected
            ],
            rejected,
            source,
        )
        erased = erased_rows(ctx, store, source, typed) | erased_rows(ctx, store, source, rejected_typed)
    status = classify_rows(checked, stamps, source, existing, erased, reads)
    # the re-delivered lines: duplicates (see _KnownLines), after the rows read anew
    copied = [i + len(checked) for i in range(len(read.known))]
    checked += embedded.clean_rows(map(itemgetter(0), read.known))
    status += ["duplicate"] * len(read.known)
    per_file, reasons = _counts(checked, status, files)
    # before any write: a line the reader lost (or made up) fails the run, nothing is marked done
    check_lines_read(source, files, per_file)
    for relative, c in per_file.items():
        check_audit_counts(f"{source.name} {relative}", c)

    def write_bronze_and_quarantine() -> None:
        # the rows read anew that passed (positions picked in C)
        passed = list(compress(range(len(checked) - len(copied)), map(_PASSED.__contains__, status)))
        if passed or copied:
            write_bronze_rows(
                store,
                source,
                checked,
                reads,
                # a line read as columns has no field outside the source's columns
                {i: None if read.parsed[i] is None else _rescued(checked[i], source) for i in passed},
                passed,
                run_id=ctx.run_id,
                at=ctx.as_of,
                hashes=read.hashes,
                copied=(copied, known.stored.take(pa.array([s for _row, s in read.known], pa.int64())))
                if known is not None and copied
                else None,
            )
            hook(catalog.BRONZE.named(source.name))
        quarantined = list(compress(range(len(status)), map("quarantined".__eq__, status)))
        if quarantined or refused:
            write_quarantine_rows(store, source, checked, quarantined, refused, run_id=ctx.run_id, at=ctx.as_of)
            hook(catalog.QUARANTINE.named(source.name))

    # bronze and quarantine written beside silver (delta-rs and hashlib release the GIL)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bronze-{source.name}") as beside:
        bronze = beside.submit(write_bronze_and_quarantine)
        loaded = list(compress(range(len(status)), map(LOADED.__eq__, status)))
        if redelivered and loaded:
            # a re-delivered customer line leaves its record as it is (see _KnownLines)
            loaded = _without(loaded, redelivered)
            if not loaded:
                hook(catalog.CUSTOMER_RECORDS.name)
        if loaded:
            if valid_typed is None:
                kept = typed_table(loaded)
            else:
                kept = valid_typed.filter(pc.is_in(valid_typed["_row"], pa.array(loaded, pa.int64())))
            positions = loaded
            kept = kept.append_column(
                "_warnings",
                pa.array(list(map(attrgetter("warnings"), map(checked.__getitem__, positions))), pa.list_(pa.string())),
            )
            # the texts as read: a birth date that does not parse is kept as written (date_of_birth_text)
            scalars = [c.name for c in source.columns if c.is_scalar]
            texts = reads.columns(positions)
            kept = kept.append_column(
                "_as_read",
                pa.StructArray.from_arrays(
                    [texts[name].combine_chunks() for name in scalars],
                    fields=[pa.field(name, pa.string()) for name in scalars],
                ),
            )
            write_silver_rows(ctx, store, source, kept, hook)
    bronze.result()
    return LoadedFiles(source, files, per_file, reasons), source_counts(files, per_file, skipped=skipped)


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused while a source's rows are held: millions of small dicts and
    lists (no cycles among them) made each full collection walk them all again (~18 % of the CPU
    at 100k rows, more at 1M); reference counting still frees them, the collector runs after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def ingest_embedded(
    ctx: JobContext,
    store: DeltaStore,
    sources: dict[str, SourceConfig],
    wanted: Iterable[str],
    *,
    hook: WriteHook | None = None,
) -> dict[str, int]:
    """Ingest ``wanted`` (sources :func:`embedded_reason` accepts) on the embedded engine.

    Returns:
        Totals over the sources, as :func:`lakecdp.ingest.job.ingest`.
    """
    write_hook = hook or (lambda _name: None)
    ledger = _ledger(store)
    totals: dict[str, int] = {}
    done: dict[str, LoadedFiles] = {}

    def one(name: str) -> None:
        loaded, counts = _load_source(ctx, store, sources[name], ledger, write_hook)
        if loaded is not None:
            done[name] = loaded
        logger.info("ingest %s (embedded): %s", name, counts)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value

    names = list(wanted)
    # the catalogue first (order lines take their category from silver.products), the others side by side
    first = [n for n in names if sources[n].target == "products"]
    rest = [n for n in names if n not in first]
    try:
        with _without_cycle_collection():
            for name in first:
                one(name)
            _side_by_side(one, rest)
    finally:
        write_ops(ctx, [done[n] for n in names if n in done], write_hook, store=store)
    return totals


def _side_by_side(work: Callable[[str], None], names: list[str], *, workers: int | None = None) -> None:
    """``work`` for every name on up to ``workers`` threads (default one per core: DuckDB, Arrow,
    delta-rs and hashlib release the GIL for most of a source's work); every name is tried even
    when one fails, the first failure (in ``names`` order) raised."""
    workers = min(len(names), workers or os.cpu_count() or 1)
    if workers <= 1:
        for name in names:
            work(name)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        futures = [pool.submit(work, name) for name in names]
    for future in futures:
        future.result()


__all__ = ["embedded_reason", "ingest_embedded", "load_sources"]
