"""The two Splink database APIs behind one small interface: prepared records in, Spark
DataFrames out (``duckdb``: Arrow in and out of DuckDB on this machine; ``spark``: the cluster).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.identity.config import IdentityConfig
from lakecdp.identity.prepare import PREPARED_COLUMNS, is_arrow

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession
    from splink.internals.database_api import DatabaseAPISubClass
    from splink.internals.splink_dataframe import SplinkDataFrame

    from lakecdp.identity.prepare import Prepared


class Backend:
    """Registers prepared records with one Splink database API and returns results to Spark."""

    name: str

    def __init__(self, config: IdentityConfig, spark: SparkSession | None) -> None:
        # None on the machine path (records and results stay Arrow): no JVM is started
        self.spark = spark
        self.config = config
        self.db_api = self._make_api()
        # Spark temp views are per session, not per backend: a second identity run in the
        # same SparkSession must not reuse the first run's table names
        self._token = uuid.uuid4().hex[:12]
        self._counter = 0

    def session(self) -> SparkSession:
        """The Spark session results go back to; an error on a backend made without one."""
        if self.spark is None:
            raise RuntimeError(f"the {self.name} identity backend was made without a Spark session")
        return self.spark

    def _make_api(self) -> DatabaseAPISubClass:  # pragma: no cover - abstract
        raise NotImplementedError

    def table_name(self, label: str) -> str:
        self._counter += 1
        return f"lakecdp_{label}_{self._token}_{self._counter}"

    def register(self, prepared: Prepared, label: str) -> SplinkDataFrame:
        raise NotImplementedError

    def to_spark(self, splink_df: SplinkDataFrame, columns: list[str], schema: str) -> DataFrame:
        raise NotImplementedError

    def register_split(self, prepared: DataFrame, new_ids: DataFrame) -> tuple[SplinkDataFrame, ...]:
        """``(all, new, existing)`` registered tables: ``prepared`` and its rows whose
        ``record_id`` is / is not in ``new_ids``."""
        new = prepared.join(new_ids, "record_id", "left_semi")
        existing = prepared.join(new_ids, "record_id", "left_anti")
        return (self.register(prepared, "records"), self.register(new, "new"), self.register(existing, "existing"))


class _DuckDBBackend(Backend):
    name = "duckdb"

    def _make_api(self) -> DatabaseAPISubClass:
        from splink import DuckDBAPI

        from lakecdp.identity.local import duckdb_connection

        # its own memory limit and spill folder (conf/identity.yaml duckdb)
        return DuckDBAPI(connection=duckdb_connection(self.config.duckdb))

    def register(self, prepared: Prepared, label: str) -> SplinkDataFrame:
        # Spark -> Arrow -> DuckDB, no pandas copy; columns in a fixed order (an Arrow
        # table, prepared by lakecdp.identity.local, is registered as it is)
        if is_arrow(prepared):
            table = prepared.select(list(PREPARED_COLUMNS))
        else:
            table = prepared.select(*PREPARED_COLUMNS).toArrow()
        return self.db_api.register(table, table_name=self.table_name(label))

    def register_split(self, prepared: DataFrame, new_ids: DataFrame) -> tuple[SplinkDataFrame, ...]:
        # one Spark job for the records; the split is an Arrow filter on this machine
        import pyarrow.compute as pc

        table = prepared.select(*PREPARED_COLUMNS).toArrow()
        is_new = pc.is_in(
            table.column("record_id"), value_set=new_ids.select("record_id").toArrow().column("record_id")
        )
        return tuple(
            self.db_api.register(part, table_name=self.table_name(label))
            for part, label in (
                (table, "records"),
                (table.filter(is_new), "new"),
                (table.filter(pc.invert(is_new)), "existing"),
            )
        )

    def to_spark(self, splink_df: SplinkDataFrame, columns: list[str], schema: str) -> DataFrame:
        # DuckDB -> Arrow -> Spark: no pandas copy in between
        table = splink_df.as_duckdbpyrelation().select(*columns).to_arrow_table()
        if table.num_rows == 0:
            return self.session().createDataFrame([], schema)
        return self.session().createDataFrame(table.cast(_arrow_schema(schema, columns)), schema)


class _SparkBackend(Backend):
    name = "spark"

    def _make_api(self) -> DatabaseAPISubClass:
        from splink import SparkAPI

        # the session already carries Splink's similarity UDF jar and a checkpoint dir
        # Splink's SparkAPI.__init__ carries no annotations
        return SparkAPI(spark_session=self.session(), break_lineage_method=self.config.spark_break_lineage)  # type: ignore[no-untyped-call]

    def register(self, prepared: Prepared, label: str) -> SplinkDataFrame:
        return self.db_api.register(prepared.select(*PREPARED_COLUMNS), table_name=self.table_name(label))

    def to_spark(self, splink_df: SplinkDataFrame, columns: list[str], schema: str) -> DataFrame:
        frame: DataFrame = splink_df.as_spark_dataframe()
        return frame.select(*[F.col(c).cast(t).alias(c) for c, t in _schema_pairs(schema, columns)])


def _arrow_schema(schema: str, columns: list[str]) -> pa.Schema:
    """The Arrow schema of ``columns`` of a Spark DDL schema of strings and doubles."""
    import pyarrow as pa

    types = {"string": pa.string(), "double": pa.float64(), "bigint": pa.int64(), "int": pa.int32()}
    return pa.schema([(c, types[t]) for c, t in _schema_pairs(schema, columns)])


def _schema_pairs(schema: str, columns: list[str]) -> list[tuple[str, str]]:
    types = dict(part.strip().split(" ", 1) for part in schema.split(","))
    return [(c, types[c]) for c in columns]


def backend_for(config: IdentityConfig, spark: SparkSession | None) -> Backend:
    if config.backend == "duckdb":
        return _DuckDBBackend(config, spark)
    return _SparkBackend(config, spark)
