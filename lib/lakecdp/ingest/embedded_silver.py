"""Validated rows -> silver rows on the embedded engine (DuckDB + Arrow): the Spark mappers, no JVM.

:func:`to_silver` and :func:`to_order_items` compute what :mod:`lakecdp.ingest.standardise`'s
mappers compute on Spark, for the batch ingest and the HTTP intake's pickup on the embedded engine:

- **mapping**: a source's ``mapping`` (and an ``also`` entry's filter and mapping) stay Spark SQL
  text; :func:`lakecdp.sqldialect.translate.condition_to_duckdb` writes each as DuckDB SQL with
  Spark's meaning (``CAST((<expression>) AS <silver type>)`` as Spark's ``F.expr(...).cast(...)``),
  run on a DuckDB connection that holds only the typed rows and is locked before any mapping
  runs (no file, network or extension access, no setting changes): mappings are config text.
- **standardisation**: the cleaners of :mod:`lakecdp.ingest.cleaners` on the mapped Arrow columns
  (names, emails, phones, countries, postcodes, free text, identifiers, device id arrays).

The input is the typed rows: ``_row`` (int64, the row's position, kept in the output), one column
per source column in the source's types (Arrow), optionally ``_warnings`` (list<string>, the
validator's warning codes) and ``_as_read`` (a struct of the raw texts, for the unparsed birth date).

Example:
    >>> records = to_silver(typed, sources["crm"], run_id=ctx.run_id, ingested_at=now, as_of=ctx.as_of)
    >>> records.column_names[:4]
    ['_row', 'record_id', 'source', 'source_record_id']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lakecdp import catalog
from lakecdp.delta_store import arrow_schema
from lakecdp.ingest import cleaners
from lakecdp.ingest.javaregex import java_regex
from lakecdp.ingest.javatime import UnsupportedPattern, java_time_parser
from lakecdp.ingest.sources import NULL_LIKE_KEY_PATTERN
from lakecdp.sqldialect.spark_functions import register_spark_functions
from lakecdp.sqldialect.translate import condition_to_duckdb

if TYPE_CHECKING:
    import duckdb

    from lakecdp.ingest.sources import ExtraTarget, SourceConfig

#: columns a mapper sets itself (not from the mapping)
_STAMPS = frozenset({"record_id", "source", "warnings", "run_id", "ingested_at"})
_NULL_LIKE_KEY = java_regex(NULL_LIKE_KEY_PATTERN)
_INVISIBLE = java_regex(cleaners.INVISIBLE_PATTERN)


class EmbeddedSilverUnsupported(ValueError):
    """The source needs something the embedded mappers do not do (a Spark function DuckDB lacks,
    such as ``regexp_extract``; a Java date pattern beyond ``yyyy``/``MM``/``dd``): it is mapped
    on Spark."""


# -- mapping on DuckDB ----------------------------------------------------------------------------


def _connection() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # the Spark functions the translation calls by name (initcap, substring_index)
    register_spark_functions(con)
    return con


#: the words of the clock the translation binds to the run's as-of (``current_date()``, ``now()``...)
_CLOCK_WORDS = ("current_date", "current_timestamp", "localtimestamp", "now", "curdate")
#: Spark SQL text (and the as-of, for a text naming the clock) -> its DuckDB SQL: the mappings are
#: the same every run, their translation (sqlglot) ~5 ms each
_TRANSLATED: dict[tuple[str, datetime | None], str] = {}


def _duckdb_sql(condition: str, as_of: datetime) -> str:
    """:func:`condition_to_duckdb`, worked out once per text (per text and as-of when the text
    names the clock: only then does the as-of change the translation)."""
    lowered = condition.lower()
    key = (condition, as_of if any(word in lowered for word in _CLOCK_WORDS) else None)
    found = _TRANSLATED.get(key)
    if found is None:
        if len(_TRANSLATED) >= 4096:
            _TRANSLATED.clear()
        found = _TRANSLATED[key] = condition_to_duckdb(condition, as_of=as_of)
    return found


def _mapped_sql(expression: str, spark_type: str, as_of: datetime) -> str:
    """A mapping's Spark SQL, cast to its silver type as Spark's ``F.expr(...).cast(...)``, as DuckDB SQL."""
    return _duckdb_sql(f"CAST(({expression}) AS {spark_type})", as_of)


def _locked_connection(rows: pa.Table) -> duckdb.DuckDBPyConnection:
    """A connection holding only ``rows`` as ``_typed_rows``, locked before any mapping runs: no
    file, network or extension access and no setting changes (mappings are config text), as the
    segment engine's connection (:func:`lakecdp.segments.embedded.locked_connection`)."""
    con = _connection()
    con.register("_arrow_rows", rows)
    con.execute("CREATE TABLE _typed_rows AS SELECT * FROM _arrow_rows")
    con.unregister("_arrow_rows")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


