"""The catalogue: every Delta table of lakecdp once — name, schema, keys, writer, readers.

docs/tables.md describes these tables in prose; this module is what the code imports. A producer
writes ``catalog.CUSTOMER_PROFILE.name`` with ``catalog.CUSTOMER_PROFILE.schema``; a consumer reads
the same name and, where the table may not exist yet, builds an empty frame from the same schema
(never a copied DDL string). tests/test_catalog.py checks that docs/tables.md names every table
with its writer and that every ``Tables`` write call in ``lib/`` is made by the table's writer.

A schema is DDL text (``"a string, b array<string>, c bigint NOT NULL"``), what ``createDataFrame``
accepts; :meth:`Table.struct` builds the same ``StructType`` without a SparkSession, for producers
that need one (non-nullable fields, ``.fields``). The catalogue itself imports no pyspark, so
modules that run without Spark (the HTTP API, alerts) can use it.

Example:
    >>> from lakecdp import catalog
    >>> catalog.CUSTOMER_PROFILE.keys
    ('customer_id',)
    >>> catalog.table("gold.customer_profile").writer
    'lakecdp.identity.job'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from pyspark.sql import types as T


# -- schema text -> an engine's types (Spark's here, Arrow's in lakecdp.delta_store) ---------
_Built = TypeVar("_Built")


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside ``<...>``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


@dataclass(frozen=True)
class TypeBuilder(Generic[_Built]):
    """One engine's types built from a catalogue type text: the grammar (scalars, ``array<>``,
    ``map<>``, ``struct<name:type, ...>``) is read here once; the engine gives the constructors.

    Attributes:
        scalars: scalar type name (lower case) -> the engine's type.
        array: element type -> array type.
        map: key type, value type -> map type.
        struct: [(field name, field type)] -> struct type (every field nullable).
    """

    scalars: Mapping[str, _Built]
    array: Callable[[_Built], _Built]
    map: Callable[[_Built, _Built], _Built]
    struct: Callable[[list[tuple[str, _Built]]], _Built]

    def build(self, text: str) -> _Built:
        """``"map<string, struct<a:string>>"`` -> the engine's type; a ValueError names an unknown type."""
        text = text.strip()
        lowered = text.lower()
        if lowered in self.scalars:
            return self.scalars[lowered]
        if lowered.startswith("array<") and text.endswith(">"):
            return self.array(self.build(text[len("array<") : -1]))
        if lowered.startswith("map<") and text.endswith(">"):
            key, value = split_top_level(text[len("map<") : -1], ",")
            return self.map(self.build(key), self.build(value))
        if lowered.startswith("struct<") and text.endswith(">"):
            fields = []
            for part in split_top_level(text[len("struct<") : -1], ","):
                name, _, type_text = part.partition(":")
                fields.append((name.strip(), self.build(type_text)))
            return self.struct(fields)
        raise ValueError(f"unsupported type {text!r} (known: {sorted(self.scalars)}, array<>, map<>, struct<>)")


def ddl_fields(ddl: str) -> list[tuple[str, str, bool]]:
    """``"a string NOT NULL, b array<string>"`` -> [(name, type text, nullable)], in order."""
    fields = []
    for part in split_top_level(ddl, ","):
        name, _, type_text = part.partition(" ")
        nullable = not type_text.upper().endswith(" NOT NULL")
        if not nullable:
            type_text = type_text[: -len(" NOT NULL")]
        fields.append((name, type_text, nullable))
    return fields


@functools.cache
def _spark_types() -> TypeBuilder[T.DataType]:
    from pyspark.sql import types as T

    def struct(fields: list[tuple[str, T.DataType]]) -> T.DataType:
        return T.StructType([T.StructField(name, data_type, True) for name, data_type in fields])

    scalars: dict[str, T.DataType] = {
        "string": T.StringType(),
        "int": T.IntegerType(),
        "bigint": T.LongType(),
        "double": T.DoubleType(),
        "boolean": T.BooleanType(),
        "date": T.DateType(),
        "timestamp": T.TimestampType(),
    }
    return TypeBuilder(scalars=scalars, array=T.ArrayType, map=T.MapType, struct=struct)


