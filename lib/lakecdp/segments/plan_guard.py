"""The plan check: segment SQL is judged on the plan Spark itself builds from the text it runs.

The sqlglot guard (:mod:`lakecdp.segments.guard`) reads the text with a different parser, so
it can be fooled (a ``${...}`` that Spark would expand, syntax sqlglot reads differently).
This module decides instead, in three passes over Spark's own trees, before anything runs:

1. **Parsed plan** (``sqlParser.parsePlan`` / ``parseExpression``: no catalog access, nothing
   evaluated). Allowed: plain relational operators (project, filter, join, aggregate, union,
   intersect, except, distinct, sort, limit, window, CTEs, inline ``VALUES``, ``LATERAL VIEW``
   of an allowed generator), relations named by one bare name that is a registered segment
   view or a CTE, and functions on :data:`ALLOWED_FUNCTIONS`. Everything else is refused:
   ``SELECT TRANSFORM ... USING`` (script transformation), table-valued functions, file and
   path relations (``text.`/etc/hostname```, ``delta.`/path```), commands, DDL/DML,
   variables (``DECLARE``, ``SET VAR``), parameter markers, ``IDENTIFIER(...)``, hints.
   ``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()`` are found here and replaced, in the
   text, by the run's ``as_of`` literal (so a run reproduces); the new text is checked again.
2. **Analysed plan**: every relation is a registered temporary view (``customers``,
   ``profile``, ``features``, ``events``; the walk stops there), operators on the allow-list,
   no reflection, UDFs, session variables or non-deterministic expressions, and ``sequence``
   bounds constant with at most :data:`MAX_GENERATED` elements.
3. **Optimised plan**: no join without an equality between its sides (a cross join compares
   every row with every row) unless one side holds at most :data:`SMALL_SIDE_ROWS` rows. The
   plan is optimised in a clone of the session without the rules that start Spark jobs while
   planning over Delta tables (:data:`_PLANNING_WITHOUT_JOBS`).

The DataFrame returned is built from the checked text with the same parser; nothing is
executed here, and no Spark job starts (not even Delta's file listing). Variable substitution
must be off in the session (``lakecdp.spark`` sets ``spark.sql.variable.substitute=false``):
the check refuses to work in a session where ``${...}`` would be expanded before parsing.

Example:
    >>> members = guarded_condition(spark, "total_spent > 500", as_of=as_of)
    >>> members.count()
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lakecdp.segments.guard import ALLOWED_FUNCTIONS, SqlRefused

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# The temporary views a segment reads (registered by lakecdp.segments.evaluate.register_views).
SEGMENT_VIEWS = frozenset({"customers", "profile", "features", "events"})

# At most this many elements from sequence() / array_repeat(), characters from repeat()/lpad()/rpad().
MAX_GENERATED = 10_000
# A join without an equality between its sides is allowed only when one side is this small.
SMALL_SIDE_ROWS = 1_000

_CLOCK_DATE = frozenset({"current_date", "curdate"})
_CLOCK_TIMESTAMP = frozenset({"current_timestamp", "now", "localtimestamp"})

# Functions whose size argument (position) must be a constant of at most MAX_GENERATED.
_SIZED_ARGUMENT = {"repeat": 1, "lpad": 1, "rpad": 1, "array_repeat": 1}

# Operators of the parsed plan (before the catalog is read).
_PARSED_OPERATORS = frozenset(
    """
    Project Filter Join Aggregate Union Intersect Except Distinct Deduplicate Sort GlobalLimit
    LocalLimit Offset SubqueryAlias UnresolvedRelation UnresolvedWith WithWindowDefinition
    Generate UnresolvedInlineTable LocalRelation OneRowRelation UnresolvedSubqueryColumnAliases
    UnresolvedHaving Window
    """.split()
)
# Operators of the analysed plan (the walk stops at the registered views).
_ANALYSED_OPERATORS = frozenset(
    """
    Project Filter Join Aggregate Union Intersect Except Distinct Deduplicate Sort GlobalLimit
    LocalLimit Offset SubqueryAlias View WithCTE CTERelationDef CTERelationRef Window Generate
    Expand LocalRelation OneRowRelation WithWindowDefinition
    """.split()
)
# Expressions the parser builds directly (functions arrive as UnresolvedFunction, checked by name).
_PARSED_EXPRESSIONS = frozenset(
    """
    Literal AttributeReference UnresolvedAttribute UnresolvedStar Alias UnresolvedAlias UnresolvedFunction
    UnresolvedExtractValue UnresolvedGenerator UnresolvedOrdinal Cast And Or Not EqualTo
    EqualNullSafe LessThan LessThanOrEqual GreaterThan GreaterThanOrEqual Add Subtract Multiply
    Divide Remainder IntegralDivide UnaryMinus UnaryPositive BitwiseAnd BitwiseOr BitwiseXor
    BitwiseNot Concat CaseWhen If In InSubquery ListQuery Exists ScalarSubquery Like ILike RLike
    LikeAll NotLikeAll LikeAny NotLikeAny IsNull IsNotNull IsUnknown IsNotUnknown SortOrder
    UnresolvedWindowExpression WindowExpression WindowSpecDefinition WindowSpecReference
    SpecifiedWindowFrame UnspecifiedFrame UnspecifiedFrame$ UnboundedPreceding$ UnboundedFollowing$ CurrentRow$
    LambdaFunction UnresolvedNamedLambdaVariable Cube Rollup GroupingSets CreateNamedStruct
    CreateStruct Coalesce CurrentDate CurrentTimestamp Extract TimeAdd DateAdd DateSub
    DatetimeSub Grouping GroupingID UnresolvedRegex AggregateExpression Count Sum Average
    Min Max First Last Tuple
    """.split()
)
# Expressions refused in the analysed plan whatever name reached them.
_REFUSED_EXPRESSIONS = {
    "CallMethodViaReflection": "calls a Java method (JVM access is not allowed)",
    "TryReflect": "calls a Java method (JVM access is not allowed)",
    "ScalaUDF": "calls a user-defined function",
    "ScalaUDAF": "calls a user-defined function",
    "ScalaAggregator": "calls a user-defined function",
    "PythonUDF": "calls a user-defined function",
    "PythonUDAF": "calls a user-defined function",
    "PythonUDTF": "calls a user-defined function",
    "HiveSimpleUDF": "calls a user-defined function",
    "HiveGenericUDF": "calls a user-defined function",
    "HiveGenericUDTF": "calls a user-defined function",
    "HiveUDAFFunction": "calls a user-defined function",
    "JavaUDF": "calls a user-defined function",
    "VariableReference": "reads a session variable",
    "InputFileName": "reads file names",
    "InputFileBlockStart": "reads file names",
    "InputFileBlockLength": "reads file names",
    "CurrentUser": "reads the session user",
    "CurrentDatabase": "reads the session catalog",
    "CurrentCatalog": "reads the session catalog",
}

_PARSE_POSITION = re.compile(r"\s*\(line (\d+), pos (\d+)\)\s*$")


@dataclass
class _Text:
    """The text Spark parses and how its offsets map back to what the author wrote."""

    original: str
    current: str
    # (start, stop_exclusive) in ``current`` -> (start, stop_exclusive) in ``original``
    replaced: list[tuple[int, int, int, int]]

    def original_offset(self, offset: int) -> int:
        shift = 0
        for new_start, new_stop, old_start, old_stop in self.replaced:
            if offset >= new_stop:
                shift = old_stop - new_stop
            elif offset >= new_start:
                return old_start
        return offset + shift

    def refuse(self, reason: str, offset: int | None) -> SqlRefused:
        if offset is None:
            return SqlRefused(reason, line=None, column=None)
        position = max(0, min(self.original_offset(offset), len(self.original)))
        line = self.original.count("\n", 0, position) + 1
        column = position - (self.original.rfind("\n", 0, position) + 1) + 1
        return SqlRefused(reason, line=line, column=column)


def _simple_name(obj: Any) -> str:
    name = str(obj.getClass().getName())
    return name.rsplit(".", 1)[-1]


def _seq(seq: Any) -> list[Any]:
    return [seq.apply(i) for i in range(seq.size())]


def _start(node: Any) -> int | None:
    index = node.origin().startIndex()
    return int(index.get()) if index.isDefined() else None


def _stop(node: Any) -> int | None:
    index = node.origin().stopIndex()
    return int(index.get()) if index.isDefined() else None


def _is_plan(obj: Any, jvm: Any) -> bool:
    return bool(jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.plans.logical.LogicalPlan").isInstance(obj))


def _expressions(plan: Any) -> list[Any]:
    return _seq(plan.expressions())


def _walk_expression(expression: Any) -> Iterator[Any]:
    stack = [expression]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(_seq(node.children())))


def _subquery_plans(expression: Any) -> list[Any]:
    if _simple_name(expression) in ("ListQuery", "ScalarSubquery", "Exists", "LateralSubquery"):
        return [expression.plan()]
    return []


def _substitution_is_off(spark: SparkSession) -> None:
    if (spark.conf.get("spark.sql.variable.substitute", "true") or "true").lower() != "false":
        raise SqlRefused(
            "Spark variable substitution is on in this session (spark.sql.variable.substitute): "
            "${...} would be expanded before the check; lakecdp.spark.get_session turns it off",
            line=None,
            column=None,
        )


def _parse(spark: SparkSession, text: _Text, *, expression: bool) -> Any:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import ParseException

    parser = spark._jsparkSession.sessionState().sqlParser()
    try:
        return parser.parseExpression(text.current) if expression else parser.parsePlan(text.current)
    except (Py4JJavaError, ParseException) as exc:
        raw = str(exc.java_exception.getMessage()) if isinstance(exc, Py4JJavaError) else str(exc)
        lines = [line for line in raw.strip().splitlines() if line.strip()]
        first = lines[0] if lines else "cannot parse"
        located = _PARSE_POSITION.search(first)
        message = _PARSE_POSITION.sub("", first).strip()
        offset = 0
        if located:
            line, position = int(located.group(1)), int(located.group(2))
            offset = sum(len(part) + 1 for part in text.current.split("\n")[: line - 1]) + position
        raise text.refuse(f"syntax error: {message}", offset) from None


@dataclass
class _ParsedFacts:
    clock: list[tuple[int, int, str]]  # (start, stop_exclusive, "date"|"timestamp")


def _literal_int(node: Any) -> int | None:
    name = _simple_name(node)
    if name == "Literal":
        value = node.value()
        try:
            return int(str(value))
        except (TypeError, ValueError):
            return None
    if name == "UnaryMinus":
        inner = _literal_int(node.child())
        return None if inner is None else -inner
    return None


def _check_parsed(tree: Any, text: _Text, *, views: frozenset[str], jvm: Any) -> _ParsedFacts:
    """Pass 1: operators, relation names, expressions and function names of the parsed tree."""
    facts = _ParsedFacts(clock=[])
    cte_names: set[str] = set()
    plans: list[Any] = []
    expressions: list[Any] = []
    if _is_plan(tree, jvm):
        plans.append(tree)
    else:
        expressions.append(tree)
    relations: list[Any] = []
    while plans or expressions:
        if plans:
            plan = plans.pop()
            name = _simple_name(plan)
            if name == "ScriptTransformation":
                raise text.refuse(
                    "SELECT TRANSFORM ... USING runs a program on the Spark machine (script transformation is not allowed)",
                    _start(plan),
                )
            if name in ("UnresolvedTableValuedFunction", "UnresolvedTVFAliases"):
                raise text.refuse("table-valued function is not allowed; read the segment views", _start(plan))
            if name not in _PARSED_OPERATORS:
                raise text.refuse(
                    f"{name} is not allowed: a segment is one read-only query of plain relational operators",
                    _start(plan),
                )
            if name == "UnresolvedRelation":
                relations.append(plan)
            if name == "UnresolvedWith":
                for relation in _seq(plan.cteRelations()):
                    cte_names.add(str(relation._1()).lower())
            plans.extend(_seq(plan.children()))
            plans.extend(c for c in _seq(plan.innerChildren()) if _is_plan(c, jvm))
            expressions.extend(_expressions(plan))
            continue
        expression = expressions.pop()
        for node in _walk_expression(expression):
            name = _simple_name(node)
            if name not in _PARSED_EXPRESSIONS:
                raise text.refuse(f"expression {name} is not allowed", _start(node))
            plans.extend(_subquery_plans(node))
            if name == "UnresolvedAttribute":
                parts = [str(p) for p in _seq(node.nameParts())]
                if len(parts) == 1 and parts[0].lower() in ("current_date", "current_timestamp", "localtimestamp"):
                    kind = "date" if parts[0].lower() == "current_date" else "timestamp"
                    facts.clock.append((_start(node) or 0, (_stop(node) or 0) + 1, kind))
            elif name in ("CurrentDate", "CurrentTimestamp"):
                kind = "date" if name == "CurrentDate" else "timestamp"
                facts.clock.append((_start(node) or 0, (_stop(node) or 0) + 1, kind))
            elif name in ("UnresolvedFunction", "UnresolvedGenerator"):
                _check_function(node, name, text, facts)
    for relation in relations:
        parts = [str(p) for p in _seq(relation.multipartIdentifier())]
        label = ".".join(parts)
        if len(parts) != 1:
            raise text.refuse(
                f"table '{label}' is not allowed: file paths, other catalogs and databases are refused; "
                f"read {sorted(views)}",
                _start(relation),
            )
        if relation.isStreaming():
            raise text.refuse("streaming reads are not allowed", _start(relation))
        if parts[0].lower() not in views and parts[0].lower() not in cte_names:
            raise text.refuse(f"table '{label}' is not allowed; allowed: {sorted(views)}", _start(relation))
    return facts


def _check_function(node: Any, kind: str, text: _Text, facts: _ParsedFacts) -> None:
    if kind == "UnresolvedGenerator":
        parts = [str(p) for p in _seq(node.name().nameParts())]
        arguments = _seq(node.children())
    else:
        parts = [str(p) for p in _seq(node.nameParts())]
        arguments = _seq(node.arguments())
    label = ".".join(parts)
    if len(parts) != 1:
        raise text.refuse(f"qualified function '{label}' (UDF or catalog function) is not allowed", _start(node))
    name = parts[0].lower()
    if name in ("reflect", "java_method", "try_reflect"):
        raise text.refuse(f"function '{name}' calls a Java method (JVM access is not allowed)", _start(node))
    if name not in ALLOWED_FUNCTIONS:
        raise text.refuse(
            f"function '{name}' is not on the allow-list (UDFs, file, JVM and session functions are refused)",
            _start(node),
        )
    if name in _CLOCK_DATE | _CLOCK_TIMESTAMP:
        if arguments:
            raise text.refuse(f"function '{name}' takes no arguments here", _start(node))
        clock = "date" if name in _CLOCK_DATE else "timestamp"
        facts.clock.append((_start(node) or 0, (_stop(node) or 0) + 1, clock))
    if name in _SIZED_ARGUMENT:
        position = _SIZED_ARGUMENT[name]
        size = _literal_int(arguments[position]) if len(arguments) > position else None
        if size is None or size > MAX_GENERATED:
            raise text.refuse(
                f"function '{name}': its length/count must be a constant of at most {MAX_GENERATED}",
                _start(node),
            )


def _bind_clock(text: _Text, clock: list[tuple[int, int, str]], as_of: datetime) -> _Text:
    """Replace clock reads by the run's as_of literal (UTC), right to left."""
    moment = as_of.astimezone(timezone.utc) if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
    literals = {
        "date": f"DATE'{moment.date().isoformat()}'",
        "timestamp": f"TIMESTAMP'{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}'",
    }
    current = text.original
    spans = sorted(set(clock))
    pieces: list[str] = []
    replaced: list[tuple[int, int, int, int]] = []
    cursor = 0
    written = 0
    for start, stop, kind in spans:
        if start < cursor:
            continue
        pieces.append(current[cursor:start])
        written += start - cursor
        literal = literals[kind]
        pieces.append(literal)
        replaced.append((written, written + len(literal), start, stop))
        written += len(literal)
        cursor = stop
    pieces.append(current[cursor:])
    return _Text(original=text.original, current="".join(pieces), replaced=replaced)


