"""The DuckDB plan check: segment SQL is judged on what DuckDB parses and plans from the text it runs.

The embedded engine (:mod:`lakecdp.segments.embedded`) runs marketer SQL on DuckDB. The text
DuckDB runs is the Spark SQL the author wrote, translated by sqlglot (the dialect layer) with
``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()`` bound to the run's ``as_of``. This module
checks *that* text, as DuckDB itself reads it, before anything runs:

1. **Parse tree** (``json_serialize_sql``: DuckDB's own parser, nothing bound or executed).
   Exactly one SELECT statement; query nodes, table references, expression classes and
   modifiers on allow-lists; relations are one bare name that is a segment view or a CTE
   (no schema/catalog, no quoted file names such as ``'x.csv'``, no ``AT (VERSION => ...)``);
   no table functions (``read_csv``, ``read_parquet``, ``range``, ``glob`` ...), ``PIVOT``,
   recursive CTEs, ``USING SAMPLE``, parameters, ``COLLATE`` or ``DEFAULT``; functions by bare
   name on :data:`ALLOWED_DUCKDB_FUNCTIONS` (pure and deterministic: ``random``, ``uuid``,
   ``now``, ``getvariable``, ``current_setting`` and ``hash`` -- which differs from Spark's --
   are not on it); ``repeat`` / ``lpad`` / ``rpad`` sizes constant and at most
   :data:`MAX_GENERATED`. Statements other than SELECT (``COPY``, ``ATTACH``, ``INSTALL``,
   ``LOAD``, ``PRAGMA``, ``SET``, DDL/DML) cannot be serialised and are refused.
2. **Physical plan** (``EXPLAIN (FORMAT JSON)`` of the same statement): operators on an
   allow-list, scans only of the segment view tables, and no join without an equality (cross
   product, nested-loop, piecewise-merge, IE join) unless one side is estimated at most
   :data:`SMALL_SIDE_ROWS` rows.

The connection the SQL runs on is locked down as well (``enable_external_access = false``,
``lock_configuration = true``, a memory limit, a thread count) and each statement runs under a
timer that interrupts it (see :mod:`lakecdp.segments.embedded`): the guard decides, the
connection is the second wall.

Example:
    >>> check_duckdb_select(con, "SELECT * FROM customers WHERE total_spent > 500")
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lakecdp.sqldialect import SqlRefused
from lakecdp.segments.plan_guard import MAX_GENERATED, SEGMENT_VIEWS, SMALL_SIDE_ROWS

if TYPE_CHECKING:
    import duckdb

# DuckDB functions (as DuckDB names them after the sqlglot translation) a segment may call:
# (``error``, ``isodow``, ``typeof``, ``json_valid``, ``json_type`` only come from the rewrites of
# lakecdp.sqldialect.spark_semantics: the Spark allow-list, checked on the author's text first, has none)
# pure, deterministic, no IO. Operators arrive as functions named by their symbol.
ALLOWED_DUCKDB_FUNCTIONS = frozenset(
    """
    + - * / // % ** ^ || ~~ !~~ ~~* !~~* & | << >> ~ ! @
    abs acos asin atan atan2 ceil ceiling cos exp floor greatest least ln log log10 log2 mod
    pow power round sign sqrt isnan isinf isfinite
    avg mean count count_star count_if countif sum min max stddev stddev_pop stddev_samp
    variance var_pop var_samp median quantile_cont quantile_disc approx_count_distinct
    bool_and bool_or any_value first last arg_max arg_min max_by min_by list array_agg
    row_number rank dense_rank percent_rank ntile lag lead cume_dist nth_value first_value
    last_value
    coalesce ifnull nullif if
    lower upper lcase ucase trim ltrim rtrim length char_length strlen substring substr left
    right concat concat_ws replace regexp_matches regexp_extract regexp_replace
    regexp_full_match starts_with ends_with contains instr strpos position lpad rpad split
    string_split str_split split_part reverse repeat md5 sha1 sha256 ascii chr
    date_add date_sub datediff date_diff date_trunc datetrunc trunc year quarter month day
    dayofmonth dayofweek dayofyear weekday week weekofyear hour minute second last_day
    make_date make_timestamp to_timestamp epoch epoch_ms strftime strptime try_strptime
    date_part datepart to_days to_hours to_minutes to_seconds to_months to_years
    list_value array_value list_contains array_contains list_has array_has list_has_any
    array_has_any list_has_all array_has_all list_distinct array_distinct list_intersect
    array_intersect list_concat array_concat list_position array_position list_sort array_sort
    list_reverse_sort len array_length list_extract array_extract list_element list_slice
    array_slice flatten list_transform array_transform list_filter array_filter list_reduce
    array_reduce list_min list_max array_to_string list_aggregate unnest
    map map_keys map_values map_contains map_entries map_from_entries element_at map_extract
    cardinality struct_pack row struct_extract
    json_extract json_extract_string json_array_length to_json
    grouping grouping_id
    error isodow typeof json_valid json_type
    """.split()
)

# Functions whose size argument (0-based position) must be a constant of at most MAX_GENERATED.
_SIZED_ARGUMENT = {"repeat": 1, "lpad": 1, "rpad": 1}

_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE"})
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY"})
_MODIFIERS = frozenset({"ORDER_MODIFIER", "LIMIT_MODIFIER", "DISTINCT_MODIFIER", "LIMIT_PERCENT_MODIFIER"})
_REFUSED_NODES = {
    "TABLE_FUNCTION": "table function is not allowed (file reads, generators); read the segment views",
    "PIVOT": "PIVOT is not allowed",
    "SHOW_REF": "SHOW / DESCRIBE is not allowed",
    "COLUMN_DATA": "a data reference is not allowed",
    "DELIM_GET": "an internal reference is not allowed",
    "RECURSIVE_CTE_NODE": "a recursive CTE can run without end; not allowed",
    "CTE_NODE": "a materialised CTE node is not allowed",
    "STATEMENT_NODE": "a nested statement is not allowed",
}
_EXPRESSION_CLASSES = frozenset(
    {
        "COLUMN_REF",
        "CONSTANT",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "FUNCTION",
        "CASE",
        "CAST",
        "BETWEEN",
        "SUBQUERY",
        "STAR",
        "WINDOW",
        "LAMBDA",
        "LAMBDA_REF",
        "TYPE",
    }
)
_REFUSED_CLASSES = {
    "PARAMETER": "parameters are not allowed",
    "DEFAULT": "DEFAULT is not allowed",
    "COLLATE": "COLLATE is not allowed",
    "POSITIONAL_REFERENCE": "positional references (#1) are not allowed",
}
# Physical operators a segment's plan may contain.
_PLAN_OPERATORS = frozenset(
    """
    PROJECTION FILTER SEQ_SCAN TABLE_SCAN HASH_JOIN HASH_GROUP_BY PERFECT_HASH_GROUP_BY
    UNGROUPED_AGGREGATE SIMPLE_AGGREGATE STREAMING_WINDOW WINDOW ORDER_BY TOP_N LIMIT STREAMING_LIMIT
    UNION UNNEST DUMMY_SCAN COLUMN_DATA_SCAN EMPTY_RESULT DELIM_JOIN RIGHT_DELIM_JOIN
    LEFT_DELIM_JOIN DELIM_SCAN CTE CTE_SCAN INOUT_FUNCTION PARTITIONED_AGGREGATE
    NESTED_LOOP_JOIN CROSS_PRODUCT BLOCKWISE_NL_JOIN PIECEWISE_MERGE_JOIN IE_JOIN
    POSITIONAL_JOIN ASOF_JOIN RESULT_COLLECTOR LIMIT_PERCENT STREAMING_SAMPLE EXPLAIN
    """.split()
)
_INEQUALITY_JOINS = frozenset(
    {
        "NESTED_LOOP_JOIN",
        "CROSS_PRODUCT",
        "BLOCKWISE_NL_JOIN",
        "PIECEWISE_MERGE_JOIN",
        "IE_JOIN",
        "POSITIONAL_JOIN",
        "ASOF_JOIN",
    }
)
_NO_LOCATION = 2**64 - 1


def _refuse(text: str, reason: str, node: dict[str, Any] | None = None) -> SqlRefused:
    """A refusal at the node's position within ``text`` (the DuckDB text that would run)."""
    offset = None if node is None else node.get("query_location")
    if offset is None or offset == _NO_LOCATION or offset > len(text):
        return SqlRefused(f"{reason} (DuckDB engine)", line=None, column=None)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return SqlRefused(f"{reason} (DuckDB engine)", line=line, column=column)


