"""The crm source (Java date/time patterns: ``DOB`` dd/MM/yyyy, ``LastModified`` yyyy-MM-dd
HH:mm:ss) ingested by the embedded engine, and by Spark (the oracle) into the same rows.

The rows are written by hand: valid dates, a leap day, impossible dates (31/02, 29/02/1900), a
two-digit year, an ISO date in a dd/MM/yyyy column, blank and space-padded fields, a timestamp
with a ``T``, a future and a placeholder (epoch) timestamp, a birth date in the future and one
before 1900-01-02, and a customer twice (the later version wins).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from test_ingest_engines import context, rows

HEADER = "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified\n"


def _row(customer: str, dob: str, modified: str) -> str:
    return (
        f"{customer},Ada,Lovelace,{customer.lower()}@example.com,020 7946 0018,{dob},"
        f"1 Main St,SW1A 1AA,London,GB,Y,{modified}\n"
    )


CRM_DAY_1 = HEADER + "".join(
    [
        _row("C1", "02/03/1985", "2026-10-01 10:00:00"),
        _row("C2", "29/02/2000", "2026-10-01 10:00:00"),
        _row("C3", "31/02/2020", "2026-10-01 10:00:00"),  # no 31 February: INVALID_DATE, kept as text
        _row("C4", "02/03/85", "2026-10-01 10:00:00"),  # two-digit year
        _row("C5", "", "2026-10-01 10:00:00"),
        _row("C6", " 02/03/1985", "2026-10-01 10:00:00"),  # a space before the date
        _row("C7", "02/03/1985", "2026-10-01T10:00:00"),  # T: not the pattern, quarantined (required)
        _row("C8", "01/01/2090", "2026-10-01 10:00:00"),  # a future birth date
        _row("C9", "01/01/1900", "2026-10-01 10:00:00"),  # before min_date
        _row("C10", "02/03/1985", "1970-01-01 00:00:00"),  # placeholder timestamp
        _row("C11", "02/03/1985", "2099-01-01 00:00:00"),  # future timestamp
        _row("C12", "02/03/1985", ""),  # missing required
        _row("C13", "1985-03-02", "2026-10-01 10:00:00"),  # ISO in a dd/MM/yyyy column
        _row("C14", "29/02/1900", "2026-10-01 10:00:00"),  # 1900 is no leap year
        _row("C15", "02/03/1985", "2026-10-01 10:00:00 "),  # a space after the timestamp
        _row("C16", "02/03/1985", "2026-10-01 24:00:00"),
        _row("C1", "02/03/1986", "2026-10-02 09:00:00"),  # C1 again, later: wins
        _row("C2", "01/01/1970", "2026-09-01 00:00:00"),  # C2 again, earlier: loses
    ]
)
CRM_DAY_2 = HEADER + _row("C1", "03/03/1986", "2026-10-03 09:00:00") + _row("C17", "1/2/1990", "2026-10-03 09:00:00")
TABLES = (
    "bronze/crm",
    "quarantine/crm",
    "silver/customer_records",
    "ops/ingest_audit",
    "ops/data_quality",
    "ops/ingest_files",
)


def land(root: Path, day: int) -> None:
    folder = root / "landing" / "crm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"crm_customers_{day}.csv").write_text(CRM_DAY_1 if day == 1 else CRM_DAY_2)


def ingest(root: Path, engine: str, spark=None) -> dict[str, int]:
    from lakecdp.ingest.job import ingest as run

    return run(context(root, engine, spark), only=["crm"])


def test_crm_is_ingested_embedded_with_its_patterns(tmp_path):
    from lakecdp.ingest.embedded_batch import embedded_reason
    from lakecdp.ingest.sources import load_sources

    assert embedded_reason(load_sources(Path(__file__).parents[1] / "conf")["crm"]) is None
    land(tmp_path, 1)
    counts = ingest(tmp_path, "embedded")  # no SparkSession: a hand-off to Spark would fail here
    assert counts["rows_read"] == 18
    quarantine = {r["line"]: tuple(r["reasons"]) for r in rows(tmp_path, "quarantine/crm")}
    assert quarantine == {
        8: ("INVALID_TIMESTAMP",),
        11: ("PLACEHOLDER_TIMESTAMP",),
        12: ("FUTURE_TIMESTAMP",),
        13: ("MISSING_REQUIRED",),
        16: ("INVALID_TIMESTAMP",),
        17: ("INVALID_TIMESTAMP",),
    }
    records = {r["source_record_id"]: r for r in rows(tmp_path, "silver/customer_records")}
    assert sorted(records, key=lambda k: int(k[1:])) == ["C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9", "C13", "C14"]
    by_dob = {k: (str(r["date_of_birth"]), r["date_of_birth_text"], r["warnings"]) for k, r in records.items()}
    assert by_dob == {
        "C1": ("1986-03-02", None, []),
        "C2": ("2000-02-29", None, []),
        "C3": ("None", "31/02/2020", ["INVALID_DATE"]),
        "C4": ("None", "02/03/85", ["INVALID_DATE"]),
        "C5": ("None", None, []),
        # not the pattern as written (a leading space), but trimmed it is: no typo to keep
        "C6": ("None", None, ["INVALID_DATE"]),
        "C8": ("None", None, ["IMPOSSIBLE_DATE"]),
        "C9": ("None", None, ["IMPOSSIBLE_DATE"]),
        "C13": ("None", "1985-03-02", ["INVALID_DATE"]),
        "C14": ("None", "29/02/1900", ["INVALID_DATE"]),
    }
    assert str(records["C1"]["updated_at"]) == "2026-10-02 09:00:00+00:00"


def assert_engines_agree(tmp_path: Path, source: str, land, ingest, tables: tuple[str, ...], spark, caplog) -> None:
    """Day 1 on each engine, then day 2 on the other one each (each continues the other's
    warehouse): the same counts and the same rows in ``tables`` every time; the embedded run never
    hands ``source`` to Spark."""
    on_spark, embedded = tmp_path / "spark", tmp_path / "embedded"
    for root in (on_spark, embedded):
        land(root, 1)
    with caplog.at_level(logging.INFO, logger="lakecdp.ingest.job"):
        assert ingest(embedded, "embedded") == ingest(on_spark, "spark", spark)
    assert not [r for r in caplog.records if f"{source}: on Spark" in r.getMessage()]
    assert {t: rows(embedded, t) for t in tables} == {t: rows(on_spark, t) for t in tables}
    for root in (on_spark, embedded):
        land(root, 2)
    assert ingest(on_spark, "embedded") == ingest(embedded, "spark", spark)
    assert {t: rows(embedded, t) for t in tables} == {t: rows(on_spark, t) for t in tables}


@pytest.mark.slow
def test_both_engines_ingest_crm_into_the_same_rows(tmp_path, spark, caplog):
    assert_engines_agree(tmp_path, "crm", land, ingest, TABLES, spark, caplog)
    shutil.rmtree(tmp_path)
