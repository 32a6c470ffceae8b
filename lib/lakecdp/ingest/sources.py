"""Source definitions: one ``conf/sources/<name>.yaml`` per raw source.

A source says how its files look (format, options, columns with declared types), what a
valid row is (required fields, per-field checks), and how its rows map to one of the
unified silver schemas (``mapping``: unified column -> Spark SQL expression over the
source's typed columns).

Example:
    >>> sources = load_sources("conf/sources")
    >>> sources["crm"].target
    'customer_records'
"""

from __future__ import annotations

import os
import re
from datetime import date
from typing import Literal

import sqlglot
from pydantic import Field, field_validator, model_validator
from sqlglot import exp

from lakecdp import catalog
from lakecdp.config import StrictModel, load_models
from lakecdp.ingest.formats import SOURCE_FORMATS, SourceFormat

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

#: scalar types a column may declare; anything else must be a struct/array DDL (JSON only)
SCALAR_TYPES = frozenset({"string", "int", "bigint", "double", "boolean", "date", "timestamp"})
NUMERIC_TYPES = frozenset({"int", "bigint", "double"})

#: identifier values that mean "no value" (compared trimmed and lower-cased)
DEFAULT_JUNK_VALUES: tuple[str, ...] = (
    "",
    "null",
    "none",
    "n/a",
    "na",
    "-",
    "unknown",
    "test@test.com",
    "test@example.com",
    "noemail@noemail.com",
    "0000000000",
    "00000000000",
    "+440000000000",
    "1234567890",
)

#: primary-key values that stand for "no value" (matched on the trimmed, lower-cased text, as a
#: Java regex): placeholders a source system writes instead of leaving a key empty -- two rows
#: keyed ``N/A`` are not one person. Blank keys are MISSING_REQUIRED; all-zero keys (``0``,
#: ``000``) are a default, not an id. ``\N`` is MySQL's dump spelling of NULL.
NULL_LIKE_KEY_PATTERN = r"^(null|none|nil|n/?a|n\.a\.?|#n/a|nan|undefined|unknown|\\n|-+|\?+|0+)$"

#: how far past the run's as-of time a timestamp may lie before it is FUTURE_TIMESTAMP: clock
#: skew and local times written without a zone (UTC+14 read as UTC) stay within a day
DEFAULT_FUTURE_TOLERANCE_MINUTES = 24 * 60

TargetKind = Literal["customer_records", "events", "orders", "products"]

#: columns of each silver table that ingest fills itself, never a mapping: ids, the source,
#: run stamps, validation warnings; an order item's order id and line number come from its order
_SET_BY_INGEST: dict[str, frozenset[str]] = {
    "customer_records": frozenset({"record_id", "source", "warnings", "run_id", "ingested_at"}),
    "events": frozenset({"source", "run_id", "ingested_at"}),
    "orders": frozenset({"source", "run_id", "ingested_at"}),
    "order_items": frozenset({"order_id", "line_number"}),
    "products": frozenset(),
}

#: the unified columns a mapping may fill, per target: the silver table's columns (lakecdp.catalog)
#: less those ingest sets itself
TARGET_COLUMNS: dict[str, frozenset[str]] = {
    target: frozenset(catalog.SILVER[target].columns) - set_by_ingest
    for target, set_by_ingest in _SET_BY_INGEST.items()
}


def _check_identifier(value: str, what: str) -> str:
    if not _IDENTIFIER_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _check_expression(sql: str, known: set[str], what: str) -> str:
    """Parse a mapping expression; it may only read the given columns (no subqueries)."""
    try:
        tree = sqlglot.parse_one(sql, dialect="spark")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"{what}: not a Spark SQL expression: {sql!r} ({exc})") from exc
    if tree.find(exp.Select, exp.Subquery, exp.Query) is not None:
        raise ValueError(f"{what}: only expressions are allowed, not queries: {sql!r}")
    for column in tree.find_all(exp.Column):
        head = column.parts[0].name if column.parts else column.name
        if head not in known:
            raise ValueError(f"{what}: expression {sql!r} reads unknown column {head!r}; known: {sorted(known)}")
    return sql


