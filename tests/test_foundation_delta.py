"""Spark + Delta round trip through the project's factory and resolver, checked by delta-rs."""

from __future__ import annotations

from datetime import date

import pytest
from deltalake import DeltaTable as RsDeltaTable
from pyspark.testing import assertDataFrameEqual

from lakecdp.tables import TableNameError, Tables


def test_write_merge_cdf_and_time_travel(spark, project):
    tables = Tables(project)
    name = "silver.people_roundtrip"
    first = spark.createDataFrame(
        [("p1", "Ada", date(2026, 1, 1)), ("p2", "Grace", date(2026, 1, 2))],
        "person_id string, first_name string, updated date",
    )
    tables.append(first, name)
    changes = spark.createDataFrame(
        [("p2", "Grace H.", date(2026, 2, 1)), ("p3", "Alan", date(2026, 2, 1))],
        "person_id string, first_name string, updated date",
    )
    tables.merge(spark, changes, name, keys=["person_id"])

    # current state, read back through Spark
    assertDataFrameEqual(
        tables.read(spark, name),
        [("p1", "Ada", date(2026, 1, 1)), ("p2", "Grace H.", date(2026, 2, 1)), ("p3", "Alan", date(2026, 2, 1))],
    )
    # time travel to the first commit
    assertDataFrameEqual(
        tables.read(spark, name, version=0),
        [("p1", "Ada", date(2026, 1, 1)), ("p2", "Grace", date(2026, 1, 2))],
    )
    # change data feed of the MERGE: one update (pre/post image) and one insert
    feed = tables.read_changes(spark, name, starting_version=1).select("person_id", "first_name", "_change_type")
    assertDataFrameEqual(
        feed,
        [("p2", "Grace", "update_preimage"), ("p2", "Grace H.", "update_postimage"), ("p3", "Alan", "insert")],
    )
    assert tables.version(spark, name) == 1

    # an independent reader (delta-rs, no JVM) sees the same table and history
    rs = RsDeltaTable(tables.location(name))
    assert rs.version() == 1
    rows = sorted(rs.to_pyarrow_table().to_pylist(), key=lambda r: r["person_id"])
    assert [(r["person_id"], r["first_name"]) for r in rows] == [("p1", "Ada"), ("p2", "Grace H."), ("p3", "Alan")]
    rs_v0 = RsDeltaTable(tables.location(name), version=0)
    assert sorted(r["first_name"] for r in rs_v0.to_pyarrow_table().to_pylist()) == ["Ada", "Grace"]


def test_scoped_merge_refreshes_only_the_keys_in_scope(spark, project):
    tables = Tables(project)
    name = "silver.people_scoped"
    schema = "person_id string, first_name string"
    tables.append(
        spark.createDataFrame([("p1", "Ada"), ("p2", "Grace"), ("p3", "Alan"), ("p4", "Edsger")], schema), name
    )
    # the truth for p2, p3 and p5: p2 renamed, p3 gone, p5 new; p1 and p4 are outside the scope
    rows = spark.createDataFrame([("p2", "Grace H."), ("p5", "Barbara")], schema)
    scope = spark.createDataFrame([("p2",), ("p3",), ("p5",)], "person_id string")
    tables.merge(spark, rows, name, keys=["person_id"], scope=scope)

    table = RsDeltaTable(tables.location(name))
    assert sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["person_id"]) == [
        {"person_id": "p1", "first_name": "Ada"},
        {"person_id": "p2", "first_name": "Grace H."},
        {"person_id": "p4", "first_name": "Edsger"},
        {"person_id": "p5", "first_name": "Barbara"},
    ]
    # no helper column leaked into the table
    assert [f.name for f in table.schema().fields] == ["person_id", "first_name"]
    with pytest.raises(ValueError, match="exclude each other"):
        tables.merge(spark, rows, name, keys=["person_id"], scope=scope, delete_not_matched_by_source=True)


def test_resolver_names_paths_and_catalog_tables(project):
    tables = Tables(project)
    assert tables.location("gold.customer_profile") == str(project.warehouse / "gold" / "customer_profile")
    with pytest.raises(TableNameError, match="unknown layer 'platinum'"):
        tables.identifier("platinum.x")
    with pytest.raises(TableNameError, match="must be '<layer>.<table>'"):
        tables.identifier("customer_profile")

    storage = project.environment.storage.model_copy(update={"catalog": "main"})
    environment = project.environment.model_copy(update={"storage": storage})
    catalog_tables = Tables(project.model_copy(update={"environment": environment}))
    assert catalog_tables.identifier("gold.customer_profile") == "`main`.`cdp_gold`.`customer_profile`"


def test_session_is_utc_ansi_and_has_delta(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
