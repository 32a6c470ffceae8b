"""The intake pickup on the embedded engine: the same rows as the Spark pickup, no JVM.

:mod:`lakecdp.api.pickup` hands each chunk of the intake log to
:func:`write_chunk` when the run's engine is ``embedded`` (path-based tables). One definition of
the rules, two evaluators, as for the HTTP intake itself:

- **validation**: the source YAML's rules (types, ``required``, primary key, timestamps and their
  bounds, email checks, lengths, junk values; reason codes and patterns of
  :mod:`lakecdp.ingest.validate`) interpreted by :func:`lakecdp.api.validation.validate_events`,
  the validator the intake already answers with (its agreement with the Spark validator is
  tested in tests/test_api_validation.py). The reasons, warnings, warn-level nulling and the
  ``detail`` text are laid out as :func:`lakecdp.ingest.validate.parse_and_validate` lays them out.
- **mapping and standardisation**: :func:`lakecdp.ingest.embedded_silver.to_silver` (the source's
  Spark SQL ``mapping`` and ``also`` entries translated to DuckDB, run on a locked connection; every
  cleaner of :mod:`lakecdp.ingest.standardise` -- names, emails, phones, countries, postcodes, free
  text, identifiers -- on Arrow) and :func:`~lakecdp.ingest.embedded_silver.to_order_items`. What
  is still not done embedded (:func:`unsupported_reason`: a Java timestamp pattern, a date column,
  a map column, a customer_records or products target -- no intake source has one; a nested value
  whose JSON kind is not its declared type, per chunk) raises :class:`EmbeddedPickupUnsupported`
  and the pickup loads that source (or chunk) through Spark.

Writes (delta-rs, :class:`lakecdp.delta_store.DeltaStore`): insert-if-new, as the Spark pickup's
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

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from lakecdp import catalog
from lakecdp.api.validation import (
    Problem,
    _as_text,
    _double,
    _parses,
    parse_timestamp,
    validate_events,
)
from lakecdp.ingest import cleaners
from lakecdp.ingest.embedded_silver import EmbeddedSilverUnsupported, map_rows, to_order_items, to_silver
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
_SCALAR_ARROW = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
    "double": pa.float64(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
}
_TRUE = frozenset({"t", "true", "y", "yes", "1"})


class EmbeddedPickupUnsupported(RuntimeError):
    """The source (or a chunk) needs something the embedded pickup does not do (a Java timestamp
    pattern, a date or map column, a nested value of another JSON kind than declared): it is
    picked up through Spark."""


#: the targets the embedded pickup writes (the intake's sources: web and email events, shop orders)
_TARGETS = ("events", "orders")
_NESTED_SCALARS = frozenset({"string", "int", "bigint", "double", "boolean"})


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
    other kind (text in an int field) is left to the Spark pickup."""
    from lakecdp.catalog import split_top_level

    if value is None:
        return None
    text = type_text.strip()
    kind = text.lower()
    if kind == "string":
        return _as_text(value)
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


# -- validation: the rows as parse_and_validate gives them -----------------------------------------


@dataclass
class CheckedRow:
    """One log line validated: what parse_and_validate's columns hold for it."""

    raw: str
    topic: str
    partition: int
    offset: int
    received: datetime
    event: Any
    reasons: list[str]
    warnings: list[str]
    detail: str | None
    #: field -> nulled (warn-level findings): "col" or "col.inner"
    nulled: frozenset[str]

    @property
    def valid(self) -> bool:
        return not self.reasons


def _spark_order(problems: list[Problem], source: SourceConfig) -> list[Problem]:
    """Findings in parse_and_validate's order: per column first (in column order), then required,
    key and checks (the Python validator lists nested doubles before scalar columns)."""
    index = {name: i for i, name in enumerate(source.column_names)}
    column_level = [p for p in problems if p.code in _COLUMN_CODES and p.field in index]
    rest = [p for p in problems if not (p.code in _COLUMN_CODES and p.field in index)]
    return sorted(column_level, key=lambda p: index[p.field]) + rest


def _distinct(codes: list[str]) -> list[str]:
    return list(dict.fromkeys(codes))


