"""Stable customer ids: carry each person's ``customer_id`` from one identity run to the next.

Clustering names a component by its smallest record id, which changes whenever records
arrive, so clusters are matched to the ids their records held before:

- a cluster keeps the id most of its records held (ties: the oldest id, then the smallest);
- when clusters compete for one id (a **split**), the cluster holding most of that id's records
  keeps it (ties: the bigger cluster, then the smaller cluster key); a loser takes another
  previous id it holds records of if that id is otherwise unused, else a new id is minted;
- a **merge** is a previous id whose records all went to another id;
- brand-new people get minted ids (``new``).

No two clusters ever share an id: each id goes to at most one cluster per pass.

Minted ids are a hash of the cluster's smallest record id, the id that record held before
and the run's ``as_of``, never random: the same inputs always give the same ids.

Example:
    >>> id_map, id_changes = assign_customer_ids(
    ...     clusters, previous_id_map, run_id=ctx.run_id, as_of=ctx.as_of, id_prefix="cus_")
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import Field

from lakecdp import catalog
from lakecdp.columns import require_columns
from lakecdp.config import StrictModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CLUSTER_COLUMNS = ("record_id", "cluster_key", "cluster_size", "link_confidence", "flags")
ID_MAP_COLUMNS = (
    "record_id",
    "customer_id",
    "source",
    "cluster_size",
    "link_confidence",
    "flags",
    "run_id",
    "updated_at",
    "id_created_at",
)
ID_MAP_SCHEMA = catalog.ID_MAP.schema
ID_CHANGES_SCHEMA = catalog.ID_CHANGES.schema


class StableIdSettings(StrictModel):
    """``stable_ids`` section of ``conf/identity.yaml``."""

    # minted ids are ``<id_prefix><16 hex chars>``
    id_prefix: str = Field(default="cus_", pattern=r"^[A-Za-z0-9_-]{0,16}$")


def _previous(previous_id_map: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    require_columns(
        previous_id_map,
        (
            "record_id",
            "customer_id",
            "cluster_size",
            "link_confidence",
            "flags",
            "run_id",
            "updated_at",
            "id_created_at",
        ),
        what="previous id_map",
    )
    return previous_id_map.select(
        "record_id",
        F.col("customer_id").alias("prev_customer_id"),
        F.col("id_created_at").alias("prev_id_created_at"),
        F.col("cluster_size").alias("prev_cluster_size"),
        F.col("link_confidence").alias("prev_link_confidence"),
        F.col("flags").alias("prev_flags"),
        F.col("run_id").alias("prev_run_id"),
        F.col("updated_at").alias("prev_updated_at"),
    )


def _match_previous_ids(votes: DataFrame) -> DataFrame:
    """(cluster_key, customer_id, id_created_at) for clusters that keep a previous id.

    ``votes`` has one row per (cluster_key, prev_customer_id) with ``votes`` (records of the
    cluster that held the id), ``id_created_at`` and ``members`` (the cluster's size).

    Pass 1: every previous id belongs to the cluster holding most of its records (its
    "home"); a cluster keeps the best id homed with it. Pass 2: a cluster left without an
    id takes the best id it voted for that pass 1 left unused (a split part that also holds
    another person's records). Two passes of windows, no iteration: plans stay small.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    best_id = [F.col("votes").desc(), F.col("id_created_at").asc_nulls_last(), F.col("prev_customer_id").asc()]
    best_cluster = [F.col("votes").desc(), F.col("members").desc(), F.col("cluster_key").asc()]
    by_cluster = Window.partitionBy("cluster_key").orderBy(*best_id)
    by_id = Window.partitionBy("prev_customer_id").orderBy(*best_cluster)

    homed = votes.withColumn("_home", F.row_number().over(by_id) == 1)
    first = (
        homed.where("_home")
        .withColumn("_rank", F.row_number().over(by_cluster))
        .where("_rank = 1")
        .select("cluster_key", "prev_customer_id", "id_created_at")
    )
    fallback = (
        votes.join(first.select("cluster_key"), "cluster_key", "left_anti")
        .join(first.select("prev_customer_id"), "prev_customer_id", "left_anti")
        .withColumn("_rank", F.row_number().over(by_cluster))
        .where("_rank = 1")
        .withColumn("_rank", F.row_number().over(by_id))
        .where("_rank = 1")
        .select("cluster_key", "prev_customer_id", "id_created_at")
    )
    return first.unionByName(fallback).withColumnRenamed("prev_customer_id", "customer_id")


def assign_customer_ids(
    clusters: DataFrame,
    previous_id_map: DataFrame | None,
    *,
    run_id: str,
    as_of: datetime,
    id_prefix: str,
) -> tuple[DataFrame, DataFrame]:
    """Give every cluster a stable ``customer_id`` and describe what changed.

    Args:
        clusters: one row per record: ``record_id, cluster_key, cluster_size, link_confidence,
            flags`` (and ``source``; when absent it is read from ``record_id``'s prefix).
        previous_id_map: the ``identity.id_map`` of the last run, or None on the first run.
        run_id: stamped on changed rows.
        as_of: the run's time: ``updated_at`` of changed rows, ``changed_at`` of changes,
            ``id_created_at`` of minted ids, and part of the minted ids' hash.
        id_prefix: prefix of minted ids.

    Returns:
        ``(id_map, id_changes)``: the new ``identity.id_map`` (rows whose id, cluster size,
        confidence and flags did not change keep their previous ``run_id`` / ``updated_at``)
        and the ``identity.id_changes`` rows of this run (empty when nothing changed).

    Example:
        >>> id_map, changes = assign_customer_ids(clusters, None, run_id="r1",
        ...     as_of=datetime(2026, 11, 1, tzinfo=timezone.utc), id_prefix="cus_")
    """
    from pyspark.sql import functions as F

    require_columns(clusters, CLUSTER_COLUMNS, what="clusters")
    spark = clusters.sparkSession
    as_of_lit = F.lit(as_of).cast("timestamp")
    if previous_id_map is None:
        previous_id_map = spark.createDataFrame([], ID_MAP_SCHEMA)
    previous = _previous(previous_id_map)

    source = F.col("source") if "source" in clusters.columns else F.substring_index("record_id", ":", 1)
    members = clusters.select(
        "record_id",
        "cluster_key",
        F.col("cluster_size").cast("int").alias("cluster_size"),
        F.col("link_confidence").cast("double").alias("link_confidence"),
        F.col("flags").cast("array<string>").alias("flags"),
        source.alias("source"),
    ).join(previous, "record_id", "left")

    cluster_facts = members.groupBy("cluster_key").agg(
        F.count(F.lit(1)).alias("members"),
        F.min("record_id").alias("min_record_id"),
        # the id the smallest record held before makes the hash differ from any id minted
        # for the same record earlier, even when runs share an as_of
        F.min_by("prev_customer_id", "record_id").alias("min_record_prev_id"),
        F.count("prev_customer_id").alias("previously_known"),
    )
    votes = (
        members.where(F.col("prev_customer_id").isNotNull())
        .groupBy("cluster_key", "prev_customer_id")
        .agg(F.count(F.lit(1)).alias("votes"), F.min("prev_id_created_at").alias("id_created_at"))
        .join(cluster_facts.select("cluster_key", "members"), "cluster_key")
    )
    kept = _match_previous_ids(votes)

    minted_id = F.concat(
        F.lit(id_prefix),
        F.substring(
            F.sha2(
                F.concat_ws(
                    "|",
                    F.col("min_record_id"),
                    F.date_format(as_of_lit, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"),
                    F.coalesce(F.col("min_record_prev_id"), F.lit("")),
                ),
                256,
            ),
            1,
            16,
        ),
    )
    cluster_ids = (
        cluster_facts.join(kept, "cluster_key", "left").select(
            "cluster_key",
            F.coalesce(F.col("customer_id"), minted_id).alias("customer_id"),
            F.coalesce(F.col("id_created_at"), as_of_lit).alias("id_created_at"),
            F.col("customer_id").isNull().alias("minted"),
            "previously_known",
            "members",
        )
    ).localCheckpoint()  # id_map, moves and new people all derive from these two: once each
    assigned = members.join(cluster_ids, "cluster_key").localCheckpoint()
    unchanged = (
        (F.col("prev_customer_id") == F.col("customer_id"))
        & (F.col("prev_cluster_size") == F.col("cluster_size"))
        & F.col("prev_link_confidence").eqNullSafe(F.col("link_confidence"))
        & F.col("prev_flags").eqNullSafe(F.col("flags"))
    )
    id_map = assigned.select(
        "record_id",
        "customer_id",
        "source",
        "cluster_size",
        "link_confidence",
        "flags",
        F.when(unchanged, F.col("prev_run_id")).otherwise(F.lit(run_id)).alias("run_id"),
        F.when(unchanged, F.col("prev_updated_at")).otherwise(as_of_lit).alias("updated_at"),
        "id_created_at",
    )

    surviving_ids = cluster_ids.select(F.col("customer_id").alias("prev_customer_id"))
    moves = (
        assigned.where(F.col("prev_customer_id").isNotNull() & (F.col("prev_customer_id") != F.col("customer_id")))
        .groupBy("prev_customer_id", "customer_id")
        .agg(F.count(F.lit(1)).cast("int").alias("record_count"))
        .join(surviving_ids.withColumn("_still_used", F.lit(True)), "prev_customer_id", "left")
        .select(
            F.lit(run_id).alias("run_id"),
            F.when(F.col("_still_used"), F.lit("split")).otherwise(F.lit("merge")).alias("change_type"),
            F.col("prev_customer_id").alias("old_customer_id"),
            F.col("customer_id").alias("new_customer_id"),
            "record_count",
            as_of_lit.alias("changed_at"),
        )
    )
    new_people = cluster_ids.where(F.col("minted") & (F.col("previously_known") == 0)).select(
        F.lit(run_id).alias("run_id"),
        F.lit("new").alias("change_type"),
        F.lit(None).cast("string").alias("old_customer_id"),
        F.col("customer_id").alias("new_customer_id"),
        F.col("members").cast("int").alias("record_count"),
        as_of_lit.alias("changed_at"),
    )
    return id_map, moves.unionByName(new_people)