# -- pass 2 and 3: analysed and optimised plans -------------------------------------


def _sequence_size(node: Any) -> float | None:
    """Elements a constant sequence() yields, computed from its bounds (never evaluated whole)."""
    children = _seq(node.children())
    start, stop = children[0], children[1]
    if not (start.foldable() and stop.foldable()):
        return None
    low, high = start.eval(None), stop.eval(None)
    if low is None or high is None:
        return 0

    def number(value: Any) -> float:
        return float(str(value))

    data_type = str(start.dataType().typeName())
    scale = 86_400_000_000 if data_type == "date" else 1
    span = abs(number(high) - number(low)) * scale
    step: float = 86_400_000_000 if data_type in ("date", "timestamp", "timestamp_ntz") else 1
    if len(children) > 2:
        if not children[2].foldable():
            return None
        value = children[2].eval(None)
        if value is None:
            return 0
        if hasattr(value, "months") and callable(value.months):
            step = (
                abs(value.months()) * 30 * 86_400_000_000
                + abs(value.days()) * 86_400_000_000
                + abs(value.microseconds())
            )
        else:
            step = abs(number(value))
            step_type = str(children[2].dataType().typeName())
            if step_type.startswith("interval year") or "month" in step_type:
                step *= 30 * 86_400_000_000
    if step == 0:
        return None
    return span / step + 1