_UTC_MICROS = pa.timestamp("us", tz="UTC")
#: silver type -> the Arrow types of typed columns whose ``CAST(column AS type)`` is the column
#: itself, and the Arrow type of DuckDB's result (the connection's zone is UTC: a timestamp
#: without zone is one in UTC): such a mapping is not run on DuckDB
_SAME_TYPE: dict[str, tuple[tuple[pa.DataType, ...], pa.DataType]] = {
    "string": ((pa.string(),), pa.string()),
    "date": ((pa.date32(),), pa.date32()),
    "boolean": ((pa.bool_(),), pa.bool_()),
    "int": ((pa.int32(),), pa.int32()),
    "bigint": ((pa.int64(),), pa.int64()),
    "double": ((pa.float64(),), pa.float64()),
    "timestamp": ((pa.timestamp("us"), _UTC_MICROS), _UTC_MICROS),
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: plain words Spark may read as something other than a column (a literal, the clock, the user)
_NOT_COLUMNS = frozenset({"null", "true", "false", "user", "current_user", "session_user", *_CLOCK_WORDS})
#: the columns the callers add to the typed rows (not the source's)
_CARRIED = frozenset({"_row", "_warnings", "_as_read"})


def _as_is(typed: pa.Table, expression: str, spark_type: str) -> str | None:
    """The column of ``typed`` a mapping is (the expression its name alone, the column already of
    the silver type's Arrow type), or None: a mapping DuckDB runs."""
    name = expression.strip()
    types = _SAME_TYPE.get(spark_type.lower())
    if types is None or _IDENTIFIER.fullmatch(name) is None or name.lower() in _NOT_COLUMNS or name in _CARRIED:
        return None
    # Spark and DuckDB resolve names ignoring case: one column of that name, spelled as written
    alike = [c for c in typed.column_names if c.lower() == name.lower()]
    if alike != [name] or typed.schema.field(name).type not in types[0]:
        return None
    return name


def _in_row_order(typed: pa.Table) -> bool:
    """Whether ``_row`` increases strictly (then the input order is the mapped rows' order)."""
    rows = typed.column("_row")
    if typed.num_rows < 2:
        return True
    return pc.all(pc.greater(rows.slice(1), rows.slice(0, typed.num_rows - 1))).as_py()


def _as_is_columns(
    typed: pa.Table, mapping: dict[str, str], types: dict[str, str]
) -> dict[str, tuple[str, pa.DataType]]:
    """Target column -> the column of ``typed`` it is (:func:`_as_is`) and the Arrow type DuckDB
    would give it, when ``typed`` is in row order."""
    if not _in_row_order(typed):
        return {}
    found = {name: _as_is(typed, sql, types[name]) for name, sql in mapping.items()}
    return {name: (column, _SAME_TYPE[types[name].lower()][1]) for name, column in found.items() if column is not None}


def map_rows(
    typed: pa.Table,
    mapping: dict[str, str],
    target_ddl: str,
    *,
    as_of: datetime,
    where: str | None = None,
) -> pa.Table:
    """``SELECT <mapping of each target column, cast> FROM typed [WHERE filter]`` on a locked
    DuckDB connection; only the columns the mapping names (and ``_row``, the input position).
    Without a filter, a mapping that is a column of the silver type already is that column,
    not copied into DuckDB (:func:`_as_is`); with none left, no connection is made."""
    import duckdb

    types = {name: type_text for name, type_text, _ in catalog.ddl_fields(target_ddl)}
    mapping = {name: mapping[name] for name in types if name in mapping}
    as_is = {} if where else _as_is_columns(typed, mapping, types)
    computed = {name: sql for name, sql in mapping.items() if name not in as_is}
    if as_is and not computed:
        return _with_columns(typed.select(["_row"]), mapping, as_is, typed, None)
    select = ['"_row"']
    for name, sql in computed.items():
        select.append(f'{_mapped_sql(sql, types[name], as_of)} AS "{name}"')
    condition = f" WHERE {_duckdb_sql(where, as_of)}" if where else ""
    con = _locked_connection(typed.select(_read_columns(typed, [*computed.values(), where or ""])))
    try:
        try:
            query = con.sql(f'SELECT {", ".join(select)} FROM _typed_rows{condition} ORDER BY "_row"')
        except duckdb.Error as error:
            raise EmbeddedSilverUnsupported(_refusal(con, computed, select, condition, error)) from None
        mapped = query.to_arrow_table()
    finally:
        con.close()
    return _with_columns(mapped, mapping, as_is, typed, mapped) if as_is else mapped


def _with_columns(
    rows: pa.Table,
    mapping: dict[str, str],
    as_is: dict[str, tuple[str, pa.DataType]],
    typed: pa.Table,
    mapped: pa.Table | None,
) -> pa.Table:
    """``_row`` of ``rows`` then each mapped column in mapping order: from ``typed`` (``as_is``)
    or ``mapped`` (DuckDB's, one row per row of ``typed``, in row order)."""
    columns = [rows.column("_row")]
    for name in mapping:
        if name in as_is:
            column, arrow_type = as_is[name]
            columns.append(typed.column(column).cast(arrow_type))
        else:
            columns.append(mapped.column(name))  # type: ignore[union-attr]
    return pa.Table.from_arrays(columns, names=["_row", *mapping])


def _read_columns(typed: pa.Table, expressions: list[str]) -> list[str]:
    """The columns of ``typed`` the ``expressions`` (Spark SQL text) may read: ``_row`` and every
    column whose name they mention (all of them when one has a ``*``). The connection gets a copy
    of these only (not the texts as read or the warnings the caller carries for the mappers)."""
    text = " ".join(expressions).lower()
    if "*" in text:
        return typed.column_names
    return [name for name in typed.column_names if name == "_row" or name.lower() in text]


def _refusal(
    con: duckdb.DuckDBPyConnection, mapping: dict[str, str], select: list[str], condition: str, error: Exception
) -> str:
    """Which mapping (or the filter) DuckDB cannot bind, and why (a Spark function it lacks)."""
    import duckdb

    for name, expression in zip([n for n in mapping], select[1:]):
        try:
            con.sql(f"SELECT {expression} FROM _typed_rows LIMIT 0")
        except duckdb.Error as found:
            reason = str(found).splitlines()[0]
            return f"mapping of {name} ({mapping[name]!r}) does not run on DuckDB: {reason}"
    return f"the filter{condition} does not run on DuckDB: {str(error).splitlines()[0]}"


# -- helpers ------------------------------------------------------------------------------------


def _column(table: pa.Table, name: str, arrow_type: pa.DataType) -> pa.Array:
    """``name`` of ``table`` as ``arrow_type`` (all null when the mapping did not name it)."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows, arrow_type)
    column = table.column(name)
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return array if array.type == arrow_type else array.cast(arrow_type)


def _constant(value: object, arrow_type: pa.DataType, size: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, arrow_type), size)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _warnings(typed: pa.Table, rows: pa.Array) -> pa.Array:
    """``coalesce(_warnings, array())`` of the mapped rows (``rows``: their ``_row``)."""
    kind = pa.list_(pa.string())
    if "_warnings" not in typed.column_names:
        return pa.array([[]] * len(rows), kind)
    picked = pc.take(typed.column("_warnings"), _positions(typed, rows)).combine_chunks().cast(kind)
    return pc.fill_null(picked, pa.scalar([], kind))


def _positions(typed: pa.Table, rows: pa.Array) -> pa.Array:
    """Indexes into ``typed`` of the ``_row`` values ``rows``."""
    return pc.index_in(rows, value_set=typed.column("_row").combine_chunks())


def _usable_key(value: str | None) -> bool:
    """A record id that names one person: not blank, not a placeholder (``n/a``), no invisible
    character (:func:`lakecdp.ingest.validate.null_like_key`, negated)."""
    if value is None:
        return False
    text = value.strip(" ")
    return text != "" and _NULL_LIKE_KEY.search(text.lower()) is None and _INVISIBLE.search(text) is None


# -- the unparsed birth date ----------------------------------------------------------------------

# Spark's string -> date cast (after trimming whitespace and controls): a year of 4-6 digits, then
# optionally -month, -day and a time part
_CAST_DATE = re.compile(r"([+-]?\d{4,6})(?:-(\d{1,2})(?:-(\d{1,2})(?:[ T].*)?)?)?", re.S)
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_date(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= (_DAYS[month - 1] if month != 2 or leap else 28)


def _cast_parses(text: str) -> bool:
    found = _CAST_DATE.fullmatch(text.strip("".join(map(chr, range(33)))))
    if found is None:
        return False
    year, month, day = found.group(1), found.group(2), found.group(3)
    return _real_date(int(year), int(month or 1), int(day or 1))


def java_date_reader(pattern: str) -> Callable[[str], bool]:
    """Whether a text parses with Spark's ``try_to_date(text, pattern)``
    (:func:`lakecdp.ingest.javatime.java_time_parser`)."""
    try:
        parse = java_time_parser(pattern, "date")
    except UnsupportedPattern as unsupported:
        raise EmbeddedSilverUnsupported(f"{unsupported}: it is not read on the embedded engine") from None
    return lambda text: parse(text) is not None


def unparsed_birth_date_reader(source: SourceConfig, mapping: dict[str, str]) -> Callable[[str], bool] | None:
    """The parser of the column ``date_of_birth`` maps directly (when a declared date), or None."""
    column = mapping.get("date_of_birth", "").strip().strip("`")
    if column not in source.column_names or source.column(column).type != "date":
        return None
    fmt = source.column(column).format
    return java_date_reader(fmt) if fmt else _cast_parses


def _unparsed_birth_date(typed: pa.Table, mapped: pa.Table, source: SourceConfig, mapping: dict[str, str]) -> pa.Array:
    """:func:`lakecdp.ingest.standardise._unparsed_birth_date`: the birth date as written when it
    does not parse with its column's format (``19461302``); a date that parsed but failed a check
    is not kept. Only rows whose mapped date is null can hold one."""
    size = mapped.num_rows
    column = mapping.get("date_of_birth", "").strip().strip("`")
    parses = unparsed_birth_date_reader(source, mapping)
    if parses is None or "_as_read" not in typed.column_names or size == 0:
        return pa.nulls(size, pa.string())
    read = pc.struct_field(typed.column("_as_read").combine_chunks(), column).cast(pa.string())
    texts = pc.utf8_trim(pc.take(read, _positions(typed, mapped.column("_row").combine_chunks())), characters=" ")
    candidates = pc.and_(mapped.column("date_of_birth").combine_chunks().is_null(), pc.not_equal(texts, ""))
    candidates = pc.fill_null(candidates, False)
    out: list[str | None] = [None] * size
    for index, text in zip(pc.indices_nonzero(candidates).to_pylist(), pc.filter(texts, candidates).to_pylist()):
        if not parses(text):
            out[index] = text
    return pa.array(out, pa.string())


# -- the mappers ----------------------------------------------------------------------------------


def _finish(columns: dict[str, pa.Array], rows: pa.Array, target: str) -> pa.Table:
    schema = arrow_schema(catalog.SILVER[target].ddl)
    arrays = [rows.cast(pa.int64())] + [columns[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field("_row", pa.int64()), *schema]))


def _records(
    typed: pa.Table,
    mapped: pa.Table,
    source: SourceConfig,
    mapping: dict[str, str],
    label: str,
    *,
    run_id: str | None,
    ingested_at: datetime,
) -> pa.Table:
    schema = arrow_schema(catalog.CUSTOMER_RECORDS.ddl)
    types = {f.name: f.type for f in schema}
    size = mapped.num_rows
    junk = cleaners.junk_set(source.junk_values)

    def text(name: str) -> pa.Array:
        return _column(mapped, name, pa.string())

    source_record_id = text("source_record_id")
    country = cleaners.country_code(text("country"))
    rows = mapped.column("_row").combine_chunks()
    unparsed = _unparsed_birth_date(typed, mapped, source, mapping)
    columns = {
        "record_id": pc.binary_join_element_wise(pa.scalar(label + ":"), source_record_id, ""),
        "source": _constant(label, pa.string(), size),
        "source_record_id": source_record_id,
        "first_name": cleaners.clean_name(text("first_name")),
        "last_name": cleaners.clean_name(text("last_name")),
        "email": cleaners.normalise_email(text("email"), junk),
        "phone": cleaners.normalise_phone(text("phone"), country, default_region=source.default_region, junk=junk),
        "date_of_birth": _column(mapped, "date_of_birth", types["date_of_birth"]),
        "address_line1": cleaners.clean_text(text("address_line1")),
        "postcode": cleaners.normalise_postcode(text("postcode")),
        "city": cleaners.clean_text(text("city")),
        "country": country,
        "device_ids": cleaners.without_junk_elements(_column(mapped, "device_ids", types["device_ids"]), junk),
        "crm_id": cleaners.trimmed_id(text("crm_id"), junk),
        "customer_number": cleaners.trimmed_id(text("customer_number"), junk),
        "email_consent": _column(mapped, "email_consent", pa.bool_()),
        "updated_at": _column(mapped, "updated_at", types["updated_at"]),
        "warnings": _warnings(typed, rows),
        "run_id": _constant(run_id, pa.string(), size),
        "ingested_at": _constant(_utc(ingested_at), types["ingested_at"], size),
        "middle_name": cleaners.clean_name(text("middle_name")),
        "date_of_birth_text": pc.coalesce(text("date_of_birth_text"), unparsed),
        "address_line2": cleaners.clean_text(text("address_line2")),
        "region": cleaners.clean_text(text("region")),
        "sms_consent": _column(mapped, "sms_consent", pa.bool_()),
    }
    return _finish(columns, rows, "customer_records")


def _facts(mapped: pa.Table, source: SourceConfig, *, run_id: str | None, ingested_at: datetime) -> pa.Table:
    """silver.events or silver.orders (``source.target``): the mapped columns, identifiers
    standardised (:func:`~lakecdp.ingest.standardise.to_events` / ``to_orders``), source and stamps."""
    schema = arrow_schema(catalog.SILVER[source.target].ddl)
    junk = cleaners.junk_set(source.junk_values)
    size = mapped.num_rows
    columns = {f.name: _column(mapped, f.name, f.type) for f in schema}
    columns.update(
        {
            "source": _constant(source.name, pa.string(), size),
            "email": cleaners.normalise_email(columns["email"], junk),
            "customer_number": cleaners.trimmed_id(columns["customer_number"], junk),
            "run_id": _constant(run_id, pa.string(), size),
            "ingested_at": _constant(_utc(ingested_at), pa.timestamp("us", tz="UTC"), size),
        }
    )
    if source.target == "events":
        columns["device_id"] = cleaners.trimmed_id(columns["device_id"], junk)
    else:
        columns["currency"] = cleaners.upper_trimmed(columns["currency"])
    return _finish(columns, mapped.column("_row").combine_chunks(), source.target)


def _products(mapped: pa.Table) -> pa.Table:
    schema = arrow_schema(catalog.PRODUCTS.ddl)
    columns = {f.name: _column(mapped, f.name, f.type) for f in schema}
    columns["name"] = cleaners.clean_text(columns["name"])
    columns["category"] = cleaners.clean_text(columns["category"])
    return _finish(columns, mapped.column("_row").combine_chunks(), "products")


def to_silver(
    typed: pa.Table,
    source: SourceConfig,
    *,
    extra: ExtraTarget | None = None,
    run_id: str | None,
    ingested_at: datetime,
    as_of: datetime,
) -> pa.Table:
    """Map and standardise typed rows to ``source.target`` (or ``extra.target``), as Spark's mappers.

    Args:
        typed: ``_row`` (int64) and the source's columns, typed; optionally ``_warnings``
            (list<string>) and ``_as_read`` (struct of the texts as read).
        source: the source; its ``mapping`` gives the columns.
        extra: an ``also`` entry (web ``login`` events -> customer records): rows are filtered by
            its predicate and by a usable record id (not blank, not a placeholder), ``source`` is
            its ``record_source``.
        run_id, ingested_at: the stamps of the run.
        as_of: the run's clock (``current_date()`` in a mapping).

    Returns:
        ``_row`` then the target's columns in catalogue order and Arrow types, one row per input
        row (per row passing the filter for an ``extra``), in ``_row`` order.

    Raises:
        lakecdp.sqldialect.SqlRefused: a mapping that cannot run on DuckDB with Spark's meaning.
        EmbeddedSilverUnsupported: a date pattern the embedded engine does not read.
    """
    target = extra.target if extra is not None else source.target
    mapping = extra.mapping if extra is not None else source.mapping
    columns = {
        name: mapping[name]
        for name, _, _ in catalog.ddl_fields(catalog.SILVER[target].ddl)
        if name in mapping and name not in ("record_id", "source")
    }
    mapped = map_rows(
        typed,
        columns,
        catalog.SILVER[target].ddl,
        as_of=as_of,
        where=extra.filter if extra is not None else None,
    )
    if target == "customer_records":
        label = source.name
        if extra is not None:
            # a blank or placeholder id (a login whose anonymous_id is "n/a") would make one record
            # of many people: such a row is an event only, like one without the id
            label = extra.record_source or source.name
            ids = _column(mapped, "source_record_id", pa.string()).to_pylist()
            mapped = mapped.filter(pa.array([_usable_key(v) for v in ids], pa.bool_()))
        return _records(typed, mapped, source, mapping, label, run_id=run_id, ingested_at=ingested_at)
    if target in ("events", "orders"):
        return _facts(mapped, source, run_id=run_id, ingested_at=ingested_at)
    if target == "products":
        return _products(mapped)
    raise ValueError(f"source {source.name!r}: no embedded mapper for target {target!r}")


def record_versions(typed: pa.Table, source: SourceConfig, *, as_of: datetime) -> pa.Table:
    """``_row``, ``record_id`` and ``updated_at`` of the customer records :func:`to_silver` makes
    of ``typed`` (``source``'s own mapping, not an ``also`` entry's), as :func:`_records` writes
    them, from those two columns' mappings alone: what an upsert compares with the stored record,
    without standardising the rest."""
    types = {f.name: f.type for f in arrow_schema(catalog.CUSTOMER_RECORDS.ddl)}
    mapping: dict[str, str] = {
        name: source.mapping[name] for name in ("source_record_id", "updated_at") if name in source.mapping
    }
    mapped = map_rows(typed, mapping, catalog.CUSTOMER_RECORDS.ddl, as_of=as_of)
    source_record_id = _column(mapped, "source_record_id", pa.string())
    return pa.table(
        {
            "_row": mapped.column("_row").combine_chunks().cast(pa.int64()),
            "record_id": pc.binary_join_element_wise(pa.scalar(source.name + ":"), source_record_id, ""),
            "updated_at": _column(mapped, "updated_at", types["updated_at"]),
        }
    )


def to_order_items(typed: pa.Table, source: SourceConfig, *, as_of: datetime) -> pa.Table:
    """One row per non-null element of the source's items array (Spark's ``posexplode_outer``,
    null elements and empty arrays dropped); ``line_number`` counts from 1.

    Returns:
        ``_row`` (the order's row) then silver.order_items' columns, in (``_row``, line) order.
    """
    if source.items is None:
        raise ValueError(f"source {source.name!r} has no items; it does not feed order_items")
    ddl = catalog.ORDER_ITEMS.ddl
    types = {name: type_text for name, type_text, _ in catalog.ddl_fields(ddl)}
    items = '"' + source.items.column.replace('"', '""') + '"'
    select = [
        '"_row"',
        f'{_mapped_sql(source.mapping["order_id"], types["order_id"], as_of)} AS "order_id"',
        'CAST("_position" AS INTEGER) AS "line_number"',
    ]
    for name, sql in source.items.mapping.items():
        select.append(f'{_mapped_sql(sql, types[name], as_of)} AS "{name}"')
    query = (
        f"SELECT {', '.join(select)} FROM ("
        f"SELECT *, unnest({items}) AS item, generate_subscripts({items}, 1) AS _position FROM _typed_rows"
        ') WHERE item IS NOT NULL ORDER BY "_row", "_position"'
    )
    con = _locked_connection(typed)
    try:
        exploded = con.sql(query).to_arrow_table()
    finally:
        con.close()
    schema = arrow_schema(ddl)
    columns = {f.name: _column(exploded, f.name, f.type) for f in schema}
    return _finish(columns, exploded.column("_row").combine_chunks(), "order_items")
