"""A re-delivered events file on the embedded engine: the lines already in bronze (from a completed
file, by row hash) are copied from their stored bronze rows as duplicates, not parsed, checked and
typed again; the rest is ingested as any line. Expected values are written here by hand; the
spy only counts the lines handed to the checker (the cost the copy saves)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

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