def _check_analysed(plan: Any, text: _Text, *, views: frozenset[str], jvm: Any) -> None:
    """Pass 2: the analysed plan reads the registered views only, with allowed operators."""
    plans = [plan]
    while plans:
        node = plans.pop()
        name = _simple_name(node)
        if name not in _ANALYSED_OPERATORS:
            raise text.refuse(
                f"{name} is not allowed: only the segment views {sorted(views)} and plain relational "
                "operators may be used",
                _start(node),
            )
        if name == "View":
            identifier = node.desc().identifier()
            view_name = str(identifier.table()).lower()
            if not node.isTempView() or identifier.database().isDefined() or view_name not in views:
                raise text.refuse(
                    f"view '{identifier.unquotedString()}' is not allowed; allowed: {sorted(views)}",
                    _start(node),
                )
            # a registered view: lakecdp built it, its own plan is not the author's
            continue
        for expression in _expressions(node):
            for part in _walk_expression(expression):
                part_name = _simple_name(part)
                if part_name in _REFUSED_EXPRESSIONS:
                    raise text.refuse(f"{part_name}: {_REFUSED_EXPRESSIONS[part_name]}", _start(part))
                if not part.deterministic():
                    raise text.refuse(
                        f"{part.prettyName()} is not deterministic; segments must be reproducible",
                        _start(part),
                    )
                if part_name == "Sequence":
                    size = _sequence_size(part)
                    if size is None or size > MAX_GENERATED:
                        raise text.refuse(
                            f"sequence() must have constant bounds and at most {MAX_GENERATED} elements",
                            _start(part),
                        )
                plans.extend(_subquery_plans(part))
        plans.extend(_seq(node.children()))
        plans.extend(c for c in _seq(node.innerChildren()) if _is_plan(c, jvm))


