"""HTTP add_to_cart -> cart_abandoners change row in the segment changes API (the HTTP twin of
bench/segment_stream_latency.py, which measures the Kafka path).

    .venv/bin/python -m bench.api_segment_latency [--people 300] [--customers 20]

Builds the same small real world (sample generator -> ingest -> identity -> features), starts
the service on 127.0.0.1 (``lakecdp.api.demo``'s in-process uvicorn) and the production segment
stream (:func:`lakecdp.segments.streaming.start_stream`, silver.events -> event segments). Then
``--customers`` known customers each post one ``add_to_cart`` over HTTP (``--per-send`` per
second, from a client thread); the main thread loops ``api-pickup`` (the intake log ->
silver.events) and the segment stream; a poller thread reads
``/v1/segments/cart_abandoners/changes`` every 0.5 s. Per customer: the 202's send time ->
(a) the event's commit in silver.events, (b) the ``entered`` row's commit in segments.changes
(the Kafka bench's end point), (c) the first answer of the changes API that holds the row.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid

from bench.kafka_latency import _percentiles
from bench.results import append_results, machine, stamp
from bench.segment_stream_latency import SEGMENT, _pick_customers, _project


def main(argv: list[str] | None = None) -> int:
    import os
    import tempfile
    from pathlib import Path

    from lakecdp.api.config import new_key
    from lakecdp.api.demo import DESTINATION, _Client, _start  # noqa: F401 (DESTINATION: the key's scope)
    from lakecdp.api.pickup import pickup
    from lakecdp.context import JobContext
    from lakecdp.pipeline import run_pipeline
    from lakecdp.steps import demo_steps
    from lakecdp.segments.definitions import load_segments
    from lakecdp.segments.streaming import start_stream
    from lakecdp.spark import get_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--per-send", type=int, default=2, help="events posted per second")
    parser.add_argument("--trigger", default="2 seconds", help="trigger of the segment stream")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    machine_text, when, load_before = machine(), stamp(), os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="lakecdp-bench-apiseg-"))
    project = _project(root, args.people)
    spark = get_session(project, app_name="lakecdp-bench-api-segments")
    run_pipeline(
        project,
        spark,
        steps=[s for s in demo_steps() if s.name in {"generate", "ingest", "identity", "features"}],
        job="bench-setup",
    )
    ctx = JobContext.create(project, spark)
    keys = {name: new_key() for name in ("website", "shop", "email_platform")}
    server, thread, state, url = _start(project, keys)
    client = _Client(url)
    query = start_stream(
        ctx,
        segments=load_segments(project.conf_dir / "segments"),
        processing_time=args.trigger,
        run_prefix="bench-api-stream",
    )

    def cart(event_id: str, email: str) -> dict:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            "event_id": event_id,
            "event_type": "add_to_cart",
            "ts": now,
            "anonymous_id": f"d-{event_id}",
            "session_id": f"s-{event_id}",
            "user": {"email": email},
            "page_url": "https://shop.example/p/P00001",
            "product_id": "P00001",
            "price": 19.99,
        }

    def post(event_id: str, email: str) -> float:
        sent = time.time()
        status, answer = client.call(
            "POST", "/v1/events", keys["website"][0], {"source": "web_events", "event": cart(event_id, email)}
        )
        if status != 202:
            raise RuntimeError(f"POST refused: {status} {answer}")
        return sent

    try:
        query.processAllAvailable()
        customers = _pick_customers(ctx, args.customers)
        warm_email = next(iter(customers))
        customers.pop(warm_email)
        post(f"warm-{uuid.uuid4().hex[:6]}", warm_email)
        pickup(ctx, state.log.log_dir)
        query.processAllAvailable()
        # the changes feed's end before anything is posted
        path = f"/v1/segments/{SEGMENT}/changes?limit=1000"
        _, page = client.call("GET", path, keys["email_platform"][0])
        while page["has_more"]:
            _, page = client.call("GET", f"{path}&cursor={page['cursor']}", keys["email_platform"][0])
        cursor = page["cursor"]

        wanted = set(customers.values())
        seen: dict[str, float] = {}
        sent: dict[str, float] = {}
        by_customer: dict[str, str] = {}
        stop = threading.Event()

        def poll() -> None:
            nonlocal cursor
            while not stop.is_set() and len(seen) < len(wanted):
                _, answer = client.call("GET", f"{path}&cursor={cursor}", keys["email_platform"][0])
                now = time.time()
                for change in answer.get("changes", []):
                    if change["change_type"] == "entered" and change["customer_id"] in wanted:
                        seen.setdefault(change["customer_id"], now)
                cursor = answer.get("cursor", cursor)
                time.sleep(0.5)

        def send() -> None:
            for i, (email, customer) in enumerate(customers.items()):
                tick = time.monotonic()
                event_id = f"cart-{i:04d}"
                by_customer[customer] = event_id
                sent[customer] = post(event_id, email)
                if (i + 1) % args.per_send == 0:
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        poller, sender = threading.Thread(target=poll, daemon=True), threading.Thread(target=send, daemon=True)
        poller.start()
        sender.start()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(seen) < len(wanted):
            pickup(ctx, state.log.log_dir)
            query.processAllAvailable()
            time.sleep(0.2)
        stop.set()
        poller.join(timeout=10)
        sender.join(timeout=10)
    finally:
        query.stop()
        server.should_exit = True
        thread.join(timeout=30)
        state.log.close()

    if len(seen) != len(wanted):
        raise RuntimeError(f"{len(wanted) - len(seen)} customers never reached the changes API")
    entered = {
        r["customer_id"]: r["ms"] / 1000.0
        for r in ctx.tables.read_changes(spark, "segments.changes", starting_version=0)
        .where(f"_change_type = 'insert' AND segment_id = '{SEGMENT}' AND change_type = 'entered'")
        .selectExpr("customer_id", "unix_millis(_commit_timestamp) AS ms")
        .collect()
        if r["customer_id"] in wanted
    }
    visible = {
        r["event_id"]: r["ms"] / 1000.0
        for r in ctx.tables.read_changes(spark, "silver.events", starting_version=0)
        .where("_change_type = 'insert' AND event_id LIKE 'cart-%'")
        .selectExpr("event_id", "unix_millis(_commit_timestamp) AS ms")
        .collect()
    }
    to_silver = [visible[by_customer[c]] - sent[c] for c in wanted]
    to_change = [entered[c] - sent[c] for c in wanted]
    to_api = [seen[c] - sent[c] for c in wanted]
    rows = [
        (name, *_percentiles(values))
        for name, values in (
            ("event row in silver.events (api-pickup)", to_silver),
            ("`entered cart_abandoners` row committed in segments.changes", to_change),
            ("that row first returned by `GET /v1/segments/cart_abandoners/changes`", to_api),
        )
    ]
    table = "\n".join(f"| {name} | {p50:.1f} s | {p95:.1f} s |" for name, p50, p95 in rows)
    report = f"""## HTTP add_to_cart -> cart_abandoners change row in the changes API

Measured {when} on {machine_text} (shared box; 1-minute load average {load_before[0]:.1f} at start,
{os.getloadavg()[0]:.1f} at the end); Spark local[2]; sample world of {args.people} people (generate, ingest,
identity, features); {len(wanted)} known customers each post one `add_to_cart` (with their email) to
`lakecdp serve` on 127.0.0.1 at {args.per_send}/s; `api-pickup` in a loop, the segment stream with trigger
processingTime={args.trigger}; the changes API polled every 0.5 s. Latency from the POST's send time.
Side by side with the Kafka path: the section "Streaming segments: Kafka add_to_cart -> cart_abandoners
change row" (bench/segment_stream_latency.py, same world, same segment stream). Command:
`python -m bench.api_segment_latency --people {args.people} --customers {args.customers}`.

| stage reached | p50 | p95 |
|---|---|---|
{table}
"""
    print(report)  # noqa: T201
    if not args.no_record:
        append_results(report)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
