"""The embedded ingest runs a step's sources side by side (one thread per core): two sources that
write the same silver table never write it at once, every source is tried when one fails, and
the ones that completed are audited and ledgered. Expected values are written here by hand."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import make_project, on_engine

CRM = (
    "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified\n"
    "C1,Ada,Lovelace,ada@example.com,020 7946 0018,02/03/1985,1 Main St,SW1A 1AA,London,GB,Y,2026-10-01 10:00:00\n"
    "C2,Bo,Smith,bo@example.com,,29/02/2000,2 High St,SW1A 2AA,London,GB,N,2026-10-01 11:00:00\n"
    # no LastModified (required): quarantined
    "C3,Cy,Jones,cy@example.com,,01/01/1990,3 Low St,SW1A 3AA,London,GB,N,\n"
)
SHOP = (
    '{"customer_no": "S1", "email": "sam@example.com", "name": {"first": "Sam", "last": "Ray"}, '
    '"updated_at": "2026-10-02T08:00:00Z"}\n'
    '{"customer_no": "S2", "email": "sue@example.com", "name": {"first": "Sue", "last": "Lee"}, '
    '"updated_at": "2026-10-02T09:00:00Z"}\n'
)


class _Crash(Exception):
    pass


def _land(root: Path) -> None:
    for relative, text in (("crm/crm_customers_0.csv", CRM), ("shop_customers/customers_0.jsonl", SHOP)):
        path = root / "landing" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _ingest(root: Path, run_id: str, **kwargs) -> dict[str, int]:
    from lakecdp.context import JobContext
    from lakecdp.ingest.job import ingest

    project = on_engine(make_project(root, as_of="2026-11-01T00:00:00Z"), "embedded")
    ctx = JobContext(project=project, spark=None, as_of=project.as_of(), run_id=run_id)  # type: ignore[arg-type]
    return ingest(ctx, only=["crm", "shop_customers"], **kwargs)


def _column(root: Path, table: str, *names: str) -> list[tuple]:
    rows = DeltaTable(str(root / "warehouse" / table)).to_pyarrow_table(columns=list(names)).to_pylist()
    return sorted(tuple(r[n] for n in names) for r in rows)


def test_side_by_side_tries_every_name_and_raises_the_first_failure_in_order():
    from lakecdp.ingest.embedded_batch import _side_by_side

    done: list[str] = []
    threads: set[str] = set()
    both = threading.Barrier(2, timeout=10)

    def work(name: str) -> None:
        threads.add(threading.current_thread().name)
        if name in ("a", "b"):
            both.wait()  # a and b run at the same time (on one core they could not meet here)
        if name in ("b", "c"):
            raise ValueError(name)
        done.append(name)

    with pytest.raises(ValueError, match="^b$"):
        _side_by_side(work, ["a", "b", "c", "d"], workers=2)
    assert sorted(done) == ["a", "d"]
    assert len(threads) == 2


def test_two_customer_sources_side_by_side_commit_silver_one_at_a_time(tmp_path, monkeypatch):
    """Each source maps its own records beside the other (record ids are prefixed by labels no
    two sources share), but silver.customer_records takes one source's commits at a time."""
    from lakecdp.delta_store import DeltaStore

    _land(tmp_path)
    inside: list[str] = []
    overlapped: list[bool] = []
    entered = threading.Event()

    def watched(method):
        def call(self, data, name, *args, **kwargs):
            if name != "silver.customer_records":
                return method(self, data, name, *args, **kwargs)
            who = threading.current_thread().name
            inside.append(who)
            overlapped.append(len(inside) > 1)
            if not entered.is_set():
                entered.set()
                time.sleep(1.0)  # the other source commits meanwhile if the lock lets it
            try:
                return method(self, data, name, *args, **kwargs)
            finally:
                inside.remove(who)

        return call

    monkeypatch.setattr(DeltaStore, "append", watched(DeltaStore.append))
    monkeypatch.setattr(DeltaStore, "merge", watched(DeltaStore.merge))
    counts = _ingest(tmp_path, "run-1")
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_quarantined"]) == (5, 4, 1)
    # each source appends its new records and MERGEs none: two commits each, never two at once
    assert overlapped == [False, False, False, False]
    assert _column(tmp_path, "silver/customer_records", "source", "source_record_id") == [
        ("crm", "C1"),
        ("crm", "C2"),
        ("shop_customers", "S1"),
        ("shop_customers", "S2"),
    ]


def test_two_sources_may_not_write_customer_records_under_one_label(tmp_path):
    """A record id is ``<label>:<id>``: a second source writing records under a label another
    source writes would replace that source's records (and both are mapped side by side)."""
    from lakecdp.config import ConfigError
    from lakecdp.ingest.sources import ExtraTarget, load_sources

    conf = Path(__file__).parents[1] / "conf" / "sources"
    for path in conf.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    assert load_sources(tmp_path)["web_events"].also[0].record_source == "web"
    web = tmp_path / "web_events.yaml"
    web.write_text(web.read_text().replace("record_source: web", "record_source: crm"))
    with pytest.raises(ConfigError, match=r"web_events\.yaml: its customer records' source label 'crm' is also crm's"):
        load_sources(tmp_path)
    with pytest.raises(ValueError, match="record_source 'web:x' must be lower-case"):
        ExtraTarget(target="customer_records", filter="true", record_source="web:x", mapping={})


def test_a_source_that_fails_leaves_the_other_loaded_and_ledgered(tmp_path):
    _land(tmp_path)

    def crash_after_crm_bronze(table: str) -> None:
        if table == "bronze.crm":
            raise _Crash(f"killed after writing {table}")

    with pytest.raises(_Crash):
        _ingest(tmp_path, "run-1", hook=crash_after_crm_bronze)
    # shop_customers completed beside it: audited and in the ledger; crm is not
    assert _column(tmp_path, "ops/ingest_files", "source", "path", "status") == [
        ("shop_customers", "shop_customers/customers_0.jsonl", "loaded")
    ]
    assert _column(tmp_path, "ops/ingest_audit", "source_file", "rows_read", "rows_loaded") == [
        ("shop_customers/customers_0.jsonl", 2, 2)
    ]

    # the next run does crm's file again (its bronze rows are not added twice) and skips shop's
    counts = _ingest(tmp_path, "run-2")
    assert (counts["files_loaded"], counts["files_skipped"], counts["rows_read"]) == (1, 1, 3)
    assert _column(tmp_path, "bronze/crm", "CustomerID", "_line") == [("C1", 2), ("C2", 3)]
    assert _column(tmp_path, "quarantine/crm", "line") == [(4,)]
    assert _column(tmp_path, "silver/customer_records", "source", "source_record_id") == [
        ("crm", "C1"),
        ("crm", "C2"),
        ("shop_customers", "S1"),
        ("shop_customers", "S2"),
    ]
