"""silver written by the embedded batch ingest (delta-rs, no Spark), as one MERGE would leave it.

customer_records: the rows whose upsert would change nothing are left out before standardisation,
new record ids are appended and only the others MERGEd (the latest row per record id replacing the
stored one when newer). events: the first row per new event id appended (an insert-only MERGE on
event_id). Expected rows by hand."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from lakecdp import catalog
from lakecdp.context import JobContext
from lakecdp.delta_store import DeltaStore, arrow_schema
from lakecdp.ingest.writes import _changing_rows, _insert_new_events, _stored_versions, _upsert_records

RECORDS = catalog.CUSTOMER_RECORDS


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=timezone.utc)


def _records(rows: list[tuple[str | None, str, datetime | None]]) -> pa.Table:
    """Customer records (record id, first name, updated_at), every other column null."""
    schema = arrow_schema(RECORDS.ddl)
    given = {
        "record_id": [r[0] for r in rows],
        "first_name": [r[1] for r in rows],
        "updated_at": [r[2] for r in rows],
    }
    return pa.table({f.name: pa.array(given.get(f.name, [None] * len(rows)), f.type) for f in schema}, schema=schema)


@pytest.fixture
def store(project) -> DeltaStore:
    return DeltaStore(JobContext.create(project, None, run_id="test"), label="lakecdp-test")


STORED = [("crm:a", "Old A", _at(2)), ("crm:b", "Old B", None), ("crm:c", "Old C", _at(5))]
#          position 0: older    1: equal          2: stored has none  3: null stamp
RUN = [("crm:a", "A1", _at(1)), ("crm:a", "A2", _at(2)), ("crm:b", "B3", _at(3)), ("crm:c", "C0", None)]
#       4, 5: newer, equal to each other (the first wins)   6: a new id   7: no id (never matched)
RUN += [("crm:c", "C6", _at(6)), ("crm:c", "C6b", _at(6)), ("crm:d", "D1", _at(1)), (None, "N", _at(1))]


def test_changing_rows_leave_out_what_the_merge_would_not_write(store: DeltaStore) -> None:
    store.append(_records(STORED), RECORDS.name, RECORDS.ddl, run_id="r0")
    run = _records(RUN)
    versions = pa.table(
        {
            "_row": pa.array(range(run.num_rows), pa.int64()),
            "record_id": run["record_id"],
            "updated_at": run["updated_at"],
        }
    )
    stored = _stored_versions(store)
    assert stored is not None
    assert sorted(_changing_rows(versions, stored).to_pylist()) == [2, 4, 5, 6, 7]


@pytest.mark.parametrize("stored_first", [True, False])
def test_upsert_appends_new_ids_and_merges_newer_versions(store: DeltaStore, stored_first: bool) -> None:
    if stored_first:
        store.append(_records(STORED), RECORDS.name, RECORDS.ddl, run_id="r0")
    _upsert_records(store, _records(RUN), run_id="r1")
    got = sorted(
        ((r["record_id"] or ""), r["first_name"], r["updated_at"])
        for r in store.read(RECORDS.name, columns=["record_id", "first_name", "updated_at"]).to_pylist()
    )
    if stored_first:
        expected = [("", "N", _at(1)), ("crm:a", "Old A", _at(2)), ("crm:b", "B3", _at(3))]
        expected += [("crm:c", "C6", _at(6)), ("crm:d", "D1", _at(1))]
    else:
        # a first load: the latest per id (a: day 2, b: day 3, c: C6 first of the two day-6 rows)
        expected = [("", "N", _at(1)), ("crm:a", "A2", _at(2)), ("crm:b", "B3", _at(3))]
        expected += [("crm:c", "C6", _at(6)), ("crm:d", "D1", _at(1))]
    assert got == expected
    # again: every id stored, nothing newer -> no row changes (the id-less row is inserted again, as by MERGE)
    _upsert_records(store, _records(RUN[:-1]), run_id="r2")
    assert store.read(RECORDS.name).num_rows == len(expected)


def _events(rows: list[tuple[str | None, str]]) -> pa.Table:
    """Events (event id, event type), every other column null."""
    schema = arrow_schema(catalog.EVENTS.ddl)
    given = {"event_id": [r[0] for r in rows], "event_type": [r[1] for r in rows]}
    return pa.table({f.name: pa.array(given.get(f.name, [None] * len(rows)), f.type) for f in schema}, schema=schema)


def test_new_events_appended_first_per_id_a_null_id_never_matches(store: DeltaStore) -> None:
    name = catalog.EVENTS.name
    _insert_new_events(store, _events([]), run_id="r0")
    assert store.exists(name) and store.read(name).num_rows == 0
    _insert_new_events(store, _events([("e1", "stored"), (None, "stored null")]), run_id="r1")
    run = [("e2", "first e2"), ("e1", "e1 again"), ("e2", "second e2"), (None, "null 1"), (None, "null 2")]
    _insert_new_events(store, _events(run), run_id="r2")
    got = sorted(((r["event_id"] or ""), r["event_type"]) for r in store.read(name).to_pylist())
    assert got == [("", "null 1"), ("", "stored null"), ("e1", "stored"), ("e2", "first e2")]


def _ledger(rows: list[tuple[str, str, str]]) -> pa.Table:
    """Ledger rows (source, content hash, run id), the other columns by hand."""
    schema = arrow_schema(catalog.INGEST_FILES.ddl)
    given = {
        "source": [r[0] for r in rows],
        "path": [f"{r[0]}/{r[1]}.csv" for r in rows],
        "size": [10] * len(rows),
        "content_hash": [r[1] for r in rows],
        "run_id": [r[2] for r in rows],
        "loaded_at": [_at(1)] * len(rows),
        "status": ["loaded"] * len(rows),
        "reason": [None] * len(rows),
    }
    return pa.table({f.name: pa.array(given[f.name], f.type) for f in schema}, schema=schema)


def test_ops_rows_appended_unless_a_key_is_stored_then_merged(store: DeltaStore) -> None:
    """An ops table (the ledger here) gets a run's rows appended when none of their keys is
    stored (a table not made yet, new files), and MERGEd when one is (a crashed run's rows):
    the MERGE inserts only the new key, the stored row stays as it was (insert-only)."""
    from lakecdp.ingest.writes import _merge_or_append

    name, ddl, keys = catalog.INGEST_FILES.name, catalog.INGEST_FILES.ddl, ["source", "content_hash"]

    def state() -> tuple[str, list[tuple[str, str, str]]]:
        table = store.table(name)
        rows = store.read(name, columns=["source", "content_hash", "run_id"]).to_pylist()
        return table.history(1)[0]["operation"], sorted((r["source"], r["content_hash"], r["run_id"]) for r in rows)

    _merge_or_append(store, _ledger([("crm", "h1", "r1")]), name, ddl, keys=keys, run_id="r1", update=False)
    assert state() == ("WRITE", [("crm", "h1", "r1")])
    # a new file, and the same hash under another source: no stored key, appended
    _merge_or_append(
        store, _ledger([("crm", "h2", "r2"), ("web", "h1", "r2")]), name, ddl, keys=keys, run_id="r2", update=False
    )
    assert state() == ("WRITE", [("crm", "h1", "r1"), ("crm", "h2", "r2"), ("web", "h1", "r2")])
    # crm h2 stored already (a re-run): MERGEd, only crm h3 inserted
    _merge_or_append(
        store, _ledger([("crm", "h2", "r3"), ("crm", "h3", "r3")]), name, ddl, keys=keys, run_id="r3", update=False
    )
    assert state() == (
        "MERGE",
        [("crm", "h1", "r1"), ("crm", "h2", "r2"), ("crm", "h3", "r3"), ("web", "h1", "r2")],
    )