def _check_joins(plan: Any, text: _Text, jvm: Any) -> None:
    """Pass 3: every join of the optimised plan has an equality between its sides (or a tiny side)."""
    planning = jvm.org.apache.spark.sql.catalyst.planning
    plans = [plan]
    while plans:
        node = plans.pop()
        if _simple_name(node) == "Join":
            equi = planning.ExtractEquiJoinKeys.unapply(node).isDefined()
            null_aware = planning.ExtractSingleColumnNullAwareAntiJoin.unapply(node).isDefined()
            if not (equi or null_aware):
                sides = [node.left().maxRows(), node.right().maxRows()]
                small = any(side.isDefined() and int(side.get()) <= SMALL_SIDE_ROWS for side in sides)
                if not small:
                    raise text.refuse(
                        "a join without an equality between its two sides (cross join) compares every row "
                        f"with every row; join on a key (allowed only when one side has at most "
                        f"{SMALL_SIDE_ROWS} rows)",
                        _start(node),
                    )
        plans.extend(_seq(node.children()))
        plans.extend(c for c in _seq(node.innerChildren()) if _is_plan(c, jvm))


def _analysis_refusal(exc: Exception, text: _Text) -> SqlRefused:
    """An AnalysisException (unknown column, wrong types) as a refusal with the author's position."""
    message = str(getattr(exc, "getMessage", lambda: str(exc))() or exc).strip().splitlines()[0]
    offset = None
    try:
        contexts = exc.getQueryContext()  # type: ignore[attr-defined]
        if contexts:
            offset = int(contexts[0].startIndex())
    except Exception:  # noqa: BLE001 - the message alone is still a clear refusal
        offset = None
    return text.refuse(f"cannot run: {message}", offset)


