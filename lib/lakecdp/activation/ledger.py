"""The delivery ledger: ``activation.deliveries``, ``activation.rejected``, ``activation.dead_letter``.

Every change a destination handles gets one idempotency key, ``sha256(destination, change_id)``.
A key in ``deliveries`` (delivered or suppressed) is never sent again; the job writes the
ledger after each successful batch, so a crash loses at most the batch in flight, which the
re-run sends again with the same idempotency key (the receiver can drop it).

A key the destination rejected (``rejected``) or that failed to deliver (``dead_letter``) is
sent again by the next run, until it has failed in ``retry.max_runs`` runs: that run's row
is written to ``dead_letter`` (reason says it is final) and the key is not sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lakecdp import catalog

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.delta_store import DeltaStore

    from lakecdp.context import JobContext

DELIVERIES = catalog.DELIVERIES.name
REJECTED = catalog.REJECTED.name
DEAD_LETTER = catalog.DEAD_LETTER.name

DELIVERIES_SCHEMA = catalog.DELIVERIES.struct()

FAILURES_SCHEMA = catalog.REJECTED.struct()

#: the DDL of each ledger table, for delta-rs writes (the embedded engine)
_DDL = {DELIVERIES: catalog.DELIVERIES.ddl, REJECTED: catalog.REJECTED.ddl, DEAD_LETTER: catalog.DEAD_LETTER.ddl}


def delta_store(ctx: JobContext) -> DeltaStore | None:
    """The delta-rs store the ledger is written through on the embedded engine (path-based
    tables), else None (Spark). A ledger commit through Spark costs a job, a plan and a Delta
    commit (about a second, several under load); activation writes one after every batch."""
    from lakecdp.delta_store import embedded_store

    return embedded_store(ctx, label="lakecdp-activation")


def table_exists(ctx: JobContext, name: str) -> bool:
    """Whether table ``name`` exists, asked of the run's table store (delta-rs on the embedded
    engine: a Spark check costs a fraction of a second each, and activation makes a dozen)."""
    from lakecdp.delta_store import table_store

    return table_store(ctx, label="lakecdp-activation").exists(name)


def idempotency_key(destination: str, change_id: str) -> str:
    """``sha256("<destination>\\x1f<change_id>")`` as hex: stable across runs and machines."""
    return hashlib.sha256(f"{destination}\x1f{change_id}".encode("utf-8")).hexdigest()


def with_idempotency_key(df: DataFrame, *, destination: str) -> DataFrame:
    """Adds ``idempotency_key`` (same value as :func:`idempotency_key`) to a changes frame."""
    return df.withColumn(
        "idempotency_key",
        F.sha2(F.concat(F.lit(destination + "\x1f"), F.col("change_id")), 256),
    )


def ensure_tables(ctx: JobContext) -> None:
    """Create ``activation.deliveries`` empty, so readers never meet a missing table.

    ``rejected`` and ``dead_letter`` are created by their first row (one Delta commit fewer
    per table on a clean run; readers check they exist).
    """
    store = delta_store(ctx)
    if store is not None:
        store.create_if_missing(DELIVERIES, catalog.DELIVERIES.ddl)
    else:
        ctx.tables.create_if_missing(ctx.spark, DELIVERIES, DELIVERIES_SCHEMA)


def failed_runs(ctx: JobContext) -> DataFrame:
    """``idempotency_key, destination, failed_runs``: in how many runs each key was rejected
    or dead-lettered."""
    spark = ctx.spark
    failures = [
        ctx.tables.read(spark, name).select("idempotency_key", "destination", "run_id")
        for name in (REJECTED, DEAD_LETTER)
        if table_exists(ctx, name)
    ]
    if not failures:
        return spark.createDataFrame([], "idempotency_key string, destination string, failed_runs int")
    union = failures[0] if len(failures) == 1 else failures[0].unionByName(failures[1])
    return union.groupBy("idempotency_key", "destination").agg(
        F.countDistinct("run_id").cast("int").alias("failed_runs")
    )


def handled_keys(ctx: JobContext) -> DataFrame:
    """Keys that are never sent again: delivered or suppressed. (A failed key is sent again
    until it failed in ``retry.max_runs`` runs: see :func:`failed_runs`.)"""
    return ctx.tables.read(ctx.spark, DELIVERIES).select("idempotency_key")


class LedgerWriter:
    """Appends ledger rows, one Delta commit per call (per successful batch): through delta-rs
    on the embedded engine (:func:`delta_store`), else through Spark."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._store = delta_store(ctx)

    def _append(self, rows: Iterable[Mapping[str, Any]], schema: StructType, table: str) -> int:
        records = [tuple(row.get(f.name) for f in schema.fields) for row in rows]
        if not records:
            return 0
        store = self._store
        if store is not None:
            import pyarrow as pa

            from lakecdp.delta_store import arrow_schema

            target = arrow_schema(_DDL[table])
            columns = list(zip(*records, strict=True))
            data = pa.table(
                [pa.array(values, type=f.type) for values, f in zip(columns, target, strict=True)], schema=target
            )
            store.append(data, table, _DDL[table], run_id=self.ctx.run_id)
        else:
            self.ctx.tables.append(self.ctx.spark.createDataFrame(records, schema), table)
        return len(records)

    def deliveries(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._append(rows, DELIVERIES_SCHEMA, DELIVERIES)

    def rejected(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._append(rows, FAILURES_SCHEMA, REJECTED)

    def dead_letter(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._append(rows, FAILURES_SCHEMA, DEAD_LETTER)


def delivery_row(
    item: Mapping[str, Any],
    *,
    destination: str,
    run_id: str,
    status: str,
    attempts: int | None,
    response_code: int | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "idempotency_key": item["idempotency_key"],
        "change_id": item["change_id"],
        "destination": destination,
        "segment_id": item.get("segment_id"),
        "customer_id": item.get("customer_id"),
        "run_id": run_id,
        "status": status,
        "attempts": attempts,
        "response_code": response_code,
        "delivered_at": at,
    }
