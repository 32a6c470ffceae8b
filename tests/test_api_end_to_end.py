"""End to end through the real service: the demo world, then an add-to-cart and a purchase posted
over HTTP reach silver.events, the cart_abandoners segment and the segment changes API.

Expected rows are chosen from the demo's tables (read with delta-rs) before anything is posted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from api_server import KEYS, REPO_ROOT, Service, write_conf

# a demo world through every step, then the service: minutes, full suite only
pytestmark = pytest.mark.e2e

PEOPLE = 300


def _rows(root: Path, table: str, columns: list[str] | None = None) -> list[dict]:
    return DeltaTable(str(root / "warehouse" / table)).to_pyarrow_table(columns=columns).to_pylist()


def test_events_posted_over_http_reach_the_segment_changes_api(tmp_path, spark):
    from lakecdp.api.pickup import pickup
    from lakecdp.config import load_project
    from lakecdp.context import JobContext
    from lakecdp.pipeline import DEMO_STEPS, run_pipeline

    conf = write_conf(tmp_path)
    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    sample = yaml.safe_load((conf / "sample.yaml").read_text())
    sample["demo_people"] = PEOPLE
    (conf / "sample.yaml").write_text(yaml.safe_dump(sample))
    project = load_project(conf, env="apitest")
    run_pipeline(project, spark, steps=DEMO_STEPS, job="demo")

    suppressed = {r["customer_id"] for r in _rows(tmp_path, "activation/suppressions", ["customer_id"])}
    members = {r["customer_id"] for r in _rows(tmp_path, "segments/membership")
               if r["segment_id"] == "cart_abandoners" and r["is_current"]}
    profiles = sorted((r["customer_id"], r["email"]) for r in _rows(tmp_path, "gold/customer_profile",
                                                                    ["customer_id", "email"]) if r["email"])
    # A: not in the segment, not suppressed -> an add_to_cart makes A enter
    newcomer, newcomer_email = next((c, e) for c, e in profiles if c not in members and c not in suppressed)
    # B: an unsuppressed cart abandoner -> a purchase makes B leave
    buyer, buyer_email = next((c, e) for c, e in profiles if c in members and c not in suppressed)

    service = Service(conf).start()
    try:
        status, _, before = service.request("GET", "/v1/segments/cart_abandoners/changes?limit=1000",
                                            key=KEYS["email_platform"])
        assert status == 200
        cursor = before["cursor"]
        while before["has_more"]:
            _, _, before = service.request("GET", f"/v1/segments/cart_abandoners/changes?limit=1000&cursor={cursor}",
                                           key=KEYS["email_platform"])
            cursor = before["cursor"]
        posted_at = time.monotonic()
        events = [
            {"event_id": "w-http-cart", "event_type": "add_to_cart", "ts": "2026-10-31T23:00:00Z",
             "anonymous_id": "d-http-1", "user": {"email": newcomer_email}, "product_id": "P00001", "price": 10.0},
            {"event_id": "w-http-buy", "event_type": "purchase", "ts": "2026-10-31T23:30:00Z",
             "anonymous_id": "d-http-2", "user": {"email": buyer_email}, "order_id": "O-http-1", "revenue": 42.5},
        ]
        status, _, answer = service.request("POST", "/v1/batch", {"source": "web_events", "events": events},
                                            key=KEYS["website"])
        assert (status, answer) == (202, {"accepted": 2, "duplicates": 0})

        counts = pickup(JobContext.create(project, spark), tmp_path / "intake")
        assert (counts["rows_read"], counts["rows_loaded"]) == (2, 2)
        loaded = {r["event_id"]: r for r in _rows(tmp_path, "silver/events") if r["event_id"].startswith("w-http-")}
        assert {k: (v["event_type"], v["email"], v["value"]) for k, v in loaded.items()} == {
            "w-http-cart": ("add_to_cart", newcomer_email, 10.0), "w-http-buy": ("purchase", buyer_email, 42.5)}
        run_pipeline(project, spark, steps=[("features", "lakecdp.features.job:run"),
                                            ("segments", "lakecdp.segments.job:run")], job="api-e2e")

        status, _, after = service.request("GET", f"/v1/segments/cart_abandoners/changes?cursor={cursor}",
                                           key=KEYS["email_platform"])
        took = time.monotonic() - posted_at
        assert status == 200
        assert sorted((c["change_type"], c["customer_id"]) for c in after["changes"]) == sorted(
            [("entered", newcomer), ("exited", buyer)])
        # the cursor moved past them: asked again from there, nothing comes twice
        again = service.request("GET", f"/v1/segments/cart_abandoners/changes?cursor={after['cursor']}",
                                key=KEYS["email_platform"])[2]
        assert again["changes"] == []
        status, _, page = service.request("GET", "/v1/segments/cart_abandoners/members", key=KEYS["email_platform"])
        listed = {m["customer_id"] for m in page["members"]}
        assert newcomer in listed and buyer not in listed and not listed & suppressed
        print(f"HTTP post -> change row in the changes API: {took:.1f} s (pickup + features + segments steps)")
    finally:
        service.stop()
