"""The third_party source (Parquet; a name mapping with ``substring_index`` and ``initcap``) ingested
by the embedded engine, and by Spark (the oracle) into the same rows.

The delivery is written here with pyarrow, in row groups of three (the row index runs on across
them): both name forms (``SURNAME, First`` and ``First Surname``), hyphens, apostrophes, runs of
spaces, Greek, Turkish and ligature letters, quotes / tabs / newlines / emoji in strings, nulls, a row
of nulls only, a missing ext_id, a null-like ext_id, a name too long, impossible and future birth
dates, an ext_id twice; and columns not configured (a double with NaN / 1e7 / -0.0, a timestamp with
microseconds, a date, an int, a boolean) that are rescued, so bronze keeps Spark's ``to_json`` of them.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_ingest_crm_engines import assert_engines_agree
from test_ingest_engines import context, rows

UTC = timezone.utc
SCHEMA = pa.schema(
    [
        ("ext_id", pa.string()),
        ("full_name", pa.string()),
        ("dob", pa.string()),
        ("address", pa.string()),
        ("postcode", pa.string()),
        ("city", pa.string()),
        ("income_band", pa.string()),
        ("interests", pa.string()),
        ("score", pa.float64()),
        ("seen_at", pa.timestamp("us", tz="UTC")),
        ("born", pa.date32()),
        ("visits", pa.int32()),
        ("vip", pa.bool_()),
    ]
)


def _row(ext_id: str | None, full_name: str | None, dob: str | None = "19850302", **extra: object) -> dict:
    return {"ext_id": ext_id, "full_name": full_name, "dob": dob, "address": "1 High St", "postcode": "SW1A 1AA",
            "city": "London", "income_band": "B", "interests": "golf,tea", **extra}  # fmt: skip


DAY_1 = [
    _row(
        "T1",
        "SMITH, John",
        score=1e7,
        seen_at=datetime(2026, 10, 1, 8, 0, 0, 123456, tzinfo=UTC),
        born=date(1582, 10, 4),
        visits=3,
        vip=True,
    ),
    _row("T2", "  mary-jane   o'neil ", score=0.1, seen_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    _row("T3", "O'BRIEN-SMITH,Seán", score=float("nan"), visits=-7, vip=False),
    _row("T4", "ΣΊΣΥΦΟΣ, Νίκος", score=-0.0),
    _row("T5", "VAN  DER BERG , Ann", score=1e-4),
    _row("T6", "İZMIR ﬁsh, Ali"),
    _row("T7", "Cher"),
    _row(None, "No Key"),  # MISSING_REQUIRED
    {name: None for name in SCHEMA.names},  # a row of nulls only: {}
    _row("T8", "X" * 401),  # FIELD_TOO_LONG
    _row("T9", "Ann Lee", dob="19461302"),  # no 13th month: INVALID_DATE, a warning
    _row("T10", "Bo Ek", dob="20990101"),  # a future birth date: IMPOSSIBLE_DATE, a warning
    _row("T1", "SMITH, Johnny"),  # T1 again: the first one read wins
    {**_row("T11", 'Quote "Q" Tab\tNew\nLine', dob=None), "address": "Zürich 😀 \\ /", "city": ""},
    _row("NULL", "Null Key"),  # a null-like key
    _row("T12", "", dob=""),
]
DAY_2 = [_row("T1", "SMITH, John"), _row("T20", "dž ǆemal džamić", vip=True)]
TABLES = (
    "bronze/third_party",
    "quarantine/third_party",
    "silver/customer_records",
    "ops/ingest_audit",
    "ops/data_quality",
    "ops/ingest_files",
)


def land(root: Path, day: int) -> None:
    folder = root / "landing" / "third_party"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(DAY_1 if day == 1 else DAY_2, schema=SCHEMA)
    pq.write_table(table, folder / f"enrichment_{day}.parquet", row_group_size=3)
    if day == 2:  # a delivery with no rows (NO_ROWS)
        pq.write_table(SCHEMA.empty_table(), folder / "enrichment_3.parquet")


def ingest(root: Path, engine: str, spark=None) -> dict[str, int]:
    from lakecdp.ingest.job import ingest as run

    return run(context(root, engine, spark), only=["third_party"])


def test_third_party_is_ingested_embedded(tmp_path):
    from lakecdp.ingest.embedded_batch import embedded_reason
    from lakecdp.ingest.sources import load_sources

    land(tmp_path, 1)
    source = load_sources(Path(__file__).parents[1] / "conf")["third_party"]
    assert embedded_reason(source, landing=tmp_path / "landing") is None
    counts = ingest(tmp_path, "embedded")  # no SparkSession: a hand-off to Spark would fail here
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_quarantined"]) == (16, 11, 4)
    quarantine = {r["line"]: (tuple(r["reasons"]), r["raw"]) for r in rows(tmp_path, "quarantine/third_party")}
    assert {line: reasons for line, (reasons, _) in quarantine.items()} == {
        8: ("MISSING_REQUIRED",),
        9: ("MISSING_REQUIRED",),
        10: ("FIELD_TOO_LONG",),
        15: ("INVALID_KEY",),
    }
    # Spark's to_json of the row (typed from Spark 4.2's answers): nulls left out, Java's doubles,
    # milliseconds truncated; unknown columns rescued as from_json(raw, map<string,string>) reads them
    assert quarantine[9][1] == "{}"
    assert quarantine[15][1] == (
        '{"ext_id":"NULL","full_name":"Null Key","dob":"19850302","address":"1 High St","postcode":"SW1A 1AA",'
        '"city":"London","income_band":"B","interests":"golf,tea"}'
    )
    rescued = {r["_line"]: r["_rescued"] for r in rows(tmp_path, "bronze/third_party")}
    assert rescued == {
        1: '{"score":"1.0E7","seen_at":"2026-10-01T08:00:00.123Z","born":"1582-10-04","visits":"3","vip":"true"}',
        2: '{"score":"0.1","seen_at":"1969-12-31T23:59:59.999Z"}',
        3: '{"score":"NaN","visits":"-7","vip":"false"}',
        4: '{"score":"-0.0"}',
        5: '{"score":"1.0E-4"}',
        **dict.fromkeys([6, 7, 11, 12, 13, 14, 16]),
    }
    records = {r["source_record_id"]: r for r in rows(tmp_path, "silver/customer_records")}
    names = {k: (r["first_name"], r["last_name"]) for k, r in records.items()}
    assert names == {
        "T1": ("John", "Smith"),
        "T2": ("mary-jane", "o'neil"),  # first-name-first: no initcap in the mapping
        "T3": ("Seán", "O'brien-smith"),
        "T4": ("Νίκος", "Σίσυφος"),
        "T5": ("Ann", "Van Der Berg"),  # the name cleaner folds the runs of spaces
        "T6": ("Ali", "İzmir Fish"),
        "T7": ("Cher", None),
        "T9": ("Ann", "Lee"),
        "T10": ("Bo", "Ek"),
        "T11": ("Quote", '"Q" TabNewLine'),
        "T12": (None, None),
    }
    assert (records["T9"]["warnings"], records["T10"]["warnings"]) == (["INVALID_DATE"], ["IMPOSSIBLE_DATE"])


def test_a_parquet_column_not_written_as_spark_writes_it_keeps_the_source_on_spark(tmp_path):
    from lakecdp.ingest.embedded_batch import embedded_reason
    from lakecdp.ingest.sources import load_sources

    source = load_sources(Path(__file__).parents[1] / "conf")["third_party"]
    folder = tmp_path / "third_party"
    folder.mkdir()
    pq.write_table(
        pa.table({"ext_id": ["T1"], "price": pa.array([1.5], pa.float32())}), folder / "enrichment_1.parquet"
    )
    assert embedded_reason(source, landing=tmp_path) == (
        "Parquet file third_party/enrichment_1.parquet column price of type float"
    )
    far = pa.array([datetime(9999, 12, 31, tzinfo=UTC)], pa.timestamp("s", tz="UTC")).cast(pa.int64())
    late = pa.array([far[0].as_py() + 86_400], pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    pq.write_table(pa.table({"ext_id": ["T1"], "at": late}), folder / "enrichment_1.parquet")
    assert "column at with a date outside years 1-9999" in str(embedded_reason(source, landing=tmp_path))
    (folder / "enrichment_1.parquet").write_bytes(b"not parquet")
    assert "that pyarrow cannot open" in str(embedded_reason(source, landing=tmp_path))


@pytest.mark.slow
def test_both_engines_ingest_third_party_into_the_same_rows(tmp_path, spark, caplog):
    # day 2: T1 a duplicate of a loaded key, a new name form, an empty file (NO_ROWS)
    assert_engines_agree(tmp_path, "third_party", land, ingest, TABLES, spark, caplog)
    assert ingest(tmp_path / "embedded", "embedded")["files_skipped"] == 3
    shutil.rmtree(tmp_path)


def test_spark_rescues_the_columns_a_parquet_file_has_beyond_the_source(tmp_path, spark):
    """A file whose columns are all configured has nothing to rescue on any row (its rows are
    not parsed a second time for their keys); the next file's extra column is rescued per row."""
    folder = tmp_path / "landing" / "third_party"
    folder.mkdir(parents=True)
    known = {name: SCHEMA.field(name).type for name in SCHEMA.names[:8]}
    pq.write_table(
        pa.Table.from_pylist([_row("T1", "Ann Lee"), _row("T2", "Bo Ek", dob=None)], schema=pa.schema(known)),
        folder / "enrichment_1.parquet",
    )
    extra = pa.schema({**known, "visits": pa.int32()})
    pq.write_table(
        pa.Table.from_pylist([_row("T3", "Cy Ra", visits=3), _row("T4", "Di Ox")], schema=extra),
        folder / "enrichment_2.parquet",
    )
    counts = ingest(tmp_path, "spark", spark)
    assert (counts["rows_read"], counts["rows_loaded"]) == (4, 4)
    rescued = {(r["_source_file"], r["_line"]): r["_rescued"] for r in rows(tmp_path, "bronze/third_party")}
    assert rescued == {
        ("third_party/enrichment_1.parquet", 1): None,
        ("third_party/enrichment_1.parquet", 2): None,
        ("third_party/enrichment_2.parquet", 1): '{"visits":"3"}',
        ("third_party/enrichment_2.parquet", 2): None,
    }
    shutil.rmtree(tmp_path)
