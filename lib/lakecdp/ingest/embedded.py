"""Rows on the embedded engine (no JVM): checked, typed and mapped as on Spark; and the intake pickup.

Shared by the batch ingest on the embedded engine (:mod:`lakecdp.ingest.embedded_batch`: lines
parsed by their format, then :func:`check_parsed`, :func:`typed_row`, :func:`as_read`) and the
HTTP intake's pickup: :mod:`lakecdp.api.pickup` hands each chunk of the intake log to
:func:`write_chunk` when the run's engine is ``embedded`` (path-based tables). One definition of
the rules, two evaluators, as for the HTTP intake itself:

- **validation**: the source YAML's rules (types, ``required``, primary key, timestamps and their
  bounds, email checks, lengths, junk values; reason codes and patterns of
  :mod:`lakecdp.ingest.validate`) interpreted by :func:`lakecdp.ingest.python_rules.validate_events`,
  the validator the intake already answers with (its agreement with the Spark validator is
  tested in tests/test_api_validation.py), on the rows :mod:`lakecdp.ingest.screen` (the rules as
  one DuckDB query over the batch) flags; the others have no finding. The reasons, warnings, warn-level nulling and the
  ``detail`` text are laid out as :func:`lakecdp.ingest.validate.parse_and_validate` lays them out.
- **mapping**: the source's ``mapping`` (and its ``also`` filter and mapping) stay Spark SQL text;
  :func:`lakecdp.sqldialect.translate.condition_to_duckdb` writes each as DuckDB SQL with Spark's
  meaning (``CAST((<expression>) AS <silver type>)`` as Spark's ``F.expr(...).cast(...)``), run on
  DuckDB over the typed rows.
- **standardisation**: the cleaners silver events and web login records need (email:
  :func:`lakecdp.ingest.python_rules.valid_email` -- the ingest's pattern and byte limits -- then junk;
  device / customer numbers trimmed, junk nulled; device id arrays without junk) in Python; orders
  (``shop_orders``: nested items typed as Spark's JSON reader types them) by
  :func:`lakecdp.ingest.embedded_silver.to_silver` and
  :func:`~lakecdp.ingest.embedded_silver.to_order_items`. A source whose mapping needs a cleaner
  not written here (names, phones, countries, postcodes) raises :class:`EmbeddedPickupUnsupported`
  and the pickup loads that source through Spark; so does, per chunk, a nested value of another
  JSON kind than declared (an order line's ``qty`` posted as text) or a mapping DuckDB cannot run,
  before anything is written.

Writes (delta-rs, through :mod:`lakecdp.ingest.writes`): insert-if-new, as the Spark pickup's
MERGEs are -- quarantine and bronze on the log position (topic, partition = log segment,
offset), silver.events on ``event_id``, ``ops.ingest_audit`` on (source, source_file,
stream_batch); ``silver.customer_records`` upserted on ``record_id`` when the row is newer;
``silver.orders`` and ``silver.order_items`` upserted on their keys (an item's missing category
from ``silver.products``), as the batch ingest writes a landed orders file. A chunk
replayed after a crash between commits (the ledger's ``started`` chunk) finds what it wrote and
adds only what is missing, on either engine: the Spark pickup's MERGEs and these appends key the
same rows.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from lakecdp import catalog
from lakecdp.ingest.python_rules import (
    Problem,
    as_text,
    text_to_double,
    parse_date,
    parses,
    parse_timestamp,
    valid_email,
)
from lakecdp.ingest.validate import (
    BAD_ENCODING,
    FUTURE_TIMESTAMP,
    INVALID_DATE,
    INVALID_TIMESTAMP,
    INVALID_TYPE,
    MALFORMED_LINE,
    NON_FINITE_NUMBER,
    PLACEHOLDER_TIMESTAMP,
    REPLACEMENT_CHARACTER,
)
from lakecdp.ingest.screen import validate_screened
from lakecdp.ingest.embedded_silver import EmbeddedSilverUnsupported, map_rows, to_order_items, to_silver
from lakecdp.sqldialect.translate import jackson_string

if TYPE_CHECKING:
    import duckdb

    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore
    from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

#: a row of the log handed to the writer: raw JSON text, topic, partition (log segment), offset, received
RawRow = tuple[str, str, int, int, datetime]

#: findings of one column, ordered per column as parse_and_validate lists them
_COLUMN_CODES = frozenset(
    {INVALID_TYPE, NON_FINITE_NUMBER, INVALID_DATE, INVALID_TIMESTAMP, FUTURE_TIMESTAMP, PLACEHOLDER_TIMESTAMP}
)
#: silver.customer_records columns the embedded standardisation writes from an ``also`` mapping
_RECORD_COLUMNS = frozenset(
    {
        "source_record_id",
        "email",
        "customer_number",
        "crm_id",
        "device_ids",
        "updated_at",
        "email_consent",
        "sms_consent",
    }
)
_SCALAR_ARROW = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
    "double": pa.float64(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}
_TRUE = frozenset({"t", "true", "y", "yes", "1"})
#: the targets the embedded pickup writes (the intake's sources: web and email events, shop orders)
_TARGETS = ("events", "orders")
_NESTED_SCALARS = frozenset({"string", "int", "bigint", "double", "boolean"})


class EmbeddedPickupUnsupported(RuntimeError):
    """The source (or a chunk) needs something the embedded pickup does not do (a cleaner not
    written here, a Java date pattern, a date or map column, a nested value of another JSON kind
    than declared): it is picked up through Spark."""


def unsupported_reason(source: SourceConfig) -> str | None:
    """Why ``source`` cannot be picked up embedded, or None when it can."""
    if source.target not in _TARGETS:
        return f"target {source.target} (the embedded pickup writes {', '.join(_TARGETS)})"
    for column in source.columns:
        if column.is_scalar and column.type not in _SCALAR_ARROW:
            return f"column {column.name} of type {column.type}"
        if column.is_scalar and column.type == "timestamp" and column.format:
            return f"column {column.name} has a Java timestamp pattern"
        if not column.is_scalar and not _plain_nested(column.type):
            return f"nested column {column.name} of type {column.type}"
    for extra in source.also:
        if extra.target != "customer_records":
            return f"also target {extra.target}"
        beyond = sorted(set(extra.mapping) - _RECORD_COLUMNS)
        if beyond:
            return f"also mapping needs cleaners not on the embedded engine: {beyond}"
    return None


def _plain_nested(type_text: str) -> bool:
    """Arrays and structs of strings, integers, doubles and booleans (no maps, dates, timestamps)."""
    from lakecdp.catalog import split_top_level

    text = type_text.strip()
    lowered = text.lower()
    if lowered in _NESTED_SCALARS:
        return True
    if lowered.startswith("array<") and text.endswith(">"):
        return _plain_nested(text[len("array<") : -1])
    if lowered.startswith("struct<") and text.endswith(">"):
        return all(_plain_nested(f.partition(":")[2]) for f in split_top_level(text[len("struct<") : -1], ","))
    return False


def _nested(value: Any, type_text: str, where: str) -> Any:
    """A nested JSON value typed as Spark's JSON reader types it, for the kinds where that is plain
    (text into a string field as Spark writes it, integers into int, numbers into double); any
    other kind (text in an int field) raises :class:`EmbeddedPickupUnsupported`: the Spark pickup's."""
    from lakecdp.catalog import split_top_level

    if value is None:
        return None
    text = type_text.strip()
    kind = text.lower()
    if kind == "string":
        return as_text(value)
    if kind in ("int", "bigint") and isinstance(value, int) and not isinstance(value, bool):
        if -(2 ** (31 if kind == "int" else 63)) <= value < 2 ** (31 if kind == "int" else 63):
            return value
    elif kind == "double" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind == "boolean" and isinstance(value, bool):
        return value
    elif kind.startswith("array<") and isinstance(value, list):
        return [_nested(v, text[len("array<") : -1], f"{where}[]") for v in value]
    elif kind.startswith("struct<") and isinstance(value, dict):
        fields = [f.partition(":") for f in split_top_level(text[len("struct<") : -1], ",")]
        return {
            name.strip(): _nested(value.get(name.strip()), inner, f"{where}.{name.strip()}")
            for name, _, inner in fields
        }
    raise EmbeddedPickupUnsupported(f"{where}: a JSON {type(value).__name__} where {text} is declared")


