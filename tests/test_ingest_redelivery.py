"""Re-delivered files on the embedded engine. An events file: the lines already in bronze (from a
completed file, by row hash) are copied from their stored bronze rows as duplicates, not parsed,
checked and typed again; the rest is ingested as any line. A customer file: its known lines are
checked and ranked again but never standardised for silver (they cannot change a record).
Expected values are written here by hand; the spies only see the lines handed to the checker or
to silver (the cost the path saves), and Spark, which has no such path, is the oracle of the last
test."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project, on_engine

HEADER = b"event_id,event_type,email,campaign_id,occurred_at,bounce_type,url\n"
LINES = [
    b"e-1,open,bo.1@example.com,c-1,2026-10-30T08:00:00Z,,\n",
    b"e-2,click,bo.2@example.com,c-1,2026-10-30T08:01:00Z,,https://shop.example/x\n",
    b"e-3,open,bo.3@example.com,c-1,2026-10-30T08:02:00Z,,\n",
    # quarantined (no event type): not in bronze, so checked again when re-delivered
    b"e-4,,bo.4@example.com,c-1,2026-10-30T08:03:00Z,,\n",
]
NEW = b"e-5,open,bo.5@example.com,c-2,2026-10-31T09:00:00Z,,\n"


def _ingest(root: Path, as_of: str, run_id: str) -> dict[str, int]:
    from lakecdp.context import JobContext
    from lakecdp.ingest.job import ingest

    project = on_engine(make_project(root, as_of=as_of), "embedded")
    ctx = JobContext(project=project, spark=None, as_of=project.as_of(), run_id=run_id)  # type: ignore[arg-type]
    return ingest(ctx, only=["email_events"])


def _land(root: Path, name: str, data: bytes) -> None:
    folder = root / "landing" / "email_events"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _rows(root: Path, table: str) -> list[dict]:
    return DeltaTable(str(root / "warehouse" / table)).to_pyarrow_table().to_pylist()


def _checked_lines(monkeypatch) -> list[str]:
    from lakecdp.ingest import embedded_batch

    seen: list[str] = []
    check = embedded_batch.check_parsed

    def spy(rows, parsed, source, *, as_of, columns=None):
        seen.extend(row[0] for row in rows)
        return check(rows, parsed, source, as_of=as_of, columns=columns)

    monkeypatch.setattr(embedded_batch, "check_parsed", spy)
    return seen


def test_a_redelivered_file_copies_its_known_lines_from_bronze(tmp_path, monkeypatch):
    _land(tmp_path, "email_events_1.csv", HEADER + b"".join(LINES))
    first = _ingest(tmp_path, "2026-11-01T00:00:00Z", "run-1")
    assert (first["rows_loaded"], first["rows_quarantined"]) == (3, 1)

    # the same file again under a new name, one new line at the end
    _land(tmp_path, "email_events_2.csv", HEADER + b"".join(LINES) + NEW)
    checked = _checked_lines(monkeypatch)
    second = _ingest(tmp_path, "2026-11-02T00:00:00Z", "run-2")
    # only the quarantined line and the new one are checked again
    assert sorted(checked) == [LINES[3].decode().rstrip("\n"), NEW.decode().rstrip("\n")]
    assert (second["rows_read"], second["rows_loaded"], second["rows_quarantined"], second["duplicates_removed"]) == (
        5,
        1,
        1,
        3,
    )
    bronze = {(r["_source_file"], r["_line"]): r for r in _rows(tmp_path, "bronze/email_events")}
    copy, original = bronze[("email_events/email_events_2.csv", 4)], bronze[("email_events/email_events_1.csv", 4)]
    assert (copy["event_id"], copy["email"], copy["_run_id"]) == ("e-3", "bo.3@example.com", "run-2")
    assert copy["_ingested_at"] == datetime(2026, 11, 2, tzinfo=timezone.utc)
    assert copy["_row_hash"] == original["_row_hash"]
    assert sorted(line for file, line in bronze if file.endswith("_2.csv")) == [2, 3, 4, 6]
    quarantine = {(r["source_file"], r["line"]): r["reasons"] for r in _rows(tmp_path, "quarantine/email_events")}
    assert quarantine[("email_events/email_events_2.csv", 5)] == ["MISSING_REQUIRED"]
    audit = {r["source_file"]: r for r in _rows(tmp_path, "ops/ingest_audit")}
    assert audit["email_events/email_events_2.csv"]["duplicates_removed"] == 3
    quality = {(r["source_file"], r["reason"]): r["rows"] for r in _rows(tmp_path, "ops/data_quality")}
    assert quality[("email_events/email_events_2.csv", "DUPLICATE")] == 3
    events = sorted(r["event_id"] for r in _rows(tmp_path, "silver/events"))
    assert events == ["e-1", "e-2", "e-3", "e-5"]


def test_a_known_line_under_another_header_or_an_earlier_as_of_is_checked_again(tmp_path, monkeypatch):
    _land(tmp_path, "email_events_1.csv", HEADER + b"".join(LINES))
    _ingest(tmp_path, "2026-11-01T00:00:00Z", "run-1")

    # the same bytes under a header with campaign_id and bounce_type swapped: other fields
    swapped = HEADER.replace(b"campaign_id", b"@").replace(b"bounce_type", b"campaign_id").replace(b"@", b"bounce_type")
    _land(tmp_path, "email_events_2.csv", swapped + LINES[0])
    checked = _checked_lines(monkeypatch)
    _ingest(tmp_path, "2026-11-02T00:00:00Z", "run-2")
    assert checked == [LINES[0].decode().rstrip("\n")]
    bronze = {(r["_source_file"], r["_line"]): r for r in _rows(tmp_path, "bronze/email_events")}
    row = bronze[("email_events/email_events_2.csv", 2)]
    assert (row["campaign_id"], row["bounce_type"]) == (None, "c-1")

    # a run as of a time before the line's: the line is in the future now, quarantined
    _land(tmp_path, "email_events_3.csv", HEADER + LINES[1])
    checked.clear()
    third = _ingest(tmp_path, "2026-10-20T00:00:00Z", "run-3")
    assert checked == [LINES[1].decode().rstrip("\n")]
    assert (third["rows_quarantined"], third["duplicates_removed"]) == (1, 0)
    quarantine = {(r["source_file"], r["line"]): r["reasons"] for r in _rows(tmp_path, "quarantine/email_events")}
    assert quarantine[("email_events/email_events_3.csv", 2)] == ["FUTURE_TIMESTAMP"]


# -- customer records: re-delivered lines are checked and ranked again, never standardised --------

CRM_HEADER = "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified\n"


def _crm(customer: str, dob: str, modified: str) -> str:
    return (
        f"{customer},Ada,Lovelace,{customer.lower()}@example.com,020 7946 0018,{dob},"
        f"1 Main St,SW1A 1AA,London,GB,Y,{modified}\n"
    )


C1_OLD = _crm("C1", "02/03/1985", "2026-10-01 10:00:00")
C2_NEW = _crm("C2", "02/03/1985", "2026-10-05 10:00:00")
C2_OLD = _crm("C2", "01/01/1970", "2026-10-02 10:00:00")  # loses to C2_NEW on day 1
C3 = _crm("C3", "31/02/2020", "2026-10-03 10:00:00")  # no 31 February: loaded with INVALID_DATE
CRM_FILES = {
    1: CRM_HEADER + C1_OLD + C2_NEW + C2_OLD + C3,
    2: CRM_HEADER
    + C1_OLD
    + _crm("C1", "03/03/1985", "2026-10-10 10:00:00")  # new and later: wins over the known line
    + C2_OLD  # known, alone in the run: loaded, yet older than the stored C2
    + C3  # known: loaded again, its warning counted again
    + _crm("C3", "04/04/1984", "2026-09-01 00:00:00")  # new but older than the known line: loses
    + _crm("C4", "05/05/1975", "2026-10-20 10:00:00"),
}


def land_crm(root: Path, day: int) -> None:
    folder = root / "landing" / "crm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"crm_customers_{day}.csv").write_text(CRM_FILES[day])


def _ingest_crm(root: Path, engine: str, day: int, spark=None) -> dict[str, int]:
    from lakecdp.context import JobContext
    from lakecdp.ingest.job import ingest

    project = on_engine(make_project(root, as_of=f"2026-11-0{day}T00:00:00Z"), engine)
    ctx = JobContext(project=project, spark=spark, as_of=project.as_of(), run_id=f"run-{day}")  # type: ignore[arg-type]
    return ingest(ctx, only=["crm"])


def test_which_customer_sources_keep_their_records_on_redelivery():
    from lakecdp.ingest.sources import load_sources
    from lakecdp.ingest.writes import redelivery_keeps_records

    sources = load_sources(Path(__file__).parents[1] / "conf")
    # crm and shop_customers: the record id is the key, updated_at the event time as typed
    assert redelivery_keeps_records(sources["crm"]) and redelivery_keeps_records(sources["shop_customers"])
    # third_party has no event time (versions ranked by file and line); web_events writes events
    assert not redelivery_keeps_records(sources["third_party"])
    assert not redelivery_keeps_records(sources["web_events"])
    crm = sources["crm"]
    other_time = crm.model_copy(update={"mapping": {**crm.mapping, "updated_at": "current_timestamp()"}})
    assert not redelivery_keeps_records(other_time)
    other_id = crm.model_copy(update={"mapping": {**crm.mapping, "source_record_id": "lower(CustomerID)"}})
    assert not redelivery_keeps_records(other_id)


def test_a_redelivered_customer_file_leaves_its_known_records_unstandardised(tmp_path, monkeypatch):
    from lakecdp.ingest import embedded_batch

    land_crm(tmp_path, 1)
    first = _ingest_crm(tmp_path, "embedded", 1)
    assert (first["rows_loaded"], first["duplicates_removed"]) == (3, 1)

    land_crm(tmp_path, 2)
    standardised: list[tuple[str, str]] = []
    write = embedded_batch.write_silver_rows

    def spy(ctx, store, source, typed, hook):
        read = typed["_as_read"].to_pylist()
        standardised.extend((r["CustomerID"], r["LastModified"]) for r in read)
        return write(ctx, store, source, typed, hook)

    monkeypatch.setattr(embedded_batch, "write_silver_rows", spy)
    second = _ingest_crm(tmp_path, "embedded", 2)
    assert (second["rows_read"], second["rows_loaded"], second["rows_quarantined"], second["duplicates_removed"]) == (
        6,
        4,
        0,
        2,
    )
    # only the rows read anew that won their key reach silver's standardisation
    assert sorted(standardised) == [("C1", "2026-10-10 10:00:00"), ("C4", "2026-10-20 10:00:00")]
    records = {r["source_record_id"]: r for r in _rows(tmp_path, "silver/customer_records")}
    got = {
        k: (str(r["date_of_birth"]), r["date_of_birth_text"], str(r["updated_at"]), r["run_id"])
        for k, r in records.items()
    }
    assert got == {
        "C1": ("1985-03-03", None, "2026-10-10 10:00:00+00:00", "run-2"),
        "C2": ("1985-03-02", None, "2026-10-05 10:00:00+00:00", "run-1"),
        "C3": ("None", "31/02/2020", "2026-10-03 10:00:00+00:00", "run-1"),
        "C4": ("1975-05-05", None, "2026-10-20 10:00:00+00:00", "run-2"),
    }
    quality = {(r["source_file"], r["reason"]): r["rows"] for r in _rows(tmp_path, "ops/data_quality")}
    day_2 = {reason: n for (file, reason), n in quality.items() if file == "crm/crm_customers_2.csv"}
    assert day_2 == {"DUPLICATE": 2, "INVALID_DATE": 1}
    bronze = {(r["_source_file"], r["_line"]): r for r in _rows(tmp_path, "bronze/crm")}
    assert sorted(line for file, line in bronze if file.endswith("_2.csv")) == [2, 3, 4, 5, 6, 7]
    for new, old in ((2, 2), (4, 4), (5, 5)):
        copy, original = bronze[("crm/crm_customers_2.csv", new)], bronze[("crm/crm_customers_1.csv", old)]
        assert copy["_row_hash"] == original["_row_hash"] and copy["_run_id"] == "run-2"


# -- known customer lines take their fields from bronze, not from a second parse -------------------

QUOTED = 'C5,"Lovelace, Ada","O""Brien",c5@example.com,,02/03/1985,"1 Main St, Flat 2",SW1A 1AA,London,GB,Y,2026-10-04 10:00:00\n'
NO_TIME = "C6,Ada,Lovelace,c6@example.com,,02/03/1985,1 Main St,SW1A 1AA,London,GB,Y,\n"  # quarantined
SHOP = [
    '{"customer_no":"S1","email":"s1@example.com","name":{"first":"Zoë","last":"N\\"g"},"phone":"+44 20 7946 0001",'
    '"birth_date":"1980-01-02","address":{"line1":"1 Main St","zip":"E1 6AN","city":"London","country_code":"GB"},'
    '"marketing_consent":true,"sms_consent":false,"updated_at":"2026-10-01T10:00:00Z"}',
    '{"customer_no":"S2","email":"not an email","updated_at":"2026-10-02T10:00:00Z"}',
    # a key the source does not declare: rescued, so its stored row is not its whole reading
    '{"customer_no":"S3","email":"s3@example.com","loyalty":"gold","updated_at":"2026-10-03T10:00:00Z"}',
    '{"customer_no":"S4","marketing_consent":"yes","name":null,"birth_date":"31/02/1990","updated_at":"2026-10-04T10:00:00Z"}',
    '{"customer_no":"S5","email":"s5@example.com"}',  # no updated_at: quarantined
    '{ "customer_no" : "S7", "email" : "s7@example.com", "updated_at" : "2026-10-07T10:00:00Z" }',
]
S1_LATER = SHOP[0].replace("2026-10-01T10", "2026-10-11T10").replace("Zoë", "Zoe")
S6 = '{"customer_no":"S6","email":"s6@example.com","updated_at":"2026-10-06T10:00:00Z"}'
REDELIVERED = {
    "crm": (
        ["crm/crm_customers_1.csv", CRM_FILES[1] + QUOTED + NO_TIME],
        ["crm/crm_customers_2.csv", CRM_FILES[2] + QUOTED + NO_TIME],
        # parsed on day 2: the lines read anew, and the one quarantined on day 1
        [*(CRM_FILES[2].splitlines()[k] for k in (2, 5, 6)), NO_TIME.rstrip("\n")],
    ),
    "shop_customers": (
        ["shop_customers/customers_1.jsonl", "\n".join(SHOP) + "\n"],
        ["shop_customers/customers_2.jsonl", "\n".join([*SHOP, S1_LATER, S6]) + "\n"],
        [SHOP[2], SHOP[4], S1_LATER, S6],
    ),
}


@pytest.mark.parametrize("source", ["crm", "shop_customers"])
def test_known_customer_lines_read_from_bronze_as_if_parsed_again(tmp_path, monkeypatch, source):
    """A re-delivered customer line whose stored bronze row holds its whole reading takes its
    fields from that row instead of being parsed again (quoted CSV fields and JSON escapes
    included). Every count and table equals that of the same run parsing every line, the path
    switched off (the oracle); only the lines written out below reach the parser."""
    from test_ingest_engines import rows

    from lakecdp.context import JobContext
    from lakecdp.ingest import embedded_batch
    from lakecdp.ingest.job import ingest

    (first, day_1), (second, day_2), parsed_again = REDELIVERED[source]

    def run(root: Path, day: int) -> dict[str, int]:
        project = on_engine(make_project(root, as_of=f"2026-11-0{day}T00:00:00Z"), "embedded")
        ctx = JobContext(project=project, spark=None, as_of=project.as_of(), run_id=f"run-{day}")  # type: ignore[arg-type]
        return ingest(ctx, only=[source])

    ours, oracle = tmp_path / "ours", tmp_path / "oracle"
    for root in (ours, oracle):
        (root / "landing" / first).parent.mkdir(parents=True)
        (root / "landing" / first).write_text(day_1)
        run(root, 1)
        (root / "landing" / second).write_text(day_2)
    seen: list[str] = []
    parse = embedded_batch.parse_lines

    def spy(raws, *args, **kwargs):
        seen.extend(raws)
        return parse(raws, *args, **kwargs)

    monkeypatch.setattr(embedded_batch, "parse_lines", spy)
    got = run(ours, 2)
    assert sorted(seen) == sorted(parsed_again)
    monkeypatch.setattr(embedded_batch, "reads_as_columns", lambda _source, _header: False)
    seen.clear()
    assert got == run(oracle, 2)
    assert len(seen) == len(day_2.splitlines()) - (source == "crm")  # every line but the header
    tables = [
        f"bronze/{source}",
        f"quarantine/{source}",
        "silver/customer_records",
        "ops/ingest_audit",
        "ops/data_quality",
    ]
    assert {t: rows(ours, t) for t in tables} == {t: rows(oracle, t) for t in tables}


@pytest.mark.slow
def test_both_engines_agree_on_a_redelivered_customer_file(tmp_path, spark):
    """Day 1 on each engine, then the re-delivery on the other one each (the embedded engine
    matching lines against the bronze rows Spark wrote): the same counts and rows."""
    from test_ingest_crm_engines import TABLES
    from test_ingest_engines import rows

    on_spark, embedded = tmp_path / "spark", tmp_path / "embedded"
    for root in (on_spark, embedded):
        land_crm(root, 1)
    assert _ingest_crm(embedded, "embedded", 1) == _ingest_crm(on_spark, "spark", 1, spark)
    for root in (on_spark, embedded):
        land_crm(root, 2)
    assert _ingest_crm(on_spark, "embedded", 2) == _ingest_crm(embedded, "spark", 2, spark)
    assert {t: rows(embedded, t) for t in TABLES} == {t: rows(on_spark, t) for t in TABLES}


def test_a_line_is_known_by_its_whole_digest(tmp_path):
    import hashlib

    import pyarrow as pa

    from lakecdp.ingest.embedded_batch import _KnownLines
    from lakecdp.ingest.sources import load_sources

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    stored = pa.table(
        {
            "_source_file": ["f1", "f1", "f1", "f1", "f1", "f2", "f2"],
            "_row_hash": [
                sha("a"),
                sha("b")[:16] + "0" * 48,  # b's first 64 bits, not b's digest
                None,
                sha("c").upper(),  # not as hashlib writes it: no line's digest equals it
                sha("d"),
                sha("d"),  # d delivered twice: the first stored copy is the one named
                sha("a"),
            ],
        }
    )
    known = _KnownLines(tmp_path, load_sources(Path(__file__).parents[1] / "conf")["crm"], stored)
    positions, hashes = known.match(["a", "b", "c", "d", "e", "a"], None)
    assert positions == [0, None, None, 4, None, 0]
    assert hashes == [sha(t) for t in ["a", "b", "c", "d", "e", "a"]]
    assert known.match([], None) == ([], [])


def test_parquet_rows_are_sparks_to_json_of_the_row(tmp_path):
    """Arrow builds the lines of a Parquet file of texts; :func:`_json_value` (checked against
    Spark in test_ingest_parquet_engines) writing each field, joined per row, is the oracle."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lakecdp.ingest.embedded_batch import _json_value, parquet_rows
    from lakecdp.ingest.landing import LandedFile
    from lakecdp.ingest.sources import load_sources
    from lakecdp.sqldialect.translate import jackson_string

    chars = ["a", " ", '"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "😀", "\u2028", ",", "{", "/"]
    pick = random.Random(14)

    def text() -> str | None:
        return None if pick.random() < 0.2 else "".join(pick.choice(chars) for _ in range(pick.randint(0, 5)))

    count = 2000
    table = pa.table(
        {
            "ext_id": pa.array([text() for _ in range(count)], pa.large_string()),
            'we"ird\n': [text() for _ in range(count)],
            "visits": [pick.choice([None, 3, -7]) for _ in range(count)],
            "score": [pick.choice([None, 0.1, 1e7, float("nan")]) for _ in range(count)],
        }
    )
    table = pa.concat_tables(
        [table, pa.table({n: pa.nulls(1, f.type) for n, f in zip(table.column_names, table.schema)})]
    )
    path = tmp_path / "enrichment_1.parquet"
    pq.write_table(table, path, row_group_size=300)
    source = load_sources(Path(__file__).parents[1] / "conf")["third_party"]
    lines, _ = parquet_rows(LandedFile(path, "third_party/enrichment_1.parquet", 0, ""), source)

    def oracle(row: dict) -> str:
        fields = [jackson_string(name) + ":" + _json_value(value) for name, value in row.items() if value is not None]
        return "{" + ",".join(fields) + "}"

    assert lines == [(i + 1, oracle(row)) for i, row in enumerate(table.to_pylist())]
    assert lines[-1] == (count + 1, "{}")
    # by hand: a quote, a backslash and controls escaped as Jackson does, a NaN double quoted
    row = {"ext_id": 'T"1\\\x01', 'we"ird\n': None, "visits": 3, "score": float("nan")}
    pq.write_table(pa.Table.from_pylist([row], schema=table.schema), path)
    lines, _ = parquet_rows(LandedFile(path, "third_party/enrichment_1.parquet", 0, ""), source)
    assert lines == [(1, '{"ext_id":"T\\"1\\\\\\u0001","visits":3,"score":"NaN"}')]
