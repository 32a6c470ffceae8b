"""Path-based Delta tables read and written with delta-rs (``deltalake``), no JVM.

The embedded engine's side of the I/O seam: :class:`lakecdp.tables.Tables` reads and writes
through Spark, :class:`DeltaStore` through delta-rs and Arrow, on the same tables (logical
names resolved by the same ``Tables``). Tables either engine writes stay readable by the other:

- tables created here get :data:`TABLE_CONFIGURATION` -- change data feed on (Spark's session
  default, so Spark-created tables have it too) and no deletion vectors (delta-rs 1.6 cannot
  read tables with them), and the per-file statistics columns the catalogue names
  (:func:`lakecdp.catalog.stats_configuration`, as Spark's ``Tables`` does);
- timestamps are written as ``timestamp`` (UTC), never ``timestamp_ntz``; schemas and
  nullability come from :mod:`lakecdp.catalog` (:func:`arrow_schema`);
- every commit carries ``userMetadata`` = ``<label> <operation> <run_id>`` (a per-write commit
  property, not a session setting);
- appends can be idempotent through Delta app transactions (``txnAppId`` / ``txnVersion``),
  which Spark honours too.

Used by the embedded segment engine (:mod:`lakecdp.segments.embedded`) and the identity step on
the duckdb backend (:mod:`lakecdp.identity.job`). tests/test_catalog.py scans ``store.<write>``
calls like ``tables.<write>`` ones: a module that writes a table here must be its catalogue writer.

Example:
    >>> store = DeltaStore(ctx, label="lakecdp-identity")
    >>> store.upsert(id_map, "identity.id_map", catalog.ID_MAP.ddl, keys=["record_id"], run_id=ctx.run_id)
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakecdp import catalog
from lakecdp.catalog import TypeBuilder, ddl_columns, ddl_fields

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import duckdb
    import pyarrow.dataset
    from deltalake import DeltaTable

    from typing import TypeAlias

    from lakecdp.context import JobContext
    from lakecdp.tables import TableStore

    #: rows appended as one Parquet file written by pyarrow (:meth:`DeltaStore.append`) besides an
    #: Arrow table: a DuckDB relation, streamed out in batches, or an Arrow stream
    OneFile: TypeAlias = pa.RecordBatchReader | duckdb.DuckDBPyRelation

logger = logging.getLogger(__name__)


def use_arrow_allocator() -> str:
    """Arrow's allocator for this process: jemalloc (the system's in a pyarrow built without it),
    unless ``ARROW_DEFAULT_MEMORY_POOL`` names one; the backend's name.

    pyarrow's default, mimalloc, commits its arenas eagerly: at 1M customer rows on a 2-core VM the
    kernel's time (first touching those pages) was 8.5-11.9 s of a first load against 2.5-3.5 s with
    jemalloc or the system allocator, for the same user time (bench/RESULTS.md, "Arrow's allocator")."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:
            pool = pa.system_memory_pool()
        pa.set_memory_pool(pool)
    return pa.default_memory_pool().backend_name


# every embedded path reads and writes through this module: the allocator is chosen on its import
use_arrow_allocator()

#: table properties of every table created with delta-rs: change data feed on (as Spark's session
#: default), no deletion vectors (delta-rs 1.6 cannot read them)
TABLE_CONFIGURATION = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}
#: rows per batch a DuckDB relation is streamed out in, and so per row group of the file written
_FILE_BATCH_ROWS = 1_000_000
#: the source column of a MERGE that marks a key to delete (never a catalogue column)
_DELETE = "_lakecdp_delete"

