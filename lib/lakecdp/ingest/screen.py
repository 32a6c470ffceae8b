"""The row rules as one DuckDB query over a batch's columns: which rows surely pass them all.

The embedded ingest (:func:`lakecdp.ingest.embedded.check_parsed`) checked every row with
:func:`lakecdp.ingest.python_rules.validate_events`, one Python call per rule and value: about a
third of its CPU time. Most rows break no rule, so this module first evaluates the source's rules
as DuckDB expressions over the Arrow columns of the batch (the fields' texts as
:func:`lakecdp.ingest.embedded.as_read` reads them) and only the rows it flags go through
``validate_events`` for their findings -- codes, fields, messages, refusing or warning -- so
quarantine reasons, warnings, nulling, details and audit counts are exactly those of the Python
rules, which stay the one definition.

Each expression is *conservative*: it says "passes" only for texts whose shape it knows the Python
rule accepts (ASCII digits, four-digit years, two-digit fields in range, printable ASCII keys and
addresses, byte lengths within the character limit); anything else (Unicode digits, ``1e400``,
``NaN``, a ``+05:30:00`` zone, an odd Java pattern) is flagged and judged by the Python rules.
So a false "flagged" costs time, never a different result; a false "passes" would lose a finding,
and ``tests/test_ingest_screen.py`` checks on generated values (nulls, blanks, odd whitespace, bad
dates, overflow, Unicode) that every value an expression passes is one the Python rule passes.

A source the screen does not map (a rule on a path that is not a scalar column or a field of a
string struct, doubles inside nested values) is checked by ``validate_events`` alone.

Example:
    >>> validate_screened(events, source, as_of=as_of) == validate_events(events, source, as_of=as_of)
    True
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from lakecdp.ingest.python_rules import Problem, _holds_double, _latest, as_text, validate_events
from lakecdp.ingest.sources import NULL_LIKE_KEY_PATTERN, SourceConfig


#: blank as the Python rules read it (Spark's trim: spaces only)
def _blank(column: str) -> str:
    return f"({column} IS NULL OR regexp_full_match({column}, ' *'))"


_INT = {"int": r" *[+-]?[0-9]{1,9} *", "bigint": r" *[+-]?[0-9]{1,18} *"}
#: at most 40 characters and a two-digit exponent: always finite (< 1e140)
_DOUBLE = r" *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})? *"
_BOOLEAN = r" *([tT]|[tT][rR][uU][eE]|[yY]|[yY][eE][sS]|1|[fF]|[fF][aA][lL][sS][eE]|[nN]|[nN][oO]|0) *"
_YEAR = "[1-9][0-9]{3}"
_ISO_DATE = rf" *{_YEAR}-[0-9]{{2}}-[0-9]{{2}} *"
_ISO_TIMESTAMP = (
    rf" *{_YEAR}-[0-9]{{2}}-[0-9]{{2}}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,6}})?"
    r"(Z|[+-](0[0-9]|1[0-8]):[0-5][0-9])? *"
)
#: an address of ASCII letters, digits and ._%+- (a subset of EMAIL_PATTERN), local part <= 64
_EMAIL = r" *[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(\.[A-Za-z0-9\-]{1,63})+ *"
_PRINTABLE_KEY = r" *[!-~]([ -~]*[!-~])? *"
#: Java pattern letters -> (regular expression, strptime field); two letters only (``yyyy``: four)
_PATTERN_FIELDS = {
    "yyyy": (_YEAR, "%Y"),
    "MM": ("(0[1-9]|1[0-2])", "%m"),
    "dd": ("(0[1-9]|[12][0-9]|3[01])", "%d"),
    "HH": ("([01][0-9]|2[0-3])", "%H"),
    "mm": ("[0-5][0-9]", "%M"),
    "ss": ("[0-5][0-9]", "%S"),
}
_PATTERN_TOKEN = re.compile(r"([A-Za-z])\1*|[ \-/:.]")
_EPOCH_SLACK_US = 86_400_000_000
_EARLIEST_US = (
    int((datetime(1900, 1, 2, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    * 1_000_000
)


class _Unmapped(Exception):
    """A rule the screen does not express (the source is checked by the Python rules alone)."""


def _java_pattern(pattern: str) -> tuple[str, str] | None:
    """(regex, strptime format) of a Java date/time pattern of ``_PATTERN_FIELDS`` and plain
    separators, read whole (no trimming, as Spark); None for any other pattern."""
    regex, strptime, at = [], [], 0
    for token in _PATTERN_TOKEN.finditer(pattern):
        if token.start() != at:
            return None
        at = token.end()
        text = token.group(0)
        if text[0].isalpha():
            if text not in _PATTERN_FIELDS:
                return None
            regex.append(_PATTERN_FIELDS[text][0])
            strptime.append(_PATTERN_FIELDS[text][1])
        else:
            regex.append(re.escape(text))
            strptime.append(text)
    return ("".join(regex), "".join(strptime)) if at == len(pattern) and regex else None


@dataclass(frozen=True)
class _Screen:
    """A source's rules as one SQL expression over columns ``c0, c1, ...`` (texts of ``paths``)."""

    paths: tuple[tuple[str, ...], ...]
    #: the paths read only by a double column's type rule (a finite JSON number passes as is)
    doubles: frozenset[tuple[str, ...]]
    #: nested columns (not string structs) and their kind: struct / map need a dict, array a list
    nested: tuple[tuple[str, type], ...]
    #: the SQL text: one boolean per row, with ? for the parameters
    sql: str
    #: names of the parameters, in order: "latest_us", "today", or ("min_date", column)
    params: tuple[Any, ...]


