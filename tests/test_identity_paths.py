"""The duckdb backend on catalog tables writes what it writes on path tables, full and incremental.

- on path tables every table is read and written with delta-rs (``job._run_on_machine``);
- on catalog tables (delta-rs cannot resolve them) through Spark, the work still done in DuckDB
  (``run_identity``'s steps with ``_link_on_machine``).

The first is pinned to hand-expected clusters and id changes in tests/test_identity_job.py; here the
counts of each run are written by hand and every identity table must hold the same rows on both.
The incremental run adds a known person's new record and a record that bridges two customers (a merge).

The spark backend's incremental run is left out: Splink on Spark spends 10+ minutes of Catalyst
planning per incremental run on this box (its full runs are compared in test_identity_local.py).
"""

from __future__ import annotations

import pytest

from test_identity_job import (
    AS_OF,
    BRIDGE,
    FIRST_LOAD,
    NEW_BOB,
    SILVER_SCHEMA,
    groups,
    minted,
    snapshot,
    write_hand_model,
)
from test_identity_local import IDENTITY_OUTPUTS, project_with_backend

CATALOG_LAYERS = ("silver", "identity", "gold")


@pytest.mark.slow  # two projects x two runs, one through Spark I/O
def test_duckdb_backend_on_catalog_tables_writes_the_same_rows_full_then_incremental(spark, tmp_path):
    from lakecdp.context import JobContext
    from lakecdp.identity.job import run_identity

    def drop_temp_views():
        # the spark backend's Splink registers its records as temp views named per run
        for table in spark.catalog.listTables():
            if table.isTemporary:
                spark.catalog.dropTempView(table.name)

    def runs(project):
        """(counts, customer groups) of each run, and every identity table's rows as JSON."""
        write_hand_model(project)
        seen = []
        for run_id, load in (("run-1", FIRST_LOAD), ("run-2", NEW_BOB + BRIDGE)):
            ctx = JobContext.create(project, spark, as_of=AS_OF, run_id=run_id)
            ctx.tables.append(spark.createDataFrame(load, SILVER_SCHEMA), "silver.customer_records")
            counts = run_identity(ctx)
            drop_temp_views()
            ids, changes = snapshot(ctx)
            seen.append((counts, groups(ids), ids, changes))
        rows = {
            name: set(ctx.tables.read(spark, name).toPandas().to_json(orient="records", lines=True).splitlines())
            for name in IDENTITY_OUTPUTS
        }
        return seen, rows

    results = {}
    results["duckdb"] = runs(project_with_backend(tmp_path / "duckdb", "duckdb"))
    on_catalog = project_with_backend(tmp_path / "catalog", "duckdb")
    storage = on_catalog.environment.storage.model_copy(update={"catalog": "spark_catalog", "schema_prefix": "paths_"})
    on_catalog = on_catalog.model_copy(
        update={"environment": on_catalog.environment.model_copy(update={"storage": storage})}
    )
    for layer in CATALOG_LAYERS:
        spark.sql(f"CREATE SCHEMA paths_{layer} LOCATION '{tmp_path / 'catalog' / 'schemas' / layer}'")
    try:
        results["duckdb on a catalog"] = runs(on_catalog)
    finally:
        for layer in CATALOG_LAYERS:
            spark.sql(f"DROP SCHEMA IF EXISTS paths_{layer} CASCADE")

    seen, rows = results["duckdb"]
    counts = [(c["incremental"], c["records"], c["records_changed"], c["customers"], c["id_changes"]) for c, *_ in seen]
    assert counts == [(0, 9, -1, 6, 6), (1, 11, 2, 5, 1)]
    eve, eve2 = minted("crm:C7"), minted("shop_customers:S8")
    assert seen[-1][2]["shop_customers:S8"] == eve
    assert ("run-2", "merge", eve2, eve, 1) in seen[-1][3]
    other_seen, other_rows = results["duckdb on a catalog"]
    assert [s[:2] for s in other_seen] == [s[:2] for s in seen]
    assert [s[2:] for s in other_seen] == [s[2:] for s in seen]
    for name in IDENTITY_OUTPUTS:
        assert other_rows[name] == rows[name], name
