"""The one SparkSession factory.

Three modes, chosen in ``conf/environments/<env>.yaml`` (``spark.mode``):

- ``local``: adds the Maven-resolved Delta and Kafka jars and Splink's similarity UDF jar
  as ``spark.jars``, the Delta SQL extension and catalog, a checkpoint dir, UTC, ANSI on.
- ``cluster``: ``spark-submit.sh`` supplies ``--packages``; only lakecdp's own settings
  are added here (a jar list would name paths that do not exist on the workers).
- ``databricks``: Delta and Kafka are built into the runtime; add nothing, reuse the
  session the runtime created.

Every mode turns Spark's variable substitution off (``${...}`` in SQL text stays text).

Example:
    >>> from lakecdp.config import load_project
    >>> project = load_project("conf")
    >>> spark = get_session(project)
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.config import Project

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

# Settings every mode but databricks gets. Each has a reason:
_COMMON_CONF: dict[str, str] = {
    # Delta's SQL (MERGE, time travel, DESCRIBE HISTORY) and its catalog for path tables
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # every timestamp is computed and shown in UTC, whatever the machine's zone
    "spark.sql.session.timeZone": "UTC",
    # Spark 4 default, stated so a cluster default cannot switch it off: bad input must
    # go through try_cast / try_to_timestamp, never be silently nulled by a cast
    "spark.sql.ansi.enabled": "true",
    # Change Data Feed on every new table: segments and activation read changes from it
    "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "true",
    # toPandas and createDataFrame from pandas go through Arrow (the UDFs always do)
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet dictionaries of at most 128 KiB a column, none at all for the columns unique by
    # construction (catalog.DICTIONARY_PAGE_BYTES, catalog.UNIQUE_COLUMNS; the embedded engine's
    # writer the same). A batch ingest's Parquet writing -25 % CPU; its bronze
    # files +3 %, silver -3 % (bench/RESULTS.md, "Spark ingest at ~1M rows: session 23")
    "spark.hadoop.parquet.dictionary.page.size": str(catalog.DICTIONARY_PAGE_BYTES),
    **{f"spark.hadoop.parquet.enable.dictionary#{column}": "false" for column in catalog.UNIQUE_COLUMNS},
}

_LOCAL_CONF: dict[str, str] = {
    # a laptop or CI box: the UI only costs start-up time and a port
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # small local data; adaptive execution still merges partitions where it helps
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    # Delta reads a table's log with 50 tasks by default: far too many for laptop-sized tables
    "spark.databricks.delta.snapshotPartitions": "4",
    # VACUUM lists the table folder with this many tasks (Spark's default 10,000): measured on
    # a 2-core box, 78 s per tiny table vs 5 s with 4 (erasure vacuums every table it touched)
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
    # the driver is the only executor: keep its temp files inside the JVM's own tmp
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


# Settings every mode gets, after the environment's own (an environment cannot undo them):
_ENFORCED_CONF: dict[str, str] = {
    # Spark would otherwise expand ${env:X} / ${system:y} in SQL text *before* parsing: a
    # secret in a segment's literal, or a line break that turns a comment into code
    # (docs/security.md, Segment SQL)
    "spark.sql.variable.substitute": "false",
}


def session_conf(project: Project, *, app_name: str | None = None) -> dict[str, str]:
    """The Spark settings :func:`get_session` applies, for inspection and spark-submit."""
    settings = project.environment.spark
    conf: dict[str, str] = {}
    if settings.mode != "databricks":
        conf.update(_COMMON_CONF)
    if settings.mode == "local":
        from lakecdp.jvm import spark_jars

        conf.update(_LOCAL_CONF)
        conf["spark.jars"] = ",".join(spark_jars())
        conf["spark.sql.warehouse.dir"] = str(project.warehouse / "_spark_catalog")
    conf.update(settings.conf)
    conf.update(_ENFORCED_CONF)
    conf["spark.app.name"] = app_name or settings.app_name
    return conf


def get_session(project: Project, *, app_name: str | None = None) -> SparkSession:
    """Build (or reuse) the SparkSession for ``project``'s environment.

    Args:
        project: the loaded project (environment decides the mode).
        app_name: shown in the Spark UI and logs; defaults to the configured name.

    Returns:
        A session with Delta enabled and a checkpoint dir set (Splink's Spark backend
        needs one).
    """
    from pyspark.sql import SparkSession

    settings = project.environment.spark
    builder = SparkSession.builder
    if settings.mode == "local":
        builder = builder.master(settings.master)
        # Python UDF workers (Arrow UDFs: phone parsing, name NFC) must run this interpreter,
        # the one with the project's packages; pyspark otherwise starts "python3" from PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in session_conf(project, app_name=app_name).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # a reused session (databricks, or one built before) keeps its runtime settings: set again
    for key, value in _ENFORCED_CONF.items():
        spark.conf.set(key, value)
    if settings.mode == "local":
        spark.sparkContext.setLogLevel("ERROR")
    checkpoint_dir = project.checkpoints / "spark"
    if settings.mode == "local":
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    spark.sparkContext.setCheckpointDir(str(checkpoint_dir))
    logger.info("spark %s session ready (%s)", spark.version, settings.mode)
    return spark