_SCREENS: dict[int, tuple[SourceConfig, _Screen | None]] = {}


def _timestamp_sql(column: str, format_: str | None) -> str:
    """A TIMESTAMPTZ of the text where its shape is one the screen reads; else NULL."""
    if format_ is None:
        return (
            f"CASE WHEN regexp_full_match({column}, '{_ISO_TIMESTAMP}') "
            f"THEN try_cast(trim({column}, ' ') AS TIMESTAMPTZ) END"
        )
    regex, strptime = _java_pattern(format_) or (None, None)
    if regex is None:
        raise _Unmapped(format_)
    return f"CASE WHEN regexp_full_match({column}, '{regex}') THEN try_strptime({column}, '{strptime}') END"


def _date_sql(column: str, format_: str | None) -> str:
    if format_ is None:
        return f"CASE WHEN regexp_full_match({column}, '{_ISO_DATE}') THEN try_cast(trim({column}, ' ') AS DATE) END"
    regex, strptime = _java_pattern(format_) or (None, None)
    if regex is None:
        raise _Unmapped(format_)
    return (
        f"CASE WHEN regexp_full_match({column}, '{regex}') THEN CAST(try_strptime({column}, '{strptime}') AS DATE) END"
    )


def typed_clean_sql(column: str, type_name: str, format_: str | None, *, latest: str = "?") -> str:
    """SQL true when ``column``'s text surely gives no INVALID_TYPE / NON_FINITE_NUMBER /
    INVALID_DATE / INVALID_TIMESTAMP / FUTURE_TIMESTAMP / PLACEHOLDER_TIMESTAMP finding.

    Args:
        latest: SQL of the latest plausible time in microseconds since the epoch (a parameter)."""
    blank = _blank(column)
    if type_name in _INT:
        return f"({blank} OR regexp_full_match({column}, '{_INT[type_name]}'))"
    if type_name == "double":
        return f"({blank} OR (strlen({column}) <= 40 AND regexp_full_match({column}, '{_DOUBLE}')))"
    if type_name == "boolean":
        return f"({blank} OR regexp_full_match({column}, '{_BOOLEAN}'))"
    if type_name == "date":
        return f"({blank} OR {_date_sql(column, format_)} IS NOT NULL)"
    if type_name == "timestamp":
        moment = f"epoch_us({_timestamp_sql(column, format_)})"
        return (
            f"({blank} OR coalesce({moment} BETWEEN {_EARLIEST_US} AND {latest} "
            f"AND abs({moment}) > {_EPOCH_SLACK_US}, false))"
        )
    return "true"


def _screen(source: SourceConfig) -> _Screen | None:
    cached = _SCREENS.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    try:
        screen: _Screen | None = _build(source)
    except _Unmapped:
        screen = None
    _SCREENS[id(source)] = (source, screen)
    return screen


