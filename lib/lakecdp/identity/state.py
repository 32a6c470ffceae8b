"""What the identity job remembers between runs, and which records changed since.

``identity.state`` gets one row per identity run that processed input: the version of
``silver.customer_records`` it read, so the next run reads only the Change Data Feed after
it. A run that finds nothing new writes nothing at all.

Example:
    >>> last = last_state(spark, tables)
    >>> feed = read_change_feed(spark, tables, after_version=last.silver_version,
    ...                         up_to_version=current)
    >>> changed = changed_records(feed)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from lakecdp import catalog

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

    from lakecdp.delta_store import DeltaStore
    from lakecdp.tables import Tables

logger = logging.getLogger(__name__)

STATE_TABLE = catalog.IDENTITY_STATE.name
RECORDS_TABLE = catalog.CUSTOMER_RECORDS.name
STATE_SCHEMA = catalog.IDENTITY_STATE.ddl
# what decides identity and the golden record; run stamps are not a change
CONTENT_COLUMNS = (
    "record_id",
    "source",
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "address_line1",
    "postcode",
    "city",
    "country",
    "device_ids",
    "crm_id",
    "customer_number",
    "email_consent",
    "updated_at",
)


@dataclass(frozen=True)
class IdentityState:
    run_id: str
    silver_version: int
    mode: str


def last_state(spark: SparkSession, tables: Tables) -> IdentityState | None:
    """The latest processed silver version, or None before the first identity run."""
    from pyspark.sql import functions as F

    if not tables.exists(spark, STATE_TABLE):
        return None
    row = (
        tables.read(spark, STATE_TABLE)
        .orderBy(F.col("silver_version").desc(), F.col("processed_at").desc())
        .select("run_id", "silver_version", "mode")
        .first()
    )
    if row is None:
        return None
    return IdentityState(run_id=row["run_id"], silver_version=int(row["silver_version"]), mode=row["mode"])


def record_state(
    spark: SparkSession,
    tables: Tables,
    *,
    run_id: str,
    silver_version: int,
    mode: str,
    records_changed: int,
    processed_at: datetime,
) -> None:
    row = (run_id, silver_version, mode, records_changed, processed_at)
    tables.append(spark.createDataFrame([row], STATE_SCHEMA), STATE_TABLE)


def last_state_local(store: DeltaStore) -> IdentityState | None:
    """:func:`last_state` read with delta-rs (the duckdb backend)."""
    if not store.exists(STATE_TABLE):
        return None
    rows = store.read(STATE_TABLE, columns=["run_id", "silver_version", "mode", "processed_at"]).to_pylist()
    if not rows:
        return None
    # silver_version desc, then processed_at desc (nulls last, as Spark's desc puts them)
    latest = max(
        rows,
        key=lambda r: (
            r["silver_version"],
            r["processed_at"] is not None,
            r["processed_at"].timestamp() if r["processed_at"] is not None else 0.0,
        ),
    )
    return IdentityState(run_id=latest["run_id"], silver_version=int(latest["silver_version"]), mode=latest["mode"])


def record_state_local(
    store: DeltaStore,
    *,
    run_id: str,
    silver_version: int,
    mode: str,
    records_changed: int,
    processed_at: datetime,
) -> None:
    """:func:`record_state` written with delta-rs."""
    import pyarrow as pa

    row = pa.table(
        {
            "run_id": [run_id],
            "silver_version": pa.array([silver_version], pa.int64()),
            "mode": [mode],
            "records_changed": pa.array([records_changed], pa.int64()),
            "processed_at": pa.array([processed_at], pa.timestamp("us", tz="UTC")),
        }
    )
    store.append(row, STATE_TABLE, STATE_SCHEMA, run_id=run_id)


def content_hash(columns: tuple[str, ...] = CONTENT_COLUMNS) -> Column:
    """Column: a hash of the record's identity-relevant content."""
    from pyspark.sql import functions as F

    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in columns])), 256)


def changed_records(feed: DataFrame) -> DataFrame:
    """``record_id`` of records inserted, deleted or updated with new content in ``feed``.

    Args:
        feed: Change Data Feed rows of ``silver.customer_records`` (``_change_type``,
            ``_commit_version`` and the record columns).

    An update whose post-image has the same content as its pre-image (a re-delivery that
    only restamped ``run_id`` / ``ingested_at``) is not a change.
    """
    from pyspark.sql import functions as F

    rows = feed.select("record_id", "_change_type", "_commit_version", content_hash().alias("_hash"))
    per_commit = rows.groupBy("record_id", "_commit_version").agg(
        F.max(F.col("_change_type").isin("insert", "delete").cast("int")).alias("_structural"),
        F.countDistinct("_hash").alias("_versions"),
    )
    return per_commit.where((F.col("_structural") == 1) | (F.col("_versions") > 1)).select("record_id").distinct()


