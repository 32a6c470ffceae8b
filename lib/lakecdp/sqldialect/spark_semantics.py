"""Spark's meaning on DuckDB: the rewrites that make a translated segment compute what Spark computes.

sqlglot translates Spark SQL names and syntax to DuckDB, but several functions keep their name and
change their meaning on the way — Sunday is day 1 of the week in Spark and day 0 in DuckDB, a cast
of ``2.7`` to ``INT`` is 2 in Spark and 3 in DuckDB, ``ln(-1)`` is NULL in Spark and NaN in DuckDB,
Spark (ANSI mode, as lakecdp runs it) stops on a division by zero or an impossible cast where the
translation quietly gives NULL. A segment that quietly means something else on one engine puts
different people in it, so each such function is either rewritten here to Spark's result or refused
on the embedded engine with the reason (:data:`DIVERGENT`). tests/test_segments_conformance.py runs
every allowed function on both engines over nulls, NaN, infinities, extremes and leap days, with
Spark as the oracle, and pins which functions are rewritten, refused or equal as they are.

Example:
    >>> spark_semantics(sqlglot.parse_one("dayofweek(d)", read="spark")).sql("duckdb")
    '(DAYOFWEEK(CAST(d AS DATE)) + 1)'
"""

from __future__ import annotations

from sqlglot import exp

from lakecdp.sqldialect import SqlRefused

# Spark functions (as sqlglot parses them) whose DuckDB counterpart gives other values on some inputs
# and that are not rewritten yet: refused on the embedded engine, with what differs.
DIVERGENT: dict[type[exp.Expression], str] = {
    exp.ArrayDistinct: "DuckDB's list_distinct drops NULL elements and does not keep the order",
    exp.ArrayExcept: "DuckDB drops NULL elements and does not keep the order",
    exp.ArrayRemove: "DuckDB drops NULL elements",
    exp.ArrayIntersect: "DuckDB does not keep the order",
    exp.Flatten: "DuckDB gives [] for a NULL array where Spark gives NULL",
    exp.MonthsBetween: "DuckDB's translation counts fractions of a month differently",
    exp.ArrayContains: "Spark answers NULL when the value is missing and the array holds a NULL",
    exp.UnixToStr: "DuckDB refuses timestamps outside its range where Spark wraps them",
    exp.JSONFormat: "DuckDB writes nulls, NaN and timestamps in other forms than Spark's to_json",
}
_DIVERGENT_NAMES = {
    "element_at": "Spark stops on an index out of bounds where DuckDB gives NULL",
}

_TEXT = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR}
_INTEGRAL = {exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT}


def _error(message: str) -> exp.Expression:
    return exp.Anonymous(this="error", expressions=[exp.Literal.string(message)])


def _refuse(name: str, reason: str) -> SqlRefused:
    return SqlRefused(
        f"function '{name}' is not supported on the embedded engine: {reason}; run this segment on the Spark "
        "engine or write it another way",
        line=None,
        column=None,
    )


def _cast(node: exp.TryCast) -> exp.Expression:
    """Spark's ``cast`` (ANSI) stops on a value it cannot convert; ``try_cast`` gives NULL."""
    kind = exp.TryCast if node.args.get("safe") else exp.Cast
    target = node.args["to"]
    operand = node.this
    if target.this in _INTEGRAL and not isinstance(operand, exp.Literal):
        return _integral(operand, target, kind)
    if kind is exp.Cast and target.this in _TEXT:
        return _as_string(exp.Cast(this=operand, to=target))
    return kind(this=operand, to=target)


def _integral(operand: exp.Expression, target: exp.DataType, kind: type[exp.Cast]) -> exp.Expression:
    """A cast to an integer type as Spark (ANSI) makes it: a number is truncated towards zero (DuckDB
    rounds 2.7 to 3) through a decimal wide enough for every BIGINT (beyond it fails, as it
    overflows in Spark); a string must be an integer (``' 12 '`` is 12, ``'2.7'`` stops — or is NULL
    for ``try_cast`` — where DuckDB rounds it). Every branch binds for any type; ``typeof`` picks."""
    text = exp.Anonymous(this="trim", expressions=[exp.Cast(this=operand.copy(), to=exp.DataType.build("VARCHAR"))])
    integer_text = exp.Anonymous(this="regexp_full_match", expressions=[text.copy(), exp.Literal.string("[+-]?[0-9]+")])
    refused = exp.Null() if kind is exp.TryCast else _error("[CAST_INVALID_INPUT] the string is not an integer")
    from_text = exp.Case(ifs=[exp.If(this=integer_text, true=kind(this=text, to=target.copy()))], default=refused)
    wide = kind(this=operand.copy(), to=exp.DataType.build("DECIMAL(38, 9)"))
    from_number = kind(this=exp.Anonymous(this="trunc", expressions=[wide]), to=target.copy())
    return exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=operand.copy(), expression=exp.Null()), true=exp.Null()),
            exp.If(
                this=exp.EQ(
                    this=exp.Anonymous(this="typeof", expressions=[operand.copy()]),
                    expression=exp.Literal.string("VARCHAR"),
                ),
                true=from_text,
            ),
        ],
        default=from_number,
    )