def _build(source: SourceConfig) -> _Screen:
    from lakecdp.ingest.embedded import _string_struct, _struct_fields

    columns = {c.name: c for c in source.columns}
    paths: list[tuple[str, ...]] = []

    def column_of(path: str) -> str:
        parts = tuple(path.split("."))
        spec = columns.get(parts[0])
        if spec is None:
            raise _Unmapped(path)
        if len(parts) == 1 and not spec.is_scalar:
            raise _Unmapped(path)
        if len(parts) == 2 and not (_string_struct(spec.type) and parts[1] in _struct_fields(spec.type)):
            raise _Unmapped(path)
        if len(parts) > 2:
            raise _Unmapped(path)
        if parts not in paths:
            paths.append(parts)
        return f"c{paths.index(parts)}"

    nested: list[tuple[str, type]] = []
    for spec in source.columns:
        if spec.is_scalar:
            continue
        if _holds_double(spec.type):
            raise _Unmapped(spec.name)
        if not _string_struct(spec.type):
            kind = spec.type.split("<", 1)[0].strip().lower()
            if kind in ("struct", "map"):
                nested.append((spec.name, dict))
            elif kind == "array":
                nested.append((spec.name, list))
    terms: list[str] = []
    params: list[Any] = []
    for spec in source.columns:
        if not spec.is_scalar or spec.type == "string":
            continue
        if spec.type not in (*_INT, "double", "boolean", "date", "timestamp"):
            raise _Unmapped(spec.type)
        terms.append(typed_clean_sql(column_of(spec.name), spec.type, spec.format))
        if spec.type == "timestamp":
            params.append("latest_us")
    for path in source.required:
        c = column_of(path)
        terms.append(f"NOT {_blank(c)}")
    for path in source.primary_key:
        c = column_of(path)
        terms.append(
            f"(regexp_full_match({c}, '{_PRINTABLE_KEY}') AND "
            f"NOT regexp_full_match(lower(trim({c}, ' ')), '{NULL_LIKE_KEY_PATTERN}'))"
        )
    for path, check in source.checks.items():
        c = column_of(path)
        if check.email:
            terms.append(f"({_blank(c)} OR (strlen({c}) <= 254 AND regexp_full_match({c}, '{_EMAIL}')))")
        if check.max_length is not None:
            terms.append(f"coalesce(strlen({c}) <= {int(check.max_length)}, true)")
        if check.min_date is not None or check.not_future:
            spec = columns[path.split(".")[0]]
            if spec.type != "date" or "." in path:
                raise _Unmapped(path)
            day = _date_sql(c, spec.format)
            bounds = []
            if check.min_date is not None:
                bounds.append(f"{day} >= CAST(? AS DATE)")
                params.append(("min_date", check.min_date))
            if check.not_future:
                bounds.append(f"{day} <= CAST(? AS DATE)")
                params.append("today")
            terms.append(f"({_blank(c)} OR coalesce({' AND '.join(bounds)}, false))")
    sql = "SELECT " + (" AND ".join(terms) if terms else "true") + " AS ok FROM batch"
    double_columns = {(c.name,) for c in source.columns if c.is_scalar and c.type == "double"}
    other_paths = {tuple(p.split(".")) for p in (*source.required, *source.primary_key, *source.checks)}
    return _Screen(tuple(paths), frozenset(double_columns - other_paths), tuple(nested), sql, tuple(params))


def _text(value: Any) -> str | None:
    return value if type(value) is str else as_text(value)


def _finite_number(value: Any) -> str | None:
    """A JSON number a double column reads as a finite double: ``"0"`` (what the rules see of it
    is only that it passes; writing its Java text would cost more than the check)."""
    if type(value) is float and math.isfinite(value):
        return "0"
    if type(value) is int and abs(value) < 10**300:
        return "0"
    return _text(value)


def _column(events: Sequence[dict[str, Any]], parts: tuple[str, ...], *, double: bool = False) -> list[str | None]:
    if len(parts) == 1:
        name = parts[0]
        if double:
            return [v if type(v) is str or v is None else _finite_number(v) for v in (e.get(name) for e in events)]
        return [_text(e.get(name)) for e in events]
    outer, inner = parts
    out: list[str | None] = []
    for e in events:
        value = e.get(outer)
        out.append(_text(value.get(inner)) if isinstance(value, dict) else None)
    return out


_LOCAL = threading.local()


def _over_batch(batch: pa.Table, query: str, params: Sequence[Any] | None = None) -> pa.Table:
    """``query`` (over the view ``batch``) in this thread's DuckDB connection on UTC (made once:
    a new connection and its time zone cost ~14 ms of CPU, several times per source)."""
    import duckdb

    con = getattr(_LOCAL, "connection", None)
    if con is None:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        _LOCAL.connection = con
    con.register("batch", batch)
    try:
        # a relation's Arrow (not a DB-API result's: that one copies the rows once more)
        return con.sql(query, params=params).to_arrow_table()
    finally:
        con.unregister("batch")


