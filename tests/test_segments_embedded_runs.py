"""The embedded engine's no-op and incremental batch runs (lakecdp.segments.run_state), no Spark.

A run whose inputs' Delta versions, as_of and definitions are those of the last run (and nobody
wrote membership or changes since) is recorded without evaluating; a run after a features change
evaluates only the customers whose row differs, and writes the same rows as a full run.
Expected rows are written by hand.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakecdp import catalog
from lakecdp.context import JobContext
from lakecdp.delta_store import arrow_schema
from lakecdp.segments.definitions import SegmentDefinition
from lakecdp.segments.embedded import evaluate_and_write_embedded
from test_segments_event_embedded import embedded_project, write

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
PROFILE = "customer_id string, first_name string, run_id string"
FEATURES = "customer_id string, as_of timestamp, total_spent double, order_count int, run_id string"
SEGMENTS = {
    sid: SegmentDefinition.model_validate({"version": 1, "id": sid, "schedule": {"every_minutes": 60}, **spec})
    for sid, spec in {
        "big_spenders": {"condition": "total_spent > 500"},
        "regulars": {"condition": "order_count >= 3", "exclude": ["big_spenders"]},
        "anyone_buying": {"condition": "order_count >= 1"},
    }.items()
}
CHANGE_COLUMNS = ["segment_id", "customer_id", "change_type", "reason"]


def table(project, name: str) -> DeltaTable:
    return DeltaTable(str(project.warehouse / name.replace(".", "/")))


def changes_of(project, run_id: str) -> list[tuple]:
    rows = table(project, "segments.changes").to_pyarrow_table().to_pylist()
    return sorted(tuple(r[c] for c in CHANGE_COLUMNS) for r in rows if r["run_id"] == run_id)


def run(project, run_id: str, *, as_of: datetime = AS_OF, **options) -> dict[str, int]:
    ctx = JobContext(project=project, spark=None, as_of=as_of, run_id=run_id)  # type: ignore[arg-type]
    return evaluate_and_write_embedded(ctx, SEGMENTS, **options)


def features(rows: list[tuple], run_id: str) -> list[tuple]:
    return [(c, AS_OF, spent, orders, run_id) for c, spent, orders in rows]


@pytest.fixture
def filled(tmp_path):
    """A warehouse after one full run: c1 big spender, c2 regular, c3 buying once, c4 nothing."""
    project = embedded_project(tmp_path / "a")
    write(project, "gold.customer_profile", [(c, c.upper(), "r0") for c in ("c1", "c2", "c3", "c4")], PROFILE)
    first = [("c1", 900.0, 5), ("c2", 100.0, 4), ("c3", 50.0, 1), ("c4", 0.0, 0)]
    write(project, "gold.customer_features", features(first, "f1"), FEATURES)
    counts = run(project, "run-1")
    assert (counts["entered"], counts["members"]) == (5, 5)
    return project


def test_a_run_on_unchanged_inputs_is_recorded_without_evaluating(filled):
    membership_version = table(filled, "segments.membership").version()
    changes_version = table(filled, "segments.changes").version()

    again = run(filled, "run-2")

    assert again["skipped"] == 1 and again["entered"] == again["exited"] == 0
    # nothing written but the run record, which points at the same membership version
    assert table(filled, "segments.membership").version() == membership_version
    assert table(filled, "segments.changes").version() == changes_version
    runs = {r["run_id"]: r for r in table(filled, "segments.runs").to_pyarrow_table().to_pylist()}
    assert (runs["run-2"]["changes"], runs["run-2"]["membership_version"]) == (0, membership_version)
    # another as_of is another evaluation (conditions and expiry may read it)
    later = run(filled, "run-3", as_of=datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert "skipped" not in later and later["members"] == 5


def test_a_write_since_the_last_run_makes_the_next_one_evaluate(filled):
    # a run killed after its changes (never recorded) left a row: the next run must recover it
    killed = {
        "change_id": "x1",
        "run_id": "run-killed",
        "segment_id": "anyone_buying",
        "customer_id": "c4",
        "member_key": "",
        "change_type": "entered",
        "previous_customer_id": None,
        "changed_at": AS_OF,
        "reason": '{"rule":"order_count >= 1"}',
    }
    schema = arrow_schema(catalog.CHANGES.ddl)
    write_deltalake(
        str(filled.warehouse / "segments/changes"), pa.Table.from_pylist([killed], schema=schema), mode="append"
    )

    counts = run(filled, "run-2")

    assert "skipped" not in counts and counts["recovered_runs"] == 1
    # c4 (order_count 0) does not match: the recovered stay exits
    assert changes_of(filled, "run-2") == [
        ("anyone_buying", "c4", "exited", '{"rule":"order_count >= 1","exit":"no_longer_matches"}')
    ]


def test_an_incremental_run_writes_what_a_full_run_writes(filled, tmp_path, caplog):
    full = filled.model_copy(
        update={
            "environment": filled.environment.model_copy(
                update={"storage": filled.environment.storage.model_copy(update={"warehouse": str(tmp_path / "b")})}
            )
        }
    )
    shutil.copytree(filled.warehouse, full.warehouse)
    # every row gets a new run_id (not compared); c1 stops spending big (leaves big_spenders, so the
    # exclusion lets it into regulars), c3 becomes a regular, c4 leaves features (its view row
    # changes: no spend, no orders); c2 is unchanged
    second = [("c1", 400.0, 5), ("c2", 100.0, 4), ("c3", 50.0, 3)]
    for project in (filled, full):
        write(project, "gold.customer_features", features(second, "f2"), FEATURES)

    with caplog.at_level(logging.INFO, logger="lakecdp.segments.embedded"):
        incremental = run(filled, "run-2")
    whole = run(full, "run-2", incremental=False)

    assert any("changed customers found (3 in gold.customer_features)" in m for m in caplog.messages)
    expected = [
        ("big_spenders", "c1", "exited", '{"rule":"total_spent > 500","exit":"no_longer_matches"}'),
        ("regulars", "c1", "entered", '{"rule":"order_count >= 3","values":{"order_count":5}}'),
        ("regulars", "c3", "entered", '{"rule":"order_count >= 3","values":{"order_count":3}}'),
    ]
    assert changes_of(filled, "run-2") == changes_of(full, "run-2") == expected
    assert (
        incremental
        == whole
        == {
            "segments": 3,
            "recovered_runs": 0,
            "members": 6,
            "entered": 2,
            "exited": 1,
            "updated": 0,
            "rekeyed": 0,
            "held": 0,
        }
    )

    def stays(project):
        rows = table(project, "segments.membership").to_pyarrow_table().to_pylist()
        keys = ("segment_id", "customer_id", "entered_run_id", "exited_run_id", "is_current", "reason")
        return sorted(tuple(r[k] for k in keys) for r in rows)

    assert stays(filled) == stays(full)
