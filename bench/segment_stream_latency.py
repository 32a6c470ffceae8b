"""Streaming latency from a Kafka event to a segment change row (cart abandoners), per engine.

    .venv/bin/python -m bench.segment_stream_latency [--people 300] [--customers 20] [--engines embedded,spark]

Builds a small real world first (sample generator -> ingest -> identity -> features, the
pipeline's own steps, on Spark), starts a real KRaft broker, then measures each engine's path in
turn, each on its own topic with its own ``--customers`` known customers (one ``add_to_cart`` web
event carrying their email each, produced at ``--per-send`` per second):

- ``embedded``: ``lakecdp kafka-follow`` (:func:`lakecdp.api.follow.follow` with the Kafka feed, in
  a thread: librdkafka consumer -> silver.events with delta-rs -> the event micro-batch on DuckDB),
  no JVM in the path;
- ``spark``: both streaming queries of production side by side in one Spark session: Kafka
  ``web_events`` -> ``silver.events`` (:func:`lakecdp.ingest.stream.start_kafka_stream`) and
  ``silver.events`` -> event segments (:func:`lakecdp.segments.streaming.start_stream`), trigger
  ``--trigger``.

Latency per customer = commit time of the ``segments.changes`` row where they enter
``cart_abandoners`` (change data feed ``_commit_timestamp``) minus the Kafka record's CreateTime;
the event's commit in ``silver.events`` is the first stage, so the segment stage's share shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import threading
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


def _entered(ctx: JobContext, wanted: set[str]) -> dict[str, float]:
    """customer id -> commit time (epoch s) of their ``entered cart_abandoners`` row."""
    rows = (
        ctx.tables.read_changes(ctx.spark, "segments.changes", starting_version=0)
        .where(f"_change_type = 'insert' AND segment_id = '{SEGMENT}' AND change_type = 'entered'")
        .selectExpr("customer_id", "unix_millis(_commit_timestamp) AS ms")
        .collect()
    )
    return {r["customer_id"]: r["ms"] / 1000.0 for r in rows if r["customer_id"] in wanted}


def _send(spark, bootstrap: str, topic: str, emails: list[str], per_send: int, prefix: str) -> None:
    for start in range(0, len(emails), per_send):
        tick = time.monotonic()
        produce_messages(
            spark,
            bootstrap,
            topic,
            [_cart_event(f"{prefix}-{i:04d}", emails[i]) for i in range(start, min(start + per_send, len(emails)))],
        )
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def _run_spark(ctx: JobContext, bootstrap: str, topic: str, customers: dict[str, str], args) -> dict[str, float]:
    """Both production queries on Spark; customer id -> entered commit time."""
    spark = ctx.spark
    segments = load_segments(ctx.project.conf_dir / "segments")
    ingest_query = start_kafka_stream(
        ctx, bootstrap_servers=bootstrap, topic=topic, source="web_events", trigger=args.trigger
    )
    segment_query = start_stream(ctx, segments=segments, processing_time=args.trigger, run_prefix="bench-stream")
    entered: dict[str, float] = {}
    try:
        # catch up: the segment stream's first batch is the whole silver.events backlog
        segment_query.processAllAvailable()
        # warm-up: one customer's event through both queries (JIT, first MERGEs)
        warm_email = next(iter(customers))
        customers.pop(warm_email)
        produce_messages(spark, bootstrap, topic, [_cart_event("spark-warm", warm_email)])
        ingest_query.processAllAvailable()
        segment_query.processAllAvailable()
        _send(spark, bootstrap, topic, list(customers), args.per_send, "spark")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(entered) < len(customers):
            ingest_query.processAllAvailable()
            segment_query.processAllAvailable()
            entered = _entered(ctx, set(customers.values()))
            time.sleep(1)
    finally:
        ingest_query.stop()
        segment_query.stop()
    return entered


def _run_embedded(ctx: JobContext, bootstrap: str, topic: str, customers: dict[str, str], args) -> dict[str, float]:
    """``lakecdp kafka-follow`` in a thread (no Spark in its path); customer id -> entered commit time."""
    from lakecdp.api.follow import follow

    conf = ctx.project.conf_dir
    streaming = yaml.safe_load((conf / "streaming.yaml").read_text())
    streaming["kafka"]["bootstrap_servers"] = bootstrap
    streaming["streams"] = [{"source": "web_events", "topic": topic}]
    (conf / "streaming.yaml").write_text(yaml.safe_dump(streaming))
    project = ctx.project.model_copy(
        update={"environment": ctx.project.environment.model_copy(update={"engine": "embedded"})}
    )
    stop = threading.Event()
    loop = threading.Thread(
        target=follow,
        kwargs={"project": project, "kafka": True, "intake_log": False, "stop": stop, "interval": 0.2},
        daemon=True,
    )
    loop.start()
    entered: dict[str, float] = {}
    try:
        # warm-up: the loop's first pass catches up with silver.events, then one customer's event
        warm_email = next(iter(customers))
        warm_customer = customers.pop(warm_email)
        produce_messages(ctx.spark, bootstrap, topic, [_cart_event("embedded-warm", warm_email)])
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not _entered(ctx, {warm_customer}):
            time.sleep(0.5)
        _send(ctx.spark, bootstrap, topic, list(customers), args.per_send, "embedded")
        while time.monotonic() < deadline and len(entered) < len(customers):
            entered = _entered(ctx, set(customers.values()))
            time.sleep(1)
    finally:
        stop.set()
        loop.join(timeout=60)
    return entered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--customers", type=int, default=20, help="customers per engine")
    parser.add_argument("--per-send", type=int, default=2, help="events produced per second")
    parser.add_argument("--trigger", default="2 seconds", help="trigger of both Spark streaming queries")
    parser.add_argument("--engines", default="embedded,spark", help="comma-separated: embedded, spark")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    machine_text, when = machine(), stamp()
    root = Path(tempfile.mkdtemp(prefix="lakecdp-bench-segstream-"))
    project = _project(root, args.people)
    spark = get_session(project, app_name="lakecdp-bench-segment-stream")
    wanted_steps = {"generate", "ingest", "identity", "features"}
    run_pipeline(project, spark, steps=[s for s in demo_steps() if s.name in wanted_steps], job="bench-setup")
    ctx = JobContext.create(project, spark)
    pool = _pick_customers(ctx, (args.customers + 1) * len(engines))
    if len(pool) < (args.customers + 1) * len(engines):
        raise RuntimeError(f"only {len(pool)} customers with an email to use")
    emails = list(pool)
    rows = []
    with KafkaBroker(jars_dir=fetch_kafka_broker(), work_dir=root / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        for n, engine in enumerate(engines):
            topic = f"bench-segments-{engine}"
            broker.create_topics({topic: 1})
            chosen = emails[n * (args.customers + 1) : (n + 1) * (args.customers + 1)]
            customers = {e: pool[e] for e in chosen}
            run = _run_embedded if engine == "embedded" else _run_spark
            entered = run(ctx, bootstrap, topic, customers, args)
            if len(entered) != len(customers):
                raise RuntimeError(f"{engine}: {len(customers) - len(entered)} customers never entered {SEGMENT}")
            created = _created_at(spark, bootstrap, topic)
            by_customer = {customer: f"{engine}-{i:04d}" for i, customer in enumerate(customers.values())}
            visible = {
                r["event_id"]: r["ms"] / 1000.0
                for r in ctx.tables.read_changes(spark, "silver.events", starting_version=0)
                .where(f"_change_type = 'insert' AND event_id LIKE '{engine}-0%'")
                .selectExpr("event_id", "unix_millis(_commit_timestamp) AS ms")
                .collect()
            }
            s50, s95 = _percentiles([visible[e] - created[e] for e in by_customer.values()])
            c50, c95 = _percentiles([entered[c] - created[e] for c, e in by_customer.items()])
            rows.append((engine, s50, s95, c50, c95))
    table = "\n".join(
        f"| {engine} | {s50:.1f} s | {s95:.1f} s | {c50:.1f} s | {c95:.1f} s |" for engine, s50, s95, c50, c95 in rows
    )
    ratio = ""
    found = {r[0]: r for r in rows}
    if {"embedded", "spark"} <= set(found):
        ratio = (
            f"\n\nspark / embedded, change row: p50 {found['spark'][3] / found['embedded'][3]:.1f}x, "
            f"p95 {found['spark'][4] / found['embedded'][4]:.1f}x."
        )
    report = f"""## Streaming segments: Kafka add_to_cart -> cart_abandoners change row, per engine

Measured {when} on {machine_text}; sample world of {args.people} people (generate, ingest, identity,
features on Spark); per engine its own topic on a real KRaft broker and {args.customers} known
customers each sending one `add_to_cart` web event (with their email) at {args.per_send}/s after one
warm-up customer. embedded = `lakecdp kafka-follow` (librdkafka consumer, delta-rs writes, the event
micro-batch on DuckDB, loop interval 0.2 s); spark = the Kafka ingest stream and the segment stream in
one session, trigger processingTime={args.trigger}. Latency = Delta commit time (change data feed) minus
the Kafka record's CreateTime. Command:
`python -m bench.segment_stream_latency --people {args.people} --customers {args.customers} --engines {args.engines}`.

| engine | event row in silver.events p50 | p95 | `entered cart_abandoners` row p50 | p95 |
|---|---|---|---|---|
{table}{ratio}
"""
    print(report)  # noqa: T201
    if not args.no_record:
        append_results(report)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