def passing(
    events: Sequence[Any],
    source: SourceConfig,
    *,
    as_of: date | datetime | None,
    columns: pa.Table | None = None,
) -> list[bool] | None:
    """Per row: True when it surely breaks none of ``source``'s row rules (then
    :func:`~lakecdp.ingest.python_rules.validate_events` finds nothing); None when the source's
    rules are not mapped (every row is checked by the Python rules).

    Args:
        events: parsed objects.
        columns: rows before ``events``, as their fields as read (:func:`lakecdp.ingest.columnar.read_schema`'s
            table: texts, string structs as structs of texts): already the batch's columns, no
            Python loop per rule and row."""
    screen = _screen(source)
    if screen is None:
        return None
    return _passing_read(columns, events, source, screen, as_of)


def _passing_read(
    columns: pa.Table | None,
    events: Sequence[Any],
    source: SourceConfig,
    screen: _Screen,
    as_of: date | datetime | None,
) -> list[bool]:
    """:func:`passing` of ``columns``' rows then ``events``, in that order."""
    from lakecdp.ingest.embedded import _string_struct

    struct_columns = {c.name for c in source.columns if not c.is_scalar and _string_struct(c.type)}
    shaped = []
    for e in events:
        ok = isinstance(e, dict)
        if ok:
            for name, kind in screen.nested:
                value = e.get(name)
                if value is not None and not isinstance(value, kind):
                    ok = False
                    break
            for name in struct_columns:
                value = e.get(name)
                if value is not None and not isinstance(value, dict):
                    ok = False
                    break
        shaped.append(ok)
    rows = [e if ok else {} for e, ok in zip(events, shaped)]
    read = 0 if columns is None else columns.num_rows

    def read_column(parts: tuple[str, ...]) -> pa.Array:
        # a path outside the declared columns and fields is null in a row read as columns
        # (the columnar reader reads no line with an unknown key)
        if columns is None or parts[0] not in columns.column_names:
            return pa.nulls(read, pa.string())
        column = columns[parts[0]].combine_chunks()
        if len(parts) == 1:
            return column
        if column.type.get_field_index(parts[1]) < 0:
            return pa.nulls(read, pa.string())
        return column.field(parts[1])

    batch = pa.table(
        {
            f"c{i}": pa.concat_arrays(
                [
                    read_column(parts),
                    pa.array(_column(rows, parts, double=parts in screen.doubles), pa.string()),
                ]
            )
            for i, parts in enumerate(screen.paths)
        }
    )
    if not screen.paths:
        batch = pa.table({"c": pa.nulls(read + len(rows), pa.string())})
    latest = _latest(source, as_of)
    today = (as_of.date() if isinstance(as_of, datetime) else as_of) or datetime.now(timezone.utc).date()
    values: list[Any] = []
    for name in screen.params:
        if name == "latest_us":
            values.append((latest - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1))
        elif name == "today":
            values.append(today.isoformat())
        else:
            values.append(name[1].isoformat())
    flags = _over_batch(batch, screen.sql, values).column(0).to_pylist()
    return [bool(flag) and s for flag, s in zip(flags, [True] * read + shaped)]


def validate_screened(
    events: list[Any],
    source: SourceConfig,
    *,
    as_of: date | datetime | None = None,
    columns: pa.Table | None = None,
    exact: Callable[[list[int]], list[Any]] | None = None,
) -> list[list[Problem]]:
    """:func:`~lakecdp.ingest.python_rules.validate_events`, the Python rules run only on the
    rows :func:`passing` flags (the others have no finding).

    Args:
        columns: rows before ``events``, as their fields as read (see :func:`passing`).
        exact: rows -> the objects the Python rules judge (required with ``columns``: a row read
            as columns is judged as the line parser reads it; what the screen reads is the same)."""
    read = 0 if columns is None else columns.num_rows
    if exact is None:
        if read:
            raise ValueError("rows read as columns need `exact`")

        def exact(rows: list[int]) -> list[Any]:
            return [events[i] for i in rows]

    total = read + len(events)
    clean = passing(events, source, as_of=as_of, columns=columns)
    if clean is None:
        return validate_events(exact(list(range(total))), source, as_of=as_of)
    flagged = [i for i, ok in enumerate(clean) if not ok]
    found: list[list[Problem]] = [[] for _ in range(total)]
    for i, problems in zip(flagged, validate_events(exact(flagged), source, as_of=as_of)):
        found[i] = problems
    return found


# -- typing: Spark's try_cast of the texts as DuckDB casts, on the shapes the screen knows ------------