def _checked(
    spark: SparkSession,
    sql: str,
    *,
    expression: bool,
    as_of: datetime,
    views: frozenset[str],
) -> _Text:
    """Passes 1 (twice: as written, then with the clock bound); returns the text to run."""
    _substitution_is_off(spark)
    jvm = spark._jvm
    written = _Text(original=sql, current=sql, replaced=[])
    facts = _check_parsed(_parse(spark, written, expression=expression), written, views=views, jvm=jvm)
    bound = _bind_clock(written, facts.clock, as_of)
    again = _check_parsed(_parse(spark, bound, expression=expression), bound, views=views, jvm=jvm)
    if again.clock:
        raise bound.refuse("the clock could not be bound to the run's as_of", again.clock[0][0])
    return bound


# Optimiser rules that start Spark jobs while a plan over Delta tables is optimised: Delta's scan
# preparation (file listing and data skipping over the table's state), its metadata-only answers
# (count/min/max from the state) and the runtime filters (they read the tables' sizes, which makes
# Delta compute its state). Off in the session that optimises a plan for pass 3: none of them adds
# or removes a join of the author's plan, and a refused segment must not start any job.
_PLANNING_WITHOUT_JOBS = {
    "spark.databricks.delta.stats.skipping": "false",
    "spark.databricks.delta.optimizeMetadataQuery.enabled": "false",
    "spark.sql.optimizer.runtime.bloomFilter.enabled": "false",
    "spark.sql.optimizer.runtimeFilter.semiJoinReduction.enabled": "false",
}