def parse_type(text: str) -> T.DataType:
    """``"map<string, struct<a:string>>"`` -> a DataType (Spark's defaults: everything nullable)."""
    return _spark_types().build(text)


def ddl_struct(ddl: str) -> T.StructType:
    """``"a string NOT NULL, b array<string>"`` -> StructType, as Spark's DDL parser builds it."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(name, parse_type(text), nullable) for name, text, nullable in ddl_fields(ddl)])


def ddl_columns(ddl: str) -> tuple[str, ...]:
    """Column names of a DDL text, in order (no pyspark needed)."""
    return tuple(part.partition(" ")[0] for part in split_top_level(ddl, ","))


@dataclass(frozen=True)
class Table:
    """One Delta table (or a family: ``bronze.<source>`` is one table per source).

    Attributes:
        name: logical name, ``<layer>.<table>`` (a family: ``<layer>.<source>``).
        schema: DDL text (``"a string, b bigint NOT NULL"``); None where it is the source's
            own (bronze). Producers that build a StructType take :meth:`struct`.
        keys: the primary key ((PK) in docs/tables.md, what a MERGE matches on); empty where
            the table has none (append-only or overwritten).
        writer: the one module that writes the table (tests/test_catalog.py: no write call to
            it anywhere else; another module writes it through the writer's functions).
        readers: modules that read it (the writer's own reads, and those of the step that
            reads back what it wrote, not repeated).
        stats: the columns Delta keeps per-file statistics of (min, max, null count: what lets
            a filter skip files), set as ``delta.dataSkippingStatsColumns`` when either engine
            creates the table (:func:`stats_configuration`); None: Delta's default, the first
            32 columns. Set where the other columns are never filtered on and computing their
            statistics is a large part of writing the table (ingest's wide, append-mostly
            tables).
    """

    name: str
    schema: str | None
    keys: tuple[str, ...]
    writer: str
    readers: tuple[str, ...] = ()
    stats: tuple[str, ...] | None = None

    @property
    def layer(self) -> str:
        return self.name.partition(".")[0]

    @property
    def is_family(self) -> bool:
        return self.name.endswith(".<source>")

    def named(self, part: str) -> str:
        """The table of one member of a family: ``BRONZE.named("crm")`` -> ``bronze.crm``."""
        if not self.is_family:
            raise ValueError(f"{self.name} is one table, not a family")
        return f"{self.layer}.{part}"

    def struct(self) -> T.StructType:
        """The schema as a StructType (no SparkSession needed)."""
        if self.schema is None:
            raise ValueError(f"{self.name} has no fixed schema (it is the source's own)")
        return ddl_struct(self.schema)

    @property
    def ddl(self) -> str:
        """The schema's DDL text; a ValueError for a family whose schema is the source's own."""
        if self.schema is None:
            raise ValueError(f"{self.name} has no fixed schema (it is the source's own)")
        return self.schema

    @property
    def columns(self) -> tuple[str, ...]:
        if self.schema is None:
            raise ValueError(f"{self.name} has no fixed schema (it is the source's own)")
        return ddl_columns(self.schema)


# -- bronze / quarantine (ingest) --------------------------------------------------------
BRONZE = Table(
    "bronze.<source>",
    None,
    (),
    # every way in (batch files, Kafka, the HTTP intake's pickup) on both engines writes through
    # lakecdp.ingest.writes
    "lakecdp.ingest.writes",
    # read in full (re-standardising, erasure) or by landed file (a re-run's look-up) or run;
    # the source's own columns (names, emails, a row hash) are never filtered on
    stats=(
        "_source_file",
        "_line",
        "_kafka_topic",
        "_kafka_partition",
        "_kafka_offset",
        "_ingested_at",
        "_run_id",
    ),
)
QUARANTINE_SCHEMA = (
    "raw string, source_file string, line bigint, kafka_topic string, kafka_partition int, "
    "kafka_offset bigint, reasons array<string>, detail string, run_id string, "
    "quarantined_at timestamp"
)
QUARANTINE = Table(
    "quarantine.<source>",
    QUARANTINE_SCHEMA,
    (),
    "lakecdp.ingest.writes",
    readers=("lakecdp.alerts",),
    stats=("source_file", "line", "kafka_topic", "kafka_partition", "kafka_offset", "run_id", "quarantined_at"),
)

# -- silver (ingest) ---------------------------------------------------------------------
CUSTOMER_RECORDS = Table(
    "silver.customer_records",
    (
        "record_id string, source string, source_record_id string, first_name string, "
        "last_name string, email string, phone string, date_of_birth date, address_line1 string, "
        "postcode string, city string, country string, device_ids array<string>, crm_id string, "
        "customer_number string, email_consent boolean, updated_at timestamp, "
        "warnings array<string>, run_id string, ingested_at timestamp, "
        # additive (identity evidence): appended last so older tables evolve by adding columns
        "middle_name string, date_of_birth_text string, address_line2 string, region string, "
        # additive: SMS marketing consent, its own consent (lakecdp.activation.sms)
        "sms_consent boolean"
    ),
    ("record_id",),
    "lakecdp.ingest.writes",
    readers=(
        "lakecdp.identity.job",
        "lakecdp.identity.state",
        "lakecdp.identity.cli",
        "lakecdp.identity.benchmark",
        "lakecdp.activation.job",
        "lakecdp.erasure",
    ),
    # read in full or by record id; names, emails and phones are spread over every file, so
    # their min / max never rule a file out
    stats=("record_id", "source", "updated_at", "run_id", "ingested_at"),
)
EVENTS = Table(
    "silver.events",
    (
        "event_id string, source string, event_type string, occurred_at timestamp, email string, "
        "device_id string, customer_number string, session_id string, product_id string, "
        "category string, value double, order_id string, campaign_id string, channel string, "
        "bounce_type string, url string, run_id string, ingested_at timestamp"
    ),
    ("event_id",),
    "lakecdp.ingest.writes",
    readers=(
        "lakecdp.features.job",
        "lakecdp.segments.job",
        "lakecdp.segments.streaming",
        "lakecdp.segments.event_batch",
        "lakecdp.activation.job",
        "lakecdp.campaign.report",
    ),
)
ORDERS = Table(
    "silver.orders",
    (
        "order_id string, source string, customer_number string, email string, "
        "ordered_at timestamp, status string, currency string, total double, run_id string, "
        "ingested_at timestamp"
    ),
    ("order_id",),
    "lakecdp.ingest.writes",
    readers=("lakecdp.features.job",),
)
ORDER_ITEMS = Table(
    "silver.order_items",
    ("order_id string, line_number int, product_id string, category string, quantity int, unit_price double"),
    ("order_id", "line_number"),
    "lakecdp.ingest.writes",
    readers=("lakecdp.features.job",),
)
PRODUCTS = Table(
    "silver.products",
    ("product_id string, name string, category string, price double"),
    ("product_id",),
    "lakecdp.ingest.writes",
    readers=("lakecdp.features.job", "lakecdp.personalization.preview"),
)
#: silver table (without layer) -> Table, in the order ingest has always listed them
SILVER: dict[str, Table] = {
    "customer_records": CUSTOMER_RECORDS,
    "events": EVENTS,
    "orders": ORDERS,
    "order_items": ORDER_ITEMS,
    "products": PRODUCTS,
}

# -- identity ----------------------------------------------------------------------------
ID_MAP = Table(
    "identity.id_map",
    (
        "record_id string, customer_id string, source string, cluster_size int, "
        "link_confidence double, flags array<string>, run_id string, updated_at timestamp, "
        "id_created_at timestamp"
    ),
    ("record_id",),
    "lakecdp.identity.job",
    readers=("lakecdp.activation.job", "lakecdp.erasure", "lakecdp.identity.cli", "lakecdp.identity.benchmark"),
)
ID_CHANGES = Table(
    "identity.id_changes",
    (
        "run_id string, change_type string, old_customer_id string, new_customer_id string, "
        "record_count int, changed_at timestamp"
    ),
    ("run_id", "change_type", "old_customer_id", "new_customer_id"),
    "lakecdp.identity.job",
    readers=("lakecdp.segments.job", "lakecdp.alerts"),
)
EDGES = Table(
    "identity.edges",
    (
        "record_id_l string, record_id_r string, edge_type string, rule string, "
        "match_probability double, match_weight double, run_id string"
    ),
    (),
    "lakecdp.identity.job",
)
IDENTIFIERS = Table(
    "identity.identifiers",
    "identifier_type string, identifier_value string, customer_id string, run_id string",
    ("identifier_type", "identifier_value"),
    "lakecdp.identity.job",
    readers=(
        "lakecdp.features.job",
        "lakecdp.segments.job",
        "lakecdp.segments.streaming",
        "lakecdp.activation.job",
        "lakecdp.campaign.report",
        "lakecdp.erasure",
        "lakecdp.api.demo",
    ),
)
IDENTITY_STATE = Table(
    "identity.state",
    ("run_id string, silver_version bigint, mode string, records_changed bigint, processed_at timestamp"),
    (),
    "lakecdp.identity.state",
)

# -- gold --------------------------------------------------------------------------------
CUSTOMER_PROFILE = Table(
    "gold.customer_profile",
    (
        "customer_id string, first_name string, last_name string, email string, phone string, "
        "date_of_birth date, address_line1 string, postcode string, city string, country string, "
        "email_consent boolean, emails array<string>, phones array<string>, "
        "device_ids array<string>, record_ids array<string>, sources array<string>, "
        "provenance map<string, struct<record_id:string, source:string>>, "
        "first_seen_at timestamp, updated_at timestamp, run_id string"
    ),
    ("customer_id",),
    "lakecdp.identity.job",
    readers=(
        "lakecdp.features.job",
        "lakecdp.segments.job",
        "lakecdp.segments.streaming",
        "lakecdp.activation.job",
        "lakecdp.personalization.preview",
        "lakecdp.api.segments",
        "lakecdp.api.demo",
    ),
)

CUSTOMER_FEATURES = Table(
    "gold.customer_features",
    (
        "customer_id string, as_of timestamp, recency_days int, frequency int, monetary double, "
        "r_score int, f_score int, m_score int, rfm_score string, total_spent double, "
        "order_count int, avg_order_value double, first_purchase_at timestamp, "
        "last_purchase_at timestamp, opens_7d int, opens_30d int, opens_90d int, clicks_7d int, "
        "clicks_30d int, clicks_90d int, last_engagement_at timestamp, last_activity_at timestamp, "
        "lifecycle_stage string, category_affinities map<string,double>, "
        "recent_product_views array<string>, trending_interests array<string>, cart_open boolean, "
        "cart_value double, cart_product_ids array<string>, cart_abandoned_at timestamp, "
        "recommendations array<struct<product_id:string,confidence:double>>, "
        # feedback in force at as_of (lakecdp.features.recommend.recommendation_feedback)
        "recommendation_feedback array<struct<product_id:string,category:string,reason:string,"
        "given_at:timestamp,suppressed_until:timestamp>>, "
        "run_id string"
    ),
    ("customer_id",),
    "lakecdp.features.job",
    readers=("lakecdp.segments.job", "lakecdp.segments.streaming", "lakecdp.personalization.preview"),
)

CAMPAIGN_EXPOSURES = Table(
    "gold.campaign_exposures",
    (
        "exposure_key string NOT NULL, campaign_id string NOT NULL, customer_id string NOT NULL, "
        "change_id string NOT NULL, segment_id string, destination string, "
        "variant string NOT NULL, is_holdout boolean NOT NULL, sent boolean NOT NULL, "
        "template string, template_sha256 string, git_revision string, "
        "exposed_at timestamp NOT NULL, run_id string NOT NULL"
    ),
    ("exposure_key",),
    "lakecdp.campaign.exposures",
    readers=("lakecdp.campaign.report", "lakecdp.campaign.cli"),
)
CAMPAIGN_RESULTS = Table(
    "gold.campaign_results",
    (
        "campaign_id string NOT NULL, as_of timestamp NOT NULL, variant string NOT NULL, "
        "is_control boolean NOT NULL, expected_share double, exposed bigint NOT NULL, "
        "converted bigint NOT NULL, conversion_rate double, revenue double, "
        "revenue_per_exposed double, open_rate double, click_rate double, complaint_rate double, "
        "unsubscribe_rate double, open_carts bigint, carts_recovered bigint, "
        "cart_recovery_rate double, lift double, relative_lift double, ci_low double, "
        "ci_high double, confidence double NOT NULL, p_value double, significant boolean, "
        "lift_test string NOT NULL, srm_p_value double, srm_mismatch boolean NOT NULL, "
        "min_sample_per_arm bigint, underpowered boolean NOT NULL, "
        "conversion_event string NOT NULL, attribution_window_hours double NOT NULL, notes string, "
        "run_id string NOT NULL"
    ),
    ("campaign_id", "as_of", "variant"),
    "lakecdp.campaign.report",
)

# -- segments ----------------------------------------------------------------------------
# one writer for both engines: lakecdp.segments.writes holds the Spark job's writes and the
# embedded engine's (delta-rs) side by side
MEMBERSHIP = Table(
    "segments.membership",
    (
        "segment_id string, customer_id string, member_key string, entered_at timestamp, "
        "exited_at timestamp, entered_run_id string, exited_run_id string, reason string, is_current boolean"
    ),
    ("segment_id", "customer_id", "member_key", "entered_run_id"),
    "lakecdp.segments.writes",
    readers=("lakecdp.segments.inspect", "lakecdp.personalization.preview", "lakecdp.api.segments", "lakecdp.api.demo"),
)
CHANGES = Table(
    "segments.changes",
    (
        "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
        "change_type string, previous_customer_id string, changed_at timestamp, reason string"
    ),
    ("change_id",),
    "lakecdp.segments.writes",
    readers=("lakecdp.activation.job", "lakecdp.api.segments"),
)
SEGMENT_RUNS = Table(
    "segments.runs",
    (
        "run_id string, mode string, as_of timestamp, segments array<string>, changes bigint, "
        "membership_version bigint, applied_at timestamp"
    ),
    ("run_id",),
    "lakecdp.segments.writes",
    readers=("lakecdp.api.segments",),
)
APPROVALS = Table(
    "segments.approvals",
    (
        "run_id string, segment_id string, previous_size bigint, new_size bigint, change_share double, "
        "threshold double, status string, decided_by string, decided_at timestamp"
    ),
    ("run_id", "segment_id"),
    "lakecdp.segments.writes",
    readers=("lakecdp.segments.cli", "lakecdp.activation.job", "lakecdp.api.segments", "lakecdp.alerts"),
)

# -- activation --------------------------------------------------------------------------
DELIVERIES = Table(
    "activation.deliveries",
    (
        "idempotency_key string NOT NULL, change_id string NOT NULL, destination string NOT NULL, "
        "segment_id string, customer_id string, run_id string NOT NULL, status string NOT NULL, "
        "attempts int, response_code int, delivered_at timestamp"
    ),
    ("idempotency_key",),
    "lakecdp.activation.ledger",
)
FAILURES_SCHEMA = (
    "idempotency_key string NOT NULL, change_id string NOT NULL, destination string NOT NULL, "
    "payload string, reason string, response_code int, attempts int, run_id string NOT NULL, "
    "at timestamp"
)
REJECTED = Table("activation.rejected", FAILURES_SCHEMA, (), "lakecdp.activation.ledger")
DEAD_LETTER = Table(
    "activation.dead_letter",
    FAILURES_SCHEMA,
    (),
    "lakecdp.activation.ledger",
    readers=("lakecdp.alerts",),
)
SUPPRESSIONS = Table(
    "activation.suppressions",
    (
        "customer_id string, reason string NOT NULL, identifier_type string, "
        "identifier_value string, since timestamp, run_id string NOT NULL"
    ),
    (),
    "lakecdp.activation.job",
    readers=("lakecdp.api.segments",),
)

# -- ops ---------------------------------------------------------------------------------
RUNS = Table(
    "ops.runs",
    (
        "run_id string, job string, step string, position int, status string, as_of timestamp, "
        "started_at timestamp, finished_at timestamp, duration_s double, "
        "input_versions map<string,bigint>, counts map<string,bigint>, message string"
    ),
    ("run_id", "job", "step"),
    "lakecdp.pipeline",
    readers=("lakecdp.alerts",),
)
INGEST_AUDIT = Table(
    "ops.ingest_audit",
    (
        "run_id string, source string, source_file string, rows_read bigint, rows_loaded bigint, "
        "rows_quarantined bigint, duplicates_removed bigint, at timestamp, rows_erased bigint, "
        # Kafka micro-batches only: "<query name>:<batch id>" (null for a landing file)
        "stream_batch string"
    ),
    ("source", "source_file", "stream_batch"),
    "lakecdp.ingest.writes",
    readers=("lakecdp.alerts",),
)
DATA_QUALITY = Table(
    "ops.data_quality",
    ("run_id string, source string, source_file string, reason string, rows bigint, at timestamp"),
    ("source", "source_file", "reason"),
    "lakecdp.ingest.writes",
)
INGEST_FILES = Table(
    "ops.ingest_files",
    (
        "source string, path string, size bigint, content_hash string, run_id string, loaded_at timestamp, "
        # loaded | quarantined (refused as a whole: SYMLINK, UNREADABLE_FILE), reason (or NO_ROWS)
        "status string, reason string"
    ),
    ("source", "content_hash"),
    "lakecdp.ingest.writes",
)
ERASURES = Table(
    "ops.erasures",
    "salted_hash string, identifier_type string, requested_at timestamp, run_id string",
    # ingest (batch and Kafka) reads it through lakecdp.erasure.erased_hashes
    ("salted_hash",),
    "lakecdp.erasure",
    readers=("lakecdp.activation.job",),
)
API_INTAKE = Table(
    "ops.api_intake",
    ("segment int, start_offset bigint, end_offset bigint, status string, events bigint, run_id string, at timestamp"),
    (),
    "lakecdp.api.pickup",
)
KAFKA_INTAKE = Table(
    "ops.kafka_intake",
    (
        "topic string, partition int, start_offset bigint, end_offset bigint, status string, events bigint, "
        "run_id string, at timestamp"
    ),
    (),
    "lakecdp.api.kafka_follow",
)
ALERTS = Table(
    "ops.alerts",
    # written with deltalake (no Spark): the arrow table in lakecdp.alerts._record
    "cause string, kind string, channel string, title string, sent_at timestamp",
    ("cause", "channel"),
    "lakecdp.alerts",
)

#: every table, in docs/tables.md order
TABLES: tuple[Table, ...] = (
    BRONZE,
    QUARANTINE,
    CUSTOMER_RECORDS,
    EVENTS,
    ORDERS,
    ORDER_ITEMS,
    PRODUCTS,
    ID_MAP,
    IDENTIFIERS,
    ID_CHANGES,
    EDGES,
    IDENTITY_STATE,
    CUSTOMER_PROFILE,
    CUSTOMER_FEATURES,
    CAMPAIGN_EXPOSURES,
    CAMPAIGN_RESULTS,
    MEMBERSHIP,
    CHANGES,
    APPROVALS,
    SEGMENT_RUNS,
    DELIVERIES,
    REJECTED,
    DEAD_LETTER,
    SUPPRESSIONS,
    RUNS,
    INGEST_AUDIT,
    DATA_QUALITY,
    INGEST_FILES,
    ERASURES,
    API_INTAKE,
    KAFKA_INTAKE,
    ALERTS,
)
_BY_NAME = {t.name: t for t in TABLES}


def table(name: str) -> Table:
    """The catalogue entry of a logical name (``bronze.crm`` -> the ``bronze.<source>`` family).

    Raises:
        KeyError: the name is not in the catalogue.
    """
    found = _BY_NAME.get(name) or _BY_NAME.get(f"{name.partition('.')[0]}.<source>")
    if found is None:
        raise KeyError(f"{name!r} is not a table of lakecdp.catalog; known: {sorted(_BY_NAME)}")
    return found


#: the Delta table property :attr:`Table.stats` sets (Delta Spark and delta-rs both honour it)
STATS_COLUMNS_PROPERTY = "delta.dataSkippingStatsColumns"
#: columns unique by construction wherever a table has them: both engines write them without a
#: Parquet dictionary (the map would be filled, then dropped)
UNIQUE_COLUMNS = ("_row_hash", "_line", "_kafka_offset", "record_id", "source_record_id", "event_id")
#: the largest Parquet dictionary page both engines write a column with (Parquet's default is
#: 1 MiB): a column with more distinct values -- names, streets, dates of birth in a million-row
#: load -- is written plain and compressed instead of every value being looked up in a map too
#: big for the CPU's caches
DICTIONARY_PAGE_BYTES = 128 * 1024


def stats_configuration(name: str, columns: Iterable[str]) -> dict[str, str]:
    """Table properties for creating ``name`` with ``columns``: its catalogue :attr:`Table.stats`
    that are among ``columns`` as ``delta.dataSkippingStatsColumns``; ``{}`` for a table the
    catalogue does not list or leaves at Delta's default.

    Example:
        >>> stats_configuration("silver.customer_records", ["record_id", "email", "source"])
        {'delta.dataSkippingStatsColumns': 'record_id,source'}
    """
    try:
        found = table(name)
    except KeyError:
        return {}
    if found.stats is None:
        return {}
    present = set(columns)
    kept = [column for column in found.stats if column in present]
    return {STATS_COLUMNS_PROPERTY: ",".join(kept)} if kept else {}


def read_by(package: str) -> tuple[str, ...]:
    """Names of the tables a module or package (``lakecdp.features``) reads, in catalogue order."""
    return tuple(t.name for t in TABLES if any(r == package or r.startswith(package + ".") for r in t.readers))


def markdown_index() -> str:
    """The "who writes and reads each table" index of docs/tables.md (tested equal to it)."""
    lines = [
        "| table | writer | keys | readers |",
        "|---|---|---|---|",
    ]
    for t in TABLES:
        writer = f"`{t.writer}`"
        keys = ", ".join(t.keys) or "-"
        readers = ", ".join(f"`{r}`" for r in t.readers) or "-"
        lines.append(f"| `{t.name}` | {writer} | {keys} | {readers} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "TABLES",
    "Table",
    "TypeBuilder",
    "ddl_columns",
    "ddl_fields",
    "ddl_struct",
    "markdown_index",
    "parse_type",
    "read_by",
    "table",
    *[name for name, value in dict(globals()).items() if isinstance(value, Table)],
]