class ColumnSpec(StrictModel):
    """One top-level source column and its declared type."""

    name: str
    #: a scalar type (string, int, bigint, double, boolean, date, timestamp) or, for JSON
    #: sources, a nested Spark DDL type such as ``struct<first:string,last:string>``
    type: str = "string"
    #: datetime pattern for ``date`` / ``timestamp`` columns; None = ISO-8601
    format: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_identifier(value, "column")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        lowered = value.strip().lower()
        if lowered in SCALAR_TYPES:
            return lowered
        if not re.match(r"^(struct|array|map)<[A-Za-z0-9_:,<> ]+>$", value.strip()):
            raise ValueError(f"unsupported type {value!r}; scalars: {sorted(SCALAR_TYPES)}")
        return value.strip()

    @property
    def is_scalar(self) -> bool:
        return self.type in SCALAR_TYPES


class FieldCheck(StrictModel):
    """Checks on one field (a column or a dotted path into a nested column)."""

    #: value must be a syntactically valid email (after trim / lower-case)
    email: bool = False
    #: longest allowed value (characters)
    max_length: int | None = Field(default=None, gt=0)
    #: dates before this are placeholders (``01/01/1900``, ``1111-11-11``) -> IMPOSSIBLE_DATE
    min_date: date | None = None
    #: dates after the run's as-of day are impossible (birth dates) -> IMPOSSIBLE_DATE
    not_future: bool = False
    #: what an invalid value does; default: quarantine when the field is required, else warn
    on_invalid: Literal["quarantine", "warn"] | None = None


class ItemsSpec(StrictModel):
    """Orders only: the nested array of order lines and how its elements map."""

    column: str
    #: order_items column -> expression over ``item`` (the element) and the order's columns
    mapping: dict[str, str]


#: a source name and a record_source label: lower-case, no colon (record ids are "<label>:<id>")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ExtraTarget(StrictModel):
    """A second unified table some rows also feed (web ``login`` events -> customer_records)."""

    target: TargetKind
    #: Spark SQL predicate over the typed source columns selecting the rows
    filter: str
    #: value of the ``source`` column (and ``record_id`` prefix); default: the source name
    record_source: str | None = None
    mapping: dict[str, str]

    @field_validator("record_source")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        # a record id is "<label>:<id>": a label with a colon would read as another label's prefix
        if value is not None and not _NAME.match(value):
            raise ValueError(f"record_source {value!r} must be lower-case [a-z][a-z0-9_]*")
        return value


