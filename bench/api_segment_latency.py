"""HTTP add_to_cart -> cart_abandoners change row in the segment changes API (the HTTP twin of
bench/segment_stream_latency.py, which measures the Kafka path), on both engines in one session.

    .venv/bin/python -m bench.api_segment_latency [--people 300] [--customers 20] [--engines embedded,spark]

Builds the same small real world (sample generator -> ingest -> identity -> features, on Spark),
starts the service on 127.0.0.1 (``lakecdp.api.demo``'s in-process uvicorn), then measures each
engine's path in turn, each with its own ``--customers`` known customers posting one
``add_to_cart`` over HTTP (``--per-send`` per second, from a client thread) while a poller thread
reads ``/v1/segments/cart_abandoners/changes`` every 0.5 s:

- ``embedded``: the ``lakecdp api-pickup --follow`` loop (:func:`lakecdp.api.follow.follow`, in a
  thread: the intake log -> silver.events with delta-rs -> the event micro-batch on DuckDB), no JVM;
- ``spark``: ``api-pickup`` on Spark in a loop (the Kafka stream's micro-batch writer) and the
  production segment stream (:func:`lakecdp.segments.streaming.start_stream`, silver.events ->
  event segments, trigger ``--trigger``).

Per customer: the 202's send time -> (a) the event's commit in silver.events, (b) the
``entered`` row's commit in segments.changes (the Kafka bench's end point), (c) the first answer
of the changes API that holds the row.
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


def _measure(
    engine: str,
    args: argparse.Namespace,
    *,
    ctx,
    client,
    keys: dict,
    log_dir,
    customers: dict[str, str],
    warm_email: str,
) -> dict[str, list[float]]:
    """Post one add_to_cart per customer and time it through ``engine``'s path; seconds per stage."""
    from lakecdp.api.follow import follow
    from lakecdp.api.pickup import pickup
    from lakecdp.segments.definitions import load_segments
    from lakecdp.segments.streaming import start_stream

    project, spark = ctx.project, ctx.spark
    stop_loop = threading.Event()
    loop_thread = None
    query = None
    if engine == "embedded":
        loop_thread = threading.Thread(
            target=follow, kwargs={"project": project, "log_dir": log_dir, "stop": stop_loop}, daemon=True
        )
        loop_thread.start()

        def step() -> None:
            time.sleep(0.2)
    else:
        query = start_stream(
            ctx,
            segments=load_segments(project.conf_dir / "segments"),
            processing_time=args.trigger,
            run_prefix="bench-api-stream",
        )

        def step() -> None:
            pickup(ctx, log_dir, engine="spark")
            query.processAllAvailable()
            time.sleep(0.2)

    path = f"/v1/segments/{SEGMENT}/changes?limit=1000"
    key = keys["email_platform"][0]

    def post(event_id: str, email: str) -> float:
        sent = time.time()
        status, answer = client.call(
            "POST", "/v1/events", keys["website"][0], {"source": "web_events", "event": _cart(event_id, email)}
        )
        if status != 202:
            raise RuntimeError(f"POST refused: {status} {answer}")
        return sent

    def end_cursor() -> str | None:
        _, page = client.call("GET", path, key)
        while page["has_more"]:
            _, page = client.call("GET", f"{path}&cursor={page['cursor']}", key)
        return page["cursor"]

    try:
        # warm up: one event through the whole path, and the path's catch-up with the backlog
        post(f"warm-{engine}-{uuid.uuid4().hex[:6]}", warm_email)
        deadline = time.monotonic() + args.timeout
        cursor = None
        while time.monotonic() < deadline:
            step()
            cursor = end_cursor()
            if pickup_done(ctx, log_dir):
                # the warm event's micro-batch (the embedded loop runs it right after its pickup)
                time.sleep(2.0)
                step()
                cursor = end_cursor()
                break
        wanted = set(customers.values())
        seen: dict[str, float] = {}
        sent: dict[str, float] = {}
        by_customer: dict[str, str] = {}
        stop = threading.Event()

        def poll() -> None:
            nonlocal cursor
            while not stop.is_set() and len(seen) < len(wanted):
                _, answer = client.call("GET", f"{path}&cursor={cursor}" if cursor else path, key)
                now = time.time()
                for change in answer.get("changes", []):
                    if change["change_type"] == "entered" and change["customer_id"] in wanted:
                        seen.setdefault(change["customer_id"], now)
                cursor = answer.get("cursor", cursor)
                time.sleep(0.5)

        def send() -> None:
            for i, (email, customer) in enumerate(customers.items()):
                tick = time.monotonic()
                event_id = f"cart-{engine}-{i:04d}"
                by_customer[customer] = event_id
                sent[customer] = post(event_id, email)
                if (i + 1) % args.per_send == 0:
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        poller, sender = threading.Thread(target=poll, daemon=True), threading.Thread(target=send, daemon=True)
        poller.start()
        sender.start()
        while time.monotonic() < deadline and len(seen) < len(wanted):
            step()
        stop.set()
        poller.join(timeout=10)
        sender.join(timeout=10)
    finally:
        stop_loop.set()
        if loop_thread is not None:
            loop_thread.join(timeout=60)
        if query is not None:
            query.stop()
    if len(seen) != len(wanted):
        raise RuntimeError(f"{engine}: {len(wanted) - len(seen)} customers never reached the changes API")
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
        .where(f"_change_type = 'insert' AND event_id LIKE 'cart-{engine}-%'")
        .selectExpr("event_id", "unix_millis(_commit_timestamp) AS ms")
        .collect()
    }
    return {
        "silver": [visible[by_customer[c]] - sent[c] for c in wanted],
        "change": [entered[c] - sent[c] for c in wanted],
        "api": [seen[c] - sent[c] for c in wanted],
    }


