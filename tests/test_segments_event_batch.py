"""The embedded event micro-batch (:mod:`lakecdp.segments.event_batch`), no JVM: new events in
silver.events -> the event segments of their customers only -> changes and membership.

Expected rows are written by hand beside the events: c1 browses three products (recent browser),
c3 adds to cart (cart abandoner; recent_browsers excludes cart abandoners), c3 then buys (exits),
c2 adds to cart in a micro-batch killed after its changes (recovered, nothing twice).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import REPO_ROOT, make_project, on_engine
from lakecdp.context import JobContext
from lakecdp.delta_store import arrow_schema
from lakecdp.segments.definitions import load_segments

PROFILE = "customer_id string, first_name string, email string, run_id string"
FEATURES = "customer_id string, as_of timestamp, total_spent double, last_activity_at timestamp, run_id string"
IDENTIFIERS = "identifier_type string, identifier_value string, customer_id string, run_id string"
EVENTS = (
    "event_id string, source string, event_type string, occurred_at timestamp, email string, device_id string, "
    "customer_number string, session_id string, product_id string, category string, value double, order_id string, "
    "campaign_id string, channel string, bounce_type string, url string, run_id string, ingested_at timestamp"
)
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def write(project, name: str, rows: list[dict], schema: str, *, mode: str = "append") -> None:
    arrow = arrow_schema(schema)
    table = pa.Table.from_pylist(rows, schema=arrow)
    write_deltalake(str(project.warehouse / name.replace(".", "/")), table, mode=mode)


def event(event_id: str, event_type: str, at: str, *, email=None, device=None, product=None) -> dict:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": ts(at),
        "email": email,
        "device_id": device,
        "product_id": product,
    }


def changes(project) -> list[tuple]:
    table = DeltaTable(str(project.warehouse / "segments" / "changes")).to_pyarrow_table().to_pylist()
    return sorted((c["run_id"], c["segment_id"], c["customer_id"], c["change_type"]) for c in table)


def current(project) -> list[tuple]:
    table = DeltaTable(str(project.warehouse / "segments" / "membership")).to_pyarrow_table().to_pylist()
    return sorted((m["segment_id"], m["customer_id"]) for m in table if m["is_current"])


@pytest.fixture
def world(tmp_path):
    project = make_project(tmp_path)
    project = on_engine(project, "embedded")
    write(project, "gold.customer_profile", [{"customer_id": c, "run_id": "r0"} for c in ("c1", "c2", "c3")], PROFILE)
    write(
        project,
        "gold.customer_features",
        [{"customer_id": c, "as_of": AS_OF, "run_id": "r0"} for c in ("c1", "c2", "c3")],
        FEATURES,
    )
    write(
        project,
        "identity.identifiers",
        [
            {"identifier_type": "email", "identifier_value": "c1@x.io", "customer_id": "c1"},
            {"identifier_type": "email", "identifier_value": "c2@x.io", "customer_id": "c2"},
            {"identifier_type": "device_id", "identifier_value": "d3", "customer_id": "c3"},
        ],
        IDENTIFIERS,
    )
    segments = load_segments(REPO_ROOT / "conf" / "segments")
    wanted = {sid: segments[sid] for sid in ("cart_abandoners", "recent_browsers")}
    return project, wanted


def batch(project, segments, **kw):
    from lakecdp.segments.event_batch import process_new_events

    ctx = JobContext(project=project, spark=None, as_of=AS_OF, run_id="unused")  # type: ignore[arg-type]
    return process_new_events(ctx, segments, run_prefix="t", as_of=AS_OF, **kw)


def test_new_events_move_only_their_customers(world):
    project, segments = world
    write(
        project,
        "silver.events",
        [
            event("e1", "product_view", "2026-10-31 10:00", email="c1@x.io", product="P1"),
            event("e2", "product_view", "2026-10-31 11:00", email="c1@x.io", product="P2"),
            event("e3", "product_view", "2026-10-31 12:00", email="c1@x.io", product="P3"),
            event("e4", "product_view", "2026-10-31 18:00", device="d3", product="P4"),
            event("e5", "add_to_cart", "2026-10-31 20:00", device="d3", product="P4"),
            event("e6", "product_view", "2026-10-31 20:00", device="d-nobody", product="P4"),
        ],
        EVENTS,
    )
    first = batch(project, segments)
    assert (first["customers"], first["entered"], first["exited"]) == (2, 2, 0)
    assert changes(project) == [
        ("t-v0000000000", "cart_abandoners", "c3", "entered"),
        ("t-v0000000000", "recent_browsers", "c1", "entered"),
    ]
    # nothing new in silver.events: no evaluation, no run
    assert batch(project, segments) == {}

    # c3 buys: only c3 is re-evaluated (c1's stay is untouched) and leaves the abandoners
    write(project, "silver.events", [event("e7", "purchase", "2026-10-31 21:00", device="d3")], EVENTS)
    second = batch(project, segments)
    assert (second["events"], second["customers"], second["exited"], second["entered"]) == (1, 1, 1, 0)
    assert changes(project)[-1] == ("t-v0000000001", "cart_abandoners", "c3", "exited")
    assert current(project) == [("recent_browsers", "c1")]
    runs = DeltaTable(str(project.warehouse / "segments" / "runs")).to_pyarrow_table().to_pylist()
    assert sorted((r["run_id"], r["mode"], r["changes"]) for r in runs) == [
        ("t-v0000000000", "stream", 2),
        ("t-v0000000001", "stream", 1),
    ]


def test_a_micro_batch_killed_after_its_changes_writes_nothing_twice(world, monkeypatch):
    import lakecdp.segments.event_batch as event_batch

    project, segments = world
    write(project, "silver.events", [event("e1", "add_to_cart", "2026-10-31 20:00", email="c2@x.io")], EVENTS)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the changes and membership commits")

    monkeypatch.setattr(event_batch, "apply_run", killed)
    with pytest.raises(KeyboardInterrupt):
        batch(project, segments)
    monkeypatch.undo()
    assert changes(project) == [("t-v0000000000", "cart_abandoners", "c2", "entered")]
    assert current(project) == []
    # the next micro-batch applies the stored changes, evaluates the same versions again: no new row
    again = batch(project, segments)
    assert (again["recovered_runs"], again["entered"]) == (1, 0)
    assert changes(project) == [("t-v0000000000", "cart_abandoners", "c2", "entered")]
    assert current(project) == [("cart_abandoners", "c2")]
    assert batch(project, segments) == {}