def serialize(con: duckdb.DuckDBPyConnection, text: str) -> dict[str, Any]:
    """DuckDB's own parse tree of ``text`` (``json_serialize_sql``); nothing is bound or run."""
    raw = con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0]
    tree = json.loads(raw[0]) if raw else {"error": True, "error_message": "no result"}
    if tree.get("error"):
        message = str(tree.get("error_message", "cannot parse"))
        if "Only SELECT" in message:
            message = "only one read-only SELECT is allowed (COPY, ATTACH, INSTALL, LOAD, PRAGMA, SET, DDL and DML are refused)"
        raise SqlRefused(f"{message} (DuckDB engine)", line=None, column=None)
    return tree


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _constant_int(node: Any) -> int | None:
    if isinstance(node, dict) and node.get("class") == "CONSTANT":
        literal = node.get("literal") or node.get("value") or {}
        try:
            return int(str(literal.get("text", literal.get("value"))))
        except (TypeError, ValueError):
            return None
    if isinstance(node, dict) and node.get("class") == "CAST":
        return _constant_int(node.get("child"))
    return None


def _function_arguments(node: dict[str, Any]) -> list[Any]:
    arguments = node.get("arguments") or node.get("children") or []
    return [
        a.get("expression", a) if isinstance(a, dict) and "expression" in a and "class" not in a else a
        for a in arguments
    ]


