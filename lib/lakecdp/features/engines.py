"""Run a feature definition (:mod:`lakecdp.features.definitions`) on Spark or on DuckDB.

On Spark the inputs are DataFrames, bound for one query to temporary views with names of their
own (a session may hold other views called ``events``); on DuckDB they are tables of the
connection and the Spark SQL text is translated by sqlglot with Spark's meaning
(:func:`lakecdp.sqldialect.spark_semantics.spark_semantics`, as
:mod:`lakecdp.sqldialect.translate` does for segments), plus two rewrites of the features' own:
``round(x, d)`` of a double is Spark's (HALF_UP on the double's shortest decimal form, ``1.005``
-> ``1.01``) where DuckDB's rounds ``1.005 * 100`` (``1.0``); and the as-of literals are plain UTC
``TIMESTAMP`` s like the loaded inputs (a ``TIMESTAMPTZ`` literal makes DuckDB convert every row
it is compared with).

Example:
    >>> frame = spark_query(spark, lambda n: rfm_sql(orders=n["orders"], as_of=as_of, config=c), orders=df)
    >>> table = duckdb_query(con, rfm_sql(orders="orders", as_of=as_of, config=c))
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp

from lakecdp.features.definitions import Sql
from lakecdp.sqldialect.spark_semantics import spark_semantics

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

_SPARK_ROUND = "lakecdp_spark_round"
_UTC_SUFFIX = "+00:00"
#: Spark's round of a double: java.math.BigDecimal of Double.toString, setScale HALF_UP (DuckDB's
#: shortest form of a double is Java's; a DECIMAL rounds half away from zero, which is HALF_UP)
_SPARK_ROUND_MACRO = (
    f"CREATE OR REPLACE TEMP MACRO {_SPARK_ROUND}(x, d) AS "
    "CAST(round(CAST(CAST(CAST(x AS DOUBLE) AS VARCHAR) AS DECIMAL(38, 18)), d) AS DOUBLE)"
)


def spark_query(spark: SparkSession, build: Callable[[Mapping[str, str]], Sql], /, **frames: DataFrame) -> DataFrame:
    """The DataFrame of ``build(names)`` with each of ``frames`` bound to the relation ``names[key]``."""
    token = uuid.uuid4().hex[:12]
    names = {key: f"lakecdp_features_{key}_{token}" for key in frames}
    for key, frame in frames.items():
        frame.createOrReplaceTempView(names[key])
    try:
        # analysed here: the plan holds the views' plans, the views can go
        return spark.sql(build(names).text())
    finally:
        for name in names.values():
            spark.catalog.dropTempView(name)


def to_duckdb(sql: Sql) -> str:
    """The DuckDB text of a feature definition (Spark's meaning, see the module docstring)."""
    tree = sqlglot.parse_one(sql.text(), read="spark")

    def features_own(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Round) and node.args.get("decimals") is not None:
            return exp.Anonymous(this=_SPARK_ROUND, expressions=[node.this, node.args["decimals"]])
        if (
            isinstance(node, exp.Cast)
            and isinstance(node.this, exp.Literal)
            and node.this.is_string
            and node.this.name.endswith(_UTC_SUFFIX)
        ):
            # the as-of literals (definitions.timestamp_sql): the inputs' times are UTC TIMESTAMPs on
            # DuckDB; a TIMESTAMPTZ literal would convert every row of a comparison through the zone
            naive = exp.Literal.string(node.this.name.removesuffix(_UTC_SUFFIX))
            return exp.Cast(this=naive, to=exp.DataType.build("TIMESTAMP", dialect="duckdb"))
        return node

    return spark_semantics(tree.transform(features_own)).sql(dialect="duckdb")


def prepare_connection(con: duckdb.DuckDBPyConnection) -> None:
    """UTC like Spark's session, and the macros the translated definitions call."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute(_SPARK_ROUND_MACRO)


def duckdb_query(con: duckdb.DuckDBPyConnection, sql: Sql) -> pa.Table:
    """``sql`` run on ``con`` (prepared by :func:`prepare_connection`), as Arrow."""
    return con.sql(to_duckdb(sql)).to_arrow_table()


def duckdb_create(con: duckdb.DuckDBPyConnection, name: str, sql: Sql) -> None:
    """Table ``name`` of ``con`` from ``sql`` (the activity every feature reads, computed once)."""
    con.execute(f'CREATE OR REPLACE TABLE "{name}" AS {to_duckdb(sql)}')