def _pickup_read(event: dict[str, Any], source: SourceConfig) -> dict[str, Any]:
    """:func:`as_read` with the nested values beyond string structs typed (:func:`_nested`)."""
    read = as_read(event, source)
    for column in source.columns:
        if not column.is_scalar and not _string_struct(column.type):
            read[column.name] = _nested(event.get(column.name), column.type, column.name)
    return read


@functools.lru_cache(maxsize=256)
def _string_struct(type_text: str) -> bool:
    """Whether ``type_text`` is a struct of strings (asked per row and column: cached)."""
    from lakecdp.catalog import split_top_level

    text = type_text.strip()
    if not text.lower().startswith("struct<") or not text.endswith(">"):
        return False
    fields = split_top_level(text[len("struct<") : -1], ",")
    return all(f.partition(":")[2].strip().lower() == "string" for f in fields)


@functools.lru_cache(maxsize=256)
def _struct_fields(type_text: str) -> tuple[str, ...]:
    from lakecdp.catalog import split_top_level

    text = type_text.strip()
    return tuple(f.partition(":")[0].strip() for f in split_top_level(text[len("struct<") : -1], ","))


# -- validation: the rows as parse_and_validate gives them -----------------------------------------


class CheckedRow(NamedTuple):
    """One log line validated: what parse_and_validate's columns hold for it. A tuple: the clean
    rows of a batch are made in C (:func:`clean_rows`), a million at a time."""

    raw: str
    topic: str
    partition: int
    offset: int
    received: datetime
    event: Any
    reasons: Sequence[str]
    warnings: Sequence[str]
    detail: str | None
    #: field -> nulled (warn-level findings): "col" or "col.inner"
    nulled: frozenset[str]

    @property
    def valid(self) -> bool:
        return not self.reasons


_NOTHING_NULLED: frozenset[str] = frozenset()
#: what a row without a finding holds after its RawRow fields
_CLEAN: tuple[Any, ...] = (None, (), (), None, _NOTHING_NULLED)


def clean_rows(rows: Iterable[RawRow]) -> list[CheckedRow]:
    """A :class:`CheckedRow` without event or finding per row, made in C (each RawRow and the
    clean fields joined into the row's tuple): no Python call per row."""
    made = map(tuple.__new__, repeat(CheckedRow), map(operator.add, rows, repeat(_CLEAN)))
    return list(made)