def check_parse_tree(tree: dict[str, Any], text: str, *, views: frozenset[str] = SEGMENT_VIEWS) -> None:
    """Pass 1 over DuckDB's parse tree of ``text``. Raises :class:`SqlRefused`."""
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise _refuse(text, f"exactly one SELECT statement is allowed, got {len(statements)}")
    statement = statements[0]
    if statement.get("named_param_map"):
        raise _refuse(text, "parameters are not allowed")
    cte_names = {
        str(entry.get("key", "")).lower()
        for node in _walk(statement)
        for entry in (node.get("cte_map", {}) or {}).get("map", []) or []
        if isinstance(node.get("cte_map"), dict)
    }
    for node in _walk(statement):
        if node.get("sample") is not None:
            raise _refuse(text, "USING SAMPLE / TABLESAMPLE is not deterministic; not allowed", node)
        if node.get("at_clause") is not None:
            raise _refuse(text, "AT (VERSION/TIMESTAMP => ...) time travel is not allowed", node)
        kind = node.get("type")
        if "class" in node:
            klass = node["class"]
            if klass in _REFUSED_CLASSES:
                raise _refuse(text, _REFUSED_CLASSES[klass], node)
            if klass not in _EXPRESSION_CLASSES:
                raise _refuse(text, f"expression {klass} is not allowed", node)
            if klass == "TYPE" and (node.get("catalog") or node.get("schema")):
                raise _refuse(text, "qualified type names are not allowed", node)
            if klass == "STAR" and (node.get("columns") or node.get("expr") is not None):
                raise _refuse(text, "COLUMNS(...) expressions are not allowed", node)
            if klass == "FUNCTION":
                _check_function(node, text)
            continue
        if not isinstance(kind, str):
            continue
        if kind in _REFUSED_NODES:
            raise _refuse(text, _REFUSED_NODES[kind], node)
        is_table_ref = "alias" in node and "sample" in node
        if kind.endswith("_NODE") and kind not in _QUERY_NODES:
            raise _refuse(text, f"{kind} is not allowed", node)
        if kind.endswith("_MODIFIER") and kind not in _MODIFIERS:
            raise _refuse(text, f"{kind} is not allowed", node)
        if is_table_ref and kind not in _TABLE_REFS:
            raise _refuse(text, f"{kind} is not allowed: read the segment views", node)
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if node.get("schema_name") or node.get("catalog_name"):
                raise _refuse(text, f"table '{name}' is not allowed: other schemas and catalogs are refused", node)
            if name.lower() not in views and name.lower() not in cte_names:
                raise _refuse(
                    text,
                    f"table '{name}' is not allowed (files and other tables are refused); allowed: {sorted(views)}",
                    node,
                )