class SourceConfig(StrictModel):
    """``conf/sources/<name>.yaml``."""

    version: Literal[1]
    name: str
    #: a name in lakecdp.ingest.formats.SOURCE_FORMATS: csv, jsonl, parquet (or a plugin's)
    format: str
    #: reader options (CSV: ``sep``, ``quote``, ``escape``, ``header``)
    options: dict[str, str] = Field(default_factory=dict)
    #: glob relative to the landing folder, e.g. ``crm/crm_customers_*.csv``
    path: str
    columns: list[ColumnSpec]
    primary_key: list[str]
    #: column that orders versions of a row (later wins) / when an event happened
    event_time: str | None = None
    target: TargetKind
    required: list[str] = Field(default_factory=list)
    checks: dict[str, FieldCheck] = Field(default_factory=dict)
    #: unified column -> Spark SQL expression over the typed source columns
    mapping: dict[str, str]
    #: unified identifier columns (email, phone, ...) whose junk values become null
    identifiers: list[str] = Field(default_factory=list)
    junk_values: list[str] = Field(default_factory=lambda: list(DEFAULT_JUNK_VALUES))
    #: an additive new column is kept in ``_rescued`` (JSON) or added to bronze's schema
    drift: Literal["rescue", "evolve"] = "rescue"
    #: rows whose primary key was already loaded by an earlier file are duplicates (events);
    #: otherwise a later version upserts (records)
    drop_existing_keys: bool = False
    #: default phone region when a record has no country
    default_region: str = "GB"
    #: timestamps later than the run's as-of (Kafka: the broker's receive time) plus this many
    #: minutes are FUTURE_TIMESTAMP (docs/security.md#ingest-input)
    future_tolerance_minutes: int = Field(default=DEFAULT_FUTURE_TOLERANCE_MINUTES, ge=0)
    items: ItemsSpec | None = None
    also: list[ExtraTarget] = Field(default_factory=list)
    #: customer_records only: every record of this source is a different person (a
    #: deduplicated master file), so identity links its records to other sources' records
    #: but never to each other (link-only)
    unique_records: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"source name {value!r} must be lower-case [a-z][a-z0-9_]*")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in SOURCE_FORMATS:
            raise ValueError(f"unknown format {value!r}; known: {', '.join(SOURCE_FORMATS)}")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if os.path.isabs(value) or ".." in value.split("/"):
            raise ValueError(f"path {value!r} must be relative to the landing folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"columns: duplicate column names in {names}")
        known = set(names)
        for field_path in [*self.primary_key, *self.required, *self.checks]:
            if not _PATH_RE.match(field_path) or field_path.split(".")[0] not in known:
                raise ValueError(f"field {field_path!r} is not a declared column (or path into one)")
        if self.event_time is not None and self.event_time not in known:
            raise ValueError(f"event_time {self.event_time!r} is not a declared column")
        if not self.file_format.nested_columns and any(not c.is_scalar for c in self.columns):
            raise ValueError(f"columns: {self.format.upper()} sources can only declare scalar types")
        self._check_mapping(self.mapping, self.target, known, "mapping")
        if self.target == "orders":
            if self.items is None:
                raise ValueError("items: orders sources must say which column holds the order lines")
            self._check_mapping(self.items.mapping, "order_items", known | {"item"}, "items.mapping")
        for position, extra in enumerate(self.also):
            _check_expression(extra.filter, known, f"also[{position}].filter")
            self._check_mapping(extra.mapping, extra.target, known, f"also[{position}].mapping")
        if self.unique_records and self.target != "customer_records":
            raise ValueError("unique_records: only customer_records sources hold people")
        for identifier in self.identifiers:
            if identifier not in TARGET_COLUMNS[self.target]:
                raise ValueError(f"identifiers: {identifier!r} is not a {self.target} column")
        return self

    @staticmethod
    def _check_mapping(mapping: dict[str, str], target: str, known: set[str], what: str) -> None:
        allowed = TARGET_COLUMNS[target]
        for column, sql in mapping.items():
            if column not in allowed:
                raise ValueError(f"{what}.{column}: not a {target} column; allowed: {sorted(allowed)}")
            _check_expression(sql, known, f"{what}.{column}")

    # -- helpers used by validation and the job ---------------------------------------
    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def file_format(self) -> SourceFormat:
        """How this source's files are read and parsed (its ``format``)."""
        return SOURCE_FORMATS[self.format]

    @property
    def has_header(self) -> bool:
        return self.file_format.has_header(self)

    def is_required(self, field_path: str) -> bool:
        return field_path in self.required


def load_sources(conf_dir: str | os.PathLike[str]) -> dict[str, SourceConfig]:
    """Load every ``<conf_dir>/sources/*.yaml`` (or ``conf_dir`` itself if it is the folder).

    Args:
        conf_dir: the project's ``conf`` folder, or its ``sources`` sub-folder.

    Returns:
        Source configs keyed by source name; a file whose ``name`` differs from its
        stem is an error (the file name is what people look for).

    Example:
        >>> load_sources("conf")["web_events"].format
        'jsonl'
    """
    from lakecdp.config import ConfigError

    folder = os.fspath(conf_dir)
    if os.path.isdir(os.path.join(folder, "sources")):
        folder = os.path.join(folder, "sources")
    sources = load_models(folder, SourceConfig)
    labels: dict[str, str] = {}
    for stem, source in sources.items():
        if source.name != stem:
            raise ConfigError(
                f"{os.path.join(folder, stem + '.yaml')}: name: {source.name!r} must match the file name {stem!r}"
            )
        # one source per record id prefix: two sources writing the same record ids would replace
        # each other's records (and sources are ingested side by side, see writes._SILVER_LOCKS)
        for label in record_labels(source):
            other = labels.setdefault(label, source.name)
            if other != source.name:
                first, second = sorted([other, source.name])
                raise ConfigError(
                    f"{os.path.join(folder, second + '.yaml')}: its customer records' source label {label!r} "
                    f"is also {first}'s (record_source must name no other source's records)"
                )
    return sources


def record_labels(source: SourceConfig) -> set[str]:
    """The ``source`` values (and ``record_id`` prefixes) of the customer records ``source`` writes."""
    labels = {source.name} if source.target == "customer_records" else set()
    labels |= {extra.record_source or source.name for extra in source.also if extra.target == "customer_records"}
    return labels