def _nonzero(divisor: exp.Expression) -> exp.Expression:
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(this=divisor.copy(), expression=exp.Literal.number(0)),
                true=_error("[DIVIDE_BY_ZERO] Division by zero"),
            )
        ],
        default=divisor,
    )


def _positive_or_null(value: exp.Expression, result: exp.Expression) -> exp.Expression:
    """Spark's logarithms are NULL for an argument <= 0 (DuckDB: NaN or -inf)."""
    return exp.Case(ifs=[exp.If(this=exp.GT(this=value.copy(), expression=exp.Literal.number(0)), true=result)])


def _as_string(node: exp.Cast) -> exp.Expression:
    """``cast(x AS string)``: Spark writes a timestamp without the zone (DuckDB adds ``+00``); a double
    in Java's form (``1.0E308``, ``NaN``), which DuckDB does not have: refused when one reaches it.
    (Every branch binds for any type: the CASE picks by ``typeof``.)"""
    value = node.this

    def typed(kind: str) -> exp.Expression:
        return exp.EQ(
            this=exp.Anonymous(this="typeof", expressions=[value.copy()]), expression=exp.Literal.string(kind)
        )

    text = exp.Cast(this=value.copy(), to=exp.DataType.build("VARCHAR"))
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.And(
                    this=exp.paren(exp.Or(this=typed("DOUBLE"), expression=typed("FLOAT")), copy=False),
                    expression=exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())),
                ),
                true=_error(
                    "cast of a double to string is not supported on the embedded engine (Spark writes Java's "
                    "form, such as 1.0E308); use format_number or round, or run on the Spark engine"
                ),
            ),
            exp.If(
                this=typed("TIMESTAMP WITH TIME ZONE"),
                true=exp.Anonymous(
                    this="regexp_replace",
                    expressions=[text.copy(), exp.Literal.string("\\+00$"), exp.Literal.string("")],
                ),
            ),
        ],
        default=text,
    )


