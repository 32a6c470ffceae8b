"""Pipeline step ``features``: gold.customer_features as of ``ctx.as_of``.

Reads the silver tables and the identity graph, computes every feature as of the run's
as-of time (the definitions of :mod:`lakecdp.features.definitions`, on DuckDB with delta-rs on
``engine: embedded``, else on Spark) and replaces gold.customer_features in one Delta commit (earlier as-of states
stay readable through Delta time travel). The commit carries a fingerprint of the inputs'
Delta versions, as_of and config; a re-run with the same fingerprint writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.features._time import as_of_utc
from lakecdp.features.config import FeaturesConfig, load_features_config

if TYPE_CHECKING:
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore

logger = logging.getLogger(__name__)

OUTPUT = catalog.CUSTOMER_FEATURES.name
REQUIRED_INPUTS = (catalog.EVENTS.name, catalog.ORDERS.name, catalog.ORDER_ITEMS.name, catalog.IDENTIFIERS.name)
OPTIONAL_INPUTS = {
    catalog.PRODUCTS.name: catalog.PRODUCTS.schema,
    catalog.CUSTOMER_PROFILE.name: "customer_id string",
}


class MissingInputError(RuntimeError):
    """An input table the features step needs has not been written yet."""


def config_path(ctx: JobContext):
    return ctx.project.conf_dir / "features.yaml"


def inputs_fingerprint(as_of_iso: str, versions: dict[str, int | None], config: FeaturesConfig) -> str:
    """What decides the output: as_of, every input's Delta version, and the config."""
    payload = json.dumps(
        {"as_of": as_of_iso, "inputs": versions, "config": config.model_dump(mode="json")},
        sort_keys=True,
    )
    return "features:" + hashlib.sha256(payload.encode()).hexdigest()


class _Log:
    """Existence, versions and the last commit of tables: from the Delta log with delta-rs on the
    embedded engine (milliseconds), else through Spark (a job and a log replay each, a second or
    more under load; the step asks a dozen times)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        from lakecdp.delta_store import embedded_store

        self.store = embedded_store(ctx, label="lakecdp-features")

    def exists(self, name: str) -> bool:
        return self.store.exists(name) if self.store is not None else self.ctx.tables.exists(self.ctx.spark, name)

    def version(self, name: str) -> int | None:
        if self.store is not None:
            return self.store.version_or_none(name)
        return self.ctx.tables.version(self.ctx.spark, name)

    def last_commit(self, name: str) -> dict:
        """``userMetadata`` and ``operationMetrics`` of the table's latest commit ({} if none)."""
        if not self.exists(name):
            return {}
        if self.store is not None:
            history = self.store.table(name).history(1)
            return history[0] if history else {}
        row = self.ctx.tables.delta(self.ctx.spark, name).history(1).select("userMetadata", "operationMetrics").first()
        return {} if row is None else {"userMetadata": row[0], "operationMetrics": row[1]}


def _last_fingerprint(ctx: JobContext, log: _Log | None = None) -> str | None:
    return (log or _Log(ctx)).last_commit(OUTPUT).get("userMetadata")


def run(ctx: JobContext, *, config: FeaturesConfig | None = None) -> dict[str, int]:
    """Compute and write gold.customer_features as of ``ctx.as_of``.

    On ``engine: embedded`` (path-based tables) the definitions run on DuckDB and the table is
    written with delta-rs; else on Spark. Both engines compute the same rows.

    Returns:
        counts for ops.runs: ``customers`` written, ``events_unmatched`` / ``orders_unmatched``
        (rows no identifier resolved), ``skipped`` (1 when the inputs were unchanged).
    """
    log = _Log(ctx)
    config = config or load_features_config(config_path(ctx))
    missing = [name for name in REQUIRED_INPUTS if not log.exists(name)]
    if missing:
        raise MissingInputError(f"features: input table(s) {missing} do not exist yet; run ingest and identity first")
    versions = {name: log.version(name) for name in (*REQUIRED_INPUTS, *OPTIONAL_INPUTS)}
    as_of = as_of_utc(ctx.as_of)
    fingerprint = inputs_fingerprint(as_of.isoformat(), versions, config)
    if _last_fingerprint(ctx, log) == fingerprint:
        logger.info("features: inputs, as_of and config unchanged since the last run; nothing to write")
        return {"customers": 0, "events_unmatched": 0, "orders_unmatched": 0, "skipped": 1}

    logger.info("features: computing as of %s (inputs %s)", as_of.isoformat(), versions)
    if log.store is not None:
        counts = _run_embedded(ctx, log.store, config=config, fingerprint=fingerprint)
    else:
        counts = _run_spark(ctx, log, config=config, fingerprint=fingerprint)
    logger.info("features as of %s written: %s", as_of.isoformat(), counts)
    return counts


