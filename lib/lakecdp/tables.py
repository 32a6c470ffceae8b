"""Table resolver and Delta helpers: the only code that touches table storage.

Logical names are ``<layer>.<table>`` (``silver.customer_records``). In path mode they
map to ``<warehouse>/<layer>/<table>``; with a catalog configured to
``<catalog>.<schema>.<table>`` (schema = ``schemas[layer]`` or ``schema_prefix + layer``).

Example:
    >>> tables = Tables(project)
    >>> df = tables.read(spark, "silver.customer_records")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, cast

from lakecdp import catalog
from lakecdp.config import Project

if TYPE_CHECKING:
    from delta.tables import DeltaTable
    from pyspark.sql import Column, DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.types import DataType, StructType

LAYERS = frozenset({"bronze", "quarantine", "silver", "identity", "gold", "segments", "activation", "ops"})
_NAME_RE = re.compile(r"^(?P<layer>[a-z_]+)\.(?P<table>[a-z][a-z0-9_]*)$")
#: the session setting Delta's MERGE takes a commit's ``userMetadata`` from
_COMMIT_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


class TableNameError(ValueError):
    """A logical table name is not ``<layer>.<table>`` with a known layer."""


class TableStore(Protocol):
    """What the pipeline runner needs of a table store, whichever engine is behind it: Spark
    (:class:`SparkStore`, over :class:`Tables`) or delta-rs (:class:`lakecdp.delta_store.DeltaStore`).

    Rows are dicts of plain Python values; timestamps are UTC-aware ``datetime`` both ways.
    :func:`lakecdp.delta_store.table_store` picks the store of a run.
    """

    def exists(self, name: str) -> bool:
        """Whether table ``name`` exists."""
        ...

    def version_or_none(self, name: str) -> int | None:
        """The table's current Delta version, or None when it does not exist yet."""
        ...

    def read_rows(
        self, name: str, *, columns: Sequence[str], where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """``columns`` of the rows whose ``where`` columns equal the values given."""
        ...

    def upsert_rows(
        self, rows: Sequence[Mapping[str, Any]], name: str, schema: str, *, keys: Sequence[str], run_id: str
    ) -> None:
        """Insert ``rows``, or replace the stored rows with their ``keys``; creates the table
        (``schema``: catalogue DDL) when missing."""
        ...


def utc(moment: datetime) -> datetime:
    """``moment`` as a UTC-aware datetime; a naive one is the local time Spark's ``collect``
    returns (the Python process's zone)."""
    return moment.astimezone(timezone.utc)


class Tables:
    """Resolves logical table names and reads / writes Delta tables by them."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.storage = project.environment.storage

    # -- naming -----------------------------------------------------------------------
    @staticmethod
    def split(name: str) -> tuple[str, str]:
        match = _NAME_RE.match(name)
        if not match:
            raise TableNameError(f"table name must be '<layer>.<table>', got {name!r}")
        layer, table = match.group("layer"), match.group("table")
        if layer not in LAYERS:
            raise TableNameError(f"unknown layer {layer!r} in {name!r}; known: {sorted(LAYERS)}")
        return layer, table

    @property
    def uses_catalog(self) -> bool:
        return self.storage.catalog is not None

    def location(self, name: str) -> str:
        """Path of a path-based table (path mode only)."""
        layer, table = self.split(name)
        if self.uses_catalog:
            raise TableNameError(f"{name} is a catalog table; it has no configured path")
        return str(self.project.warehouse / layer / table)

    def identifier(self, name: str) -> str:
        """What Spark SQL accepts for the table: ``delta.`/path``` or ``cat.schema.table``."""
        layer, table = self.split(name)
        if self.uses_catalog:
            schema = self.storage.schemas.get(layer, f"{self.storage.schema_prefix}{layer}")
            return f"`{self.storage.catalog}`.`{schema}`.`{table}`"
        return f"delta.`{self.location(name)}`"

    # -- reading ----------------------------------------------------------------------
    def exists(self, spark: SparkSession, name: str) -> bool:
        from delta.tables import DeltaTable

        if self.uses_catalog:
            return spark.catalog.tableExists(self.identifier(name).replace("`", ""))
        return DeltaTable.isDeltaTable(spark, self.location(name))

    def delta(self, spark: SparkSession, name: str) -> DeltaTable:
        from delta.tables import DeltaTable

        if self.uses_catalog:
            return DeltaTable.forName(spark, self.identifier(name).replace("`", ""))
        return DeltaTable.forPath(spark, self.location(name))

    def read(
        self,
        spark: SparkSession,
        name: str,
        *,
        version: int | None = None,
        timestamp: str | None = None,
    ) -> DataFrame:
        """Read a table, optionally as of a Delta version or timestamp (time travel)."""
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp)
        if self.uses_catalog:
            return reader.table(self.identifier(name).replace("`", ""))
        return reader.load(self.location(name))

    def read_changes(self, spark: SparkSession, name: str, *, starting_version: int) -> DataFrame:
        """Change Data Feed rows since ``starting_version`` (inclusive)."""
        reader = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", starting_version)
        if self.uses_catalog:
            return reader.table(self.identifier(name).replace("`", ""))
        return reader.load(self.location(name))

    def version(self, spark: SparkSession, name: str) -> int | None:
        """Current Delta version of a table, or None when it does not exist yet."""
        if not self.exists(spark, name):
            return None
        row = self.delta(spark, name).history(1).select("version").first()
        return None if row is None else int(row[0])

    # -- writing ----------------------------------------------------------------------
    def _writer(
        self, df: DataFrame, name: str, mode: str, partition_by: Sequence[str], merge_schema: bool
    ) -> DataFrameWriter:
        writer = df.write.format("delta").mode(mode)
        # a table created by this write gets the catalogue's statistics columns (Delta takes
        # ``delta.*`` write options as table properties on creation and ignores them after)
        for key, value in catalog.stats_configuration(name, df.columns).items():
            writer = writer.option(key, value)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if merge_schema:
            writer = writer.option("mergeSchema", "true")
        return writer

    def _save(self, writer: DataFrameWriter, name: str) -> None:
        if self.uses_catalog:
            writer.saveAsTable(self.identifier(name).replace("`", ""))
        else:
            writer.save(self.location(name))

    def append(
        self,
        df: DataFrame,
        name: str,
        *,
        partition_by: Sequence[str] = (),
        merge_schema: bool = False,
        app_transaction: tuple[str, int] | None = None,
        user_metadata: str | None = None,
    ) -> None:
        """Append rows (creating the table on first write).

        Args:
            app_transaction: ``(app_id, version)``: the append is a Delta app transaction
                (``txnAppId`` / ``txnVersion``); Delta skips it when that app id already
                committed this version or a later one (see :meth:`app_transaction_version`).
            user_metadata: this commit's ``userMetadata`` (a write option, not a session setting).
        """
        writer = self._writer(df, name, "append", partition_by, merge_schema)
        if app_transaction is not None:
            writer = writer.option("txnAppId", app_transaction[0]).option("txnVersion", str(app_transaction[1]))
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        self._save(writer, name)

    def app_transaction_version(self, spark: SparkSession, name: str, app_id: str) -> int | None:
        """The latest version the Delta app transaction ``app_id`` committed to ``name`` (None:
        never), read from the table's current snapshot (delta-rs' ``transaction_version``)."""
        jvm: Any = spark._jvm
        log_class = jvm.org.apache.spark.sql.delta.DeltaLog
        if self.uses_catalog:
            identifier = (
                spark._jsparkSession.sessionState()
                .sqlParser()
                .parseTableIdentifier(self.identifier(name).replace("`", ""))
            )
            log = log_class.forTable(spark._jsparkSession, identifier)
        else:
            log = log_class.forTable(spark._jsparkSession, self.location(name))
        none = getattr(getattr(jvm.scala, "None$"), "MODULE$")
        found = log.update(False, none, none).transactions().get(app_id)
        return int(found.get()) if found.isDefined() else None

    def overwrite(
        self,
        df: DataFrame,
        name: str,
        *,
        partition_by: Sequence[str] = (),
        overwrite_schema: bool = False,
        user_metadata: str | None = None,
    ) -> None:
        """Replace the table's contents in one Delta commit (history stays for time travel).

        Args:
            user_metadata: stored as this commit's ``userMetadata`` (read back from the table's
                history); a write option, so no session setting leaks into other writes.
        """
        writer = self._writer(df, name, "overwrite", partition_by, False)
        if overwrite_schema:
            writer = writer.option("overwriteSchema", "true")
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        self._save(writer, name)

    def create_if_missing(self, spark: SparkSession, name: str, schema: str | DataType) -> None:
        """Create an empty table with ``schema`` so readers never meet a missing table.

        ``schema`` is DDL text or a StructType (typed DataType: pyspark types ``StructType.fromDDL``
        so)."""
        if not self.exists(spark, name):
            self.append(spark.createDataFrame([], cast("StructType | str", schema)), name)

    def merge(
        self,
        spark: SparkSession,
        df: DataFrame,
        name: str,
        *,
        keys: Sequence[str],
        update_condition: str | None = None,
        delete_not_matched_by_source: bool = False,
        scope: DataFrame | None = None,
        insert: bool = True,
        user_metadata: str | None = None,
        match_also: Column | None = None,
    ) -> None:
        """Upsert ``df`` into ``name`` on ``keys`` (created from ``df`` if missing).

        Args:
            keys: columns that identify a row; matched rows are updated, others inserted.
            update_condition: SQL over ``t`` (target) and ``s`` (source) that must hold for a
                matched row to be updated, e.g. ``"s.updated_at > t.updated_at"``; None
                updates every match.
            delete_not_matched_by_source: delete target rows absent from ``df`` (full refresh).
            scope: the ``keys`` this write is the whole truth for (a partial refresh):
                target rows whose key is in ``scope`` but not in ``df`` are deleted, rows
                outside it are left alone. ``df``'s keys must be within ``scope``.
            insert: False: rows of ``df`` without a match are left out (update only).
            user_metadata: this commit's ``userMetadata``. Delta's MERGE takes it from the
                session only, so it is set for this call and restored after it.
            match_also: a predicate over ``t`` and ``s`` ANDed to the key match, true for every
                row the keys match (so the rows matched are the same): it lets Delta skip the
                target's files it rules out, e.g. ``t.run_id IN (...)``.
        """
        if not keys:
            raise ValueError("merge needs at least one key column")
        if scope is not None and delete_not_matched_by_source:
            raise ValueError("scope and delete_not_matched_by_source exclude each other")
        if not self.exists(spark, name):
            if insert:
                self.append(df, name, user_metadata=user_metadata)
            return
        keys_match = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        condition: str | Column = keys_match
        if match_also is not None:
            from pyspark.sql import functions as F

            condition = F.expr(keys_match) & match_also
        if scope is None:
            builder = (
                self.delta(spark, name)
                .alias("t")
                .merge(df.alias("s"), condition)
                .whenMatchedUpdateAll(condition=update_condition)
            )
            if insert:
                builder = builder.whenNotMatchedInsertAll()
            if delete_not_matched_by_source:
                builder = builder.whenNotMatchedBySourceDelete()
            if user_metadata is None:
                builder.execute()
                return
            previous = spark.conf.get(_COMMIT_METADATA, None)
            spark.conf.set(_COMMIT_METADATA, user_metadata)
            try:
                builder.execute()
            finally:
                if previous is None:
                    spark.conf.unset(_COMMIT_METADATA)
                else:
                    spark.conf.set(_COMMIT_METADATA, previous)
            return
        if not insert or user_metadata is not None:
            raise ValueError("a scoped merge always inserts and takes no user_metadata")
        # keys in scope without a row in df arrive as tombstones: matched -> deleted
        from pyspark.sql import functions as F

        tombstone = "_lakecdp_tombstone"
        df = df.localCheckpoint()  # read twice below
        gone = scope.select(*keys).distinct().join(df.select(*keys), list(keys), "left_anti")
        source = df.withColumn(tombstone, F.lit(False)).unionByName(
            gone.withColumn(tombstone, F.lit(True)), allowMissingColumns=True
        )
        values: dict[str, str | Column] = {f"`{c}`": f"s.`{c}`" for c in df.columns}
        live = f"NOT s.`{tombstone}`"
        (
            self.delta(spark, name)
            .alias("t")
            .merge(source.alias("s"), condition)
            .whenMatchedDelete(condition=f"s.`{tombstone}`")
            .whenMatchedUpdate(
                condition=live if update_condition is None else f"{live} AND ({update_condition})",
                set=values,
            )
            .whenNotMatchedInsert(condition=live, values=values)
            .execute()
        )


class SparkStore:
    """:class:`TableStore` through Spark: ``tables``' reads and MERGE on the run's session,
    which is asked for on first use only (``session``: e.g. ``lambda: ctx.spark``)."""

    def __init__(self, tables: Tables, session: Callable[[], SparkSession]) -> None:
        self.tables = tables
        self._session = session

    def exists(self, name: str) -> bool:
        return self.tables.exists(self._session(), name)

    def version_or_none(self, name: str) -> int | None:
        return self.tables.version(self._session(), name)

    def last_user_metadata(self, name: str) -> str | None:
        """``userMetadata`` of the table's latest commit."""
        row = self.tables.delta(self._session(), name).history(1).select("userMetadata").first()
        return None if row is None else row[0]

    def read_rows(
        self, name: str, *, columns: Sequence[str], where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        from pyspark.sql import functions as F

        frame = self.tables.read(self._session(), name)
        for column, value in (where or {}).items():
            frame = frame.where(F.col(column) == F.lit(value))
        return [
            {k: utc(v) if isinstance(v, datetime) else v for k, v in row.asDict(recursive=True).items()}
            for row in frame.select(*columns).collect()
        ]

    def upsert_rows(
        self, rows: Sequence[Mapping[str, Any]], name: str, schema: str, *, keys: Sequence[str], run_id: str
    ) -> None:
        """See :meth:`TableStore.upsert_rows` (``run_id`` goes unrecorded: Spark's MERGE takes
        no per-write commit metadata)."""
        from lakecdp.catalog import ddl_struct

        spark = self._session()
        struct = ddl_struct(schema)
        frame = spark.createDataFrame([tuple(row.get(f.name) for f in struct.fields) for row in rows], struct)
        self.tables.merge(spark, frame, name, keys=keys)
