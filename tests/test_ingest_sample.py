"""End to end: the sample generator's world (300 people) through the ingest job; every planted
bad row (labels/planted_0.csv) is quarantined with its reason, or loaded with its warning, or
counted as a duplicate, and nothing else is rejected.

Generated in process and ingested on the embedded engine (``engine: embedded``): the labels are
the subject here, not Spark; tests/test_sample_generator.py shows the Spark generator writes the
same bytes and the parity tier that Spark's ingest of the demo world (planted rows included)
writes the same rows."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from conftest import on_engine
from lakecdp.context import JobContext
from lakecdp.ingest.job import ingest
from lakecdp.ingest.sources import load_sources
from lakecdp.sample.config import load_sample_config
from lakecdp.sample.generator import generate

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
CUSTOMER_SOURCES = ("crm", "shop_customers", "third_party")


@pytest.mark.slow
def test_generated_world_planted_rows_end_where_labels_say(spark, project):
    project = on_engine(project, "embedded")
    labels = project.root / "labels"
    generate(
        None,
        landing=project.landing,
        labels=labels,
        people=300,
        seed=7,
        as_of=AS_OF,
        config=load_sample_config(project.conf_dir),
    )
    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="sample-0")
    totals = ingest(ctx)
    tables = ctx.tables
    sources = load_sources(project.conf_dir)

    quarantined: dict[tuple[str, int], list[str]] = {}
    passed: set[tuple[str, int]] = set()
    for name in sources:
        if tables.exists(spark, f"quarantine.{name}"):
            for row in tables.read(spark, f"quarantine.{name}").select("source_file", "line", "reasons").collect():
                quarantined[(row[0], row[1])] = list(row[2])
        for row in tables.read(spark, f"bronze.{name}").select("_source_file", "_line").collect():
            passed.add((row[0], row[1]))
    warnings = {
        row[0]: list(row[1])
        for row in tables.read(spark, "silver.customer_records").select("record_id", "warnings").collect()
    }

    with (labels / "planted_0.csv").open(encoding="utf-8") as handle:
        planted = list(csv.DictReader(handle))
    assert {row["expected"] for row in planted} == {"quarantine", "warning", "duplicate"}
    missed = []
    for row in planted:
        where = (row["file"], int(row["line"]))
        if row["expected"] == "quarantine":
            if row["defect"] not in quarantined.get(where, []):
                missed.append((row, quarantined.get(where)))
        elif where in quarantined or where not in passed:
            missed.append((row, quarantined.get(where), where in passed))
        elif row["expected"] == "warning" and row["source"] in CUSTOMER_SOURCES:
            record_warnings = warnings.get(f"{row['source']}:{row['record_key']}", [])
            if row["defect"] not in record_warnings:
                missed.append((row, record_warnings))
    assert missed == []
    # nothing quarantined that was not planted
    assert set(quarantined) == {(r["file"], int(r["line"])) for r in planted if r["expected"] == "quarantine"}

    # the audit holds per file and adds up to the labels
    audit = tables.read(spark, "ops.ingest_audit").collect()
    for row in audit:
        assert row["rows_read"] == row["rows_loaded"] + row["rows_quarantined"] + row["duplicates_removed"]
    expected = Counter(r["expected"] for r in planted)
    assert totals["rows_quarantined"] == expected["quarantine"]
    assert totals["duplicates_removed"] == expected["duplicate"]
    assert totals["files_loaded"] == 7
    dq = {(r["source"], r["reason"]): r["rows"] for r in tables.read(spark, "ops.data_quality").collect()}
    assert dq == dict(Counter((r["source"], r["defect"]) for r in planted))
    # web logins became customer records keyed by the anonymous id
    logins = tables.read(spark, "silver.customer_records").where(F.col("source") == "web")
    assert logins.where(F.size("device_ids") != 1).count() == 0