def planning_session(spark: SparkSession) -> Any:
    """A clone of ``spark``'s session (same settings) where :data:`_PLANNING_WITHOUT_JOBS` holds:
    optimising a plan never starts a Spark job there. One serves every check of a run (the plan
    checked is already analysed, so the clone's views do not matter); pass it as ``planner``."""
    clone = spark._jsparkSession.cloneSession()
    for key, value in _PLANNING_WITHOUT_JOBS.items():
        clone.conf().set(key, value)
    return clone


def _optimised_without_jobs(df: DataFrame, planner: Any = None) -> Any:
    """``df``'s analysed plan optimised in ``planner`` (:func:`planning_session`; a new one when None)."""
    spark = df.sparkSession
    clone = planning_session(spark) if planner is None else planner
    jvm: Any = spark._jvm
    analysed = df._jdf.queryExecution().analyzed()
    return jvm.org.apache.spark.sql.classic.Dataset.ofRows(clone, analysed).queryExecution().optimizedPlan()


def _finish(df: DataFrame, text: _Text, views: frozenset[str], planner: Any = None) -> DataFrame:
    jvm = df.sparkSession._jvm
    execution = df._jdf.queryExecution()
    _check_analysed(execution.analyzed(), text, views=views, jvm=jvm)
    _check_joins(_optimised_without_jobs(df, planner), text, jvm)
    return df