def _cast_sql(column: str, type_name: str, format_: str | None) -> str:
    """``column``'s text typed as :func:`lakecdp.ingest.embedded._typed` (or the column's Java
    pattern) types it, for the texts of the screen's shapes; NULL for any other text."""
    if type_name in _INT:
        target = "INTEGER" if type_name == "int" else "BIGINT"
        return (
            f"CASE WHEN regexp_full_match({column}, '{_INT[type_name]}') THEN CAST(trim({column}, ' ') AS {target}) END"
        )
    if type_name == "double":
        return (
            f"CASE WHEN strlen({column}) <= 40 AND regexp_full_match({column}, '{_DOUBLE}') "
            f"THEN CAST(trim({column}, ' ') AS DOUBLE) END"
        )
    if type_name == "boolean":
        return (
            f"CASE WHEN regexp_full_match({column}, '{_BOOLEAN}') "
            f"THEN lower(trim({column}, ' ')) IN ('t', 'true', 'y', 'yes', '1') END"
        )
    if type_name == "date":
        return _date_sql(column, format_)
    if type_name == "timestamp":
        # naive UTC, as the Python rules' _utc_naive
        return f"CAST({_timestamp_sql(column, format_)} AS TIMESTAMP)"
    raise _Unmapped(type_name)


_CASTS: dict[int, tuple[SourceConfig, str | None]] = {}


def _cast_query(source: SourceConfig) -> str | None:
    cached = _CASTS.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    typed = [c for c in source.columns if c.is_scalar and c.type != "string"]
    query: str | None
    try:
        casts = [_cast_sql(f"c{k}", c.type, c.format) for k, c in enumerate(typed)]
        sure = [f"({_blank(f'c{k}')} OR v{k} IS NOT NULL)" for k in range(len(typed))]
        query = (
            "SELECT *, " + (" AND ".join(sure) if sure else "true") + " AS sure FROM ("
            "SELECT "
            + ", ".join([*(f"c{k}" for k in range(len(typed))), *(f"{cast} AS v{k}" for k, cast in enumerate(casts))])
            + (", " if casts else "")
            + "_row FROM batch)"
        )
    except _Unmapped:
        query = None
    _CASTS[id(source)] = (source, query)
    return query


def cast_rows(
    reads: Mapping[int, dict[str, Any]], rows: Sequence[int], source: SourceConfig
) -> tuple[pa.Table, list[int]]:
    """The typed source columns of ``rows`` (valid rows without nulled fields), typed by DuckDB
    where the text has a shape the screen knows (the same value as the Python typing, checked in
    tests/test_ingest_screen.py).

    Args:
        reads: row -> its fields as read (:func:`lakecdp.ingest.embedded.as_read`).

    Returns:
        The table of the rows typed here (``_row`` and every column, as
        :func:`lakecdp.ingest.embedded._typed_table`) and the rows left to the Python typing.
    """

    from lakecdp.ingest.embedded import Reads, _column_type

    query = _cast_query(source)
    if query is None or not rows:
        return _empty(source), list(rows)
    typed = [c for c in source.columns if c.is_scalar and c.type != "string"]
    # the texts as columns: taken from the reads' Arrow columns when they have them
    texts = reads.columns(list(rows)) if isinstance(reads, Reads) else None
    batch = pa.table(
        {
            **{
                f"c{k}": texts[c.name] if texts is not None else pa.array([reads[i][c.name] for i in rows], pa.string())
                for k, c in enumerate(typed)
            },
            "_row": pa.array(rows, pa.int64()),
        }
    )
    result = _over_batch(batch, query)
    sure = result["sure"]
    every = sure.null_count == 0 and pa.compute.all(sure).as_py()
    # most batches are typed whole: no row filtered out of the (large) text columns
    done = result if every else result.filter(sure)
    if every:
        kept, left = list(rows), []
    else:
        flags = sure.to_pylist()
        kept = [i for i, ok in zip(rows, flags) if ok]
        left = [i for i, ok in zip(rows, flags) if not ok]
    position = {c.name: k for k, c in enumerate(typed)}
    columns: dict[str, pa.Array | pa.ChunkedArray] = {"_row": done["_row"]}
    for column in source.columns:
        arrow_type = _column_type(column)
        if column.name in position:
            columns[column.name] = done[f"v{position[column.name]}"].cast(arrow_type)
        elif texts is not None and column.name in texts.column_names:
            text = texts[column.name] if every else texts[column.name].filter(sure)
            columns[column.name] = text.cast(arrow_type)
        else:
            columns[column.name] = pa.array([reads[i][column.name] for i in kept], arrow_type)
    return pa.table(columns), left


def _empty(source: SourceConfig) -> pa.Table:
    from lakecdp.ingest.embedded import _column_type

    return pa.table(
        {"_row": pa.array([], pa.int64()), **{c.name: pa.array([], _column_type(c)) for c in source.columns}}
    )
