"""The SQL guard: marketer-written segment SQL is parsed and checked before it runs.

A definition passes only when it is exactly one read-only query over the segment views
(``customers``, ``profile``, ``features``, ``events`` and its own CTEs) that calls only
allow-listed built-in functions. Anything else is a :class:`SqlRefused` naming the line,
column and reason: DDL/DML and commands, file or external access (``read_files``,
``input_file_name``, ``parquet.`/path```), JVM calls (``reflect``, ``java_method``),
UDFs (any function not on the list, qualified or quoted names) and random sources.
``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()`` are accepted: the plan check binds them
to the run's ``as_of``.

This check needs no Spark and gives early, friendly messages when a definition is loaded.
It is not the one that decides: :mod:`lakecdp.segments.plan_guard` checks the plan Spark
builds from the text it runs (sqlglot parses differently, e.g. Spark would expand ``${...}``
before parsing when variable substitution is on) before any segment SQL executes.

Example:
    >>> check_condition("total_spent > 500 AND last_purchase_at > as_of - INTERVAL 30 DAYS")
    GuardedSql(...)
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from lakecdp.sqldialect import SqlRefused as SqlRefused  # segments name it as their own error

# The views a segment may read (registered by the evaluator).
ALLOWED_TABLES = frozenset({"customers", "profile", "features", "events"})

# Built-in Spark SQL functions a segment may call: pure, deterministic, no IO, no JVM access.
# The plan check (lakecdp.segments.plan_guard) uses the same list on Spark's own parse.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs acos asin atan atan2 ceil ceiling cos exp floor greatest least ln log log10 log2 mod
    pmod pow power round bround sign signum sqrt negative positive div try_add try_subtract
    try_multiply try_divide
    avg count count_if max min sum mean stddev stddev_pop stddev_samp variance var_pop var_samp
    median percentile percentile_approx approx_count_distinct any bool_and bool_or every some
    first first_value last last_value max_by min_by collect_list collect_set array_agg
    row_number rank dense_rank percent_rank ntile lag lead cume_dist nth_value
    cast try_cast if iff ifnull nullif nvl nvl2 coalesce isnull isnotnull isnan nanvl
    equal_null not between
    lower upper lcase ucase trim ltrim rtrim btrim length char_length character_length
    substring substr left right concat concat_ws replace regexp_like regexp_extract rlike
    regexp_replace like ilike startswith endswith contains instr locate position lpad rpad
    split split_part initcap reverse repeat format_number md5 sha1 sha2 sha hash
    xxhash64 crc32 ascii chr char
    date_add date_sub datediff date_diff months_between add_months date_trunc trunc
    to_date to_timestamp try_to_timestamp try_to_date unix_timestamp to_unix_timestamp
    from_unixtime date_format year quarter month day dayofmonth dayofweek dayofyear weekday
    weekofyear hour minute second last_day next_day make_date make_timestamp make_interval
    make_dt_interval make_ym_interval timestampadd timestampdiff dateadd datepart date_part
    extract timestamp_seconds timestamp_millis unix_date unix_seconds date_from_unix_date
    array array_contains arrays_overlap array_distinct array_except array_intersect
    array_union array_join array_max array_min array_position array_remove array_repeat
    array_size array_sort size cardinality element_at try_element_at slice sort_array flatten
    sequence transform filter exists forall aggregate reduce zip_with array_compact
    map map_keys map_values map_contains_key map_entries map_filter map_from_arrays
    struct named_struct get_json_object json_array_length to_json
    explode explode_outer posexplode posexplode_outer inline inline_outer
    grouping grouping_id
    decimal numeric varchar double float int bigint smallint tinyint boolean string
    date timestamp binary
    current_date curdate current_timestamp now localtimestamp
    """.split()
)

# Not functions but keywords that may stand before "(" in a query.
_STRUCTURAL = frozenset(
    """
    in and or not where on select by then else when as from join using over filter having
    with values exists case interval within is distinct all any some cube rollup grouping
    sets partition window lateral view
    """.split()
)