def _spark_order(problems: list[Problem], source: SourceConfig, index: dict[str, int] | None = None) -> list[Problem]:
    """Findings in parse_and_validate's order: per column first (in column order), then required,
    key and checks (the Python validator lists nested doubles before scalar columns).

    Args:
        index: column name -> position (``source``'s columns), when the caller has it."""
    if not problems:
        return problems
    if index is None:
        index = {name: i for i, name in enumerate(source.column_names)}
    column_level = [p for p in problems if p.code in _COLUMN_CODES and p.field in index]
    rest = [p for p in problems if not (p.code in _COLUMN_CODES and p.field in index)]
    return sorted(column_level, key=lambda p: index[p.field]) + rest


def _distinct(codes: list[str]) -> list[str]:
    return list(dict.fromkeys(codes))


@dataclass(frozen=True)
class ParsedLine:
    """One line as its format reads it: the fields (None: no object), the format's structural
    reason codes (MALFORMED_LINE, WRONG_FIELD_COUNT) and their detail (CSV: the field count)."""

    event: Any
    structural: tuple[str, ...] = ()
    detail: str | None = None


@dataclass(frozen=True)
class ReadColumns:
    """Rows read as columns (:mod:`lakecdp.ingest.columnar`): their positions, ascending, and
    their fields as read in that order (:func:`lakecdp.ingest.columnar.read_schema`'s table).
    Such a row has no structural finding; its fields are those :func:`as_read` gives of the line
    parser's object."""

    rows: list[int]
    table: pa.Table
    #: the table's rows are the line parser's objects too (CSV: all texts); if not (JSON: the
    #: texts of its numbers and booleans), the Python rules judge :func:`parse_json_line`'s object
    exact: bool

    def row(self, k: int) -> dict[str, Any]:
        """The fields of the ``k``-th row read (a dict, as :func:`as_read` gives)."""
        return self.table.slice(k, 1).to_pylist()[0]


def parse_json_line(raw: str) -> ParsedLine:
    """A JSON line as :func:`lakecdp.ingest.validate._as_read_json` reads it: an object, or
    MALFORMED_LINE (not JSON, not an object, or not starting with ``{`` after leading spaces)."""
    try:
        event = json.loads(raw)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not raw.lstrip(" ").startswith("{"):
        return ParsedLine(event if isinstance(event, dict) else None, (MALFORMED_LINE,))
    return ParsedLine(event)


def check_rows(rows: list[RawRow], source: SourceConfig, *, as_of: datetime) -> list[CheckedRow]:
    """Validate log lines (JSON objects) with the source's rules; "future" is judged against the
    later of ``as_of`` and each line's receive time (as the Spark pickup does with ``kafka_timestamp``)."""
    return check_parsed(rows, [parse_json_line(row[0]) for row in rows], source, as_of=as_of)


