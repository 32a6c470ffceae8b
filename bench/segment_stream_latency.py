"""Streaming latency from a Kafka event to a segment change row (cart abandoners).

    .venv/bin/python -m bench.segment_stream_latency [--people 300] [--customers 20]

Builds a small real world first (sample generator -> ingest -> identity -> features, the
pipeline's own steps), then runs both streaming queries of production side by side in one
Spark session: Kafka ``web_events`` -> ``silver.events`` (:func:`lakecdp.ingest.stream.start_kafka_stream`)
and ``silver.events`` -> event segments (:func:`lakecdp.segments.streaming.start_stream`).
After both have caught up with the backlog, ``--customers`` known customers each add a product
to their cart (one ``add_to_cart`` web event carrying their email, produced to the real broker
at ``--per-send`` per second). Latency per customer = commit time of the
``segments.changes`` row where they enter ``cart_abandoners`` (change data feed
``_commit_timestamp``) minus the Kafka record's CreateTime. Baseline in the same run: the
first half alone (event visible in ``silver.events``), so the segment stage's share shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bench.kafka_latency import _created_at, _percentiles
from bench.results import append_results, machine, stamp
from lakecdp.config import load_project
from lakecdp.context import JobContext
from lakecdp.ingest.stream import start_kafka_stream
from tests.support.kafka_broker import KafkaBroker, fetch_kafka_broker, produce_messages
from lakecdp.pipeline import run_pipeline
from lakecdp.steps import demo_steps
from lakecdp.segments.definitions import load_segments
from lakecdp.segments.streaming import start_stream
from lakecdp.spark import get_session

logger = logging.getLogger("bench.segment_stream_latency")
REPO = Path(__file__).resolve().parents[1]
SEGMENT = "cart_abandoners"


def _project(root: Path, people: int):
    conf = root / "conf"
    shutil.copytree(REPO / "conf", conf)
    shutil.copytree(REPO / "templates", root / "templates")
    sample = yaml.safe_load((conf / "sample.yaml").read_text())
    sample["demo_people"] = people
    (conf / "sample.yaml").write_text(yaml.safe_dump(sample))
    project = load_project(conf, env="local")
    environment = project.environment.model_copy(
        update={
            "storage": project.environment.storage.model_copy(update={"warehouse": str(root / "warehouse")}),
            "landing": str(root / "landing"),
            "checkpoints": str(root / "checkpoints"),
        }
    )
    return project.model_copy(update={"environment": environment})


def _cart_event(event_id: str, email: str) -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {
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
    )


def _pick_customers(ctx: JobContext, count: int) -> dict[str, str]:
    """email -> customer_id of customers with one email who are not cart abandoners yet."""
    spark, tables = ctx.spark, ctx.tables
    members = set()
    if tables.exists(spark, "segments.membership"):
        members = {
            r[0]
            for r in tables.read(spark, "segments.membership")
            .where(f"is_current AND segment_id = '{SEGMENT}'")
            .select("customer_id")
            .collect()
        }
    rows = (
        tables.read(spark, "identity.identifiers")
        .where("identifier_type = 'email'")
        .groupBy("customer_id")
        .agg({"identifier_value": "min"})
        .orderBy("customer_id")
        .collect()
    )
    chosen = {r[1]: r[0] for r in rows if r[0] not in members}
    return dict(list(chosen.items())[:count])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--per-send", type=int, default=2, help="events produced per second")
    parser.add_argument("--trigger", default="2 seconds", help="trigger of both streaming queries")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    machine_text, when = machine(), stamp()
    root = Path(tempfile.mkdtemp(prefix="lakecdp-bench-segstream-"))
    project = _project(root, args.people)
    spark = get_session(project, app_name="lakecdp-bench-segment-stream")
    wanted_steps = {"generate", "ingest", "identity", "features"}
    run_pipeline(project, spark, steps=[s for s in demo_steps() if s.name in wanted_steps], job="bench-setup")
    ctx = JobContext.create(project, spark)
    segments = load_segments(project.conf_dir / "segments")

    with KafkaBroker(jars_dir=fetch_kafka_broker(), work_dir=root / "kafka") as broker:
        topic = "bench-segments"
        broker.create_topics({topic: 1})
        bootstrap = broker.bootstrap_servers
        ingest_query = start_kafka_stream(
            ctx, bootstrap_servers=bootstrap, topic=topic, source="web_events", trigger=args.trigger
        )
        segment_query = start_stream(ctx, segments=segments, processing_time=args.trigger, run_prefix="bench-stream")
        try:
            # catch up: the segment stream's first batch is the whole silver.events backlog
            segment_query.processAllAvailable()
            customers = _pick_customers(ctx, args.customers)
            if len(customers) < args.customers:
                raise RuntimeError(f"only {len(customers)} customers with an email to use")
            # warm-up: one customer's event through both queries (JIT, first MERGEs)
            warm_email = next(iter(customers))
            customers.pop(warm_email)
            produce_messages(spark, bootstrap, topic, [_cart_event("warm-0", warm_email)])
            ingest_query.processAllAvailable()
            segment_query.processAllAvailable()

            emails = list(customers)
            for start in range(0, len(emails), args.per_send):
                tick = time.monotonic()
                produce_messages(
                    spark,
                    bootstrap,
                    topic,
                    [
                        _cart_event(f"cart-{i:04d}", emails[i])
                        for i in range(start, min(start + args.per_send, len(emails)))
                    ],
                )
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            deadline = time.monotonic() + args.timeout
            wanted = set(customers.values())
            entered: dict[str, float] = {}
            while time.monotonic() < deadline:
                ingest_query.processAllAvailable()
                segment_query.processAllAvailable()
                rows = (
                    ctx.tables.read_changes(spark, "segments.changes", starting_version=0)
                    .where(f"_change_type = 'insert' AND segment_id = '{SEGMENT}' AND change_type = 'entered'")
                    .selectExpr("customer_id", "unix_millis(_commit_timestamp) AS ms")
                    .collect()
                )
                entered = {r["customer_id"]: r["ms"] / 1000.0 for r in rows if r["customer_id"] in wanted}
                if len(entered) == len(wanted):
                    break
                time.sleep(1)
        finally:
            ingest_query.stop()
            segment_query.stop()
        created = _created_at(spark, bootstrap, topic)

    if len(entered) != len(customers):
        raise RuntimeError(f"{len(customers) - len(entered)} customers never entered {SEGMENT}")
    by_customer = {customer: f"cart-{i:04d}" for i, customer in enumerate(customers.values())}
    to_change = [entered[c] - created[event] for c, event in by_customer.items()]
    visible = {
        r["event_id"]: r["ms"] / 1000.0
        for r in ctx.tables.read_changes(spark, "silver.events", starting_version=0)
        .where("_change_type = 'insert' AND event_id LIKE 'cart-%'")
        .selectExpr("event_id", "unix_millis(_commit_timestamp) AS ms")
        .collect()
    }
    to_silver = [visible[e] - created[e] for e in by_customer.values()]
    s50, s95 = _percentiles(to_silver)
    c50, c95 = _percentiles(to_change)
    report = f"""## Streaming segments: Kafka add_to_cart -> cart_abandoners change row

Measured {when} on {machine_text}; Spark local[2], both streaming queries in one session with
trigger processingTime={args.trigger}; sample world of {args.people} people (generate, ingest,
identity, features); {len(customers)} known customers each send one `add_to_cart` web event (with
their email) at {args.per_send}/s to a real KRaft broker. Latency = Delta commit time (change data feed)
minus the Kafka record's CreateTime; one warm-up customer first. Command:
`python -m bench.segment_stream_latency --people {args.people} --customers {args.customers}`.

| stage reached | p50 | p95 |
|---|---|---|
| baseline: event row in silver.events (ingest stream only) | {s50:.1f} s | {s95:.1f} s |
| `entered cart_abandoners` row in segments.changes | {c50:.1f} s | {c95:.1f} s |
| ratio change row / silver row | {c50 / s50:.1f}x | {c95 / s95:.1f}x |
"""
    print(report)  # noqa: T201
    if not args.no_record:
        append_results(report)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
