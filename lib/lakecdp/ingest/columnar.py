"""A file's plain lines read as columns at once: the fields as read, without a parser call per line.

The embedded batch ingest (:func:`lakecdp.ingest.embedded_batch.read_files`) parsed every line
in Python (:func:`lakecdp.ingest.embedded.parse_json_line`, then
:func:`lakecdp.ingest.embedded.as_read` per row; CSV: :func:`lakecdp.ingest.embedded_batch.parse_csv_line`),
one call and several objects per line. Most lines of a delivered file are *plain*: a JSON object
of known keys with text, number, boolean or null values and no escapes; a CSV line without
quotes. Their fields as read are worked out here for the whole file in one query (JSON: DuckDB's
RE2 over the lines; CSV: pyarrow's split) and handed over as one Arrow table (:func:`json_columns`,
:func:`csv_columns`; the ``*_fields`` functions give one dict per line, for the tests).

Like :mod:`lakecdp.ingest.screen`, the reader is *conservative*: it reads a line only when its
shape proves the line parser would read the same fields with no structural finding; any other
line (an escape, a space between tokens, an unknown or repeated key, an exponent, ``-0``, a
number with more digits than a double keeps, a nested value in a scalar column, a quote in a CSV
line, a wrong field count ...) gets None and goes the line parser's way. The physical lines
themselves (line numbers, blank lines, a BOM, a header, invalid UTF-8 as U+FFFD) are still split
by :func:`lakecdp.ingest.embedded_batch.file_lines`: this module only reads the text of each.
``tests/test_ingest_columnar.py`` checks on generated nasty lines and files that every line read
here is read by the line parser with the same fields and no finding.

Why a JSON number's text is its text as read: :func:`lakecdp.ingest.python_rules.as_text` writes
an integer as Python does (the token, when it has no leading zero and is not ``-0``) and a
fraction as Java's ``Double.toString`` (the token, for 1e-3 <= |x| < 1e7 with at most 15
significant digits and no trailing zero but ``.0``: such a decimal is the shortest one of its
double, and Java writes it as is). The grammar below admits only those tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from lakecdp.ingest.sources import SourceConfig

#: a JSON text without escapes or control characters (json.loads rejects raw ones)
_STRING = r'"[^"\\\x00-\x1f]*"'
#: integers: the token is Python's (and so as_text's) text of the value
_INTEGER = r"-?[1-9][0-9]{0,17}|0"
#: fractions whose token is Java's Double.toString of their double (see the module docstring)
_FRACTION = r"-?[1-9][0-9]{0,6}\.(?:0|[0-9]{0,7}[1-9])|-?0\.(?:[1-9]|0[1-9]|00[1-9])(?:[0-9]{0,5}[1-9])?|0\.0"
_SCALAR = f"{_STRING}|null|true|false|{_FRACTION}|{_INTEGER}"
#: key names written into the grammar as they are (no regex or JSON escaping needed)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _members(names: Sequence[str], value: str) -> str:
    """``{}`` or ``{"name":value,...}`` (any order, any subset of ``names``)."""
    member = f'"(?:{"|".join(names)})":(?:{value})'
    return rf"\{{(?:{member}(?:,{member})*)?\}}"


def _json_query(source: SourceConfig) -> tuple[str, list[Any], list[str]] | None:
    """The DuckDB query reading the plain lines of ``batch(raw)`` and its parameters, and the
    output columns; None when ``source`` has a column this reader does not read (a nested value
    other than a struct of strings, a name that needs escaping, a field named like a column)."""
    from lakecdp.ingest.embedded import _string_struct, _struct_fields

    scalars = [c.name for c in source.columns if c.is_scalar]
    structs = {c.name: list(_struct_fields(c.type)) for c in source.columns if not c.is_scalar}
    if any(not _string_struct(c.type) for c in source.columns if not c.is_scalar):
        return None
    inner = {f for fields in structs.values() for f in fields}
    names = [*scalars, *structs, *sorted(inner)]
    if not all(_PLAIN_NAME.fullmatch(n) for n in names) or inner & {*scalars, *structs}:
        return None
    member_patterns = []
    if scalars:
        member_patterns.append(f'"(?:{"|".join(scalars)})":(?:{_SCALAR})')
    for name, fields in structs.items():
        inner_object = _members(fields, _SCALAR) if fields else r"\{\}"
        member_patterns.append(f'"{name}":(?:null|{inner_object})')
    member = "|".join(member_patterns)
    grammar = rf"\{{(?:(?:{member})(?:,(?:{member}))*)?\}}" if member else r"\{\}"
    # one JSON parse (DuckDB's json_extract) gives every value as its JSON text: a string's text
    # is that text without its quotes (the grammar admits no escape), a number's or boolean's the
    # token (json_extract_string's text too), null NULL. A repeated key anywhere (json_extract
    # keeps its first value, the line parser its last) makes the line's members -- one `":` each:
    # a text holds no quote, so `":` only ends a key -- more than the distinct keys present (the
    # paths found, nested ones included): such a line is not read here
    paths = [f"$.{name}" for name in scalars]
    struct_at: dict[str, tuple[int, list[int]]] = {}
    for name, fields in structs.items():
        struct_at[name] = (len(paths) + 1, [len(paths) + 2 + k for k in range(len(fields))])
        paths += [f"$.{name}", *(f"$.{name}.{field}" for field in fields)]
    present = " + ".join(f"(v{k} IS NOT NULL)::INTEGER" for k in range(1, len(paths) + 1)) or "0"
    split = ", ".join(f"j[{k}] AS v{k}" for k in range(1, len(paths) + 1))

    def text(k: int) -> str:
        return f"CASE WHEN v{k} = 'null' THEN NULL WHEN starts_with(v{k}, '\"') THEN v{k}[2:-2] ELSE v{k} END"

    values = [f'{text(k)} AS "{name}"' for k, name in enumerate(scalars, start=1)]
    for name, fields in structs.items():
        at, inner_at = struct_at[name]
        parts = ", ".join(f'"{field}" := {text(k)}' for field, k in zip(fields, inner_at))
        struct = f"struct_pack({parts})" if parts else "NULL"
        values.append(f"CASE WHEN v{at} IS NULL OR v{at} = 'null' THEN NULL ELSE {struct} END AS \"{name}\"")
    query = (
        "WITH shaped AS (SELECT raw, regexp_full_match(raw, ?) AS plain FROM batch), "
        "parsed AS (SELECT raw, plain, CASE WHEN plain THEN json_extract(raw, ?)::VARCHAR[] END AS j FROM shaped), "
        f"split AS (SELECT raw, plain{', ' if split else ''}{split} FROM parsed) "
        f"SELECT coalesce(plain AND (strlen(raw) - strlen(replace(raw, '\":', ''))) // 2 = {present}, false) AS plain, "
        f"{', '.join(values)} FROM split"
    )
    return query, [grammar, paths], [c.name for c in source.columns]


_QUERIES: dict[int, tuple[SourceConfig, tuple[str, list[Any], list[str]] | None]] = {}


def _cached_json_query(source: SourceConfig) -> tuple[str, list[Any], list[str]] | None:
    cached = _QUERIES.get(id(source))
    if cached is None or cached[0] is not source:
        cached = (source, _json_query(source))
        _QUERIES[id(source)] = cached
    return cached[1]


def json_columns(
    raws: Sequence[str], source: SourceConfig, *, array: pa.Array | None = None
) -> tuple[list[bool], pa.Table]:
    """Which JSON lines this reader reads (its proof: the line parser reads the same fields, no
    finding) and, for those lines in order, their fields as read (:func:`lakecdp.ingest.embedded.as_read`
    of :func:`lakecdp.ingest.embedded.parse_json_line`'s object) as a table: the source's columns,
    scalars as texts, string structs as structs of texts. No line is read when ``source`` has a
    column this reader does not read; ``array``: ``raws`` as Arrow strings, when the caller has them."""
    plan = _cached_json_query(source)
    if plan is None or not raws:
        return [False] * len(raws), _no_rows(source)
    from lakecdp.ingest.screen import _over_batch

    query, params, names = plan
    table = _over_batch(pa.table({"raw": _strings(raws, array)}), query, params)
    plain = table["plain"]
    return plain.to_pylist(), _as_read_table(table.select(names).filter(plain), source)


def json_fields(raws: Sequence[str], source: SourceConfig) -> list[dict[str, Any] | None]:
    """:func:`json_columns` as one dict per line read (None for a line not read)."""
    return _per_line(*json_columns(raws, source))


def _per_line(plain: list[bool], table: pa.Table) -> list[dict[str, Any] | None]:
    rows = iter(table.to_pylist())
    return [next(rows) if ok else None for ok in plain]


def read_schema(source: SourceConfig) -> pa.Schema:
    """The fields as read of ``source`` as columns: scalars as texts, string structs as structs of
    texts (what :class:`lakecdp.ingest.embedded.Reads` holds; no other nested column is read here)."""
    from lakecdp.ingest.embedded import _column_type, _string_struct

    return pa.schema(
        [
            pa.field(c.name, pa.string() if c.is_scalar else _column_type(c))
            for c in source.columns
            if c.is_scalar or _string_struct(c.type)
        ]
    )


def _no_rows(source: SourceConfig) -> pa.Table:
    return read_schema(source).empty_table()


def _as_read_table(table: pa.Table, source: SourceConfig) -> pa.Table:
    """``table`` (every column of ``source``, read as texts) with :func:`read_schema`'s types."""
    schema = read_schema(source)
    return table.select(schema.names).cast(schema)


def _strings(raws: Sequence[str], array: pa.Array | None) -> pa.Array:
    if array is not None and len(array) == len(raws):
        return array
    return pa.array(raws, pa.string())


def _csv_sep(source: SourceConfig) -> str:
    return str(source.options.get("sep", source.options.get("delimiter", ",")))


def reads_as_columns(source: SourceConfig, header: Sequence[str] | None) -> bool:
    """Whether this module reads lines of ``source`` (a CSV file's under ``header``; None: some
    CSV file's) as columns: JSON when every column is a scalar or a string struct; CSV when every
    column is a scalar, the separator one character and the header names only the source's
    columns, each once."""
    if source.format == "jsonl":
        return _cached_json_query(source) is not None
    if source.format != "csv" or len(_csv_sep(source)) != 1 or not all(c.is_scalar for c in source.columns):
        return False
    return header is None or (len(set(header)) == len(header) and set(header) <= set(source.column_names))


def csv_columns(
    raws: Sequence[str], source: SourceConfig, header: Sequence[str], *, array: pa.Array | None = None
) -> tuple[list[bool], pa.Table]:
    """Which CSV lines this reader reads and their fields (:func:`lakecdp.ingest.embedded_batch.parse_csv_line`'s
    event: the source's columns by header position, empty -> null) as a table, as
    :func:`json_columns`. A line with a quote, an escape or NUL character, or another field count
    than the header's is not read (the line parser's then); nor is any line under a header naming
    a column outside the source's (rescued fields) or one twice, nor of a source with a nested column."""
    if not raws or not reads_as_columns(source, header):
        return [False] * len(raws), _no_rows(source)
    sep = _csv_sep(source)
    quote = source.options.get("quote", '"')
    escape = source.options.get("escape", quote)
    columns = source.column_names
    lines = _strings(raws, array)
    special = pc.match_substring_regex(lines, "[" + re.escape(quote + escape) + r"\x00]")
    parts = pc.split_pattern(lines, sep)
    plain = pc.and_(pc.invert(special), pc.equal(pc.list_value_length(parts), len(header)))
    position = {name: k for k, name in enumerate(header)}
    out: dict[str, Any] = {}
    kept = parts.filter(plain)
    for name in columns:
        if name in position:
            values = pc.list_element(kept, position[name])
            out[name] = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
        else:
            out[name] = pa.nulls(len(kept), pa.string())
    return plain.to_pylist(), _as_read_table(pa.table(out), source)


def csv_fields(raws: Sequence[str], source: SourceConfig, header: Sequence[str]) -> list[dict[str, Any] | None]:
    """:func:`csv_columns` as one dict per line read (None for a line not read)."""
    return _per_line(*csv_columns(raws, source, header))
