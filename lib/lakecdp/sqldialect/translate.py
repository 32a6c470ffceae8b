"""The dialect layer: segment SQL is written in Spark SQL; the embedded engine runs it on DuckDB.

sqlglot reads the author's text as Spark SQL and writes DuckDB SQL. The clock
(``CURRENT_DATE``, ``CURRENT_TIMESTAMP``, ``now()``) is replaced by the run's ``as_of`` on the
way, as the Spark plan check does, so a run reproduces. The DuckDB text that comes out is what
:mod:`lakecdp.segments.duck_guard` checks and what DuckDB runs.

The reason JSON each membership carries is formatted by :func:`json_value_sql` exactly as Spark's
``to_json`` writes it (null fields left out, timestamps ``2026-11-01T00:00:00.000Z``, doubles in
Java's ``Double.toString`` form: ``500.0``, ``1.0E7``, ``"NaN"``), so both engines store the
same bytes.

Example:
    >>> condition_to_duckdb("last_purchase_at > CURRENT_DATE - INTERVAL 30 DAYS", as_of=as_of)
    "last_purchase_at > CAST('2026-11-01' AS DATE) - INTERVAL '30' DAYS"
"""

from __future__ import annotations

import decimal
import math
import re
from datetime import datetime, timezone
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from lakecdp.sqldialect import SqlRefused
from lakecdp.sqldialect.spark_semantics import spark_semantics


def _utc(as_of: datetime) -> datetime:
    return as_of.astimezone(timezone.utc) if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)


def timestamp_literal(as_of: datetime) -> str:
    """``TIMESTAMP '...'`` of ``as_of`` in UTC (DuckDB runs with TimeZone = UTC)."""
    return f"TIMESTAMP '{_utc(as_of).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _bind_clock(tree: exp.Expression, as_of: datetime) -> exp.Expression:
    moment = _utc(as_of)
    date_literal = exp.cast(exp.Literal.string(moment.date().isoformat()), exp.DataType.build("date"))
    stamp_literal = exp.cast(
        exp.Literal.string(moment.strftime("%Y-%m-%d %H:%M:%S.%f")), exp.DataType.build("timestamp")
    )

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.CurrentDate):
            return date_literal.copy()
        if isinstance(
            node,
            (exp.CurrentTimestamp, exp.CurrentDatetime, exp.Localtimestamp)
            if hasattr(exp, "Localtimestamp")
            else (exp.CurrentTimestamp, exp.CurrentDatetime),
        ):
            return stamp_literal.copy()
        if (
            isinstance(node, exp.Column)
            and not node.table
            and node.name.lower()
            in (
                "current_date",
                "current_timestamp",
                "localtimestamp",
            )
        ):
            return (date_literal if node.name.lower() == "current_date" else stamp_literal).copy()
        if isinstance(node, exp.Anonymous) and node.name.lower() in ("now", "curdate", "localtimestamp"):
            return (date_literal if node.name.lower() == "curdate" else stamp_literal).copy()
        return node

    return tree.transform(replace)


def _translate(text: str, *, expression: bool, as_of: datetime) -> str:
    try:
        if expression:
            tree = sqlglot.parse_one(f"SELECT 1 WHERE {text}", read="spark")
            where = tree.args.get("where")
            if where is None:
                raise SqlRefused("cannot read the condition", line=None, column=None)
            node = where.this
        else:
            statements = [s for s in sqlglot.parse(text, read="spark") if s is not None]
            if len(statements) != 1:
                raise SqlRefused(f"exactly one query is allowed, got {len(statements)}", line=None, column=None)
            node = statements[0]
        bound = spark_semantics(_bind_clock(node, as_of))
        return bound.sql(dialect="duckdb")
    except (ParseError, TokenError) as exc:
        raise SqlRefused(f"cannot translate to DuckDB: {str(exc).splitlines()[0]}", line=None, column=None) from None


def condition_to_duckdb(condition: str, *, as_of: datetime) -> str:
    """A Spark SQL boolean expression as DuckDB SQL, the clock bound to ``as_of``."""
    return _translate(condition, expression=True, as_of=as_of)


def query_to_duckdb(query: str, *, as_of: datetime) -> str:
    """A Spark SQL query as DuckDB SQL, the clock bound to ``as_of``."""
    return _translate(query, expression=False, as_of=as_of)


# -- Spark's to_json, written in DuckDB SQL --------------------------------------------------

_JACKSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


#: a text Jackson writes as it is (no quote, backslash or control character)
JACKSON_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')


def jackson_string(value: str) -> str:
    """A JSON string as Spark's Jackson generator writes it (non-ASCII kept, controls escaped)."""
    if JACKSON_PLAIN.fullmatch(value):
        return '"' + value + '"'
    out = []
    for char in value:
        if char in _JACKSON_ESCAPES:
            out.append(_JACKSON_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def java_double(value: float | None) -> str | None:
    """``Double.toString`` as Jackson writes a double: ``500.0``, ``1.0E7``, ``1.0E-4``, ``"NaN"``."""
    if value is None:
        return None
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = len(digits) + int(digits_tuple.exponent) - 1  # of the first digit
    if 1e-3 <= abs(value) < 1e7:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            fraction = digits[exponent + 1 :] or "0"
        else:
            whole = "0"
            fraction = "0" * (-exponent - 1) + digits
        return f"{sign}{whole}.{fraction}"
    mantissa = digits[0] + "." + (digits[1:] or "0")
    return f"{sign}{mantissa}E{exponent}"


_INTEGER_IDS = frozenset(
    {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint"}
)


def json_value_sql(expression: str, data_type: Any) -> str:
    """DuckDB SQL giving ``expression`` (of DuckDB type ``data_type``) as Spark's to_json text.

    NULL stays NULL (the caller leaves the field out, as Spark does).
    """
    kind = data_type.id
    if kind == "varchar":
        return f"CAST(to_json({expression}) AS VARCHAR)"
    if kind == "boolean":
        return f"CASE WHEN {expression} IS NULL THEN NULL WHEN {expression} THEN 'true' ELSE 'false' END"
    if kind in _INTEGER_IDS or kind == "decimal":
        return f"CAST({expression} AS VARCHAR)"
    if kind in ("double", "float"):
        # in [1e-3, 1e7) Java's Double.toString and DuckDB's cast agree (shortest digits, ".0" kept);
        # outside it Java writes 1.0E7 / 1.0E-4: a Python function, only for those rows
        value = f"CAST({expression} AS DOUBLE)"
        return (
            f"CASE WHEN abs({value}) >= 0.001 AND abs({value}) < 10000000.0 THEN CAST({value} AS VARCHAR) "
            f"ELSE lakecdp_java_double({value}) END"
        )
    if kind == "date":
        return f"'\"' || strftime({expression}, '%Y-%m-%d') || '\"'"
    if kind in ("timestamp", "timestamp with time zone", "timestamp_ms", "timestamp_s", "timestamp_ns"):
        return f"'\"' || strftime(CAST({expression} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%g') || 'Z\"'"
    if kind == "list":
        child = dict(data_type.children)["child"]
        inner = json_value_sql("_e", child)
        return (
            f"CASE WHEN {expression} IS NULL THEN NULL ELSE '[' || array_to_string("
            f"list_transform({expression}, _e -> coalesce({inner}, 'null')), ',') || ']' END"
        )
    if kind == "struct":
        return f"CASE WHEN {expression} IS NULL THEN NULL ELSE {json_object_sql(expression, data_type.children)} END"
    if kind == "map":
        children = dict(data_type.children)
        value = json_value_sql("_e.value", children["value"])
        return (
            f"CASE WHEN {expression} IS NULL THEN NULL ELSE '{{' || array_to_string(list_transform("
            f"map_entries({expression}), _e -> CAST(to_json(CAST(_e.key AS VARCHAR)) AS VARCHAR) || ':' || "
            f"coalesce({value}, 'null')), ',') || '}}' END"
        )
    return f"CAST(to_json({expression}) AS VARCHAR)"


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_object_sql(expression: str | None, fields: list[tuple[str, Any]]) -> str:
    """``{"f":v,...}`` of struct ``expression`` (or of bare columns when None), null fields left out."""
    parts = []
    for name, data_type in fields:
        access = (
            _quote_identifier(name)
            if expression is None
            else f"struct_extract({expression}, '{name.replace(chr(39), chr(39) * 2)}')"
        )
        key = jackson_string(name).replace("'", "''")
        parts.append(f"CASE WHEN {access} IS NULL THEN NULL ELSE '{key}:' || {json_value_sql(access, data_type)} END")
    if not parts:
        return "'{}'"
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"