def check_parsed(
    rows: list[RawRow],
    parsed: list[ParsedLine | None],
    source: SourceConfig,
    *,
    as_of: datetime,
    columns: ReadColumns | None = None,
) -> list[CheckedRow]:
    """Validate parsed lines as :func:`lakecdp.ingest.validate.parse_and_validate` does: the
    format's structural reasons and BAD_ENCODING (a U+FFFD in the line) first and alone, else
    the field rules (:func:`~lakecdp.ingest.python_rules.validate_events`) in Spark's order.

    Args:
        parsed: per row, the line parser's reading, or None for a row read as columns.
        columns: the rows read as columns and their fields (every None of ``parsed``).

    A row read as columns that has no finding gets no event (its fields are in ``columns``); a
    row with a finding carries the line parser's object."""
    column_rows = None if columns is None else np.asarray(columns.rows, dtype=np.int64)

    def at(rows_wanted: list[int]) -> list[int]:
        """The positions in ``columns`` of rows read as columns (its rows are ascending)."""
        assert column_rows is not None
        return np.searchsorted(column_rows, np.asarray(rows_wanted, dtype=np.int64)).tolist()

    exact_events: dict[int, Any] = {}

    def exact(wanted: list[int]) -> list[Any]:
        """The objects the Python rules judge and a row with a finding carries (the rows read as
        columns: made once, their table's rows taken together)."""
        missing = [i for i in wanted if parsed[i] is None and i not in exact_events]
        if missing:
            assert columns is not None
            if columns.exact:
                taken = columns.table.take(pa.array(at(missing), pa.int64())).to_pylist()
            else:
                taken = [parse_json_line(rows[i][0]).event for i in missing]
            exact_events.update(zip(missing, taken))
        return [exact_events[i] if parsed[i] is None else parsed[i].event for i in wanted]  # type: ignore[union-attr]

    # the structural findings, first and alone: the format's, then BAD_ENCODING (a U+FFFD in the line)
    structural: dict[int, list[str]] = {
        i: list(line.structural) for i, line in enumerate(parsed) if line and line.structural
    }
    for i in [i for i, row in enumerate(rows) if REPLACEMENT_CHARACTER in row[0]]:
        structural.setdefault(i, []).append(BAD_ENCODING)
    # "future" is judged against the later of as_of and the receive time (one bound for a batch)
    bounds = {max(as_of, received) for received in {row[4] for row in rows}}
    by_bound: dict[datetime, list[int]] = {}
    if len(bounds) == 1:
        by_bound[bounds.pop()] = (
            [i for i in range(len(rows)) if i not in structural] if structural else list(range(len(rows)))
        )
    else:
        for i, row in enumerate(rows):
            if i not in structural:
                by_bound.setdefault(max(as_of, row[4]), []).append(i)
    found: dict[int, list[Problem]] = {}
    # the rows the line parser read (a ParsedLine is true, None false), found in C
    lined = set(compress(range(len(parsed)), parsed))
    for bound, indexes in by_bound.items():
        # the rows the rules' DuckDB expressions pass have no finding; the rest go through the Python rules
        read = [i for i in indexes if i not in lined] if lined else indexes
        other = [i for i in indexes if i in lined] if lined else []
        table = None
        if read:
            assert columns is not None
            table = columns.table if len(read) == len(columns.rows) else columns.table.take(at(read))
        order = read + other
        screened = validate_screened(
            [parsed[i].event for i in other],  # type: ignore[union-attr]
            source,
            as_of=bound,
            columns=table,
            exact=lambda ks: exact([order[k] for k in ks]),
        )
        found.update((i, row_problems) for i, row_problems in zip(order, screened) if row_problems)
    # every row as clean first (made in C), the line parser's object given to the rows it read,
    # then the rows with a finding replaced
    checked = clean_rows(rows)
    for i in lined:
        checked[i] = checked[i]._replace(event=parsed[i].event)  # type: ignore[union-attr]
    flagged = sorted(found.keys() | structural.keys())
    events = dict(zip(flagged, exact(flagged)))
    index = {name: i for i, name in enumerate(source.column_names)}
    for i in flagged:
        raw, topic, partition, offset, received = rows[i]
        event = events[i]
        problems = found.get(i, [])
        codes = structural.get(i) or [p.code for p in problems if p.code in (MALFORMED_LINE, BAD_ENCODING)]
        if codes:
            # a malformed line (or nested field of the wrong shape) carries only its structural reasons
            codes = _distinct(codes)
            detail = parsed[i].detail if parsed[i] is not None else None  # type: ignore[union-attr]
            text = "; ".join(codes) + (f": {detail}" if detail else "")
            checked[i] = CheckedRow(raw, topic, partition, offset, received, event, codes, [], text, frozenset())
            continue
        ordered = _spark_order(problems, source, index)
        refusing = [p for p in ordered if p.refuses]
        warning = [p for p in ordered if not p.refuses]
        detail = "; ".join(f"{p.code}({p.field})" for p in [*refusing, *warning]) or None
        checked[i] = CheckedRow(
            raw,
            topic,
            partition,
            offset,
            received,
            event,
            _distinct([p.code for p in refusing]),
            [] if refusing else _distinct([p.code for p in warning]),
            detail,
            frozenset(p.field for p in warning),
        )
    return checked


# -- typed columns ------------------------------------------------------------------------------


