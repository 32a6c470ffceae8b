"""The batch ingest job on hand-made landing files: quarantine with exact lines, the audit
invariant, exactly-once per file, kill-and-restart, changed records, schema drift."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from lakecdp.context import JobContext
from lakecdp.ingest.job import ingest
from lakecdp.columns import MissingColumnsError

AS_OF = datetime(2026, 11, 1)
CRM_HEADER = "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified"


def _write(project, relative: str, lines: list[str] | bytes) -> Path:
    path = project.landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ctx(spark, project, run_id: str) -> JobContext:
    return JobContext.create(project, spark, as_of=AS_OF, run_id=run_id)


@pytest.mark.slow
def test_crm_quarantine_invariant_rerun_redelivery_and_changed_record(spark, project):
    crm0 = (
        (CRM_HEADER + "\n").encode()
        + b"\n".join(
            [
                b"C1,Ann,Smith,ANN@x.com,07700 900123,02/03/1985,1 High St,SW1A 1AA,London,UK,Y,2026-01-01 10:00:00",  # 2
                b'C2,"Bob,Jones,bob@x.com,,,,,,UK,N,2026-01-01 10:00:00',  # 3 quote
                b"C3,Cat,Lee,cat@x.com,,,,,,UK,N",  # 4 11 fields
                b",Dan,Moe,dan@x.com,,,,,,UK,N,2026-01-01 10:00:00",  # 5 no id
                b"C5,Eve,Ng,eve@x.com,,,,,,UK,N,yesterday",  # 6 bad ts
                b"C6,Fay,Oh,fay at x.com,,31/02/1980,,,,Ireland,N,2026-01-01 10:00:00",  # 7 warnings
                b"C7,Gus,P\xff\xfeq,gus@x.com,,,,,,UK,N,2026-01-01 10:00:00",  # 8 bad UTF-8
                b"C8," + b"H" * 201 + b",Ray,h@x.com,,,,,,UK,N,2026-01-01 10:00:00",  # 9 too long
                b"C1,Ann,Smith,ann@x.com,,02/03/1985,,,,UK,Y,2025-12-01 10:00:00",  # 10 older C1
            ]
        )
        + b"\n"
    )
    _write(project, "crm/crm_customers_0.csv", crm0)
    counts = ingest(_ctx(spark, project, "run-1"), only=["crm"])
    assert counts == {
        "files_loaded": 1,
        "files_quarantined": 0,
        "files_skipped": 0,
        "rows_read": 9,
        "rows_loaded": 2,
        "rows_quarantined": 6,
        "duplicates_removed": 1,
        "rows_erased": 0,
    }

    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assertDataFrameEqual(
        tables.read(spark, "quarantine.crm").select("source_file", "line", "reasons", "run_id"),
        [
            ("crm/crm_customers_0.csv", 3, ["MALFORMED_LINE"], "run-1"),
            ("crm/crm_customers_0.csv", 4, ["WRONG_FIELD_COUNT"], "run-1"),
            ("crm/crm_customers_0.csv", 5, ["MISSING_REQUIRED"], "run-1"),
            ("crm/crm_customers_0.csv", 6, ["INVALID_TIMESTAMP"], "run-1"),
            ("crm/crm_customers_0.csv", 8, ["BAD_ENCODING"], "run-1"),
            ("crm/crm_customers_0.csv", 9, ["FIELD_TOO_LONG"], "run-1"),
        ],
    )
    raw_line_3 = tables.read(spark, "quarantine.crm").where("line = 3").select("raw").first()[0]
    assert raw_line_3 == 'C2,"Bob,Jones,bob@x.com,,,,,,UK,N,2026-01-01 10:00:00'
    assertDataFrameEqual(
        tables.read(spark, "silver.customer_records").select(
            "record_id", "email", "phone", "date_of_birth", "country", "updated_at", "warnings"
        ),
        [
            ("crm:C1", "ann@x.com", "+447700900123", date(1985, 3, 2), "GB", datetime(2026, 1, 1, 10), []),
            ("crm:C6", None, None, None, "IE", datetime(2026, 1, 1, 10), ["INVALID_DATE", "INVALID_EMAIL"]),
        ],
    )
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_audit").select(
            "run_id", "source", "source_file", "rows_read", "rows_loaded", "rows_quarantined", "duplicates_removed"
        ),
        [("run-1", "crm", "crm/crm_customers_0.csv", 9, 2, 6, 1)],
    )
    assertDataFrameEqual(
        tables.read(spark, "ops.data_quality").select("source", "reason", "rows"),
        [
            ("crm", "MALFORMED_LINE", 1),
            ("crm", "WRONG_FIELD_COUNT", 1),
            ("crm", "MISSING_REQUIRED", 1),
            ("crm", "INVALID_TIMESTAMP", 1),
            ("crm", "BAD_ENCODING", 1),
            ("crm", "FIELD_TOO_LONG", 1),
            ("crm", "INVALID_EMAIL", 1),
            ("crm", "INVALID_DATE", 1),
            ("crm", "DUPLICATE", 1),
        ],
    )
    assert tables.read(spark, "bronze.crm").where("_line = 2").select("CustomerID", "Email", "DOB").first() == (
        "C1",
        "ANN@x.com",
        "02/03/1985",
    )

    # the same run again, and the same bytes delivered again under another name: nothing changes
    versions = {
        name: tables.version(spark, name)
        for name in ("bronze.crm", "quarantine.crm", "silver.customer_records", "ops.ingest_files")
    }
    shutil.copy(project.landing / "crm/crm_customers_0.csv", project.landing / "crm/crm_customers_0_resent.csv")
    again = ingest(_ctx(spark, project, "run-2"), only=["crm"])
    assert again == {
        "files_loaded": 0,
        "files_quarantined": 0,
        "files_skipped": 2,
        "rows_read": 0,
        "rows_loaded": 0,
        "rows_quarantined": 0,
        "duplicates_removed": 0,
        "rows_erased": 0,
    }
    assert {name: tables.version(spark, name) for name in versions} == versions

    # a later increment changes C1's email (later LastModified) and re-sends C6 unchanged
    _write(
        project,
        "crm/crm_customers_1.csv",
        [
            CRM_HEADER,
            "C1,Ann,Smith,ann.smith@y.com,07700 900123,02/03/1985,1 High St,SW1A 1AA,London,UK,N,2026-02-01 09:00:00",
            "C6,Fay,Oh,fay at x.com,,31/02/1980,,,,Ireland,N,2026-01-01 10:00:00",
        ],
    )
    later = ingest(_ctx(spark, project, "run-3"), only=["crm"])
    assert later["rows_read"] == 2 and later["rows_loaded"] == 2
    assertDataFrameEqual(
        tables.read(spark, "silver.customer_records").select("record_id", "email", "email_consent", "run_id"),
        [("crm:C1", "ann.smith@y.com", False, "run-3"), ("crm:C6", None, False, "run-1")],
    )


WEB_0 = [
    '{"event_id":"w1","event_type":"page_view","ts":"2026-10-01T10:00:00Z","anonymous_id":"d-1","session_id":"s-1"}',
    '{"event_id":"w2","event_type":"login","ts":"2026-10-01T10:01:00Z","anonymous_id":"d-1",'
    '"user":{"email":"Ann@X.com","customer_no":"S1"}}',
    '{"event_id":"w1","event_type":"page_view","ts":"2026-10-01T10:00:00Z","anonymous_id":"d-1","session_id":"s-1"}',
    '{"event_id":"w3","event_type":"add_to_cart","ts":"2026-10-01T10:02:00Z","product_id":"P1","price":"cheap"}',
    '{"event_id":"w4","event_type":"page_view"',
    "",
    '{"event_id":"w5","event_type":"checkout","ts":"2026-10-01T10:03:00Z","anonymous_id":"d-1"}',
]


class _Crash(RuntimeError):
    pass


def _web_events_killed_after(spark, project, killed_at: str, run_id: str) -> None:
    """web_events/web_events_0.jsonl (WEB_0) ingested by a run killed right after it writes ``killed_at``."""
    _write(project, "web_events/web_events_0.jsonl", WEB_0)

    def crash(table: str) -> None:
        if table == killed_at:
            raise _Crash(f"killed after writing {table}")

    with pytest.raises(_Crash):
        ingest(_ctx(spark, project, run_id), only=["web_events"], hook=crash)


@pytest.mark.slow
def test_kill_and_restart_then_late_duplicate(spark, project):
    _web_events_killed_after(spark, project, "silver.events", "run-killed")
    counts = ingest(_ctx(spark, project, "run-2"), only=["web_events"])
    # 6 non-blank lines: w1, w2, w5 load; the second w1 is a duplicate; w3 and line 5 are rejected
    assert counts == {
        "files_loaded": 1,
        "files_quarantined": 0,
        "files_skipped": 0,
        "rows_read": 6,
        "rows_loaded": 3,
        "rows_quarantined": 2,
        "duplicates_removed": 1,
        "rows_erased": 0,
    }
    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assertDataFrameEqual(
        tables.read(spark, "silver.events").select("event_id", "event_type", "email", "device_id"),
        [("w1", "page_view", None, "d-1"), ("w2", "login", "ann@x.com", "d-1"), ("w5", "checkout", None, "d-1")],
    )
    assertDataFrameEqual(
        tables.read(spark, "quarantine.web_events").select("line", "reasons"),
        [(4, ["INVALID_TYPE"]), (5, ["MALFORMED_LINE"])],
    )
    assertDataFrameEqual(
        tables.read(spark, "silver.customer_records").select(
            "record_id", "source", "source_record_id", "device_ids", "email", "customer_number"
        ),
        [("web:d-1", "web", "d-1", ["d-1"], "ann@x.com", "S1")],
    )
    # the restart replaced the killed run's audit, bronze kept one row per line
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_audit").select("run_id", "rows_read", "rows_loaded", "duplicates_removed"),
        [("run-2", 6, 3, 1)],
    )
    assert tables.read(spark, "bronze.web_events").count() == 4

    # a later file repeats w2 (late duplicate) and brings a new event
    _write(
        project,
        "web_events/web_events_1.jsonl",
        [
            '{"event_id":"w2","event_type":"login","ts":"2026-10-01T10:01:00Z","anonymous_id":"d-1"}',
            '{"event_id":"w6","event_type":"purchase","ts":"2026-10-02T10:00:00Z","anonymous_id":"d-1","order_id":"O1"}',
        ],
    )
    later = ingest(_ctx(spark, project, "run-3"), only=["web_events"])
    assert (later["rows_read"], later["rows_loaded"], later["duplicates_removed"]) == (2, 1, 1)
    assert sorted(r[0] for r in tables.read(spark, "silver.events").select("event_id").collect()) == [
        "w1",
        "w2",
        "w5",
        "w6",
    ]


# slow tier: a Spark run of ~30-120 s on 2 loaded cores; the full suite (CI) runs it
@pytest.mark.slow
def test_schema_drift_rescue_evolve_and_missing_required_column(spark, project, tmp_path):
    _write(
        project,
        "crm/crm_customers_0.csv",
        [
            CRM_HEADER + ",Loyalty",
            "C1,Ann,Smith,ann@x.com,,,,,,UK,Y,2026-01-01 10:00:00,gold",
        ],
    )
    ingest(_ctx(spark, project, "run-1"), only=["crm"])
    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assert tables.read(spark, "bronze.crm").select("CustomerID", "_rescued").first() == ("C1", '{"Loyalty":"gold"}')

    # the same source configured to evolve bronze's schema instead
    conf = tmp_path / "conf_evolve"
    shutil.copytree(project.conf_dir, conf)
    crm_yaml = conf / "sources" / "crm.yaml"
    crm_yaml.write_text(crm_yaml.read_text() + "drift: evolve\n")
    evolving = project.model_copy(update={"conf_dir": conf})
    _write(
        evolving,
        "crm/crm_customers_1.csv",
        [
            CRM_HEADER + ",Loyalty",
            "C2,Bea,Smith,bea@x.com,,,,,,UK,Y,2026-01-02 10:00:00,silver",
        ],
    )
    ingest(JobContext.create(evolving, spark, as_of=AS_OF, run_id="run-2"), only=["crm"])
    assertDataFrameEqual(
        tables.read(spark, "bronze.crm").select("CustomerID", "Loyalty", "_rescued"),
        [("C1", None, '{"Loyalty":"gold"}'), ("C2", "silver", None)],
    )

    # a file without a required column fails the run, naming file and column
    _write(
        project,
        "crm/crm_customers_2.csv",
        [
            "CustomerID,FirstName,LastName,Email",
            "C3,Cy,Smith,cy@x.com",
        ],
    )
    with pytest.raises(MissingColumnsError, match=r"crm/crm_customers_2\.csv: required column\(s\) LastModified"):
        ingest(_ctx(spark, project, "run-3"), only=["crm"])


@pytest.mark.slow
def test_an_erased_person_is_not_imported_again(spark, project):
    from lakecdp.erasure import erase_person

    _write(
        project,
        "crm/crm_customers_0.csv",
        [
            CRM_HEADER,
            "C1,Ann,Smith,ann@x.com,07700 900123,02/03/1985,1 High St,SW1A 1AA,London,UK,Y,2026-01-01 10:00:00",
            "C2,Bob,Jones,bob@x.com,,,,,,UK,N,2026-01-01 10:00:00",
        ],
    )
    ingest(_ctx(spark, project, "run-1"), only=["crm"])
    erase_person(_ctx(spark, project, "erase-1"), email="ann@x.com")

    # the next export still carries her: same email in another spelling, and a new CRM record
    # holding only her phone number written differently
    _write(
        project,
        "crm/crm_customers_1.csv",
        [
            CRM_HEADER,
            "C1,Ann,Smith, Ann@X.com ,,02/03/1985,,,,UK,Y,2026-02-01 10:00:00",
            "C9,Annie,Smith,,+44 7700 900123,,,,,UK,N,2026-02-01 10:00:00",
            "C10,Zed,Hill,zed@x.com,,,,,,UK,N,2026-02-01 10:00:00",
        ],
    )
    counts = ingest(_ctx(spark, project, "run-2"), only=["crm"])
    # file 0 (already loaded) is skipped by the ledger; had it not been, her rows would be refused too
    assert counts == {
        "files_loaded": 1,
        "files_quarantined": 0,
        "files_skipped": 1,
        "rows_read": 3,
        "rows_loaded": 1,
        "rows_quarantined": 0,
        "duplicates_removed": 0,
        "rows_erased": 2,
    }

    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assert sorted(r[0] for r in tables.read(spark, "silver.customer_records").select("source_record_id").collect()) == [
        "C10",
        "C2",
    ]
    bronze = [r.asDict() for r in tables.read(spark, "bronze.crm").collect()]
    assert all("Ann" not in str(row) and "7700" not in str(row) for row in bronze)
    assert not tables.exists(spark, "quarantine.crm")
    audit = tables.read(spark, "ops.ingest_audit").where("source_file = 'crm/crm_customers_1.csv'").first()
    assert (audit["rows_read"], audit["rows_loaded"], audit["rows_erased"]) == (3, 1, 2)
    quality = tables.read(spark, "ops.data_quality").where("source_file = 'crm/crm_customers_1.csv'")
    assert [(r["reason"], r["rows"]) for r in quality.collect()] == [("ERASED", 2)]


@pytest.mark.slow
def test_a_run_killed_after_its_data_quality_rows_has_them_replaced_not_doubled(spark, project):
    _web_events_killed_after(spark, project, "ops.data_quality", "run-1")
    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    killed = [("run-1", "DUPLICATE", 1), ("run-1", "INVALID_TYPE", 1), ("run-1", "MALFORMED_LINE", 1)]
    assertDataFrameEqual(tables.read(spark, "ops.data_quality").select("run_id", "reason", "rows"), killed)
    # no ledger entry: the next run loads the file again and its rows replace the killed run's
    ingest(_ctx(spark, project, "run-2"), only=["web_events"])
    assertDataFrameEqual(
        tables.read(spark, "ops.data_quality").select("run_id", "reason", "rows"),
        [("run-2", "DUPLICATE", 1), ("run-2", "INVALID_TYPE", 1), ("run-2", "MALFORMED_LINE", 1)],
    )


@pytest.mark.slow
def test_audit_and_ledger_once_per_run_and_kept_for_sources_done_before_a_failure(spark, project):
    _write(project, "products/products_0.csv", ["product_id,name,category,price", "P1,Boot,shoes,53.99"])
    _write(project, "web_events/web_events_0.jsonl", WEB_0)

    def crash_after_web_bronze(table: str) -> None:
        if table == "bronze.web_events":
            raise _Crash(f"killed after writing {table}")

    # products goes first (order lines take their category from it); web_events then fails
    with pytest.raises(_Crash):
        ingest(_ctx(spark, project, "run-1"), only=["web_events", "products"], hook=crash_after_web_bronze)
    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_files").select("source", "path", "run_id", "status"),
        [("products", "products/products_0.csv", "run-1", "loaded")],
    )
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_audit").select("source", "source_file", "rows_read", "rows_loaded"),
        [("products", "products/products_0.csv", 1, 1)],
    )

    _write(project, "products/products_1.csv", ["product_id,name,category,price", "P2,Coat,outerwear,99.00"])
    counts = ingest(_ctx(spark, project, "run-2"), only=["web_events", "products"])
    assert (counts["files_loaded"], counts["files_skipped"], counts["rows_read"]) == (2, 1, 7)
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_audit").select("source_file", "run_id", "rows_read", "rows_quarantined"),
        [
            ("products/products_0.csv", "run-1", 1, 0),
            ("products/products_1.csv", "run-2", 1, 0),
            ("web_events/web_events_0.jsonl", "run-2", 6, 2),
        ],
    )
    assertDataFrameEqual(
        tables.read(spark, "ops.data_quality").select("source", "reason", "rows"),
        [("web_events", "DUPLICATE", 1), ("web_events", "INVALID_TYPE", 1), ("web_events", "MALFORMED_LINE", 1)],
    )
    # one commit per ops table and run, whatever the number of sources: run 1 (products), run 2 (both)
    assert tables.version(spark, "ops.ingest_audit") == 1
    assert tables.version(spark, "ops.ingest_files") == 1


@pytest.mark.slow
def test_the_source_read_ahead_of_a_failed_write_is_released_and_a_failed_read_keeps_the_sources_written(
    spark, project
):
    # the job reads the next source (validated, classified, kept in memory) while one is written
    _write(
        project,
        "crm/crm_customers_0.csv",
        [CRM_HEADER, "C1,Ann,Smith,ann@x.com,,02/03/1985,,,,UK,Y,2026-01-01 10:00:00"],
    )
    _write(project, "web_events/web_events_0.jsonl", WEB_0)
    kept_before = _rows_kept(spark)

    def crash_after_crm_bronze(table: str) -> None:
        if table == "bronze.crm":
            raise _Crash(f"killed after writing {table}")

    # crm is written first; web_events is read meanwhile, then never written
    with pytest.raises(_Crash):
        ingest(_ctx(spark, project, "run-1"), only=["web_events", "crm"], hook=crash_after_crm_bronze)
    assert _rows_kept(spark) == kept_before
    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    # nothing ledgered, web_events never written
    assert not tables.exists(spark, "ops.ingest_files") or tables.read(spark, "ops.ingest_files").count() == 0
    assert not tables.exists(spark, "bronze.web_events")

    # the next source cannot be read (a delivery without its required id): crm, written
    # meanwhile, is audited and ledgered
    import pyarrow as pa
    import pyarrow.parquet as pq

    (project.landing / "third_party").mkdir(parents=True)
    pq.write_table(pa.table({"full_name": ["Ann Smith"]}), project.landing / "third_party/enrichment_0.parquet")
    with pytest.raises(MissingColumnsError, match="ext_id"):
        ingest(_ctx(spark, project, "run-2"), only=["third_party", "crm"])
    assertDataFrameEqual(
        tables.read(spark, "ops.ingest_files").select("source", "path", "run_id", "status"),
        [("crm", "crm/crm_customers_0.csv", "run-2", "loaded")],
    )
    assertDataFrameEqual(tables.read(spark, "silver.customer_records").select("record_id"), [("crm:C1",)])
    assert _rows_kept(spark) == kept_before


def _rows_kept(spark) -> set[int]:
    """Ids of the RDDs kept in the JVM, but Delta's caches of table states (its own, released by it)."""
    kept = spark.sparkContext._jsc.getPersistentRDDs()
    return {k for k in kept.keySet() if not (kept.get(k).name() or "").startswith("Delta Table State")}