# Refused with a specific reason (more helpful than "not allowed").
_REFUSED_REASONS: dict[str, str] = {
    **{name: "calls a Java method (JVM access is not allowed)" for name in ("reflect", "java_method", "try_reflect")},
    **{
        name: "reads files or external data (not allowed in a segment)"
        for name in (
            "read_files",
            "input_file_name",
            "input_file_block_start",
            "input_file_block_length",
            "from_csv",
            "from_json",
            "from_xml",
            "read_json",
            "read_parquet",
            "read_csv",
            "url_decode",
            "parse_url",
            "session_user",
        )
    },
    **{
        name: "reads a random source or the session; segments must be reproducible"
        for name in ("rand", "random", "randn", "uuid", "shuffle", "current_timezone", "current_user")
    },
}

# Statement types that write, change state or run commands.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "Insert",
        "Delete",
        "Update",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "Command",
        "Set",
        "Use",
        "Cache",
        "Uncache",
        "Refresh",
        "Describe",
        "Pragma",
        "LoadData",
        "Transaction",
        "Commit",
        "Rollback",
        "Copy",
        "TruncateTable",
        "Grant",
        "Analyze",
    )
    if hasattr(exp, name)
)

_CONDITION_PREFIX = "SELECT customer_id FROM customers WHERE\n"


@dataclass(frozen=True)
class GuardedSql:
    """A checked statement: the SQL to run and the columns it reads (for the reason JSON)."""

    sql: str
    columns: tuple[str, ...]
    tables: tuple[str, ...]
    #: a condition with a subquery (it reads rows other than its customer's own)
    subquery: bool = False


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of character ``offset`` in ``text``."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


class _Checker:
    def __init__(self, text: str, *, prefix: str = "") -> None:
        self.full = prefix + text
        self.text = text
        self.prefix_len = len(prefix)

    def refuse(self, reason: str, offset: int | None) -> SqlRefused:
        local = 0 if offset is None else max(0, offset - self.prefix_len)
        line, column = _position(self.text, local)
        return SqlRefused(reason, line=line, column=column)

    def node_offset(self, node: exp.Expression) -> int | None:
        """Earliest known source offset inside ``node`` (sqlglot keeps it on identifiers)."""
        starts = [
            int(candidate.meta["start"])
            for candidate in (node, *node.find_all(exp.Identifier, exp.Func))
            if "start" in candidate.meta
        ]
        return min(starts) if starts else None

    def check_tokens(self) -> None:
        dialect = sqlglot.Dialect.get_or_raise("spark")
        try:
            tokens = dialect.tokenize(self.full)
        except TokenError as exc:
            raise self.refuse(f"cannot tokenize: {exc}", self.prefix_len) from exc
        for index, token in enumerate(tokens):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is None or following.token_type != TokenType.L_PAREN:
                continue
            name = token.text.lower()
            if token.token_type == TokenType.IDENTIFIER:
                raise self.refuse(f"quoted function name `{token.text}` (UDF) is not allowed", token.start)
            if not name.replace("_", "").isalnum():
                continue
            previous = tokens[index - 1] if index > 0 else None
            if previous is not None and previous.token_type == TokenType.ALIAS:
                # "AS t(id)": an alias with its column names, not a call
                continue
            if previous is not None and previous.token_type == TokenType.DOT:
                raise self.refuse(f"qualified function '{name}' (UDF) is not allowed", token.start)
            if name in _REFUSED_REASONS:
                raise self.refuse(f"function '{name}' {_REFUSED_REASONS[name]}", token.start)
            if name in ALLOWED_FUNCTIONS or name in _STRUCTURAL:
                continue
            raise self.refuse(
                f"function '{name}' is not on the allow-list (UDFs and unknown functions are refused)",
                token.start,
            )

    def parse(self) -> exp.Expr:
        try:
            statements = [s for s in sqlglot.parse(self.full, read="spark") if s is not None]
        except ParseError as exc:
            first = exc.errors[0] if exc.errors else {}
            line = int(first.get("line") or 1)
            column = int(first.get("col") or 1)
            if self.prefix_len:
                line -= self.full[: self.prefix_len].count("\n")
            raise SqlRefused(
                f"syntax error: {first.get('description', str(exc))}", line=max(line, 1), column=column
            ) from exc
        except TokenError as exc:
            raise self.refuse(f"cannot tokenize: {exc}", self.prefix_len) from exc
        if len(statements) != 1:
            raise self.refuse(f"exactly one statement allowed, found {len(statements)}", self.prefix_len)
        return statements[0]

    def check_tree(self, tree: exp.Expr) -> GuardedSql:
        if isinstance(tree, exp.Command):
            raise self.refuse(f"command '{tree.this}' is not a read-only query", self.prefix_len)
        if not isinstance(tree, exp.Query):
            raise self.refuse(f"only a read-only SELECT is allowed, got {type(tree).__name__.upper()}", self.prefix_len)
        for node in tree.walk():
            if isinstance(node, _FORBIDDEN_NODES):
                raise self.refuse(
                    f"{type(node).__name__.upper()} is not allowed (read-only queries only)",
                    self.node_offset(node),
                )
        cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        tables: list[str] = []
        for table in tree.find_all(exp.Table):
            offset = self.node_offset(table)
            if not isinstance(table.this, exp.Identifier):
                raise self.refuse(f"table function '{table.this.sql(dialect='spark')}' is not allowed", offset)
            if table.args.get("db") or table.args.get("catalog"):
                raise self.refuse(
                    f"qualified table '{table.sql(dialect='spark')}' is not allowed "
                    f"(file paths and other catalogs are refused); use {sorted(ALLOWED_TABLES)}",
                    offset,
                )
            name = table.name.lower()
            if name not in ALLOWED_TABLES and name not in cte_names:
                raise self.refuse(f"table '{table.name}' is not allowed; allowed: {sorted(ALLOWED_TABLES)}", offset)
            tables.append(name)
        columns = sorted({column.name.lower() for column in tree.find_all(exp.Column) if column.name})
        return GuardedSql(sql=self.full, columns=tuple(columns), tables=tuple(sorted(set(tables))))