_ARROW_TYPES = {
    "string": pa.string(),
    # Delta "timestamp" (UTC instants); a zone-less Arrow timestamp would be timestamp_ntz
    "timestamp": pa.timestamp("us", tz="UTC"),
    "boolean": pa.bool_(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "date": pa.date32(),
}


class CatalogTablesUnsupported(RuntimeError):
    """delta-rs reads and writes path-based tables only; the environment uses a catalog."""


def _arrow_struct(fields: list[tuple[str, pa.DataType]]) -> pa.DataType:
    return pa.struct([pa.field(name, data_type) for name, data_type in fields])


_ARROW = TypeBuilder(scalars=_ARROW_TYPES, array=pa.list_, map=pa.map_, struct=_arrow_struct)


def arrow_type(text: str) -> pa.DataType:
    """A catalogue type (``map<string, struct<a:string>>``) as an Arrow type."""
    return _ARROW.build(text)


def arrow_schema(schema: str) -> pa.Schema:
    """A catalogue schema (``a string NOT NULL, b map<string, bigint>``) as an Arrow schema."""
    return pa.schema([pa.field(name, arrow_type(text), nullable) for name, text, nullable in ddl_fields(schema)])


def conform(data: pa.Table, schema: str) -> pa.Table:
    """``data``'s columns in the catalogue's order and types (extra columns dropped)."""
    target = arrow_schema(schema)
    return data.select(target.names).cast(target)


def native_filesystem(table: DeltaTable) -> Any:
    """A native pyarrow filesystem rooted at a local ``table``, or None (delta-rs' own) for a
    table elsewhere or with a data file outside its folder.

    delta-rs reads through ``pyarrow.fs.PyFileSystem(DeltaStorageHandler)`` by default: a Python
    object held by Arrow's I/O threads. When a scan's last reference to it is dropped on such a
    thread while the interpreter exits, taking the GIL there kills the process *after* its work
    (``terminate called without an active exception``, exit 134). A native filesystem holds no
    Python object, so a process that read a table exits cleanly.
    """
    import pyarrow.fs as pa_fs

    uri = table.table_uri
    root = uri.removeprefix("file://") if uri.startswith("file://") else uri
    if "://" in root or not root.startswith("/"):
        return None
    root = root.rstrip("/")
    if any(not path.startswith(root + "/") for path in table.file_uris()):
        return None
    return pa_fs.SubTreeFileSystem(root, pa_fs.LocalFileSystem())


def arrow_dataset(table: DeltaTable) -> pa.dataset.Dataset:
    """``table`` as a pyarrow dataset read through :func:`native_filesystem` where it can be:
    every Arrow read of a Delta table in lakecdp goes through here or :func:`arrow_table`."""
    return table.to_pyarrow_dataset(filesystem=native_filesystem(table))


def arrow_table(
    table: DeltaTable, *, columns: Sequence[str] | None = None, filters: list[tuple[str, str, Any]] | None = None
) -> pa.Table:
    """``table.to_pyarrow_table(columns=..., filters=...)`` (the same rows) through
    :func:`arrow_dataset`."""
    from pyarrow.parquet import filters_to_expression

    expression = filters_to_expression(filters) if filters else None
    return arrow_dataset(table).to_table(columns=None if columns is None else list(columns), filter=expression)


def utc_timestamps(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """SELECT list of ``table`` with TIMESTAMPTZ columns as UTC TIMESTAMP (Spark's UTC session)."""
    parts = []
    for name, data_type, *_ in con.execute(f'DESCRIBE "{table}"').fetchall():
        quoted = '"' + name.replace('"', '""') + '"'
        if data_type == "TIMESTAMP WITH TIME ZONE":
            parts.append(f"CAST({quoted} AS TIMESTAMP) AS {quoted}")
        else:
            parts.append(quoted)
    return ", ".join(parts)


def _without_views(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every string view as a plain string (nested types too)."""
    if data_type == pa.string_view():
        return pa.string()
    if data_type == pa.binary_view():
        return pa.binary()
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_list_view(data_type):
        return pa.list_(_without_views(data_type.value_type))
    if pa.types.is_map(data_type):
        return pa.map_(_without_views(data_type.key_type), _without_views(data_type.item_type))
    if pa.types.is_struct(data_type):
        return pa.struct(
            [data_type.field(i).with_type(_without_views(data_type.field(i).type)) for i in range(data_type.num_fields)]
        )
    return data_type


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def text_literal(text: str) -> str:
    """``text`` as an SQL string literal (DuckDB and delta-rs alike)."""
    return "'" + text.replace("'", "''") + "'"


#: DuckDB type of each catalogue type a relation is cast to before it is written as Parquet
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "double": "DOUBLE",
    "date": "DATE",
}
#: strings longer than this get no min/max in a file's Delta statistics (Spark truncates its own
#: at 32 characters; a value left out is always correct, a truncated maximum would not be)
_STATS_STRING_LENGTH = 32
#: Parquet (physical, logical) types whose min/max go into the statistics as they are: strings,
#: integers, booleans
_STATS_KINDS = {
    ("BYTE_ARRAY", "STRING"),
    ("INT32", "INT"),
    ("INT64", "INT"),
    ("INT32", "NONE"),
    ("INT64", "NONE"),
    ("BOOLEAN", "NONE"),
}
#: microseconds per unit of a Parquet timestamp
_TIMESTAMP_UNITS = {"milliseconds": 1000, "microseconds": 1}
#: Delta's default for a table without ``delta.dataSkippingNumIndexedCols``: statistics of the
#: first 32 columns
_INDEXED_COLUMNS = 32


def _statistics_columns(configuration: Mapping[str, str], columns: Sequence[str]) -> list[str]:
    """The columns a file of a table with ``configuration`` keeps statistics of, as Delta chooses
    them: the table's ``delta.dataSkippingStatsColumns``, else its first
    ``delta.dataSkippingNumIndexedCols`` (32; -1: all)."""
    named = configuration.get(catalog.STATS_COLUMNS_PROPERTY)
    if named:
        wanted = {c.strip() for c in named.split(",")}
        return [c for c in columns if c in wanted]
    indexed = int(configuration.get("delta.dataSkippingNumIndexedCols", _INDEXED_COLUMNS))
    return list(columns) if indexed < 0 else list(columns[:indexed])


def _delta_timestamp(micros: int) -> str:
    """A UTC instant in microseconds as Delta statistics write it (milliseconds, ``Z``)."""
    from datetime import UTC, datetime, timedelta

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _bounds(column: Any, groups: list[Any]) -> tuple[Any, Any] | None:
    """A column's (min, max) for Delta statistics from its row groups' Parquet statistics; None
    where they are left out (no min/max, a type not kept, a long string). UTC timestamps are
    written in milliseconds, the minimum rounded down and the maximum up, so both still bound
    every value."""
    import json

    if not all(s is not None and s.has_min_max for s in groups):
        return None
    kind = (column.physical_type, column.logical_type.type)
    if kind in _STATS_KINDS:
        low, high = min(s.min for s in groups), max(s.max for s in groups)
        if isinstance(low, str) and max(len(low), len(high)) > _STATS_STRING_LENGTH:
            return None
        return low, high
    if kind == ("INT64", "TIMESTAMP"):
        logical = json.loads(column.logical_type.to_json())
        unit = _TIMESTAMP_UNITS.get(logical.get("timeUnit", ""))
        if unit is None or not logical.get("isAdjustedToUTC"):
            return None
        low = min(s.min_raw for s in groups) * unit
        high = max(s.max_raw for s in groups) * unit
        return _delta_timestamp(low - low % 1000), _delta_timestamp(high + (-high) % 1000)
    return None


def _add_action(path: Path, file_name: str, columns: Sequence[str]) -> tuple[Any, int] | None:
    """The Delta add action of a Parquet file just written, with statistics of ``columns``
    (those of them that are not nested: null counts; min/max of integers, booleans, short strings
    and UTC timestamps) from the file's footer; None when the file has no rows."""
    import json

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    meta = pq.read_metadata(path)
    if meta.num_rows == 0:
        return None
    wanted = set(columns)
    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for j in range(meta.num_columns):
        column = meta.schema.column(j)
        if column.path != column.name or column.name not in wanted:
            continue
        groups = [meta.row_group(i).column(j).statistics for i in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count for s in groups):
            nulls[column.name] = sum(s.null_count for s in groups)
        bounds = _bounds(column, groups)
        if bounds is not None:
            lows[column.name], highs[column.name] = bounds
    summary = {"numRecords": meta.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}
    stats_json = json.dumps(summary, separators=(",", ":"))
    add = AddAction(
        path=file_name,
        size=path.stat().st_size,
        partition_values={},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=stats_json,
    )
    return add, meta.num_rows


def _not_plain(table: DeltaTable) -> str | None:
    """Why pyarrow's one file with one add action (:meth:`DeltaStore._append_file`) would not be
    what ``table`` asks a writer for, or None (every table lakecdp creates, on either engine):
    partitions, column mapping, CHECK constraints, invariants or generated columns."""
    metadata = table.metadata()
    if metadata.partition_columns:
        return f"partitioned by {metadata.partition_columns}"
    configuration = metadata.configuration
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        return f"column mapping {configuration['delta.columnMapping.mode']!r}"
    if any(key.startswith("delta.constraints.") for key in configuration):
        return "CHECK constraints"
    for field in table.schema().fields:
        if {"delta.invariants", "delta.generationExpression"} & set(field.metadata):
            return f"an invariant or generated column ({field.name})"
    return None


def _writer_properties(table: DeltaTable) -> Any:
    """delta-rs's Parquet writer set as :meth:`DeltaStore._append_file` writes (and Spark's
    session): dictionaries of at most :data:`lakecdp.catalog.DICTIONARY_PAGE_BYTES`, none for
    :data:`lakecdp.catalog.UNIQUE_COLUMNS`; statistics per row group of the columns Delta keeps
    them for (:func:`_statistics_columns`), none of the others (delta-rs's default: every column,
    per page). A MERGE of 42,466 records into a 432,607-row file: -0.25 CPU-s (bench/RESULTS.md)."""
    from deltalake import ColumnProperties, WriterProperties
    from deltalake.schema import PrimitiveType

    fields = table.schema().fields
    flat = [f.name for f in fields if isinstance(f.type, PrimitiveType)]
    kept = set(_statistics_columns(table.metadata().configuration, [f.name for f in fields]))
    return WriterProperties(
        dictionary_page_size_limit=catalog.DICTIONARY_PAGE_BYTES,
        default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
        column_properties={
            column: ColumnProperties(
                dictionary_enabled=column not in catalog.UNIQUE_COLUMNS,
                statistics_enabled="CHUNK" if column in kept else "NONE",
            )
            for column in flat
        },
    )


def _leaf_paths(field: pa.Field) -> list[str]:
    """The Parquet column paths pyarrow writes ``field`` as (lists as ``<name>.list.element``)."""
    data_type = field.type
    if pa.types.is_struct(data_type):
        children = [data_type.field(i) for i in range(data_type.num_fields)]
    elif pa.types.is_map(data_type):
        children = [pa.field("key_value", pa.struct([data_type.key_field, data_type.item_field]))]
    elif pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        children = [pa.field("list", pa.struct([pa.field("element", data_type.value_type)]))]
    else:
        return [field.name]
    return [f"{field.name}.{path}" for child in children for path in _leaf_paths(child)]


def embedded_store(ctx: JobContext, *, label: str) -> DeltaStore | None:
    """The delta-rs store a step writes through when the run's engine is ``embedded`` and its
    tables are path-based; None when the step goes through Spark (engine ``spark`` or a catalog)."""
    if ctx.project.environment.engine != "embedded" or ctx.tables.uses_catalog:
        return None
    return DeltaStore(ctx, label=label)


def table_store(ctx: JobContext, *, label: str) -> TableStore:
    """The run's :class:`~lakecdp.tables.TableStore`: delta-rs where :func:`embedded_store` says
    so, else Spark on ``ctx``'s session (started only when the store is first used).

    Example:
        >>> store = table_store(ctx, label="lakecdp-pipeline")
        >>> store.version_or_none("silver.events")
    """
    from lakecdp.tables import SparkStore

    store = embedded_store(ctx, label=label)
    return store if store is not None else SparkStore(ctx.tables, lambda: ctx.spark)


class DeltaStore:
    """Path-based Delta tables of a project, read and written with delta-rs.

    Args:
        ctx: the job context (its ``tables`` resolve logical names to paths).
        label: first word of every commit's ``userMetadata`` (``<label> <operation> <run_id>``).
    """

    def __init__(self, ctx: JobContext, *, label: str = "lakecdp-segments") -> None:
        if ctx.tables.uses_catalog:
            raise CatalogTablesUnsupported(
                "delta-rs reads path-based tables only; this environment uses a catalog (set engine: spark)"
            )
        self.tables = ctx.tables
        self.label = label

    def path(self, name: str) -> str:
        return self.tables.location(name)

    def exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.path(name))

    def table(self, name: str, *, version: int | None = None):
        from deltalake import DeltaTable

        return DeltaTable(self.path(name), version=version)

    def read(self, name: str, *, columns: list[str] | None = None, version: int | None = None) -> pa.Table:
        from deltalake import DeltaTable

        return arrow_table(DeltaTable(self.path(name), version=version), columns=columns)

    def read_rows(
        self, name: str, *, columns: Sequence[str], where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """``columns`` of the rows whose ``where`` columns equal the values given (filtered in
        Arrow after the read: see :meth:`load` on filters pushed into delta-rs)."""
        import pyarrow.compute as pc

        conditions = dict(where or {})
        data = self.read(name, columns=list(dict.fromkeys([*columns, *conditions])))
        for column, value in conditions.items():
            data = data.filter(pc.equal(data.column(column), pa.scalar(value, data.schema.field(column).type)))
        return data.select(list(columns)).to_pylist()

    def upsert_rows(
        self, rows: Sequence[Mapping[str, Any]], name: str, schema: str, *, keys: Sequence[str], run_id: str
    ) -> None:
        """Insert ``rows`` or replace the stored rows with their ``keys`` (one MERGE; the table is
        created with ``schema`` when missing)."""
        data = pa.Table.from_pylist([dict(row) for row in rows], schema=arrow_schema(schema))
        self.merge(data, name, schema, keys=list(keys), run_id=run_id)

    def read_in_spark_order(self, name: str, *, version: int | None = None) -> pa.Table:
        """Every row of the table in the order Spark's reader returns them: the data files by
        size, largest first (how Spark packs files into read partitions), rows in file order;
        files of equal size by path. Where the order matters (Splink's u sampling) both engines
        then see the same input."""
        import pyarrow.dataset as ds

        table = self.table(name, version=version)
        dataset = arrow_dataset(table)
        actions = pa.table(table.get_add_actions(flatten=True))
        sizes = dict(
            zip(
                (p.removeprefix("file://") for p in actions.column("path").to_pylist()),
                actions.column("size_bytes").to_pylist(),
                strict=True,
            )
        )

        def size_of(fragment) -> int:
            path = fragment.path
            return next((size for known, size in sizes.items() if path.endswith(known)), 0)

        fragments = sorted(dataset.get_fragments(), key=lambda f: (-size_of(f), f.path))
        ordered = ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
        return ordered.to_table()

    def load(
        self,
        con: duckdb.DuckDBPyConnection,
        target: str,
        name: str,
        *,
        columns: list[str] | None = None,
        where: str = "",
        params: list[Any] | None = None,
        version: int | None = None,
    ) -> None:
        """Table ``target`` of ``con`` from Delta table ``name`` (columns, a filter, ``version``:
        time travel), timestamps in UTC.

        When the table needs nothing beyond reader version 1 (no deletion vectors, no column
        mapping) and is not partitioned, its live files, as the Delta log lists them, are read by
        DuckDB's own Parquet reader (parallel, filters and columns pushed down); else through Arrow,
        filtered in DuckDB. (delta-rs 1.6.6's pyarrow dataset with a filter returned no rows of
        files Spark wrote -- ``is_current == True`` on a Spark-written membership -- so filters are
        never pushed into it.)
        """
        table = self.table(name, version=version)
        select = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
        files = [uri.removeprefix("file://") for uri in table.file_uris()]
        plain = table.protocol().min_reader_version == 1 and not table.metadata().partition_columns
        if plain and files:
            # paths from the Delta log, quoted as SQL string literals (a view cannot take parameters)
            listed = ", ".join(map(text_literal, files))
            source = f"read_parquet([{listed}], union_by_name = true)"
        else:
            con.register("_delta_arrow", arrow_table(table, columns=columns))
            source = "_delta_arrow"
        con.execute(f"CREATE OR REPLACE TEMP VIEW _delta_source AS SELECT {select} FROM {source}")
        con.execute(
            f"CREATE OR REPLACE TABLE {target} AS SELECT {utc_timestamps(con, '_delta_source')} FROM _delta_source {where}",
            list(params or []),
        )
        con.execute("DROP VIEW _delta_source")
        if source == "_delta_arrow":
            con.unregister("_delta_arrow")

    def read_or_empty(self, name: str, schema: str) -> pa.Table:
        if self.exists(name):
            return self.read(name)
        return arrow_schema(schema).empty_table()

    def require(self, name: str) -> pa.Table:
        if not self.exists(name):
            raise RuntimeError(f"{name} does not exist at {self.path(name)}; run the step that writes it first")
        return self.read(name)

    def create_if_missing(self, name: str, schema: str) -> None:
        from deltalake import DeltaTable

        if not self.exists(name):
            Path(self.path(name)).mkdir(parents=True, exist_ok=True)
            configuration = {**TABLE_CONFIGURATION, **catalog.stats_configuration(name, ddl_columns(schema))}
            DeltaTable.create(self.path(name), arrow_schema(schema), mode="ignore", configuration=configuration)

    def version(self, name: str) -> int:
        return int(self.table(name).version())

    def version_or_none(self, name: str) -> int | None:
        """Current version, or None when the table does not exist yet."""
        return self.version(name) if self.exists(name) else None

    def earliest_version(self, name: str) -> int | None:
        """The oldest version whose commit is still in the log (None: no history left)."""
        versions = [int(h["version"]) for h in self.table(name).history() if "version" in h]
        return min(versions) if versions else None

    def last_user_metadata(self, name: str) -> str | None:
        """``userMetadata`` of the table's latest commit."""
        history = self.table(name).history(1)
        return history[0].get("userMetadata") if history else None

    def change_feed(self, name: str, *, starting_version: int, ending_version: int) -> pa.Table:
        """Change Data Feed rows in ``[starting_version, ending_version]`` (``_change_type``,
        ``_commit_version``, ``_commit_timestamp`` and the table's columns)."""
        reader = self.table(name).load_cdf(starting_version=starting_version, ending_version=ending_version)
        feed = pa.RecordBatchReader.from_stream(reader).read_all()
        # delta-rs hands out string views; Arrow compute and DuckDB joins want plain strings
        return feed.cast(pa.schema([f.with_type(_without_views(f.type)) for f in feed.schema]))

    def _metadata(
        self, operation: str, run_id: str, user_metadata: str | None = None, *, transaction: Any = None
    ) -> Any:
        """Commit properties: ``userMetadata``, and ``transaction`` (a Delta app transaction) when given."""
        from deltalake import CommitProperties

        text = user_metadata if user_metadata is not None else f"{self.label} {operation} {run_id}"
        return CommitProperties(
            custom_metadata={"userMetadata": text}, app_transactions=None if transaction is None else [transaction]
        )

    def merge(
        self,
        data: pa.Table,
        name: str,
        schema: str,
        *,
        keys: list[str],
        run_id: str,
        update: bool = True,
        update_predicate: str | None = None,
        insert: bool = True,
        user_metadata: str | None = None,
        within: tuple[str, Sequence[str]] | None = None,
    ) -> None:
        """Upsert on ``keys`` (insert only when ``update`` is False); creates the table if missing.

        Args:
            user_metadata: the commit's ``userMetadata`` instead of ``<label> merge <run_id>``.
            within: (a text column, its values): the stored rows any key of ``data`` can match
                all hold one of them there (the caller knows it). delta-rs then reads only the
                files whose statistics allow those values: without it, a MERGE of 42,466 crm
                records into silver.customer_records read every source's files (2.1 CPU-s
                against 1.2; bench/RESULTS.md)."""
        data = conform(data, schema)
        if not self.exists(name):
            self.create_if_missing(name, schema)
        if data.num_rows == 0:
            return
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        if within is not None:
            column, values = within
            predicate = f"t.{column} IN ({', '.join(map(text_literal, values))}) AND {predicate}"
        table = self.table(name)
        merger = table.merge(
            data,
            predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=self._metadata("merge", run_id, user_metadata),
            writer_properties=_writer_properties(table),
        )
        if update:
            merger = merger.when_matched_update_all(predicate=update_predicate)
        if insert:
            merger = merger.when_not_matched_insert_all()
        merger.execute()

    def delete(self, name: str, predicate: str, *, run_id: str) -> None:
        """Delete the rows matching ``predicate`` (delta-rs SQL over the table's columns; values
        quoted by the caller) in one commit; the table must exist."""
        table = self.table(name)
        table.delete(
            predicate, commit_properties=self._metadata("delete", run_id), writer_properties=_writer_properties(table)
        )

    def append(self, data: pa.Table | OneFile, name: str, schema: str, *, run_id: str) -> None:
        """Append rows (no-op when empty); creates the table if missing. ``data`` (an Arrow table,
        a DuckDB relation or an Arrow stream) is written as one Parquet file by pyarrow
        (:meth:`_append_file`), not by delta-rs -- but for a table whose layout asks more of a
        writer (:func:`_not_plain`), where delta-rs writes an Arrow table."""
        if isinstance(data, pa.Table) and data.num_rows == 0:
            return
        self.create_if_missing(name, schema)
        self._append_file(data, name, schema, run_id=run_id, operation="append")

    def append_once(self, data: pa.Table | OneFile, name: str, schema: str, *, app_id: str, run_id: str) -> int | None:
        """Append ``data`` as the next Delta app transaction of ``app_id`` (one per run id).

        The caller leaves out rows already stored (change ids of the run); the app transaction
        makes two writers of the same run conflict instead of both appending, and lets a reader
        see from the log alone that the run's changes were written. ``data`` is written as one
        Parquet file (:meth:`_append_file`).

        Returns:
            The app transaction version written; None when ``data`` has no rows (nothing committed).
        """
        from deltalake import Transaction

        table = self.table(name)
        version = (table.transaction_version(app_id) or 0) + 1
        transaction = Transaction(app_id=app_id, version=version)
        written = self._append_file(data, name, schema, run_id=run_id, operation="changes", transaction=transaction)
        return version if written else None

    def _append_file(
        self,
        rows: pa.Table | OneFile,
        name: str,
        schema: str,
        *,
        run_id: str,
        operation: str,
        transaction: Any = None,
    ) -> int:
        """Write ``rows`` (the catalogue's columns, cast to its types) as one Parquet file in the
        table's directory with pyarrow's writer, then commit that file as one add action (with
        ``transaction``, a Delta app transaction, when given). A DuckDB relation (flat types
        only) is streamed out in batches; an Arrow table or stream's buffers are written as they
        are (no copy of its strings). At 6.3M segment changes with their reasons this is ~2 s of
        CPU where DuckDB's own Parquet writer took ~5.3 s and delta-rs writing an Arrow table
        ~40 s of wall time; bronze's 500k rows of a customer file, 0.29 s against delta-rs's
        0.56 s (bench/RESULTS.md). Written as Spark's session writes (:mod:`lakecdp.spark`):
        snappy, dictionaries of at most :data:`lakecdp.catalog.DICTIONARY_PAGE_BYTES`, none for
        :data:`lakecdp.catalog.UNIQUE_COLUMNS`; statistics (in the file and in the log) of the
        columns Delta keeps them for (:func:`_statistics_columns`). A file written but never
        committed (the process died in between) is not part of the table; VACUUM removes it.

        Returns:
            How many rows were committed (0: no file kept, no commit).
        """
        import uuid

        import pyarrow.parquet as pq

        table = self.table(name)
        unlike = _not_plain(table)
        if unlike is not None:
            # a table lakecdp did not create as it does: delta-rs writes what its layout asks for
            if not isinstance(rows, pa.Table):
                raise ValueError(f"{name}: {unlike}; a relation or stream is appended to plain tables only")
            if rows.num_rows == 0:
                return 0
            from deltalake import write_deltalake

            write_deltalake(
                table,
                conform(rows, schema),
                mode="append",
                commit_properties=self._metadata(operation, run_id, transaction=transaction),
                writer_properties=_writer_properties(table),
            )
            return rows.num_rows
        fields = ddl_fields(schema)
        # every column optional in the file, as Spark and DuckDB write them; NOT NULL is checked below
        target = pa.schema([pa.field(column, arrow_type(data_type)) for column, data_type, _ in fields])
        batches: pa.Table | pa.RecordBatchReader
        if isinstance(rows, pa.Table | pa.RecordBatchReader):
            batches = rows
        else:
            flat = [data_type.lower() for _, data_type, _ in fields if data_type.lower() not in _DUCKDB_TYPES]
            if flat:
                raise ValueError(
                    f"{name}: a relation is appended as one file to flat tables only; types {flat} are not"
                )
            casts = ", ".join(
                f"CAST({_quoted(column)} AS {_DUCKDB_TYPES[data_type.lower()]}) AS {_quoted(column)}"
                for column, data_type, _ in fields
            )
            batches = rows.project(casts).to_arrow_reader(batch_size=_FILE_BATCH_ROWS)
        missing = [column for column in target.names if column not in batches.schema.names]
        if missing:
            raise ValueError(f"{name}: rows to append lack columns {missing}; nothing written")
        statistics = _statistics_columns(table.metadata().configuration, target.names)
        dictionary = [
            path for field in target if field.name not in catalog.UNIQUE_COLUMNS for path in _leaf_paths(field)
        ]
        required = [column for column, _, nullable in fields if not nullable]
        nulls = dict.fromkeys(required, 0)
        file_name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        path = Path(self.path(name)) / file_name
        started = time.perf_counter()
        with pq.ParquetWriter(
            str(path),
            target,
            compression="snappy",
            use_dictionary=dictionary,
            dictionary_pagesize_limit=catalog.DICTIONARY_PAGE_BYTES,
            write_statistics=[c for c in statistics if _leaf_paths(target.field(c)) == [c]] or False,
        ) as writer:
            # a table whole (one row group per _FILE_BATCH_ROWS rows, however it is chunked), a
            # stream batch by batch
            for part in [batches] if isinstance(batches, pa.Table) else batches:
                if part.num_rows:
                    cast = part.select(target.names).cast(target)
                    for column in required:
                        nulls[column] += cast.column(column).null_count
                    writer.write(cast, row_group_size=_FILE_BATCH_ROWS)
        written = time.perf_counter()
        broken = [column for column in required if nulls[column]]
        if broken:
            path.unlink()
            raise ValueError(f"{name}: rows to append have nulls in NOT NULL columns {broken}; nothing written")
        add = _add_action(path, file_name, statistics)
        if add is None:
            path.unlink()
            logger.info("%s: no rows to append, no commit", name)
            return 0
        table.create_write_transaction(
            [add[0]],
            mode="append",
            schema=table.schema(),
            commit_properties=self._metadata(operation, run_id, transaction=transaction),
        )
        logger.info(
            "%s: %d rows written as one Parquet file in %.2f s, committed in %.2f s",
            name,
            add[1],
            written - started,
            time.perf_counter() - written,
        )
        return add[1]

    def overwrite(
        self, data: pa.Table, name: str, schema: str, *, run_id: str, user_metadata: str | None = None
    ) -> None:
        """Replace the table's rows in one commit (history kept); creates the table if missing.

        Args:
            user_metadata: the commit's ``userMetadata`` instead of ``<label> overwrite <run_id>``
                (a fingerprint of the inputs a later run compares, say).
        """
        from deltalake import write_deltalake

        data = conform(data, schema)
        self.create_if_missing(name, schema)
        table = self.table(name)
        write_deltalake(
            table,
            data,
            mode="overwrite",
            commit_properties=self._metadata("overwrite", run_id, user_metadata),
            writer_properties=_writer_properties(table),
        )

    def upsert(
        self,
        data: pa.Table,
        name: str,
        schema: str,
        *,
        keys: Sequence[str],
        run_id: str,
        compare: Sequence[str] | None = None,
        delete_missing: bool = False,
        scope: pa.Table | None = None,
    ) -> int:
        """Make the table hold ``data`` for its keys, writing only what differs (one MERGE, or
        no commit at all when nothing does).

        The rows to write are found in DuckDB first (keys compared null-safe): a row of ``data``
        whose key is new, or one of whose ``compare`` columns differs from the stored row
        (``compare=None``: every column), replaces or joins the stored row; a stored row whose
        key ``data`` lacks is deleted when ``delete_missing`` (``data`` is the whole truth) or
        when its key is in ``scope`` (a partial refresh: ``data`` is the whole truth for those
        keys; ``data``'s keys must be within ``scope``). Rows found unchanged keep their stored
        values (run stamps included), as :meth:`lakecdp.tables.Tables.merge` with an update
        condition does.

        Args:
            keys: the columns that identify a row.
            compare: the columns whose change makes a matched row be written.
            delete_missing: delete stored rows whose key is absent from ``data``.
            scope: the keys (columns ``keys``) this write is the whole truth for.

        Returns:
            How many rows were inserted, updated or deleted.
        """
        import duckdb

        if not keys:
            raise ValueError("upsert needs at least one key column")
        if scope is not None and delete_missing:
            raise ValueError("scope and delete_missing exclude each other")
        data = conform(data, schema)
        if not self.exists(name):  # created even when empty, as Tables.merge does
            self.create_if_missing(name, schema)
            self.append(data, name, schema, run_id=run_id)
            return data.num_rows
        columns = data.column_names
        compared = [c for c in (compare if compare is not None else columns) if c not in keys]
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("_source_arrow", data)
            con.execute(f"CREATE TABLE _source AS SELECT {utc_timestamps(con, '_source_arrow')} FROM _source_arrow")
            self.load(con, "_target", name, columns=list(dict.fromkeys([*keys, *compared])))
            on = " AND ".join(f"t.{_quoted(k)} IS NOT DISTINCT FROM s.{_quoted(k)}" for k in keys)
            differs = " OR ".join(
                f"t.{_quoted(c)}::VARCHAR IS DISTINCT FROM s.{_quoted(c)}::VARCHAR"
                if str(data.schema.field(c).type).startswith("map")
                else f"t.{_quoted(c)} IS DISTINCT FROM s.{_quoted(c)}"
                for c in compared
            )
            written = f"NOT EXISTS (SELECT 1 FROM _target t WHERE {on}{f' AND NOT ({differs})' if differs else ''})"
            changed = con.sql(f"SELECT *, false AS {_DELETE} FROM _source s WHERE {written}").to_arrow_table()
            key_list = ", ".join(_quoted(k) for k in keys)
            gone_sql = f"SELECT {key_list} FROM _target t WHERE NOT EXISTS (SELECT 1 FROM _source s WHERE {on})"
            if scope is not None:
                con.register("_scope", scope.select(list(keys)))
                in_scope = " AND ".join(f"t.{_quoted(k)} IS NOT DISTINCT FROM c.{_quoted(k)}" for k in keys)
                gone_sql += f" AND EXISTS (SELECT 1 FROM _scope c WHERE {in_scope})"
            gone = (
                con.sql(gone_sql).to_arrow_table()
                if delete_missing or scope is not None
                else pa.table({k: pa.array([], data.schema.field(k).type) for k in keys})
            )
        finally:
            con.close()
        if changed.num_rows == 0 and gone.num_rows == 0:
            logger.info("%s: nothing differs, no commit", name)
            return 0
        marked = pa.schema([*data.schema, pa.field(_DELETE, pa.bool_())])
        tombstones = pa.table(
            {
                **{
                    c: (gone.column(c) if c in keys else pa.nulls(gone.num_rows, data.schema.field(c).type)).cast(
                        data.schema.field(c).type
                    )
                    for c in columns
                },
                _DELETE: pa.array([True] * gone.num_rows, pa.bool_()),
            },
            schema=marked,
        )
        changed = changed.cast(marked)
        source = pa.concat_tables([changed, tombstones])
        # keys null-safe, as the DuckDB comparison above (id_changes keys hold nulls)
        predicate = " AND ".join(f"(t.{k} IS NOT DISTINCT FROM s.{k})" for k in keys)
        values = {c: f"s.{c}" for c in columns}
        table = self.table(name)
        (
            table.merge(
                source,
                predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=self._metadata("merge", run_id),
                writer_properties=_writer_properties(table),
            )
            .when_matched_delete(predicate=f"s.{_DELETE}")
            .when_matched_update(updates=values, predicate=f"NOT s.{_DELETE}")
            .when_not_matched_insert(updates=values, predicate=f"NOT s.{_DELETE}")
            .execute()
        )
        return source.num_rows