def pickup_done(ctx, log_dir) -> bool:
    """The intake log is fully picked up (the ledger's last done chunk ends where the log does)."""
    from deltalake import DeltaTable

    from lakecdp.api.intake_log import complete_length, segments

    path = ctx.tables.location("ops.api_intake")
    if not DeltaTable.is_deltatable(path):
        return False
    done = {}
    for row in DeltaTable(path).to_pyarrow_table(columns=["segment", "end_offset", "status"]).to_pylist():
        if row["status"] == "done":
            done[row["segment"]] = max(done.get(row["segment"], 0), row["end_offset"])
    return all(done.get(number, 0) >= complete_length(p) for number, p in segments(log_dir))


def _cart(event_id: str, email: str) -> dict:
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


def main(argv: list[str] | None = None) -> int:
    import os
    import tempfile
    from pathlib import Path

    from lakecdp.api.config import new_key
    from lakecdp.api.demo import _Client, _start
    from lakecdp.context import JobContext
    from lakecdp.pipeline import run_pipeline
    from lakecdp.spark import get_session
    from lakecdp.steps import demo_steps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--per-send", type=int, default=2, help="events posted per second")
    parser.add_argument("--trigger", default="2 seconds", help="trigger of the Spark segment stream")
    parser.add_argument("--engines", default="embedded,spark", help="paths to measure, in this order")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - {"embedded", "spark"}:
        parser.error(f"--engines takes embedded and/or spark, got {args.engines!r}")
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
    chosen = list(_pick_customers(ctx, args.customers * len(engines) + 1).items())
    warm_email = chosen[0][0]
    stages: dict[str, dict[str, list[float]]] = {}
    loads: dict[str, tuple[float, float]] = {}
    try:
        for n, engine in enumerate(engines):
            mine = dict(chosen[1 + n * args.customers : 1 + (n + 1) * args.customers])
            started = os.getloadavg()[0]
            stages[engine] = _measure(
                engine,
                args,
                ctx=ctx,
                client=client,
                keys=keys,
                log_dir=state.log.log_dir,
                customers=mine,
                warm_email=warm_email,
            )
            loads[engine] = (started, os.getloadavg()[0])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        state.log.close()

    names = {
        "silver": "event row in silver.events",
        "change": "`entered cart_abandoners` row committed in segments.changes",
        "api": "that row first returned by `GET /v1/segments/cart_abandoners/changes`",
    }
    path_names = {
        "embedded": "embedded (`api-pickup --follow`: delta-rs + DuckDB, no JVM)",
        "spark": f"Spark (`api-pickup` loop + segment stream, trigger {args.trigger})",
    }
    table = "\n".join(
        f"| {path_names[engine]} | {names[stage]} | {p50:.1f} s | {p95:.1f} s |"
        for engine in engines
        for stage in ("silver", "change", "api")
        for p50, p95 in [_percentiles(stages[engine][stage])]
    )
    load_text = ", ".join(f"{e}: {a:.1f} -> {b:.1f}" for e, (a, b) in loads.items())
    report = f"""## HTTP add_to_cart -> cart_abandoners change row in the changes API, both engines

Measured {when} on {machine_text} (shared box; 1-minute load average {load_before[0]:.1f} at start,
per path {load_text}); sample world of {args.people} people (generate, ingest, identity, features on
Spark local[2]); per path {args.customers} known customers each post one `add_to_cart` (with their email) to
`lakecdp serve` on 127.0.0.1 at {args.per_send}/s; the changes API polled every 0.5 s. Latency from the
POST's send time. Command: `python -m bench.api_segment_latency --people {args.people} --customers
{args.customers} --engines {",".join(engines)}`.

| path | stage reached | p50 | p95 |
|---|---|---|---|
{table}
"""
    print(report)  # noqa: T201
    if not args.no_record:
        append_results(report)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
