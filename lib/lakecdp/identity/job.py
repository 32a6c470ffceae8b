"""The identity step: silver.customer_records -> edges -> clusters -> stable ids -> golden records.

**Full run** (first run, no usable state, or ``mode="full"``): train the Splink model if none
is saved, predict all pairs, add deterministic edges.

**Incremental run** (afterwards): read the Change Data Feed of ``silver.customer_records``
since the version the last run processed; probabilistic edges of unchanged records are kept
from ``identity.edges``, edges touching changed records are dropped and only the changed
records are scored against the rest (``predict_incremental``). Deterministic edges are
recomputed over all records every run: they are joins on identifiers, cheap next to model
scoring, and whether a value is over-shared depends on every record holding it.

Then only the **affected records** are re-clustered, re-identified and re-survived
(:func:`lakecdp.identity.clustering.affected_records`): changed records, the ends of every
edge that appeared, vanished or changed, closed over whole previous customers and over the
new edges. Every other component is, edge for edge, what it was last run, so its clusters,
ids and golden record cannot change; the writes to ``identity.id_map``,
``identity.identifiers`` and ``gold.customer_profile`` are partial refreshes of that scope
(``Tables.merge(scope=...)``). The result equals a full run on the same data, down to the
run stamps of untouched rows (tested).

A full run re-clusters every edge. Both carry ``customer_id`` over from the previous
``identity.id_map`` (merges and splits go to ``identity.id_changes``). Writes change only
rows whose content changed; a run that finds no new or changed record writes nothing.

Example:
    >>> counts = run(ctx)          # the pipeline step "identity"
    >>> counts["incremental"], counts["records_changed"]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lakecdp import catalog
from lakecdp.identity.state import (
    RECORDS_TABLE,
    last_state,
    changed_records,
    earlier_images,
    read_change_feed,
    record_state,
)

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.context import JobContext
    from lakecdp.identity.config import IdentityConfig
    from lakecdp.identity.local import LocalRecords
    from lakecdp.identity.matching import ProbabilisticMatcher

logger = logging.getLogger(__name__)

ID_MAP_TABLE = catalog.ID_MAP.name
ID_CHANGES_TABLE = catalog.ID_CHANGES.name
EDGES_TABLE = catalog.EDGES.name
IDENTIFIERS_TABLE = catalog.IDENTIFIERS.name
PROFILE_TABLE = catalog.CUSTOMER_PROFILE.name

Mode = Literal["auto", "full", "incremental"]


class IdentityInputError(RuntimeError):
    """The identity step cannot run on what it was given."""


def _spark_jobs_started(spark: SparkSession) -> int | None:
    """How many Spark jobs this session has started (None where the tracker is unavailable)."""
    try:
        ids = spark.sparkContext.statusTracker().getJobIdsForGroup()
    except Exception:  # Spark Connect has no SparkContext
        return None
    return max(ids) + 1 if ids else 0


@contextmanager
def _stage(name: str, timings: dict[str, float] | None = None, spark: SparkSession | None = None) -> Iterator[None]:
    """Log how long a stage of the run took and how many Spark jobs it started (Spark is
    lazy: the actions inside decide); ``timings[name]`` gets the seconds."""
    started = time.perf_counter()
    jobs_before = None if spark is None else _spark_jobs_started(spark)
    yield
    seconds = time.perf_counter() - started
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + seconds
    jobs_after = None if spark is None else _spark_jobs_started(spark)
    if jobs_before is None or jobs_after is None:
        logger.info("identity stage %s: %.1f s", name, seconds)
    else:
        logger.info("identity stage %s: %.1f s, %d Spark jobs", name, seconds, jobs_after - jobs_before)


def _changed_unless(columns: list[str], *, json_columns: tuple[str, ...] = ()) -> str:
    """MERGE update condition: some listed column differs (maps compared as JSON)."""
    parts = []
    for column in columns:
        if column in json_columns:
            parts.append(f"to_json(t.`{column}`) <=> to_json(s.`{column}`)")
        else:
            parts.append(f"t.`{column}` <=> s.`{column}`")
    return "NOT (" + " AND ".join(parts) + ")"


def customer_identifiers(values: DataFrame, id_map: DataFrame, *, run_id: str) -> DataFrame:
    """``identity.identifiers``: each normalised, non-junk identifier value -> its customer.

    Args:
        values: ``identifier_values(records, config)`` of every record holding the values.
        id_map: ``record_id, customer_id``.

    A value held by more than one customer (a household's shared phone) is over-shared and
    left out: an event carrying it cannot be given to one person.
    """
    from pyspark.sql import functions as F

    return (
        values.join(id_map.select("record_id", "customer_id"), "record_id")
        .groupBy("identifier_type", "value")
        .agg(F.countDistinct("customer_id").alias("customers"), F.min("customer_id").alias("customer_id"))
        .where(F.col("customers") == 1)
        .select(
            "identifier_type",
            F.col("value").alias("identifier_value"),
            "customer_id",
            F.lit(run_id).alias("run_id"),
        )
    )


def link_identifiers(ctx: JobContext, identifiers: DataFrame) -> None:
    """Identifier -> customer links made outside matching (a planted campaign's,
    :func:`lakecdp.sample.campaigns.write_planted`) merged into identity.identifiers on
    (type, value): a value already linked takes the new customer. A full identity run afterwards
    rebuilds the table from the id map, dropping these.

    Raises:
        MissingColumnsError: ``identifiers`` lacks a column of the catalogue's table.
    """
    from lakecdp.columns import require_columns

    require_columns(identifiers, catalog.IDENTIFIERS.columns, what="identifiers for identity.identifiers")
    ordered = identifiers.select(*catalog.IDENTIFIERS.columns)
    ctx.tables.merge(ctx.spark, ordered, IDENTIFIERS_TABLE, keys=["identifier_type", "identifier_value"])


def _identifier_scope(values: DataFrame, scope: DataFrame, before: DataFrame, config: IdentityConfig) -> DataFrame:
    """``identifier_type, value`` whose ``identity.identifiers`` row may change: every value
    the re-identified records (``scope``) hold now and every value changed records held
    ``before`` (a value a deleted record shared is no longer over-shared)."""
    from lakecdp.identity.deterministic import identifier_values

    return (
        values.join(scope, "record_id", "left_semi")
        .select("identifier_type", "value")
        .unionByName(identifier_values(before, config).select("identifier_type", "value"))
        .distinct()
    )


def unique_sources(conf_dir: str | os.PathLike[str]) -> list[str]:
    """Sources declared ``unique_records: true`` (each record a different person)."""
    from lakecdp.ingest.sources import load_sources

    return sorted(name for name, source in load_sources(conf_dir).items() if source.unique_records)


def without_links_inside(edges: DataFrame, records: DataFrame, unique: list[str]) -> DataFrame:
    """Edges minus those joining two records of one source declared unique (link-only)."""
    from pyspark.sql import functions as F

    if not unique:
        return edges
    sources = records.select("record_id", "source")
    left = sources.select(F.col("record_id").alias("record_id_l"), F.col("source").alias("_source_l"))
    right = sources.select(F.col("record_id").alias("record_id_r"), F.col("source").alias("_source_r"))
    inside = (F.col("_source_l") == F.col("_source_r")) & F.col("_source_l").isin(unique)
    return (
        edges.join(left, "record_id_l", "left")
        .join(right, "record_id_r", "left")
        .where(~F.coalesce(inside, F.lit(False)))
        .select(*edges.columns)
    )


def _keep_previous_run_ids(edges: DataFrame, previous: DataFrame | None) -> DataFrame:
    """Edges found again keep the run that first found them, so unchanged evidence is unchanged."""
    from pyspark.sql import functions as F

    if previous is None:
        return edges
    keys = ["record_id_l", "record_id_r", "edge_type", "rule"]
    before = previous.select(*keys, F.col("match_probability").alias("_p"), F.col("run_id").alias("_run"))
    return edges.join(before, keys, "left").select(
        *keys,
        "match_probability",
        "match_weight",
        F.when(F.col("_p").eqNullSafe(F.col("match_probability")), F.col("_run"))
        .otherwise(F.col("run_id"))
        .alias("run_id"),
    )


@dataclass
class _Inputs:
    """What a run reads: the records at one version of silver and, on an incremental run, the
    records changed since the last run and what they held before."""

    silver_version: int
    records: DataFrame
    changed: DataFrame | None = None
    before: DataFrame | None = None
    records_changed: int = -1
    # the feed could not be read (e.g. an erasure removed its files): a full run instead
    feed_unreadable: bool = False

    @property
    def incremental(self) -> bool:
        return self.changed is not None


@dataclass
class _OnMachine:
    """The duckdb backend on catalog tables: the records in DuckDB and as Arrow, and the edges."""

    records: LocalRecords
    records_arrow: pa.Table
    edges_arrow: pa.Table


@dataclass
class _Links:
    """The run's edges (all of identity.edges after it) and the identifier values of the records."""

    edges: DataFrame
    values: DataFrame
    edge_count: int
    scored_count: int
    previous_edges: DataFrame | None
    local: _OnMachine | None = None


@dataclass
class _Ids:
    """The stable ids of the clusters: the id map, its changes, and the records re-clustered."""

    id_map: DataFrame
    id_changes: DataFrame
    change_count: int
    previous_id_map: DataFrame | None
    # None: every record is re-clustered, re-identified and re-survived
    scope: DataFrame | None = None
    rescoped: int = -1
    id_map_arrow: pa.Table | None = None


def run_identity(
    ctx: JobContext,
    *,
    mode: Mode = "auto",
    retrain: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, int]:
    """Resolve identities from ``silver.customer_records``.

    Args:
        ctx: the job context.
        mode: ``auto`` (incremental when possible), ``full`` (recompute every edge, still
            keeping ids stable against the previous id map) or ``incremental`` (error when
            no previous run can be continued).
        retrain: train a new model version on the current records first (after a change
            to the ``model`` section of conf/identity.yaml); implies a full run.
        timings: filled with the seconds each stage took (``inputs``, ``score``, ...).

    Returns:
        Counts: ``records``, ``records_changed``, ``incremental`` (1/0), ``edges``,
        ``probabilistic_edges_scored``, ``customers``, ``id_changes``, ``identifiers``.
    """
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.matching import ProbabilisticMatcher

    started = time.perf_counter()
    config = load_identity_config(ctx.project.conf_dir).with_project_root(ctx.project.root)
    if retrain and mode == "incremental":
        raise IdentityInputError("--retrain rescores every pair: use mode 'full' or 'auto'")
    if retrain:
        mode = "full"
    if config.backend == "duckdb" and not ctx.tables.uses_catalog:
        # the duckdb backend on path tables: read and written with delta-rs, no Spark job
        return _run_on_machine(ctx, config, mode=mode, retrain=retrain, timings=timings, started=started)
    inputs = _read_inputs(ctx, mode=mode, timings=timings, started=started)
    if inputs is None:
        return {"records_changed": 0, "incremental": 1}
    matcher = ProbabilisticMatcher(config, spark=ctx.spark, model_dir=ctx.project.path(config.models_dir))
    matcher.run_id = ctx.run_id
    if config.backend == "duckdb":
        # the records leave Spark once, as Arrow; preparing them, scoring, deterministic
        # edges and clustering run in DuckDB / Python (lakecdp.identity.local)
        links = _link_on_machine(ctx, config, inputs, matcher, retrain=retrain, timings=timings)
    else:
        links = _link_in_spark(ctx, config, inputs, matcher, retrain=retrain, timings=timings)
    if timings is not None:  # part of "score"
        timings["train"] = matcher.train_seconds
    ids = _identify(ctx, config, inputs, links, timings)
    _write_identity(ctx, config, inputs, links, ids, timings)
    counts = _record_run(ctx, inputs, links, ids, timings)
    inputs.records.unpersist()
    logger.info("identity %s run: %s", "incremental" if inputs.incremental else "full", counts)
    return counts


def _read_inputs(ctx: JobContext, *, mode: Mode, timings: dict[str, float] | None, started: float) -> _Inputs | None:
    """The records to resolve (cached) and, when the last run is continued, the records
    changed since; None when nothing changed (the state records the run)."""
    spark, tables = ctx.spark, ctx.tables
    silver_version = tables.version(spark, RECORDS_TABLE)
    if silver_version is None:
        raise IdentityInputError(f"{RECORDS_TABLE} does not exist yet: run the ingest step first")

    state = last_state(spark, tables)
    continuable = state is not None and tables.exists(spark, ID_MAP_TABLE) and tables.exists(spark, EDGES_TABLE)
    if mode == "incremental" and not continuable:
        raise IdentityInputError("no previous identity run to continue: run with mode='full'")
    # the run this one continues (None: a full run)
    continued = state if continuable and mode != "full" else None
    if continued is not None and continued.silver_version == silver_version:
        logger.info("%s unchanged since v%d: nothing to do", RECORDS_TABLE, silver_version)
        return None

    records = tables.read(spark, RECORDS_TABLE, version=silver_version).cache()
    feed = changed = None
    if continued is not None:
        feed = read_change_feed(spark, tables, after_version=continued.silver_version, up_to_version=silver_version)
        if feed is not None:
            changed = changed_records(feed)
        elif mode == "incremental":
            raise IdentityInputError(
                f"change data feed of {RECORDS_TABLE} unreadable after v{continued.silver_version}"
            )
    inputs = _Inputs(silver_version, records, feed_unreadable=continued is not None and changed is None)
    if timings is not None:  # versions, state, change feed plan
        timings["inputs"] = time.perf_counter() - started
    if continued is None or feed is None or changed is None:
        return inputs
    with _stage("changes", timings, spark):
        inputs.changed = changed.localCheckpoint()
        inputs.records_changed = inputs.changed.count()
        # what changed records held before: their old identifier values may be freed
        inputs.before = earlier_images(feed, inputs.changed).localCheckpoint()
    if inputs.records_changed == 0:
        logger.info("%s v%d..v%d: no record content changed", RECORDS_TABLE, continued.silver_version, silver_version)
        record_state(
            spark,
            tables,
            run_id=ctx.run_id,
            silver_version=silver_version,
            mode="incremental",
            records_changed=0,
            processed_at=ctx.as_of,
        )
        return None
    return inputs


def _link_on_machine(
    ctx: JobContext,
    config: IdentityConfig,
    inputs: _Inputs,
    matcher: ProbabilisticMatcher,
    *,
    retrain: bool,
    timings: dict[str, float] | None,
) -> _Links:
    """Probabilistic and deterministic edges in DuckDB over the records as Arrow (the duckdb
    backend on catalog tables)."""
    from lakecdp.identity.deterministic import EDGE_SCHEMA
    from lakecdp.identity.local import LocalRecords, final_edges

    spark, tables = ctx.spark, ctx.tables
    previous_edges = tables.read(spark, EDGES_TABLE) if tables.exists(spark, EDGES_TABLE) else None
    unique = unique_sources(ctx.project.conf_dir)
    with _stage("prepare", timings, spark):
        records_arrow = inputs.records.toArrow()
        on_machine = LocalRecords(records_arrow, config)
        prepared = on_machine.prepared()
        # an Arrow copy: identity.edges is overwritten below
        previous_arrow = None if previous_edges is None else previous_edges.toArrow()
        changed_ids = None if inputs.changed is None else inputs.changed.toArrow().column("record_id")
    with _stage("score", timings, spark):
        probabilistic_arrow, scored_count = _score_local(
            matcher, prepared, previous_arrow, changed_ids, retrain=retrain
        )
    with _stage("edges", timings, spark):
        edges_arrow = final_edges(
            on_machine.con,
            deterministic=on_machine.deterministic_edges(run_id=ctx.run_id),
            probabilistic=probabilistic_arrow,
            sources=records_arrow.select(["record_id", "source"]),
            unique=unique,
            previous=previous_arrow,
        )
        edges = spark.createDataFrame(edges_arrow, EDGE_SCHEMA)
        values = spark.createDataFrame(on_machine.identifier_values(), VALUES_SCHEMA)
    return _Links(
        edges,
        values,
        edge_count=edges_arrow.num_rows,
        scored_count=scored_count,
        previous_edges=previous_edges,
        local=_OnMachine(on_machine, records_arrow, edges_arrow),
    )


def _link_in_spark(
    ctx: JobContext,
    config: IdentityConfig,
    inputs: _Inputs,
    matcher: ProbabilisticMatcher,
    *,
    retrain: bool,
    timings: dict[str, float] | None,
) -> _Links:
    """Probabilistic and deterministic edges in Spark (the spark backend): an incremental run
    keeps the previous probabilistic edges between unchanged records and scores the changed."""
    from pyspark.sql import functions as F

    from lakecdp.identity.deterministic import EDGE_SCHEMA, deterministic_edges, identifier_values

    spark, tables, records, changed = ctx.spark, ctx.tables, inputs.records, inputs.changed
    previous_edges = tables.read(spark, EDGES_TABLE) if tables.exists(spark, EDGES_TABLE) else None
    unique = unique_sources(ctx.project.conf_dir)
    with _stage("score", timings, spark):
        if changed is not None:
            assert previous_edges is not None  # an incremental run continues one that wrote identity.edges
            new_records = records.join(changed, "record_id", "left_semi")
            existing = records.join(changed, "record_id", "left_anti")
            touched_l = changed.select(F.col("record_id").alias("record_id_l"))
            touched_r = changed.select(F.col("record_id").alias("record_id_r"))
            kept = (
                previous_edges.where(F.col("edge_type") == "probabilistic")
                .join(touched_l, "record_id_l", "left_anti")
                .join(touched_r, "record_id_r", "left_anti")
            )
            if new_records.isEmpty():  # only deletions: nothing to score
                scored = spark.createDataFrame([], EDGE_SCHEMA)
            else:
                scored = matcher.predict_incremental(new_records, existing).localCheckpoint()
            probabilistic = kept.unionByName(scored)
        else:
            scored = matcher.predict(records, retrain=retrain).localCheckpoint()
            probabilistic = scored
        scored_count = scored.count()
    with _stage("edges", timings, spark):
        values = identifier_values(records, config).localCheckpoint()
        deterministic, _ = deterministic_edges(records, config, run_id=ctx.run_id, values=values)
        edge_columns = [c.split(" ")[0] for c in EDGE_SCHEMA.split(", ")]
        linked = without_links_inside(
            deterministic.unionByName(probabilistic).select(*edge_columns),
            records,
            unique,
        )
        # checkpointed: identity.edges is overwritten below while these rows derive from it
        edges = _keep_previous_run_ids(linked, previous_edges).localCheckpoint()
        edge_count = edges.count()
    return _Links(edges, values, edge_count=edge_count, scored_count=scored_count, previous_edges=previous_edges)


def _identify(
    ctx: JobContext, config: IdentityConfig, inputs: _Inputs, links: _Links, timings: dict[str, float] | None
) -> _Ids:
    """Clusters over the edges and their stable ids: of every record (full run) or of the
    records the changes affect (incremental run)."""
    from lakecdp.identity.clustering import affected_records, cluster_edges
    from lakecdp.identity.stable_ids import assign_customer_ids

    spark, tables, edges = ctx.spark, ctx.tables, links.edges
    previous_id_map = tables.read(spark, ID_MAP_TABLE) if tables.exists(spark, ID_MAP_TABLE) else None
    nodes = inputs.records.select("record_id", "source")
    scope = None  # None: every record is re-clustered, re-identified and re-survived
    rescoped = -1
    if inputs.changed is not None:
        with _stage("affected", timings, spark):
            assert links.previous_edges is not None and previous_id_map is not None  # an incremental run continues one
            scope = affected_records(inputs.changed, edges, links.previous_edges, previous_id_map, config.edge_floor)
            nodes = nodes.join(scope, "record_id", "left_semi")
            rescoped = scope.count()
    inside = edges
    if scope is not None:
        inside = edges.join(scope.withColumnRenamed("record_id", "record_id_l"), "record_id_l", "left_semi").join(
            scope.withColumnRenamed("record_id", "record_id_r"), "record_id_r", "left_semi"
        )
    id_map_arrow = None
    with _stage("cluster+ids", timings, spark):
        if links.local is not None:
            from lakecdp.identity.local import assign_customer_ids_local
            from lakecdp.identity.stable_ids import ID_CHANGES_SCHEMA, ID_MAP_SCHEMA

            clusters_arrow = _cluster_local(
                links.local.records.con,
                links.local.records_arrow,
                links.local.edges_arrow,
                None if scope is None else scope.toArrow().column("record_id"),
                config,
            )
            id_map_arrow, id_changes_arrow = assign_customer_ids_local(
                clusters_arrow,
                None if previous_id_map is None else previous_id_map.toArrow(),
                run_id=ctx.run_id,
                as_of=ctx.as_of,
                id_prefix=config.stable_ids.id_prefix,
            )
            # rows held in this process, not a plan over identity.id_map: safe to merge into it
            id_map = spark.createDataFrame(id_map_arrow, ID_MAP_SCHEMA)
            id_changes = spark.createDataFrame(id_changes_arrow, ID_CHANGES_SCHEMA)
            change_count = id_changes_arrow.num_rows
        else:
            dated = nodes.join(inputs.records.select("record_id", "date_of_birth"), "record_id")
            clusters = cluster_edges(dated, inside, config).join(nodes, "record_id")
            id_map, id_changes = assign_customer_ids(
                clusters,
                previous_id_map,
                run_id=ctx.run_id,
                as_of=ctx.as_of,
                id_prefix=config.stable_ids.id_prefix,
            )
            # identity.id_map is merged into below while these rows derive from it: materialise first
            id_map = id_map.localCheckpoint()
            id_changes = id_changes.localCheckpoint()
            change_count = id_changes.count()
    return _Ids(id_map, id_changes, change_count, previous_id_map, scope, rescoped, id_map_arrow)


def _write_identity(
    ctx: JobContext,
    config: IdentityConfig,
    inputs: _Inputs,
    links: _Links,
    ids: _Ids,
    timings: dict[str, float] | None,
) -> None:
    """Write edges, id changes, id map, identifiers and golden records: in full, or (incremental)
    as partial refreshes of what the affected records are the whole truth for."""
    from lakecdp.identity.survivorship import PROFILE_COLUMNS, golden_records

    spark, tables, records, values = ctx.spark, ctx.tables, inputs.records, links.values
    scope, id_map = ids.scope, ids.id_map
    # what the partial writes below are the whole truth for (None: everything)
    customer_scope = value_scope = None
    if scope is not None:
        with _stage("scopes", timings, spark):
            assert ids.previous_id_map is not None and inputs.before is not None  # a scope: an incremental run
            old_ids = ids.previous_id_map.join(scope, "record_id", "left_semi").select("customer_id")
            customer_scope = old_ids.unionByName(id_map.select("customer_id")).distinct().localCheckpoint()
            value_scope = _identifier_scope(values, scope, inputs.before, config).localCheckpoint()

    # every input is computed: write, each table once. id_changes goes first, keyed so that
    # a run killed after it and resumed (same run id, same inputs) writes the same rows once;
    # written after id_map, a kill in between would lose the changes (the re-run sees none)
    with _stage("write edges+id_map", timings, spark):
        tables.overwrite(links.edges, EDGES_TABLE)
        if ids.change_count:
            tables.merge(
                spark,
                ids.id_changes,
                ID_CHANGES_TABLE,
                keys=["run_id", "change_type", "old_customer_id", "new_customer_id"],
            )
        tables.merge(
            spark,
            id_map,
            ID_MAP_TABLE,
            keys=["record_id"],
            update_condition=_changed_unless(
                ["customer_id", "source", "cluster_size", "link_confidence", "flags", "id_created_at"]
            ),
            delete_not_matched_by_source=scope is None,
            scope=scope,
        )

    with _stage("identifiers", timings, spark):
        holding = values
        if value_scope is not None:
            holding = values.join(value_scope, ["identifier_type", "value"], "left_semi")
        # a full run's id map is the whole table: no read of what was just written
        owners = id_map if scope is None else tables.read(spark, ID_MAP_TABLE)
        identifiers = customer_identifiers(holding, owners, run_id=ctx.run_id)
        tables.merge(
            spark,
            identifiers,
            IDENTIFIERS_TABLE,
            keys=["identifier_type", "identifier_value"],
            update_condition=_changed_unless(["customer_id"]),
            delete_not_matched_by_source=value_scope is None,
            scope=None if value_scope is None else value_scope.withColumnRenamed("value", "identifier_value"),
        )
    with _stage("profiles", timings, spark):
        members = records if scope is None else records.join(scope, "record_id", "left_semi")
        profiles = golden_records(members, id_map, config.survivorship, run_id=ctx.run_id)
        tables.merge(
            spark,
            profiles,
            PROFILE_TABLE,
            keys=["customer_id"],
            update_condition=_changed_unless(
                [c for c in PROFILE_COLUMNS if c not in ("customer_id", "run_id")],
                json_columns=("provenance",),
            ),
            delete_not_matched_by_source=customer_scope is None,
            scope=customer_scope,
        )


def _record_run(
    ctx: JobContext, inputs: _Inputs, links: _Links, ids: _Ids, timings: dict[str, float] | None
) -> dict[str, int]:
    """Record the run in identity.state; its counts."""
    spark, tables = ctx.spark, ctx.tables
    with _stage("state+counts", timings, spark):
        record_state(
            spark,
            tables,
            run_id=ctx.run_id,
            silver_version=inputs.silver_version,
            mode="incremental" if inputs.incremental else "full",
            records_changed=inputs.records_changed,
            processed_at=ctx.as_of,
        )
        if links.local is not None:
            record_count = links.local.records_arrow.num_rows
        else:
            record_count = inputs.records.count()
        if ids.id_map_arrow is not None and ids.scope is None:  # a full run's id map is the whole table
            customer_count = len(set(ids.id_map_arrow.column("customer_id").to_pylist()))
        else:
            customer_count = tables.read(spark, ID_MAP_TABLE).select("customer_id").distinct().count()
        return {
            "records": record_count,
            "records_changed": inputs.records_changed,
            "incremental": int(inputs.incremental),
            "feed_unreadable": int(inputs.feed_unreadable),
            "edges": links.edge_count,
            "probabilistic_edges_scored": links.scored_count,
            "customers": customer_count,
            "id_changes": ids.change_count,
            # records re-clustered (every record in a full run)
            "records_rescoped": ids.rescoped if ids.scope is not None else -1,
        }


VALUES_SCHEMA = "record_id string, person_key string, identifier_type string, value string"
ID_MAP_COMPARED = ["customer_id", "source", "cluster_size", "link_confidence", "flags", "id_created_at"]


def _run_on_machine(
    ctx: JobContext,
    config: IdentityConfig,
    *,
    mode: Mode,
    retrain: bool,
    timings: dict[str, float] | None,
    started: float,
) -> dict[str, int]:
    """:func:`run_identity` on the duckdb backend with every table read and written by
    delta-rs (:class:`lakecdp.delta_store.DeltaStore`): the records (and their change data
    feed), the previous edges and id map, the state; edges, id map, id changes, identifiers,
    golden records and state written as one commit each (none where nothing differs). The
    same steps and rules as the Spark I/O path below, full and incremental; no Spark job runs.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakecdp.delta_store import DeltaStore
    from lakecdp.identity.local import (
        LocalRecords,
        affected_records_local,
        assign_customer_ids_local,
        customer_identifiers_local,
        final_edges,
    )
    from lakecdp.identity.matching import ProbabilisticMatcher
    from lakecdp.identity.state import (
        changed_records_local,
        earlier_images_local,
        last_state_local,
        read_change_feed_local,
        record_state_local,
    )
    from lakecdp.identity.survivorship import PROFILE_COLUMNS, golden_records_local

    store = DeltaStore(ctx, label="lakecdp-identity")
    run_id = ctx.run_id
    silver_version = store.version_or_none(RECORDS_TABLE)
    if silver_version is None:
        raise IdentityInputError(f"{RECORDS_TABLE} does not exist yet: run the ingest step first")
    state = last_state_local(store)
    continuable = state is not None and store.exists(ID_MAP_TABLE) and store.exists(EDGES_TABLE)
    if mode == "incremental" and not continuable:
        raise IdentityInputError("no previous identity run to continue: run with mode='full'")
    # the run this one continues (None: a full run)
    continued = state if continuable and mode != "full" else None
    if continued is not None and continued.silver_version == silver_version:
        logger.info("%s unchanged since v%d: nothing to do", RECORDS_TABLE, silver_version)
        return {"records_changed": 0, "incremental": 1}
    feed = None
    if continued is not None:
        feed = read_change_feed_local(store, after_version=continued.silver_version, up_to_version=silver_version)
        if feed is None and mode == "incremental":
            raise IdentityInputError(
                f"change data feed of {RECORDS_TABLE} unreadable after v{continued.silver_version}"
            )
    incremental = feed is not None
    # the feed could not be read (e.g. an erasure removed its files): a full run instead
    feed_unreadable = continued is not None and not incremental
    changed: list[str] = []
    records_changed = -1
    if continued is not None and feed is not None:
        changed = changed_records_local(feed)
        records_changed = len(changed)
        if records_changed == 0:
            logger.info(
                "%s v%d..v%d: no record content changed", RECORDS_TABLE, continued.silver_version, silver_version
            )
            record_state_local(
                store,
                run_id=run_id,
                silver_version=silver_version,
                mode="incremental",
                records_changed=0,
                processed_at=ctx.as_of,
            )
            return {"records_changed": 0, "incremental": 1}
    records = store.read_in_spark_order(RECORDS_TABLE, version=silver_version)
    previous_edges = store.read(EDGES_TABLE) if store.exists(EDGES_TABLE) else None
    previous_id_map = store.read(ID_MAP_TABLE) if store.exists(ID_MAP_TABLE) else None
    if timings is not None:
        timings["inputs"] = time.perf_counter() - started

    matcher = ProbabilisticMatcher(config, spark=None, model_dir=ctx.project.path(config.models_dir))
    matcher.run_id = run_id
    with _stage("prepare", timings):
        on_machine = LocalRecords(records, config)
        prepared = on_machine.prepared()
    with _stage("score", timings):
        changed_ids = pa.array(changed, pa.string()) if incremental else None
        probabilistic, scored_count = _score_local(matcher, prepared, previous_edges, changed_ids, retrain=retrain)
    with _stage("deterministic", timings):
        deterministic = on_machine.deterministic_edges(run_id=run_id)
    with _stage("edges", timings):
        edges = final_edges(
            on_machine.con,
            deterministic=deterministic,
            probabilistic=probabilistic,
            sources=records.select(["record_id", "source"]),
            unique=unique_sources(ctx.project.conf_dir),
            previous=previous_edges,
        )
    if timings is not None:  # part of "score"
        timings["train"] = matcher.train_seconds
    scope = None  # None: every record is re-clustered, re-identified and re-survived
    if incremental:
        with _stage("affected", timings):
            scope = pa.array(
                affected_records_local(changed, edges, previous_edges, previous_id_map, config.edge_floor),
                pa.string(),
            )
    with _stage("cluster+ids", timings):
        clusters = _cluster_local(on_machine.con, records, edges, scope, config)
        id_map, id_changes = assign_customer_ids_local(
            clusters,
            previous_id_map,
            run_id=run_id,
            as_of=ctx.as_of,
            id_prefix=config.stable_ids.id_prefix,
        )
    values = on_machine.identifier_values()
    # what the partial writes below are the whole truth for (None: everything)
    customer_scope = value_scope = None
    if scope is not None:
        with _stage("scopes", timings):
            assert previous_id_map is not None  # a scope: an incremental run, which continues one
            in_scope = pc.is_in(previous_id_map.column("record_id"), value_set=scope)
            old_ids = previous_id_map.filter(in_scope).column("customer_id")
            ids = pa.chunked_array([*old_ids.chunks, *id_map.column("customer_id").chunks], pa.string())
            customer_scope = pa.table({"customer_id": pc.unique(ids)})
            held = values.filter(pc.is_in(values.column("record_id"), value_set=scope))
            before = earlier_images_local(feed, changed)
            parts = [held.select(["identifier_type", "value"])]
            if before.num_rows:
                freed = LocalRecords(before, config).identifier_values()
                parts.append(freed.select(["identifier_type", "value"]))
            distinct = pa.concat_tables(parts).group_by(["identifier_type", "value"]).aggregate([])
            value_scope = distinct.select(["identifier_type", "value"])

    # every input is computed: write, each table once, in the Spark path's order (id_changes
    # before id_map: see run_identity)
    with _stage("write edges+id_map", timings):
        store.overwrite(edges, EDGES_TABLE, catalog.EDGES.ddl, run_id=run_id)
        if id_changes.num_rows:
            store.upsert(
                id_changes, ID_CHANGES_TABLE, catalog.ID_CHANGES.ddl, keys=catalog.ID_CHANGES.keys, run_id=run_id
            )
        store.upsert(
            id_map,
            ID_MAP_TABLE,
            catalog.ID_MAP.ddl,
            keys=["record_id"],
            compare=ID_MAP_COMPARED,
            delete_missing=scope is None,
            scope=None if scope is None else pa.table({"record_id": scope}),
            run_id=run_id,
        )
    with _stage("identifiers", timings):
        holding = values
        if value_scope is not None:
            holding = values.join(value_scope, keys=["identifier_type", "value"], join_type="left semi")
        # a full run's id map is the whole table: no read of what was just written
        owners = id_map if scope is None else store.read(ID_MAP_TABLE, columns=["record_id", "customer_id"])
        identifiers = customer_identifiers_local(holding, owners, run_id=run_id)
        store.upsert(
            identifiers,
            IDENTIFIERS_TABLE,
            catalog.IDENTIFIERS.ddl,
            keys=["identifier_type", "identifier_value"],
            compare=["customer_id"],
            delete_missing=value_scope is None,
            scope=None if value_scope is None else value_scope.rename_columns(["identifier_type", "identifier_value"]),
            run_id=run_id,
        )
    with _stage("profiles", timings):
        members = records if scope is None else records.filter(pc.is_in(records.column("record_id"), value_set=scope))
        profiles = golden_records_local(members, id_map, config.survivorship, run_id=run_id)
        store.upsert(
            profiles,
            PROFILE_TABLE,
            catalog.CUSTOMER_PROFILE.ddl,
            keys=["customer_id"],
            compare=[c for c in PROFILE_COLUMNS if c not in ("customer_id", "run_id")],
            delete_missing=customer_scope is None,
            scope=customer_scope,
            run_id=run_id,
        )
    with _stage("state+counts", timings):
        record_state_local(
            store,
            run_id=run_id,
            silver_version=silver_version,
            mode="incremental" if incremental else "full",
            records_changed=records_changed,
            processed_at=ctx.as_of,
        )
        customers = id_map if scope is None else store.read(ID_MAP_TABLE, columns=["customer_id"])
        counts = {
            "records": records.num_rows,
            "records_changed": records_changed,
            "incremental": int(incremental),
            "feed_unreadable": int(feed_unreadable),
            "edges": edges.num_rows,
            "probabilistic_edges_scored": scored_count,
            "customers": len(pc.unique(customers.column("customer_id"))),
            "id_changes": id_changes.num_rows,
            # records re-clustered (every record in a full run)
            "records_rescoped": -1 if scope is None else len(scope),
        }
    on_machine.con.close()
    logger.info("identity %s run (delta-rs): %s", "incremental" if incremental else "full", counts)
    return counts


def _score_local(
    matcher: ProbabilisticMatcher,
    prepared: pa.Table,
    previous: pa.Table | None,
    changed_ids: pa.Array | None,
    *,
    retrain: bool,
) -> tuple[pa.Table, int]:
    """Probabilistic edges over the prepared Arrow records (duckdb backend):
    ``(edges, pairs scored)``. Incremental (``changed_ids`` given): the previous run's
    probabilistic edges not touching a changed record, plus the changed records scored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if changed_ids is None:
        scored = matcher.predict_local(prepared, retrain=retrain)
        return scored, scored.num_rows
    assert previous is not None  # an incremental run continues one that wrote identity.edges
    kept = previous.filter(
        pc.and_(
            pc.equal(previous.column("edge_type"), "probabilistic"),
            pc.invert(
                pc.or_(
                    pc.is_in(previous.column("record_id_l"), value_set=changed_ids),
                    pc.is_in(previous.column("record_id_r"), value_set=changed_ids),
                )
            ),
        )
    )
    new_ids = pc.filter(prepared.column("record_id"), pc.is_in(prepared.column("record_id"), value_set=changed_ids))
    if len(new_ids) == 0:  # only deletions: nothing to score
        scored = kept.schema.empty_table()
    else:
        scored = matcher.predict_incremental_local(prepared, new_ids).cast(kept.schema)
    return pa.concat_tables([kept, scored]), scored.num_rows


def _cluster_local(
    con: duckdb.DuckDBPyConnection, records: pa.Table, edges: pa.Table, scope: pa.Array | None, config: IdentityConfig
) -> pa.Table:
    """:func:`lakecdp.identity.clustering.cluster_edges` of the records (those in ``scope``
    when given) over the edges between them, on this machine: ``record_id, cluster_key,
    cluster_size, link_confidence, flags, source`` as an Arrow table."""
    import pyarrow.compute as pc

    from lakecdp.identity.clustering import cluster_arrow
    from lakecdp.identity.local import kept_edges_local

    nodes = records.select(["record_id", "source"])
    if scope is not None:
        nodes = nodes.filter(pc.is_in(nodes.column("record_id"), value_set=scope))
    kept = kept_edges_local(con, edges, nodes, config.edge_floor)
    return cluster_arrow(nodes, kept, config, records.select(["record_id", "date_of_birth"]))


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline step ``identity``: incremental when a previous run can be continued."""
    return run_identity(ctx, mode="auto")


def _command(args: argparse.Namespace) -> int:
    """The pipeline step ``identity`` with ``--mode`` / ``--retrain``, recorded in ``ops.runs``."""
    from lakecdp.config import load_project
    from lakecdp.pipeline import run_step_command

    counts = run_step_command(
        load_project(args.conf, env=args.env),
        "identity",
        call=lambda ctx: run_identity(ctx, mode=args.mode, retrain=args.retrain),
    )
    return 1 if counts is None else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lakecdp identity [--mode auto|full|incremental] [--retrain]``."""
    parser = subparsers.add_parser("identity", help="resolve identities: stable customer ids and golden records")
    parser.add_argument(
        "--mode",
        choices=["auto", "full", "incremental"],
        default="auto",
        help="auto: incremental when a previous run can be continued (default)",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train a new model version on the current records first (after changing the "
        "model section of conf/identity.yaml); runs in full mode",
    )
    parser.set_defaults(handler=_command)