def _check_function(node: dict[str, Any], text: str) -> None:
    name = str(node.get("function_name", "")).lower()
    if node.get("schema") or node.get("catalog"):
        raise _refuse(text, f"qualified function '{name}' is not allowed", node)
    if name not in ALLOWED_DUCKDB_FUNCTIONS:
        reason = (
            "differs between Spark and DuckDB"
            if name in ("hash", "xxhash64", "crc32")
            else "is not on the allow-list (file, session, random and clock functions are refused)"
        )
        raise _refuse(text, f"function '{name}' {reason}", node)
    position = _SIZED_ARGUMENT.get(name)
    if position is not None:
        arguments = _function_arguments(node)
        size = _constant_int(arguments[position]) if len(arguments) > position else None
        if size is None or size > MAX_GENERATED:
            raise _refuse(text, f"{name}() must have a constant size of at most {MAX_GENERATED}", node)


def _plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    stack = list(plan) if isinstance(plan, list) else [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.get("children") or [])


def _estimated_rows(node: dict[str, Any]) -> int | None:
    info = node.get("extra_info") or {}
    value = info.get("Estimated Cardinality") if isinstance(info, dict) else None
    try:
        return int(str(value).lstrip("~"))
    except (TypeError, ValueError):
        return None


def check_physical_plan(con: duckdb.DuckDBPyConnection, text: str, *, tables: frozenset[str] = SEGMENT_VIEWS) -> None:
    """Pass 2 over ``EXPLAIN (FORMAT JSON)`` of ``text``: operators, scans and joins."""
    rows = con.execute("EXPLAIN (FORMAT JSON) " + text).fetchall()
    plan = json.loads(rows[0][1])
    for node in _plan_nodes(plan):
        name = str(node.get("name", "")).strip()
        if name not in _PLAN_OPERATORS:
            raise _refuse(text, f"plan operator {name} is not allowed")
        info = node.get("extra_info") or {}
        if name in ("SEQ_SCAN", "TABLE_SCAN"):
            table = str(info.get("Table", "")).lower() if isinstance(info, dict) else ""
            # DuckDB names the scanned table with its database and schema: memory.main.customers
            for prefix in ("memory.main.", "main."):
                table = table[len(prefix) :] if table.startswith(prefix) else table
            if table not in tables:
                raise _refuse(text, f"plan scans '{table}', which is not a segment view")
        if name == "INOUT_FUNCTION":
            function = str(info.get("Function", "")).lower() if isinstance(info, dict) else ""
            if function != "unnest":
                raise _refuse(text, f"plan runs the table function '{function}'")
        if name in _INEQUALITY_JOINS:
            sides = [_estimated_rows(child) for child in node.get("children") or []]
            if not any(side is not None and side <= SMALL_SIDE_ROWS for side in sides):
                raise _refuse(
                    text,
                    "a join without an equality between its two sides (cross join) compares every row "
                    f"with every row; join on a key (allowed only when one side has at most "
                    f"{SMALL_SIDE_ROWS} rows)",
                )


def check_duckdb_select(
    con: duckdb.DuckDBPyConnection, text: str, *, views: frozenset[str] = SEGMENT_VIEWS
) -> dict[str, Any]:
    """Both passes over ``text``; returns the parse tree. Raises :class:`SqlRefused`."""
    tree = serialize(con, text)
    check_parse_tree(tree, text, views=views)
    try:
        check_physical_plan(con, text, tables=views)
    except SqlRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - binder errors: unknown column, wrong types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SqlRefused(f"cannot run: {first} (DuckDB engine)", line=None, column=None) from None
    return tree
