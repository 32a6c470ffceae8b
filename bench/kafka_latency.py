"""End-to-end latency of the Kafka stream: message produced -> row visible in silver.events.

Run: ``.venv/bin/python -m bench.kafka_latency [--messages 60] [--per-send 5] [--trigger "1 second"]``.

Starts its own KRaft broker and a throw-away warehouse, then runs the same produce schedule
(``--per-send`` messages every second) through two queries, one after the other:

- **baseline**: Spark's Kafka source -> ``foreachBatch`` that only collects the batch (no
  validation, no Delta): the floor set by the trigger interval and Spark's per-batch cost;
- **lakecdp**: :func:`lakecdp.ingest.stream.start_kafka_stream` (validation, de-duplication,
  quarantine/bronze/silver MERGEs).

A message's latency is "visible" minus the Kafka record's CreateTime (stamped by the
producer when it sends): for lakecdp, "visible" is the commit timestamp of the Delta version
of silver.events that inserted the row (from the change data feed); for the baseline, the
moment its micro-batch finished. p50 / p95 are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.results import append_results, machine
from lakecdp.config import load_project
from lakecdp.context import JobContext
from lakecdp.ingest.stream import kafka_messages, start_kafka_stream
from tests.support.kafka_broker import KafkaBroker, fetch_kafka_broker, produce_messages
from lakecdp.spark import get_session

logger = logging.getLogger("bench.kafka_latency")


def _message(n: int, run: str) -> str:
    return json.dumps(
        {
            "event_id": f"{run}-{n:05d}",
            "event_type": "page_view",
            "ts": "2026-10-01T12:00:00Z",
            "anonymous_id": f"d-{n % 7}",
            "session_id": f"s-{n % 3}",
            "page_url": "/p",
        }
    )


def _produce_schedule(spark, bootstrap: str, topic: str, run: str, total: int, per_send: int) -> None:
    """``per_send`` messages every second until ``total`` are sent."""
    for start in range(0, total, per_send):
        tick = time.monotonic()
        values = [_message(n, run) for n in range(start, min(start + per_send, total))]
        produce_messages(spark, bootstrap, topic, values)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def _warm_up(query, spark, bootstrap: str, topic: str) -> None:
    """One message through the query first: table creation, JIT and caches are not latency."""
    produce_messages(spark, bootstrap, topic, [_message(0, "warmup")])
    query.processAllAvailable()


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def _created_at(spark, bootstrap: str, topic: str) -> dict[str, float]:
    """event id -> the Kafka record's CreateTime (epoch seconds)."""
    rows = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr(
            "get_json_object(CAST(value AS STRING), '$.event_id') AS event_id", "unix_millis(timestamp) AS created_ms"
        )
        .collect()
    )
    return {r["event_id"]: r["created_ms"] / 1000.0 for r in rows}


def run_baseline(
    spark, bootstrap: str, topic: str, checkpoint: Path, total: int, per_send: int, trigger: str
) -> list[float]:
    """Kafka source -> foreachBatch(collect) with no Delta: latency floor of the same trigger."""
    seen: dict[int, float] = {}  # kafka offset -> latency
    lock = threading.Lock()

    def record(batch, _batch_id: int) -> None:
        rows = batch.selectExpr("kafka_offset", "unix_millis(kafka_timestamp) AS created_ms").collect()
        done = time.time()
        with lock:
            for row in rows:
                if row["kafka_offset"] > 0:  # offset 0 is the warm-up message
                    seen[row["kafka_offset"]] = done - row["created_ms"] / 1000.0

    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .transform(kafka_messages)
        .writeStream.foreachBatch(record)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=trigger)
        .start()
    )
    try:
        _warm_up(query, spark, bootstrap, topic)
        _produce_schedule(spark, bootstrap, topic, "b", total, per_send)
        # blocks until every message on the topic has gone through a finished micro-batch
        query.processAllAvailable()
    finally:
        query.stop()
    if len(seen) != total:
        raise RuntimeError(f"baseline saw {len(seen)} of {total} messages")
    return list(seen.values())


def run_lakecdp(ctx: JobContext, bootstrap: str, topic: str, total: int, per_send: int, trigger: str) -> list[float]:
    spark = ctx.spark
    query = start_kafka_stream(ctx, bootstrap_servers=bootstrap, topic=topic, source="web_events", trigger=trigger)
    try:
        _warm_up(query, spark, bootstrap, topic)
        _produce_schedule(spark, bootstrap, topic, "l", total, per_send)
        query.processAllAvailable()
    finally:
        query.stop()
    created = _created_at(spark, bootstrap, topic)
    visible = (
        ctx.tables.read_changes(spark, "silver.events", starting_version=0)
        .where("_change_type = 'insert' AND event_id LIKE 'l-%'")
        .selectExpr("event_id", "unix_millis(_commit_timestamp) AS visible_ms")
        .collect()
    )
    if len(visible) != total:
        raise RuntimeError(f"expected {total} rows in silver.events, found {len(visible)}")
    return [r["visible_ms"] / 1000.0 - created[r["event_id"]] for r in visible]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--per-send", type=int, default=5, help="messages produced per second")
    parser.add_argument("--trigger", default="1 second")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    machine_text = machine()
    root = Path(tempfile.mkdtemp(prefix="lakecdp-bench-kafka-"))
    project = load_project(Path(__file__).resolve().parents[1] / "conf", env="local")
    environment = project.environment.model_copy(
        update={
            "storage": project.environment.storage.model_copy(update={"warehouse": str(root / "warehouse")}),
            "checkpoints": str(root / "checkpoints"),
        }
    )
    project = project.model_copy(update={"environment": environment})
    spark = get_session(project, app_name="lakecdp-bench-kafka")
    ctx = JobContext.create(project, spark)

    with KafkaBroker(jars_dir=fetch_kafka_broker(), work_dir=root / "kafka") as broker:
        broker.create_topics({"bench-baseline": 1, "bench-lakecdp": 1})
        baseline = run_baseline(
            spark,
            broker.bootstrap_servers,
            "bench-baseline",
            root / "checkpoints" / "baseline",
            args.messages,
            args.per_send,
            args.trigger,
        )
        lakecdp = run_lakecdp(
            ctx, broker.bootstrap_servers, "bench-lakecdp", args.messages, args.per_send, args.trigger
        )

    b50, b95 = _percentiles(baseline)
    l50, l95 = _percentiles(lakecdp)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = f"""## Kafka streaming latency (produce -> visible in silver.events)

Measured {today} on {machine_text}; Spark local[2], trigger processingTime={args.trigger},
{args.messages} web events at {args.per_send}/s, one partition, real KRaft broker (kafka_2.13 4.1.1).
Latency = Delta commit time of the silver.events version holding the row (change data feed
`_commit_timestamp`) minus the Kafka record's CreateTime. Baseline = the same Kafka source and
trigger into a `foreachBatch` that only collects the batch (no validation, no Delta). One warm-up
message goes through each query first (table creation and JIT are not counted).

| pipeline | p50 | p95 | command |
|---|---|---|---|
| baseline: Kafka -> foreachBatch(collect), no Delta | {b50:.2f} s | {b95:.2f} s | `python -m bench.kafka_latency` |
| lakecdp: validate + dedup + quarantine/bronze/silver MERGEs | {l50:.2f} s | {l95:.2f} s | same |
| ratio lakecdp / baseline | {l50 / b50:.1f}x | {l95 / b95:.1f}x | |
"""
    print(report)
    if not args.no_record:
        append_results(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
