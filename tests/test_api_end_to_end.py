"""End to end through the real service, as ``lakecdp demo`` shows it: the demo world, then the
service on 127.0.0.1, an add-to-cart and a purchase (the web event and the shop's order) posted
over HTTP, reaching silver.events, silver.orders, the profile's order facts, the cart_abandoners
segment and the segment changes API.

Expected rows are chosen from the demo's tables (read with delta-rs) before anything is posted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable

from api_server import REPO_ROOT, write_conf
from tests.support.worlds import DEMO_PEOPLE, copy_demo_world, set_demo_people

# a demo world through every step, then the service: minutes, full suite only
pytestmark = pytest.mark.e2e

PEOPLE = DEMO_PEOPLE


def _rows(root: Path, table: str, columns: list[str] | None = None) -> list[dict]:
    return DeltaTable(str(root / "warehouse" / table)).to_pyarrow_table(columns=columns).to_pylist()


def test_events_posted_over_http_reach_the_segment_changes_api(tmp_path, tmp_path_factory, spark):
    from lakecdp.alerts import find_alerts, load_alerts_config
    from lakecdp.api.demo import show_intake
    from lakecdp.config import load_project

    # the world is Spark's; the service and the steps after it run on the one-machine engine, as in `lakecdp demo`
    conf = write_conf(tmp_path, engine="embedded")
    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    set_demo_people(conf, PEOPLE)
    project = load_project(conf, env="apitest")
    # the demo run on this conf, as of the same time (the API settings play no part in it):
    # built once per test run, copied here
    copy_demo_world(spark, tmp_path_factory, tmp_path, people=PEOPLE, as_of="2026-11-01T00:00:00Z")
    # a clean demo-sized run has nothing to alert about (the run checked itself: nothing sent)
    assert [a.cause for a in find_alerts(project, load_alerts_config(conf).rules)] == []
    assert not (tmp_path / "warehouse" / "ops" / "alerts").exists()

    # suppressed by id, or by any email / phone the profile lists (the segment API hides both)
    suppression = _rows(tmp_path, "activation/suppressions")
    suppressed = {r["customer_id"] for r in suppression if r["customer_id"]}
    values = {(r["identifier_type"], r["identifier_value"]) for r in suppression if r["identifier_value"]}
    suppressed |= {
        r["customer_id"]
        for r in _rows(tmp_path, "gold/customer_profile", ["customer_id", "emails", "phones"])
        if any(("email", e.strip().lower()) in values for e in r["emails"] or [])
        or any(("phone", p) in values for p in r["phones"] or [])
    }
    members = {
        r["customer_id"]
        for r in _rows(tmp_path, "segments/membership")
        if r["segment_id"] == "cart_abandoners" and r["is_current"]
    }
    profiles = sorted(
        (r["customer_id"], r["email"])
        for r in _rows(tmp_path, "gold/customer_profile", ["customer_id", "email"])
        if r["email"]
    )
    # only an email linked to the customer (identity.identifiers) brings a posted event to them; a
    # household's shared email is not linked
    linked = {
        (r["customer_id"], r["identifier_value"])
        for r in _rows(tmp_path, "identity/identifiers")
        if r["identifier_type"] == "email"
    }
    profiles = [(c, e) for c, e in profiles if (c, e) in linked]
    # A: not in the segment, not suppressed -> an add_to_cart makes A enter
    newcomer, newcomer_email = next((c, e) for c, e in profiles if c not in members and c not in suppressed)
    # B: an unsuppressed cart abandoner -> a purchase makes B leave, and B's order counts
    buyer, buyer_email = next((c, e) for c, e in profiles if c in members and c not in suppressed)
    facts_before = {
        r["customer_id"]: r
        for r in _rows(tmp_path, "gold/customer_features", ["customer_id", "order_count", "total_spent"])
    }[buyer]

    shown = show_intake(project, spark)

    assert (shown.newcomer, shown.buyer) == (newcomer, buyer)
    loaded = {r["event_id"]: r for r in _rows(tmp_path, "silver/events") if r["event_id"] in shown.event_ids}
    assert sorted((v["event_type"], v["email"], v["value"]) for v in loaded.values()) == sorted(
        [("add_to_cart", newcomer_email, 10.0), ("purchase", buyer_email, 42.5)]
    )
    orders = [r for r in _rows(tmp_path, "silver/orders") if r["order_id"] == shown.order_id]
    assert [(o["email"], o["status"], o["total"]) for o in orders] == [(buyer_email, "completed", 42.5)]
    facts_after = {
        r["customer_id"]: r
        for r in _rows(tmp_path, "gold/customer_features", ["customer_id", "order_count", "total_spent"])
    }[buyer]
    assert facts_after["order_count"] == (facts_before["order_count"] or 0) + 1
    assert facts_after["total_spent"] == pytest.approx((facts_before["total_spent"] or 0.0) + 42.5)
    # the changes API after the cursor held before posting: exactly these two people
    assert shown.changes == sorted([("entered", newcomer), ("exited", buyer)])
    current = {
        r["customer_id"]
        for r in _rows(tmp_path, "segments/membership")
        if r["segment_id"] == "cart_abandoners" and r["is_current"]
    }
    assert newcomer in current and buyer not in current
    print(f"HTTP post -> change row in the changes API: {shown.seconds:.1f} s (pickup + features + segments steps)")