def _utc_naive(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _typed(text: str | None, type_name: str) -> Any:
    """Spark's ``try_cast(trim(x) as <type>)`` of a field's text (null when it does not parse)."""
    if text is None:
        return None
    if type_name == "string":
        return text
    if not parses(text, type_name):
        return None
    stripped = text.strip(" ")
    if type_name == "timestamp":
        return _utc_naive(parse_timestamp(stripped))
    if type_name == "double":
        return text_to_double(stripped)
    if type_name in ("int", "bigint"):
        return int(stripped)
    if type_name == "date":
        return parse_date(stripped)
    if type_name == "boolean":
        return stripped.lower() in _TRUE
    raise EmbeddedPickupUnsupported(f"type {type_name}")


#: a column's kind as :func:`as_read` and :func:`typed_row` treat it
_SCALAR, _STRING_STRUCT, _NESTED = 0, 1, 2
_LAYOUTS: dict[int, tuple[SourceConfig, tuple[tuple[str, int, str, tuple[str, ...]], ...]]] = {}


def _layout(source: SourceConfig) -> tuple[tuple[str, int, str, tuple[str, ...]], ...]:
    """(name, kind, type, struct fields) per column, worked out once per source (asked per row)."""
    cached = _LAYOUTS.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    layout: list[tuple[str, int, str, tuple[str, ...]]] = []
    for column in source.columns:
        if column.is_scalar:
            layout.append((column.name, _SCALAR, column.type, ()))
        elif _string_struct(column.type):
            layout.append((column.name, _STRING_STRUCT, column.type, _struct_fields(column.type)))
        else:
            layout.append((column.name, _NESTED, column.type, ()))
    _LAYOUTS[id(source)] = (source, tuple(layout))
    return tuple(layout)


_KNOWN: dict[int, tuple[SourceConfig, frozenset[str]]] = {}


def _known(source: SourceConfig) -> frozenset[str]:
    """``source``'s column names (asked per row: worked out once per source)."""
    cached = _KNOWN.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    known = frozenset(source.column_names)
    _KNOWN[id(source)] = (source, known)
    return known


def as_read(event: dict[str, Any], source: SourceConfig) -> dict[str, Any]:
    """``_as_read``: scalars as their text, string structs as dicts of texts, other nested values as
    parsed (the validator has checked their shape)."""
    out: dict[str, Any] = {}
    for name, kind, _type, fields in _layout(source):
        value = event.get(name)
        if kind == _SCALAR:
            out[name] = value if type(value) is str else as_text(value)
        elif value is None:
            out[name] = None
        elif kind == _STRING_STRUCT:
            out[name] = {f: as_text(value.get(f)) for f in fields}
        else:
            out[name] = value
    return out


class Reads(Mapping[int, dict[str, Any]]):
    """The valid rows' fields as read (row -> :func:`as_read`'s dict), also as Arrow columns for
    the consumers that take a column of many rows (the casts, bronze, silver's texts as read).
    Rows read as columns (:class:`ReadColumns`) are held as their table (a dict is made only when
    one is asked for by row); the others as dicts, turned into columns once (in C)."""

    def __init__(
        self, reads: dict[int, dict[str, Any]], source: SourceConfig, columns: ReadColumns | None = None
    ) -> None:
        self._dicts = reads
        self._source = source
        self._read = columns
        #: the rows read as columns, ascending (their positions in ``columns`` found by bisection)
        self._columns_rows: list[int] = [] if columns is None else columns.rows
        self._table: pa.Table | None = None
        self._rows: pa.Array | None = None
        self._all: list[int] = []
        #: dicts made of rows read as columns (:meth:`fetch`)
        self._made: dict[int, dict[str, Any]] = {}

    def __getitem__(self, row: int) -> dict[str, Any]:
        found = self._dicts.get(row)
        if found is None:
            found = self._made.get(row)
        if found is not None:
            return found
        at = self._at(row)
        if self._read is None or at is None:
            raise KeyError(row)
        return self._read.row(at)

    def _at(self, row: object) -> int | None:
        """The position in ``columns`` of a row read as columns, or None."""
        if not isinstance(row, int):
            return None
        at = bisect.bisect_left(self._columns_rows, row)
        return at if at < len(self._columns_rows) and self._columns_rows[at] == row else None

    def fetch(self, rows: list[int]) -> None:
        """Make the dicts of ``rows`` read as columns at once (before asking for them one by one)."""
        wanted = [(i, at) for i in rows if i not in self._made and (at := self._at(i)) is not None]
        if wanted and self._read is not None:
            taken = self._read.table.take(pa.array([at for _i, at in wanted], pa.int64())).to_pylist()
            self._made.update(zip([i for i, _at in wanted], taken))

    def __iter__(self) -> Iterator[int]:
        yield from self._dicts
        yield from self._columns_rows

    def __len__(self) -> int:
        return len(self._dicts) + len(self._columns_rows)

    def __contains__(self, row: object) -> bool:
        return row in self._dicts or self._at(row) is not None

    def columns(self, rows: list[int]) -> pa.Table:
        """The scalar and string-struct columns (texts) of ``rows`` (keys of this mapping), in order."""
        if self._table is None:
            from lakecdp.ingest.columnar import read_schema

            schema = read_schema(self._source)
            values = pa.array(list(self._dicts.values()), pa.struct(list(schema)))
            parts = [pa.Table.from_struct_array(values) if len(values) else schema.empty_table()]
            if self._read is not None:
                parts.append(self._read.table)
            order = pa.array([*self._dicts, *self._columns_rows], pa.int64())
            # in row order: the callers that ask for every row (ascending) take the table as it is
            if self._dicts:
                by_row = pa.compute.sort_indices(order)
                self._table, self._rows = pa.concat_tables(parts).take(by_row), order.take(by_row)
            else:
                # only rows read as columns: in row order already
                self._table, self._rows = pa.concat_tables(parts), order
            self._all = self._rows.to_pylist()
        if rows == self._all:
            return self._table
        wanted = pa.array(rows, pa.int64())
        if len(rows) > 1 and pa.compute.all(pa.compute.greater(wanted[1:], wanted[:-1])).as_py():
            # ascending rows (every caller's): a filter copies the texts in one pass, a take gathers them
            mask = pa.compute.is_in(self._rows, value_set=wanted)
            if pa.compute.sum(mask).as_py() == len(rows):
                return self._table.filter(mask)
        return self._table.take(pa.compute.index_in(wanted, value_set=self._rows))

    def column_values(self, name: str, rows: list[int]) -> list[Any]:
        """Column ``name`` of ``rows`` as Python values: from the Arrow columns when it is one of
        them (a scalar or a string struct), else from each row's dict."""
        if not rows:
            return []
        texts = self.columns(rows)
        if name in texts.column_names:
            return texts[name].to_pylist()
        return [self[i].get(name) for i in rows]


def typed_row(
    row: CheckedRow, read: dict[str, Any], source: SourceConfig, patterned: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The typed source columns of a valid row, warn-level fields nulled.

    Args:
        patterned: columns the caller types by their Java pattern (left null here)."""
    out: dict[str, Any] = {}
    nulled = row.nulled
    for name, kind, type_name, _fields in _layout(source):
        if kind == _SCALAR:
            out[name] = None if name in nulled or name in patterned else _typed(read[name], type_name)
        else:
            value = read[name]
            if nulled and isinstance(value, dict):
                value = {k: (None if f"{name}.{k}" in nulled else v) for k, v in value.items()}
            out[name] = None if name in nulled else value
    return out


def _column_type(column) -> pa.DataType:
    if column.is_scalar:
        return _SCALAR_ARROW[column.type]
    if _string_struct(column.type):
        return pa.struct([pa.field(f, pa.string()) for f in _struct_fields(column.type)])
    from lakecdp.delta_store import arrow_type

    return arrow_type(column.type)


def _rescued(event: dict[str, Any], source: SourceConfig) -> str | None:
    """``_rescued``: the unknown fields as Spark's to_json of a map<string,string> writes them."""
    known = _known(source)
    if known.issuperset(event):
        return None
    parts = [
        f"{jackson_string(k)}:{'null' if v is None else jackson_string(as_text(v) or '')}"
        for k, v in event.items()
        if k not in known
    ]
    return "{" + ",".join(parts) + "}" if parts else None


# -- standardisation (the cleaners of lakecdp.ingest.standardise silver events need) -------------


def _junk(source: SourceConfig) -> frozenset[str]:
    return frozenset(v.lower() for v in source.junk_values)


def null_if_junk(value: str | None, junk: frozenset[str]) -> str | None:
    """:func:`lakecdp.ingest.standardise.null_if_junk`: null when the trimmed, lower-cased text is junk."""
    if value is None or value.strip(" ").lower() in junk:
        return None
    return value


def normalise_email(value: str | None, junk: frozenset[str]) -> str | None:
    """:func:`lakecdp.ingest.standardise.normalise_email`: trimmed, lower-cased, valid, not junk."""
    if value is None:
        return None
    email = value.strip(" ").lower()
    if not valid_email(email):
        return None
    return null_if_junk(email, junk)


def trimmed_id(value: str | None, junk: frozenset[str]) -> str | None:
    return null_if_junk(value.strip(" ") if value is not None else None, junk)


# -- mapping on DuckDB ----------------------------------------------------------------------------


def _connection() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# -- the chunk -----------------------------------------------------------------------------------


def _typed_table(
    rows: list[dict[str, Any]],
    positions: list[int],
    source: SourceConfig,
    warnings: Sequence[Sequence[str]] | None = None,
) -> pa.Table:
    columns = {"_row": pa.array(positions, pa.int64())}
    for column in source.columns:
        columns[column.name] = pa.array([r[column.name] for r in rows], _column_type(column))
    if warnings is not None:
        columns["_warnings"] = pa.array(warnings, pa.list_(pa.string()))
    return pa.table(columns)


def _erased(ctx: JobContext, store: DeltaStore, source: SourceConfig, mapped: pa.Table) -> set[int]:
    """Rows (``_row``) holding an identifier whose salted hash is in ``ops.erasures``: as
    :func:`lakecdp.ingest.classify.erased_condition` on the standardised identifiers."""
    from lakecdp.erasure import ERASURES_TABLE, erasure_salt, load_privacy_config, salted_hash

    if mapped.num_rows == 0 or not store.exists(ERASURES_TABLE):
        return set()
    erasures = store.read(ERASURES_TABLE, columns=["salted_hash", "identifier_type"]).to_pylist()
    wanted: dict[str, set[str]] = {}
    for row in erasures:
        wanted.setdefault(row["identifier_type"], set()).add(row["salted_hash"])
    if not wanted:
        return set()
    salt = erasure_salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
    junk = _junk(source)
    hit: set[int] = set()
    for row in mapped.to_pylist():
        values = {
            "email": normalise_email(row.get("email"), junk),
            "customer_number": trimmed_id(row.get("customer_number"), junk),
            "device_id": trimmed_id(row.get("device_id"), junk),
        }
        for kind, value in values.items():
            if value is not None and kind in wanted and salted_hash(salt, kind, value) in wanted[kind]:
                hit.add(row["_row"])
    return hit


def _bronze_ddl(store: DeltaStore, name: str, source: SourceConfig) -> tuple[str, list[str]]:
    """The bronze table's DDL (its own columns, in its order, then the ones this write adds) and
    the columns to add to an existing table (the Kafka position a batch-ingested table lacks)."""
    ours: dict[str, str] = {}
    for column in source.columns:
        ours[column.name] = "string" if column.is_scalar else column.type.replace(" ", "")
    ours.update(
        {
            "_rescued": "string",
            "_source_file": "string",
            "_line": "bigint",
            "_kafka_topic": "string",
            "_kafka_partition": "int",
            "_kafka_offset": "bigint",
            "_ingested_at": "timestamp",
            "_run_id": "string",
            "_row_hash": "string",
        }
    )
    if not store.exists(name):
        return ", ".join(f"{k} {v}" for k, v in ours.items()), []
    existing = [f.name for f in store.table(name).schema().fields]
    added = [k for k in ours if k not in existing]
    return ", ".join(f"{k} {ours.get(k, 'string')}" for k in [*existing, *added]), added


def _add_columns(store: DeltaStore, name: str, ddl: str, added: list[str]) -> None:
    """Add the Kafka position columns to a bronze table the batch ingest created (Spark's
    ``withSchemaEvolution`` in the Spark pickup)."""
    if not added:
        return
    from deltalake.schema import Field

    from lakecdp.catalog import ddl_fields
    from lakecdp.delta_store import arrow_type

    types = {n: t for n, t, _ in ddl_fields(ddl)}
    fields = [Field.from_arrow(pa.field(n, arrow_type(types[n]))) for n in added]
    store.table(name).alter.add_columns(fields)


def _stored(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, name: str, columns: list[str], where: str, params: list
) -> set:
    import duckdb

    if not store.exists(name):
        return set()
    try:
        store.load(con, "_stored_keys", name, columns=columns, where=where, params=params)
    except duckdb.BinderException:
        # the columns were added to the table after its files were written (the Kafka position of
        # a bronze table the batch ingest created): no stored row has them
        if set(columns) <= {f.name for f in store.table(name).schema().fields}:
            return set()
        raise
    rows = {tuple(r) for r in con.execute("SELECT * FROM _stored_keys").fetchall()}
    con.execute("DROP TABLE _stored_keys")
    return rows


def write_chunk(
    ctx: JobContext,
    store: DeltaStore,
    rows: list[RawRow],
    *,
    source: SourceConfig,
    topic: str,
    stream_batch: str,
) -> dict[str, int]:
    """Validate, standardise and write one source's lines of a log chunk; safe to run twice.

    Args:
        rows: the chunk's lines of ``source``, in log order.
        topic: the provenance topic (``lakecdp-api.<source>``; the audit row's ``kafka://<topic>``).
        stream_batch: the audit row's key (``api_intake_<segment>:<chunk start>``, as the Spark pickup).

    Returns:
        The audit counts, as :func:`lakecdp.ingest.stream.write_micro_batch` returns them.
    """
    from lakecdp.ingest.audit import audit_row, check_audit_counts
    from lakecdp.ingest.writes import (
        append_audit,
        append_bronze,
        append_new_events,
        append_quarantine,
        upsert_login_records,
    )

    reason = unsupported_reason(source)
    if reason is not None:
        raise EmbeddedPickupUnsupported(f"{source.name}: {reason}")
    name = source.name
    ingested_at = datetime.now(timezone.utc)
    run_id = ctx.run_id
    junk = _junk(source)
    target = catalog.SILVER[source.target]
    checked = check_rows(rows, source, as_of=ctx.as_of)
    con = _connection()
    try:
        # typed and mapped before anything is written: a nested value of another JSON kind than
        # declared, or a mapping DuckDB cannot run, raises here and the chunk goes through Spark
        reads = [_pickup_read(r.event, source) if r.valid else None for r in checked]
        valid_positions = [i for i, r in enumerate(checked) if r.valid]
        typed = _typed_table(
            [typed_row(checked[i], reads[i] or {}, source) for i in valid_positions],
            valid_positions,
            source,
            [checked[i].warnings for i in valid_positions],
        )
        # erasure is judged on every row a mapping can read, the rejected ones too (as on Spark):
        # rejected rows are mapped from their fields as read, typed where they parse
        rejected_positions = [i for i, r in enumerate(checked) if not r.valid and isinstance(r.event, dict)]
        rejected_typed = _typed_table(
            [_loose_typed(checked[i].event, source) for i in rejected_positions], rejected_positions, source
        )
        orders: tuple[pa.Table, pa.Table] | None = None
        try:
            mapped = map_rows(typed, source.mapping, target.ddl, as_of=ctx.as_of)
            rejected_mapped = map_rows(rejected_typed, _identifier_mapping(source), target.ddl, as_of=ctx.as_of)
            if source.target == "orders":
                orders = (
                    to_silver(typed, source, run_id=run_id, ingested_at=ingested_at, as_of=ctx.as_of),
                    to_order_items(typed, source, as_of=ctx.as_of),
                )
        except EmbeddedSilverUnsupported as why:
            raise EmbeddedPickupUnsupported(f"{name}: {why}") from None
        erased = _erased(ctx, store, source, mapped) | _erased(ctx, store, source, rejected_mapped)

        kept = [i for i in range(len(checked)) if i not in erased]
        rejected = [i for i in kept if not checked[i].valid]
        accepted = [i for i in kept if checked[i].valid]
        loaded = 0
        if rejected:
            stored = _stored(
                con,
                store,
                catalog.QUARANTINE.named(name),
                ["kafka_topic", "kafka_partition", "kafka_offset"],
                "WHERE kafka_topic = ? AND kafka_partition = ?",
                [topic, checked[0].partition],
            )
            fresh = [i for i in rejected if (topic, checked[i].partition, checked[i].offset) not in stored]
            quarantine = pa.table(
                {
                    "raw": [checked[i].raw for i in fresh],
                    "source_file": pa.nulls(len(fresh), pa.string()),
                    "line": pa.nulls(len(fresh), pa.int64()),
                    "kafka_topic": [checked[i].topic for i in fresh],
                    "kafka_partition": pa.array([checked[i].partition for i in fresh], pa.int32()),
                    "kafka_offset": pa.array([checked[i].offset for i in fresh], pa.int64()),
                    "reasons": pa.array([checked[i].reasons for i in fresh], pa.list_(pa.string())),
                    "detail": [checked[i].detail for i in fresh],
                    "run_id": [run_id] * len(fresh),
                    "quarantined_at": pa.array([ingested_at] * len(fresh), pa.timestamp("us", tz="UTC")),
                }
            )
            append_quarantine(store, quarantine, source, run_id=run_id)
        if accepted:
            bronze_name = catalog.BRONZE.named(name)
            ddl, added = _bronze_ddl(store, bronze_name, source)
            _add_columns(store, bronze_name, ddl, added)
            stored = _stored(
                con,
                store,
                bronze_name,
                ["_kafka_topic", "_kafka_partition", "_kafka_offset"],
                "WHERE _kafka_topic = ? AND _kafka_partition = ?",
                [topic, checked[0].partition],
            )
            fresh = [i for i in accepted if (topic, checked[i].partition, checked[i].offset) not in stored]
            append_bronze(
                store,
                _bronze_table(checked, reads, fresh, source, ddl, run_id=run_id, ingested_at=ingested_at),
                source,
                ddl,
                run_id=run_id,
            )
            if orders is not None:
                loaded = _upsert_orders(store, *orders, accepted, run_id=run_id)
            else:
                loaded = append_new_events(
                    con, store, mapped, set(accepted), source, junk, run_id=run_id, ingested_at=ingested_at
                )
        counts = {
            "rows_read": len(checked),
            "rows_loaded": loaded,
            "rows_quarantined": len(rejected),
            "duplicates_removed": len(accepted) - loaded,
            "rows_erased": len(erased),
        }
        source_file = f"kafka://{topic}"
        check_audit_counts(f"{name} {source_file} batch {stream_batch}", counts)
        if checked:
            audit_key = (name, source_file, stream_batch)
            stored_audit = _stored(
                con,
                store,
                catalog.INGEST_AUDIT.name,
                ["source", "source_file", "stream_batch"],
                "WHERE stream_batch = ?",
                [stream_batch],
            )
            if audit_key not in stored_audit:
                values = audit_row(run_id, name, source_file, counts, ingested_at, stream_batch)
                names = [n for n, _, _ in catalog.ddl_fields(catalog.INGEST_AUDIT.ddl)]
                audit = pa.table({n: [v] for n, v in zip(names, values)})
                append_audit(store, audit.cast(_arrow_schema(catalog.INGEST_AUDIT.ddl)), run_id=run_id)
        if source.also and accepted:
            upsert_login_records(
                store,
                typed.filter(pa.compute.is_in(typed["_row"], pa.array(accepted, pa.int64()))),
                checked,
                source,
                junk,
                run_id=run_id,
                ingested_at=ingested_at,
                as_of=ctx.as_of,
            )
        logger.info("%s: chunk %s written embedded %s", name, stream_batch, counts)
        return counts
    finally:
        con.close()


def _upsert_orders(store: DeltaStore, orders: pa.Table, items: pa.Table, accepted: list[int], *, run_id: str) -> int:
    """silver.orders and silver.order_items as a landed orders file's
    (:func:`lakecdp.ingest.writes.write_silver_rows`): the first accepted row per order id in the
    log, and its lines. Returns the orders written."""
    from lakecdp.ingest.writes import upsert_order_items, upsert_orders

    rows = orders.filter(pa.compute.is_in(orders["_row"], pa.array(accepted, pa.int64())))
    first: dict[Any, int] = {}
    for index, order_id in enumerate(rows["order_id"].to_pylist()):
        first.setdefault(order_id, index)
    picked = rows.take(pa.array(sorted(first.values()), pa.int64()))
    lines = items.filter(pa.compute.is_in(items["_row"], picked["_row"].combine_chunks()))
    upsert_orders(store, picked.drop_columns(["_row"]), run_id=run_id)
    upsert_order_items(store, lines.drop_columns(["_row"]), run_id=run_id)
    return picked.num_rows


def _arrow_schema(ddl: str) -> pa.Schema:
    from lakecdp.delta_store import arrow_schema

    return arrow_schema(ddl)


def _identifier_mapping(source: SourceConfig) -> dict[str, str]:
    return {k: v for k, v in source.mapping.items() if k in ("email", "customer_number", "device_id")}


def _loose_typed(event: dict[str, Any], source: SourceConfig) -> dict[str, Any]:
    """A rejected row's fields typed where they parse (null where not), for the erasure check."""
    read = as_read(event, source)
    out: dict[str, Any] = {}
    for column in source.columns:
        if column.is_scalar:
            out[column.name] = _typed(read[column.name], column.type)
        else:
            # a rejected row's nested value may have any shape; only string structs are kept
            out[column.name] = read[column.name] if _string_struct(column.type) else None
    return out


def _bronze_table(
    checked: list[CheckedRow],
    reads: list[dict[str, Any] | None],
    fresh: list[int],
    source: SourceConfig,
    ddl: str,
    *,
    run_id: str,
    ingested_at: datetime,
) -> pa.Table:
    schema = _arrow_schema(ddl)
    values: dict[str, list[Any]] = {f.name: [] for f in schema}
    for i in fresh:
        row = checked[i]
        read = reads[i] or {}
        own = {
            **read,
            "_rescued": _rescued(row.event, source),
            "_source_file": None,
            "_line": None,
            "_kafka_topic": row.topic,
            "_kafka_partition": row.partition,
            "_kafka_offset": row.offset,
            "_ingested_at": ingested_at,
            "_run_id": run_id,
            "_row_hash": hashlib.sha256(row.raw.encode("utf-8")).hexdigest(),
        }
        for field in schema:
            values[field.name].append(own.get(field.name))
    return pa.table({f.name: pa.array(values[f.name], f.type) for f in schema}, schema=schema)


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