def _rewrite(node: exp.Expression) -> exp.Expression:
    if type(node) in DIVERGENT:
        raise _refuse(node.key, DIVERGENT[type(node)])
    if isinstance(node, exp.Anonymous) and node.name.lower() in _DIVERGENT_NAMES:
        raise _refuse(node.name.lower(), _DIVERGENT_NAMES[node.name.lower()])
    if isinstance(node, exp.Bracket) and not node.args.get("safe") and node.args.get("offset") is not None:
        raise _refuse("element_at", _DIVERGENT_NAMES["element_at"])
    if isinstance(node, exp.TryCast):
        return _cast(node)
    if isinstance(node, exp.Cast) and node.args["to"].this in _TEXT:
        return _as_string(node)
    if isinstance(node, exp.TsOrDsToDate) and node.args.get("safe"):
        # to_date(s[, format]): Spark (ANSI) stops on a malformed date; try_to_date is the NULL-giving form
        if node.args.get("format") is None:
            node.set("safe", False)
            return node
        parsed = exp.StrToTime(this=node.this, format=node.args["format"])
        return exp.Cast(this=parsed, to=exp.DataType.build("DATE"))
    if isinstance(node, (exp.TsOrDsAdd, exp.AddMonths, exp.DateTrunc)):
        # date_add, date_sub, dateadd, add_months and trunc answer a DATE in Spark (DuckDB: a timestamp)
        return exp.Cast(this=node, to=exp.DataType.build("DATE"))
    if isinstance(node, exp.TimestampDiff):
        # Spark counts whole units elapsed (10:30 -> next day 00:00 is 0 days); DuckDB's date_diff counts
        # boundaries crossed, its date_sub whole units
        unit = exp.Literal.string(node.args["unit"].name if node.args.get("unit") is not None else "DAY")
        return exp.Anonymous(this="date_sub", expressions=[unit, node.expression, node.this])
    if isinstance(node, exp.UnixSeconds):
        # whole seconds towards the past, as Spark (DuckDB's cast rounds 23:59:59.999999 up)
        seconds = exp.Anonymous(this="floor", expressions=[exp.Anonymous(this="epoch", expressions=[node.this])])
        return exp.Cast(this=seconds, to=exp.DataType.build("BIGINT"))
    if isinstance(node, exp.Substring) and node.args.get("start") is not None:
        # position 0 is position 1 in Spark; DuckDB counts a character before the first
        start = node.args["start"]
        node.set(
            "start",
            exp.Case(
                ifs=[
                    exp.If(this=exp.EQ(this=start.copy(), expression=exp.Literal.number(0)), true=exp.Literal.number(1))
                ],
                default=start,
            ),
        )
        return node
    if isinstance(node, exp.ArrayPosition) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "array_position"
    ):
        # not found is 0 in Spark, NULL in DuckDB
        array = node.this if isinstance(node, exp.ArrayPosition) else node.expressions[0]
        return exp.Case(
            ifs=[exp.If(this=exp.Is(this=array.copy(), expression=exp.Null()), true=exp.Null())],
            default=exp.Coalesce(this=node, expressions=[exp.Literal.number(0)]),
        )
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_array_length":
        # NULL for anything but a JSON array in Spark; DuckDB stops on malformed JSON and counts 0 for others
        text = node.expressions[0]
        is_array = exp.And(
            this=exp.Anonymous(this="json_valid", expressions=[text.copy()]),
            expression=exp.EQ(
                this=exp.Anonymous(this="json_type", expressions=[text.copy()]), expression=exp.Literal.string("ARRAY")
            ),
        )
        return exp.Case(ifs=[exp.If(this=is_array, true=node)])
    if isinstance(node, exp.Div) and node.args.get("safe"):
        # Spark (ANSI) stops on a division by zero; the translation's NULLIF would answer NULL
        return exp.Div(this=node.this, expression=_nonzero(node.expression), typed=node.args.get("typed"))
    if isinstance(node, exp.DayOfWeek):
        return exp.paren(exp.Add(this=node, expression=exp.Literal.number(1)), copy=False)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "weekday":
        # Spark: Monday 0 .. Sunday 6; DuckDB's weekday is Sunday 0
        day = exp.Anonymous(this="isodow", expressions=node.expressions)
        return exp.paren(exp.Sub(this=day, expression=exp.Literal.number(1)), copy=False)
    if isinstance(node, exp.Extract) and node.this.name.upper() in ("DOW", "DAYOFWEEK"):
        return exp.paren(exp.Add(this=node, expression=exp.Literal.number(1)), copy=False)
    if isinstance(node, exp.Ln):
        return _positive_or_null(node.this, node)
    if isinstance(node, exp.Log):
        if node.expression is None:
            return _positive_or_null(node.this, node)
        # log(base, x): NULL unless both are > 0
        return _positive_or_null(node.this, _positive_or_null(node.expression, node))
    if isinstance(node, exp.Sign):
        # a double in Spark, NaN for NaN (DuckDB: an integer, 0)
        value = node.this
        return exp.Case(
            ifs=[exp.If(this=exp.Anonymous(this="isnan", expressions=[value.copy()]), true=value.copy())],
            default=exp.Cast(this=node, to=exp.DataType.build("DOUBLE")),
        )
    if isinstance(node, (exp.Ceil, exp.Floor)) and node.args.get("decimals") is None:
        return exp.Cast(this=node, to=exp.DataType.build("BIGINT"))
    if isinstance(node, exp.IsNan):
        return exp.Coalesce(this=node, expressions=[exp.false()])
    if isinstance(node, exp.Initcap):
        # words start after an ASCII space only, full title case (lakecdp.sqldialect.spark_functions);
        # sqlglot's emulation splits at other characters and cases with DuckDB's tables
        if node.expression is not None and not (
            isinstance(node.expression, exp.Literal) and node.expression.name == " "
        ):
            raise _refuse("initcap", "only Spark's one-argument form is translated")
        return exp.Anonymous(this="lakecdp_initcap", expressions=[node.this])
    if isinstance(node, exp.SubstringIndex):
        # DuckDB has no substring_index (lakecdp.sqldialect.spark_functions)
        return exp.Anonymous(
            this="lakecdp_substring_index", expressions=[node.this, node.args["delimiter"], node.args["count"]]
        )
    return node


def spark_semantics(tree: exp.Expression) -> exp.Expression:
    """``tree`` (parsed as Spark SQL) rewritten so that DuckDB computes Spark's values.

    Raises:
        SqlRefused: a function whose DuckDB result differs and is not rewritten yet.
    """
    root = tree
    # children before their parents (reversed pre-order), so a rewritten node's operands are Spark's too
    for node in reversed(list(tree.walk(bfs=False))):
        assert isinstance(node, exp.Expression)
        parent, arg_key, index = node.parent, node.arg_key, node.index
        new = _rewrite(node)
        if new is node:
            continue
        if parent is None or arg_key is None:
            root = new
        else:
            parent.set(arg_key, new, index)
    return root