def _filtered(
    spark: SparkSession, condition: str, *, as_of: datetime, view: str, views: frozenset[str], planner: Any = None
) -> tuple[DataFrame, _Text]:
    """``view`` filtered by ``condition`` after passes 1-3, and the text that runs."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    text = _checked(spark, condition, expression=True, as_of=as_of, views=views)
    try:
        df = spark.table(view).filter(F.expr(text.current))
    except AnalysisException as exc:
        raise _analysis_refusal(exc, text) from None
    return _finish(df, text, views, planner), text


def guarded_condition(
    spark: SparkSession,
    condition: str,
    *,
    as_of: datetime,
    view: str = "customers",
    views: frozenset[str] = SEGMENT_VIEWS,
) -> DataFrame:
    """Rows of ``view`` where ``condition`` holds, after the plan check (nothing executed).

    Args:
        condition: a boolean Spark SQL expression over ``view`` (it may use subqueries over
            the other segment views).
        as_of: the run's point in time: ``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()``
            read it.

    Raises:
        SqlRefused: with line, column (within ``condition``) and reason.
    """
    return _filtered(spark, condition, as_of=as_of, view=view, views=views)[0]


def guarded_row_condition(
    spark: SparkSession,
    condition: str,
    *,
    as_of: datetime,
    view: str = "customers",
    views: frozenset[str] = SEGMENT_VIEWS,
    planner: Any = None,
) -> Column:
    """``condition`` as a Column over ``view``, after the plan check of :func:`guarded_condition`
    (the same text, the same check), for a condition without a subquery (it reads its row only;
    :attr:`GuardedSql.subquery`): several segments' conditions can then be evaluated in one pass
    over ``view`` (:func:`lakecdp.segments.evaluate.raw_matches`).

    ``planner``: the :func:`planning_session` of the run (one for all its conditions).

    Raises:
        SqlRefused: with line, column (within ``condition``) and reason.
    """
    from pyspark.sql import functions as F

    return F.expr(_filtered(spark, condition, as_of=as_of, view=view, views=views, planner=planner)[1].current)


def guarded_columns(
    spark: SparkSession,
    expressions: dict[str, str],
    *,
    as_of: datetime,
    view: str = "customers",
    views: frozenset[str] = SEGMENT_VIEWS,
) -> DataFrame:
    """``SELECT <expression> AS <name>, ... FROM view``, each expression plan-checked (``explain``)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    columns = []
    texts = []
    for name, sql in expressions.items():
        text = _checked(spark, sql, expression=True, as_of=as_of, views=views)
        texts.append(text)
        columns.append(F.expr(text.current).alias(name))
    try:
        df = spark.table(view).select(*columns)
    except AnalysisException as exc:
        raise _analysis_refusal(exc, texts[0] if texts else _Text("", "", [])) from None
    combined = _Text(original="", current="", replaced=[])
    return _finish(df, combined, views)


def guarded_query(
    spark: SparkSession,
    query: str,
    *,
    as_of: datetime,
    views: frozenset[str] = SEGMENT_VIEWS,
) -> DataFrame:
    """The result of a segment ``query`` after the plan check (nothing executed).

    The DataFrame is built from the very plan that was checked (no second parse).

    Raises:
        SqlRefused: with line, column and reason.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import AnalysisException
    from pyspark.sql import DataFrame

    text = _checked(spark, query, expression=False, as_of=as_of, views=views)
    plan = _parse(spark, text, expression=False)
    try:
        jvm: Any = spark._jvm
        jdf = jvm.org.apache.spark.sql.classic.Dataset.ofRows(spark._jsparkSession, plan)
    except Py4JJavaError as exc:
        java = exc.java_exception
        if _simple_name(java) != "AnalysisException" and "AnalysisException" not in _simple_name(java):
            raise
        message = str(java.getMessage()).strip().splitlines()[0]
        offset = None
        contexts = java.getQueryContext()
        if len(contexts) > 0:
            offset = int(contexts[0].startIndex())
        raise text.refuse(f"cannot run: {message}", offset) from None
    except AnalysisException as exc:
        raise _analysis_refusal(exc, text) from None
    return _finish(DataFrame(jdf, spark), text, views)


def check_sql(
    spark: SparkSession,
    *,
    condition: str | None = None,
    query: str | None = None,
    as_of: datetime,
    views: frozenset[str] = SEGMENT_VIEWS,
) -> None:
    """Plan-check a condition or a query against the registered views without running it."""
    if (condition is None) == (query is None):
        raise TypeError("give exactly one of condition or query")
    if condition is not None:
        guarded_condition(spark, condition, as_of=as_of, views=views)
    else:
        guarded_query(spark, query or "", as_of=as_of, views=views)
