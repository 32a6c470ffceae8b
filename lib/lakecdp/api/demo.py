"""The demo's real-time part (``lakecdp demo``, after the pipeline): the HTTP service on 127.0.0.1,
an add-to-cart and a purchase posted to it, and what they change downstream.

Steps, each logged: start the service (uvicorn in a thread, fresh API keys held in memory
only); pick a customer outside ``cart_abandoners`` and a cart abandoner from the demo's tables;
post the first one's ``add_to_cart`` and the second one's web ``purchase`` plus the shop's order
(``shop_orders``) over HTTP; pick the intake log up (``silver.events``, ``silver.orders``); run the
features and segments steps; read ``/v1/segments/cart_abandoners/changes`` from the cursor held
before posting. The service stops at the end.

Example:
    >>> shown = show_intake(project, spark)
    >>> shown.changes
    [('entered', 'C000123'), ('exited', 'C000045')]
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lakecdp import catalog
from lakecdp.api.config import ApiKey, load_api_config, new_key

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakecdp.config import Project
    from lakecdp.context import SparkHandle

logger = logging.getLogger(__name__)

SEGMENT = "cart_abandoners"
#: the destination whose segments the demo's email-platform key may read
DESTINATION = "demo_webhook"


@dataclass
class DemoIntake:
    """What the demo posted and what came out of the changes API."""

    newcomer: str
    buyer: str
    event_ids: list[str]
    order_id: str
    #: (change_type, customer_id) read from the changes API after posting
    changes: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class _Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(project: Project, table: str, columns: list[str]) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    from lakecdp.delta_store import arrow_table
    from lakecdp.tables import Tables

    return arrow_table(DeltaTable(str(Tables(project).location(table))), columns=columns).to_pylist()


def _start(project: Project, keys: dict[str, tuple[str, str]]):
    """The service in a thread of this process, on a free port of 127.0.0.1."""
    import uvicorn

    from lakecdp.api.app import create_app
    from lakecdp.api.server import build_state

    config = load_api_config(project.conf_dir)
    config = config.model_copy(
        update={
            "keys": [
                ApiKey(id="demo_website", sha256=keys["website"][1], sources=["web_events"]),
                ApiKey(id="demo_shop", sha256=keys["shop"][1], sources=["shop_orders"]),
                ApiKey(id="demo_email_platform", sha256=keys["email_platform"][1], destinations=[DESTINATION]),
            ]
        }
    )
    state = build_state(project, config)
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=_free_port(), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="lakecdp-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo's API service did not start")
        time.sleep(0.05)
    return server, thread, state, f"http://127.0.0.1:{server.config.port}"


def show_intake(project: Project, spark: SparkSession | SparkHandle) -> DemoIntake:
    """Post an add-to-cart and a purchase to the running service and follow them to the changes API
    (``spark`` a session, or a handle that starts one only if a step asks)."""
    from lakecdp.api.pickup import pickup
    from lakecdp.context import JobContext
    from lakecdp.pipeline import run_pipeline
    from lakecdp.steps import step

    from lakecdp.api.segments import SegmentReader

    # whom the segment API would hide: suppressed by id, or by one of their emails / phones
    suppressed = set(SegmentReader(project).suppressed().to_pylist())
    members = {
        r["customer_id"]
        for r in _rows(project, catalog.MEMBERSHIP.name, ["segment_id", "customer_id", "is_current"])
        if r["segment_id"] == SEGMENT and r["is_current"]
    }
    profiles = sorted(
        (r["customer_id"], r["email"])
        for r in _rows(project, catalog.CUSTOMER_PROFILE.name, ["customer_id", "email"])
        if r["email"]
    )
    # an event finds its customer through identity.identifiers: an email that several people share is
    # not linked (the over-sharing guard), so a posted event under it would reach nobody
    linked = {
        (r["customer_id"], r["identifier_value"])
        for r in _rows(project, catalog.IDENTIFIERS.name, ["identifier_type", "identifier_value", "customer_id"])
        if r["identifier_type"] == "email"
    }
    candidates = [(c, e) for c, e in profiles if c not in suppressed and (c, e) in linked]
    newcomer = next(((c, e) for c, e in candidates if c not in members), None)
    buyer = next(((c, e) for c, e in candidates if c in members), None)
    if newcomer is None or buyer is None:
        raise RuntimeError(
            f"the demo world has no unsuppressed customer {'outside' if newcomer is None else 'in'} "
            f"{SEGMENT}: nothing to show over HTTP"
        )

    keys = {name: new_key() for name in ("website", "shop", "email_platform")}
    server, thread, state, url = _start(project, keys)
    client = _Client(url)
    logger.info("API service on %s (keys for this demo only)", url)
    try:
        path = f"/v1/segments/{SEGMENT}/changes?limit=1000"
        status, page = client.call("GET", path, keys["email_platform"][0])
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {page}")
        while page["has_more"]:
            status, page = client.call("GET", f"{path}&cursor={page['cursor']}", keys["email_platform"][0])
        cursor = page["cursor"]

        # just before the run's as-of: the features of the next run count them
        moment = (project.as_of() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        started = time.monotonic()
        # ids of this demo only: a second demo on the same warehouse posts new events, not retries
        tag = uuid.uuid4().hex[:8]
        order_id = f"O-demo-http-{tag}"
        events = [
            {
                "event_id": f"w-demo-http-cart-{tag}",
                "event_type": "add_to_cart",
                "ts": moment,
                "anonymous_id": "d-demo-http-1",
                "user": {"email": newcomer[1]},
                "product_id": "P00001",
                "price": 10.0,
            },
            {
                "event_id": f"w-demo-http-buy-{tag}",
                "event_type": "purchase",
                "ts": moment,
                "anonymous_id": "d-demo-http-2",
                "user": {"email": buyer[1]},
                "order_id": order_id,
                "revenue": 42.5,
            },
        ]
        status, answer = client.call(
            "POST", "/v1/batch", keys["website"][0], {"source": "web_events", "events": events}
        )
        logger.info(
            "POST /v1/batch (web_events: add_to_cart for %s, purchase for %s): %s %s",
            newcomer[0],
            buyer[0],
            status,
            answer,
        )
        order = {
            "order_id": order_id,
            "email": buyer[1],
            "ordered_at": moment,
            "status": "completed",
            "currency": "EUR",
            "total": 42.5,
            "items": [{"sku": "P00001", "qty": 1, "unit_price": 42.5}],
        }
        status_order, answer_order = client.call(
            "POST", "/v1/events", keys["shop"][0], {"source": "shop_orders", "event": order}
        )
        logger.info("POST /v1/events (shop_orders %s for %s): %s %s", order_id, buyer[0], status_order, answer_order)
        if status != 202 or status_order != 202:
            raise RuntimeError(f"the demo's events were refused: {answer} {answer_order}")

        counts = pickup(JobContext.create(project, spark), state.log.log_dir)
        logger.info("api-pickup: %s", counts)
        run_pipeline(project, spark, steps=[step("features"), step("segments")], job="demo-api", resume=False)
        status, after = client.call("GET", f"/v1/segments/{SEGMENT}/changes?cursor={cursor}", keys["email_platform"][0])
        shown = DemoIntake(
            newcomer=newcomer[0],
            buyer=buyer[0],
            event_ids=[str(e["event_id"]) for e in events],
            order_id=order_id,
            seconds=time.monotonic() - started,
            changes=sorted((c["change_type"], c["customer_id"]) for c in after.get("changes", [])),
        )
        logger.info(
            "GET /v1/segments/%s/changes?cursor=...: %s (%.0f s after posting)", SEGMENT, shown.changes, shown.seconds
        )
        return shown
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        state.log.close()