def read_change_feed(
    spark: SparkSession, tables: Tables, *, after_version: int, up_to_version: int
) -> DataFrame | None:
    """Change Data Feed rows of ``silver.customer_records`` in ``(after_version,
    up_to_version]``, or None when it cannot be read for that range (not enabled then,
    vacuumed, or its history removed by an erasure, :mod:`lakecdp.erasure`): run in full.
    Pass it to :func:`changed_records`."""
    from pyspark.sql import functions as F
    from pyspark.errors import PySparkException

    # an erasure vacuums every file and removes the log before its last version: the feed's
    # data files are gone although Delta only finds out half way through reading them
    oldest = tables.delta(spark, RECORDS_TABLE).history().agg(F.min("version")).first()
    assert oldest is not None  # an aggregate gives one row
    earliest = oldest[0]
    if earliest is not None and earliest > after_version + 1:
        logger.warning(
            "history of %s starts at v%d, after v%d (erased or cleaned up): full run",
            RECORDS_TABLE,
            earliest,
            after_version,
        )
        return None
    try:
        feed = tables.read_changes(spark, RECORDS_TABLE, starting_version=after_version + 1)
        feed = feed.where(F.col("_commit_version") <= up_to_version)
        # resolve the plan now so a missing feed is found here, not half way through a run
        feed.schema  # noqa: B018
    except PySparkException as exc:
        logger.warning(
            "change data feed of %s unreadable after v%d (%s): full run",
            RECORDS_TABLE,
            after_version,
            str(exc).splitlines()[0],
        )
        return None
    return feed


def earlier_images(feed: DataFrame, changed: DataFrame) -> DataFrame:
    """The content changed records had before (deleted rows and update pre-images)."""
    from pyspark.sql import functions as F

    return (
        feed.where(F.col("_change_type").isin("delete", "update_preimage"))
        .drop("_change_type", "_commit_version", "_commit_timestamp")
        .join(changed, "record_id", "left_semi")
    )


def read_change_feed_local(store: DeltaStore, *, after_version: int, up_to_version: int) -> pa.Table | None:
    """:func:`read_change_feed` with delta-rs: the feed rows in ``(after_version,
    up_to_version]`` as an Arrow table, or None when they cannot be read (run in full)."""
    earliest = store.earliest_version(RECORDS_TABLE)
    if earliest is not None and earliest > after_version + 1:
        logger.warning(
            "history of %s starts at v%d, after v%d (erased or cleaned up): full run",
            RECORDS_TABLE,
            earliest,
            after_version,
        )
        return None
    try:
        # read now, whole: a missing feed file is found here, not half way through a run
        return store.change_feed(RECORDS_TABLE, starting_version=after_version + 1, ending_version=up_to_version)
    except Exception as exc:  # delta-rs raises DeltaError, OSError or a plain exception by cause
        logger.warning(
            "change data feed of %s unreadable after v%d (%s): full run",
            RECORDS_TABLE,
            after_version,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None


def changed_records_local(feed: pa.Table) -> list[str]:
    """:func:`changed_records` over an Arrow feed: sorted ``record_id`` values."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("feed", feed.select(["_change_type", "_commit_version", *CONTENT_COLUMNS]))
        content = "struct_pack(" + ", ".join(f'"{c}" := "{c}"' for c in CONTENT_COLUMNS) + ")"
        rows = con.execute(f"""
            select distinct record_id from (
                select record_id, _commit_version,
                       bool_or(_change_type in ('insert', 'delete')) as structural,
                       count(distinct {content}) as versions
                from feed group by record_id, _commit_version
            ) where structural or versions > 1
            order by record_id
        """).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def earlier_images_local(feed: pa.Table, changed: list[str]) -> pa.Table:
    """:func:`earlier_images` over an Arrow feed: the content changed records had before."""
    import pyarrow as pa
    import pyarrow.compute as pc

    before = pc.is_in(feed.column("_change_type"), value_set=pa.array(["delete", "update_preimage"]))
    mine = pc.is_in(feed.column("record_id"), value_set=pa.array(changed, pa.string()))
    kept = feed.filter(pc.and_(before, mine))
    return kept.drop_columns(
        [c for c in ("_change_type", "_commit_version", "_commit_timestamp") if c in kept.column_names]
    )