def check_rows(rows: list[RawRow], source: SourceConfig, *, as_of: datetime) -> list[CheckedRow]:
    """Validate log lines with the source's rules; "future" is judged against the later of
    ``as_of`` and each line's receive time (as the Spark pickup does with ``kafka_timestamp``)."""
    parsed: list[Any] = []
    for raw, *_ in rows:
        try:
            parsed.append(json.loads(raw))
        except ValueError:
            parsed.append(None)
    found: list[list[Problem] | None] = [None] * len(rows)
    by_bound: dict[datetime, list[int]] = {}
    for i, (raw, _topic, _partition, _offset, received) in enumerate(rows):
        if REPLACEMENT_CHARACTER in raw:
            found[i] = [Problem(BAD_ENCODING, "line", "holds U+FFFD")]
        elif not isinstance(parsed[i], dict) or not raw.lstrip().startswith("{"):
            found[i] = [Problem(MALFORMED_LINE, "line", "not a JSON object")]
        else:
            by_bound.setdefault(max(as_of, received), []).append(i)
    for bound, indexes in by_bound.items():
        for i, problems in zip(indexes, validate_events([parsed[i] for i in indexes], source, as_of=bound)):
            found[i] = problems
    checked = []
    for i, (raw, topic, partition, offset, received) in enumerate(rows):
        problems = found[i] or []
        structural = [p for p in problems if p.code in (MALFORMED_LINE, BAD_ENCODING)]
        if structural:
            # a malformed line (or nested field of the wrong shape) carries only its structural reasons
            codes = _distinct([p.code for p in structural])
            checked.append(
                CheckedRow(raw, topic, partition, offset, received, parsed[i], codes, [], "; ".join(codes), frozenset())
            )
            continue
        ordered = _spark_order(problems, source)
        refusing = [p for p in ordered if p.refuses]
        warning = [p for p in ordered if not p.refuses]
        detail = "; ".join(f"{p.code}({p.field})" for p in [*refusing, *warning]) or None
        checked.append(
            CheckedRow(
                raw,
                topic,
                partition,
                offset,
                received,
                parsed[i],
                _distinct([p.code for p in refusing]),
                [] if refusing else _distinct([p.code for p in warning]),
                detail,
                frozenset(p.field for p in warning),
            )
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
    if not _parses(text, type_name):
        return None
    stripped = text.strip(" ")
    if type_name == "timestamp":
        return _utc_naive(parse_timestamp(stripped))
    if type_name == "double":
        return _double(stripped)
    if type_name in ("int", "bigint"):
        return int(stripped)
    if type_name == "boolean":
        return stripped.lower() in _TRUE
    raise EmbeddedPickupUnsupported(f"type {type_name}")


def as_read(event: dict[str, Any], source: SourceConfig) -> dict[str, Any]:
    """``_as_read``: scalars as their text, nested values typed (string structs: dicts of texts)."""
    out: dict[str, Any] = {}
    for column in source.columns:
        value = event.get(column.name)
        if column.is_scalar:
            out[column.name] = _as_text(value)
        else:
            out[column.name] = _nested(value, column.type, column.name)
    return out


def typed_row(row: CheckedRow, read: dict[str, Any], source: SourceConfig) -> dict[str, Any]:
    """The typed source columns of a valid row, warn-level fields nulled."""
    out: dict[str, Any] = {}
    for column in source.columns:
        if column.is_scalar:
            out[column.name] = None if column.name in row.nulled else _typed(read[column.name], column.type)
        else:
            value = read[column.name]
            if isinstance(value, dict):
                value = {k: (None if f"{column.name}.{k}" in row.nulled else v) for k, v in value.items()}
            out[column.name] = None if column.name in row.nulled else value
    return out


def _column_type(column) -> pa.DataType:
    from lakecdp.delta_store import arrow_type

    if column.is_scalar:
        return _SCALAR_ARROW[column.type]
    return arrow_type(column.type)


def _rescued(event: dict[str, Any], source: SourceConfig) -> str | None:
    """``_rescued``: the unknown fields as Spark's to_json of a map<string,string> writes them."""
    known = set(source.column_names)
    parts = [
        f"{jackson_string(k)}:{'null' if v is None else jackson_string(_as_text(v) or '')}"
        for k, v in event.items()
        if k not in known
    ]
    return "{" + ",".join(parts) + "}" if parts else None


def _connection() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# -- the chunk -----------------------------------------------------------------------------------


def _typed_table(
    rows: list[dict[str, Any]], positions: list[int], source: SourceConfig, warnings: list[list[str]] | None = None
) -> pa.Table:
    columns = {"_row": pa.array(positions, pa.int64())}
    for column in source.columns:
        columns[column.name] = pa.array([r[column.name] for r in rows], _column_type(column))
    if warnings is not None:
        columns["_warnings"] = pa.array(warnings, pa.list_(pa.string()))
    return pa.table(columns)


#: the identifiers the erasure check reads, as silver stores them
_IDENTIFIERS = ("email", "customer_number", "device_id")


def _standard_identifiers(mapped: pa.Table, source: SourceConfig) -> pa.Table:
    """``_row`` and the identifiers of mapped (not yet standardised) rows, standardised as silver."""
    junk = cleaners.junk_set(source.junk_values)

    def text(name: str) -> pa.Array:
        if name not in mapped.column_names:
            return pa.nulls(mapped.num_rows, pa.string())
        return mapped.column(name).combine_chunks().cast(pa.string())

    return pa.table(
        {
            "_row": mapped.column("_row"),
            "email": cleaners.normalise_email(text("email"), junk),
            "customer_number": cleaners.trimmed_id(text("customer_number"), junk),
            "device_id": cleaners.trimmed_id(text("device_id"), junk),
        }
    )


def _erased(ctx: JobContext, store: DeltaStore, standard: pa.Table) -> set[int]:
    """Rows (``_row``) holding an identifier whose salted hash is in ``ops.erasures``: as
    :func:`lakecdp.ingest.classify.erased_condition` on the standardised identifiers (``standard``:
    silver rows, or :func:`_standard_identifiers`)."""
    from lakecdp.erasure import ERASURES_TABLE, erasure_salt, load_privacy_config, salted_hash

    if standard.num_rows == 0 or not store.exists(ERASURES_TABLE):
        return set()
    erasures = store.read(ERASURES_TABLE, columns=["salted_hash", "identifier_type"]).to_pylist()
    wanted: dict[str, set[str]] = {}
    for row in erasures:
        wanted.setdefault(row["identifier_type"], set()).add(row["salted_hash"])
    if not wanted:
        return set()
    salt = erasure_salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
    hit: set[int] = set()
    present = [k for k in _IDENTIFIERS if k in standard.column_names]
    for row in standard.select(["_row", *present]).to_pylist():
        for kind in present:
            value = row[kind]
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

    reason = unsupported_reason(source)
    if reason is not None:
        raise EmbeddedPickupUnsupported(f"{source.name}: {reason}")
    name = source.name
    ingested_at = datetime.now(timezone.utc)
    run_id = ctx.run_id
    target = catalog.SILVER[source.target]
    checked = check_rows(rows, source, as_of=ctx.as_of)
    # typed before anything is written: a nested value the embedded pickup does not type raises here
    reads = [as_read(r.event, source) if r.valid else None for r in checked]
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
    try:
        silver = to_silver(typed, source, run_id=run_id, ingested_at=ingested_at, as_of=ctx.as_of)
        rejected_mapped = map_rows(rejected_typed, _identifier_mapping(source), target.ddl, as_of=ctx.as_of)
    except EmbeddedSilverUnsupported as why:
        raise EmbeddedPickupUnsupported(f"{name}: {why}") from None
    con = _connection()
    try:
        erased = _erased(ctx, store, silver) | _erased(ctx, store, _standard_identifiers(rejected_mapped, source))

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
            store.append(quarantine, catalog.QUARANTINE.named(name), catalog.QUARANTINE.ddl, run_id=run_id)
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
            store.append(
                _bronze_table(checked, reads, fresh, source, ddl, run_id=run_id, ingested_at=ingested_at),
                bronze_name,
                ddl,
                run_id=run_id,
            )
            if source.target == "orders":
                loaded = _write_orders(store, silver, typed, accepted, source, run_id=run_id, as_of=ctx.as_of)
            else:
                loaded = _write_events(con, store, silver, accepted, run_id=run_id)
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
                store.append(
                    audit.cast(_arrow_schema(catalog.INGEST_AUDIT.ddl)),
                    catalog.INGEST_AUDIT.name,
                    catalog.INGEST_AUDIT.ddl,
                    run_id=run_id,
                )
        if source.also and accepted:
            _write_records(
                store,
                typed.filter(pa.compute.is_in(typed["_row"], pa.array(accepted, pa.int64()))),
                source,
                run_id=run_id,
                ingested_at=ingested_at,
                as_of=ctx.as_of,
            )
        logger.info("%s: chunk %s written embedded %s", name, stream_batch, counts)
        return counts
    finally:
        con.close()


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
        out[column.name] = _typed(read[column.name], column.type) if column.is_scalar else read[column.name]
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


def _accepted(silver: pa.Table, accepted: list[int], key: str) -> pa.Table:
    """The accepted rows of ``silver``, one per ``key`` (the first in the log)."""
    rows = silver.filter(pa.compute.is_in(silver["_row"], pa.array(accepted, pa.int64())))
    keys = rows.column(key).to_pylist()
    first: dict[Any, int] = {}
    for index, value in enumerate(keys):
        first.setdefault(value, index)
    return rows.take(pa.array(sorted(first.values()), pa.int64()))


def _write_events(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, silver: pa.Table, accepted: list[int], *, run_id: str
) -> int:
    """silver.events: :func:`lakecdp.ingest.standardise.to_events`'s rows (:func:`to_silver`),
    inserted when their event id is new (one per id: the first in the log)."""
    unique = _accepted(silver, accepted, "event_id")
    ids = unique.column("event_id").to_pylist()
    stored = {
        r[0]
        for r in _stored(
            con, store, catalog.EVENTS.name, ["event_id"], "WHERE list_contains(?::VARCHAR[], event_id)", [ids]
        )
    }
    fresh = unique.filter(pa.array([i not in stored for i in ids], pa.bool_()))
    store.append(fresh.drop_columns(["_row"]), catalog.EVENTS.name, catalog.EVENTS.ddl, run_id=run_id)
    return fresh.num_rows


def _write_orders(
    store: DeltaStore,
    silver: pa.Table,
    typed: pa.Table,
    accepted: list[int],
    source: SourceConfig,
    *,
    run_id: str,
    as_of: datetime,
) -> int:
    """silver.orders and silver.order_items, upserted as a landed orders file is
    (:func:`lakecdp.ingest.job.write_silver`): one row per order id (the first in the log), the
    items' missing category from silver.products. Returns the orders written."""
    orders = _accepted(silver, accepted, "order_id")
    rows = orders.column("_row")
    items = to_order_items(typed.filter(pa.compute.is_in(typed["_row"], rows)), source, as_of=as_of)
    if store.exists(catalog.PRODUCTS.name) and items.num_rows:
        products = store.read(catalog.PRODUCTS.name, columns=["product_id", "category"])
        categories = dict(zip(products.column("product_id").to_pylist(), products.column("category").to_pylist()))
        known = pa.array([categories.get(p) for p in items.column("product_id").to_pylist()], pa.string())
        category = pa.compute.coalesce(items.column("category"), known)
        items = items.set_column(items.column_names.index("category"), "category", category)
    store.merge(
        orders.drop_columns(["_row"]), catalog.ORDERS.name, catalog.ORDERS.ddl, keys=["order_id"], run_id=run_id
    )
    store.merge(
        items.drop_columns(["_row"]),
        catalog.ORDER_ITEMS.name,
        catalog.ORDER_ITEMS.ddl,
        keys=["order_id", "line_number"],
        run_id=run_id,
    )
    return orders.num_rows


def _write_records(
    store: DeltaStore,
    typed: pa.Table,
    source: SourceConfig,
    *,
    run_id: str,
    ingested_at: datetime,
    as_of: datetime,
) -> None:
    """silver.customer_records from the ``also`` entries (web logins): :func:`to_silver` (filter,
    usable record id, mapping and cleaners as :func:`lakecdp.ingest.standardise.to_customer_records`),
    the latest row per record id upserted when newer (:func:`lakecdp.ingest.job.write_extra_records`)."""
    for extra in source.also:
        records = to_silver(typed, source, extra=extra, run_id=run_id, ingested_at=ingested_at, as_of=as_of)
        latest: dict[str, int] = {}
        stamps = records.column("updated_at").to_pylist()
        for index, key in enumerate(records.column("record_id").to_pylist()):
            held = latest.get(key)
            stamp = stamps[index]
            if held is None or (stamp is not None and (stamps[held] is None or stamp > stamps[held])):
                latest[key] = index
        if latest:
            picked = records.take(pa.array([latest[k] for k in sorted(latest)], pa.int64()))
            store.merge(
                picked.drop_columns(["_row"]),
                catalog.CUSTOMER_RECORDS.name,
                catalog.CUSTOMER_RECORDS.ddl,
                keys=["record_id"],
                run_id=run_id,
                update_predicate="s.updated_at > t.updated_at OR (t.updated_at IS NULL AND s.updated_at IS NOT NULL)",
            )
