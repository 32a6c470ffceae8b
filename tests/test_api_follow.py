"""``lakecdp api-pickup --follow`` against the real service on 127.0.0.1, no JVM: an add_to_cart
posted over HTTP becomes an ``entered cart_abandoners`` row in the segment changes API, and a
purchase an ``exited`` row, while the loop runs.

The warehouse holds a three-customer world written with delta-rs (profile, features,
identifiers); the expected changes are written by hand.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import yaml

from api_server import KEYS, Service, write_conf, write_three_customers


def _event(event_id: str, event_type: str, email: str) -> dict:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "ts": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "anonymous_id": f"d-{event_id}",
        "user": {"email": email},
        "product_id": "P00001",
        "price": 19.99,
    }


def test_http_events_reach_the_changes_api_through_the_follow_loop(tmp_path):
    from lakecdp.api.follow import follow
    from lakecdp.config import load_project

    conf = write_conf(tmp_path)
    environment = conf / "environments" / "apitest.yaml"
    environment.write_text(yaml.safe_dump({**yaml.safe_load(environment.read_text()), "engine": "embedded"}))
    write_three_customers(tmp_path)
    project = load_project(conf, env="apitest")
    stop = threading.Event()
    totals: dict = {}
    loop = threading.Thread(target=lambda: totals.update(follow(project, interval=0.1, stop=stop)), daemon=True)
    service = Service(conf).start()
    loop.start()
    try:

        def changes_of(cursor: str | None) -> tuple[list[tuple[str, str]], str | None]:
            path = "/v1/segments/cart_abandoners/changes" + (f"?cursor={cursor}" if cursor else "")
            status, _, answer = service.request("GET", path, key=KEYS["email_platform"])
            assert status == 200, answer
            return [(c["change_type"], c["customer_id"]) for c in answer["changes"]], answer["cursor"]

        def wait_for(cursor: str | None, expected: list[tuple[str, str]]) -> tuple[float, str | None]:
            started, seen = time.monotonic(), []
            while time.monotonic() - started < 60:
                found, cursor = changes_of(cursor)
                seen += found
                if seen == expected:
                    return time.monotonic() - started, cursor
                assert len(seen) < len(expected), seen
                time.sleep(0.2)
            raise AssertionError(f"after 60 s the changes API shows {seen}, expected {expected}")

        post = lambda event: service.request(  # noqa: E731
            "POST", "/v1/events", {"source": "web_events", "event": event}, key=KEYS["website"]
        )
        assert post(_event("cart-1", "add_to_cart", "c2@x.io"))[0] == 202
        seconds, cursor = wait_for(None, [("entered", "c2")])
        assert seconds < 30
        assert post(_event("buy-1", "purchase", "c2@x.io"))[0] == 202
        wait_for(cursor, [("exited", "c2")])
    finally:
        stop.set()
        loop.join(timeout=30)
        service.stop()
    assert (totals["rows_loaded"], totals["entered"], totals["exited"]) == (2, 1, 1)