def _run_embedded(ctx: JobContext, store: DeltaStore, *, config: FeaturesConfig, fingerprint: str) -> dict[str, int]:
    """The definitions on DuckDB over the inputs' live files; one delta-rs commit."""
    from lakecdp.features.embedded import compute_features_duckdb, connection, load_inputs

    con = connection()
    try:
        load_inputs(con, store)
        features, unmatched = compute_features_duckdb(con, as_of=as_of_utc(ctx.as_of), config=config, run_id=ctx.run_id)
    finally:
        con.close()
    logger.info("features: computed on the embedded engine, writing %s", OUTPUT)
    store.overwrite(features, OUTPUT, catalog.CUSTOMER_FEATURES.ddl, run_id=ctx.run_id, user_metadata=fingerprint)
    return {
        "customers": features.num_rows,
        "events_unmatched": unmatched.events,
        "orders_unmatched": unmatched.orders,
        "skipped": 0,
    }


def _run_spark(ctx: JobContext, log: _Log, *, config: FeaturesConfig, fingerprint: str) -> dict[str, int]:
    from pyspark.sql import functions as F

    from lakecdp.features.compute import Activity, features_from_activity, prepare_activity

    spark, tables = ctx.spark, ctx.tables
    frames = {name: tables.read(spark, name) for name in REQUIRED_INPUTS}
    for name, ddl in OPTIONAL_INPUTS.items():
        frames[name] = tables.read(spark, name) if log.exists(name) else spark.createDataFrame([], ddl)
    as_of = as_of_utc(ctx.as_of)
    identifiers = frames[catalog.IDENTIFIERS.name].cache()
    activity = prepare_activity(
        events=frames[catalog.EVENTS.name],
        orders=frames[catalog.ORDERS.name],
        order_items=frames[catalog.ORDER_ITEMS.name],
        products=frames[catalog.PRODUCTS.name],
        identifiers=identifiers,
        as_of=as_of,
        config=config,
    )
    # every feature reads the same resolved events, orders and lines: cached, the identity
    # lookups and Delta scans run once instead of once per feature
    activity = Activity(*(frame.cache() for frame in activity))
    try:
        features = features_from_activity(
            activity,
            identifiers=identifiers,
            profiles=frames[catalog.CUSTOMER_PROFILE.name],
            as_of=as_of,
            config=config,
            run_id=ctx.run_id,
        )
        logger.info("features: plan built, writing %s", OUTPUT)
        ctx.tables.overwrite(features, OUTPUT, overwrite_schema=True, user_metadata=fingerprint)
        logger.info("features: written, counting unmatched events and orders")
        unmatched = (
            activity.events.select(F.lit("events").alias("input"), "customer_id")
            .unionByName(activity.orders.select(F.lit("orders").alias("input"), "customer_id"))
            .where(F.col("customer_id").isNull())
            .groupBy("input")
            .count()
            .collect()
        )
    finally:
        for frame in (*activity, identifiers):
            frame.unpersist()
    metrics = log.last_commit(OUTPUT).get("operationMetrics") or {}
    per_input = {row["input"]: int(row["count"]) for row in unmatched}
    return {
        "customers": int(metrics.get("numOutputRows", 0)),
        "events_unmatched": per_input.get("events", 0),
        "orders_unmatched": per_input.get("orders", 0),
        "skipped": 0,
    }