def check_query(sql: str) -> GuardedSql:
    """Check a full ``SELECT`` that returns ``customer_id`` (and optionally ``member_key``).

    Raises:
        SqlRefused: with the line, column and reason.
    """
    checker = _Checker(sql)
    checker.check_tokens()
    return checker.check_tree(checker.parse())


def check_condition(condition: str) -> GuardedSql:
    """Check a boolean condition over the ``customers`` view.

    The condition is checked as the query the evaluator runs
    (``SELECT customer_id FROM customers WHERE <condition>``), so text that escapes the
    WHERE clause (``1=1; DROP ...``, ``... UNION SELECT ...``) is caught too; positions
    are reported within the condition's own text.
    """
    checker = _Checker(condition, prefix=_CONDITION_PREFIX)
    checker.check_tokens()
    tree = checker.parse()
    checker.check_tree(tree)
    if not isinstance(tree, exp.Select) or tree.args.get("limit") or tree.args.get("group"):
        raise checker.refuse("a condition must be a boolean expression only", checker.prefix_len)
    return GuardedSql(
        sql=condition,
        columns=tuple(sorted({c.name.lower() for c in tree.args["where"].find_all(exp.Column)})),
        tables=tuple(sorted({t.name.lower() for t in tree.find_all(exp.Table)})),
        subquery=any(True for _ in tree.args["where"].find_all(exp.Select)),
    )


def conjuncts(condition: str) -> list[str]:
    """The top-level AND parts of a checked condition (used by ``explain``)."""
    tree = sqlglot.parse_one(_CONDITION_PREFIX + condition, read="spark")
    where = tree.args["where"].this
    return (
        [part.sql(dialect="spark") for part in where.flatten()]
        if isinstance(where, exp.And)
        else [where.sql(dialect="spark")]
    )
