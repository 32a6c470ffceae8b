"""``lakecdp kafka-follow``: Kafka topics into silver on the embedded engine, no JVM in the
follower (the broker is the real KRaft broker of tests/support, its own JVM).

The messages are the hand-written events of the intake pickup's tests (tests/test_api_pickup_engines.py:
valid events, a warning, a login that makes a customer record, refused events with their reasons,
a non-object, an event id twice), produced with librdkafka; the expected rows and counts are
written by hand. A follower killed between a partition's writes and the ledger's ``done`` row
replays its chunk with the same bounds: every table ends as after a clean run. And an add_to_cart
produced to Kafka becomes an ``entered cart_abandoners`` change row while the loop runs.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from api_server import write_conf, write_three_customers
from test_api_pickup_engines import FIRST, SECOND, web

pytestmark = pytest.mark.kafka

#: written per run (run ids, wall-clock moments): left out where two warehouses are compared
VARYING = {"_ingested_at", "ingested_at", "quarantined_at", "at", "_run_id", "run_id"}
TABLES = (
    "bronze/web_events",
    "bronze/email_events",
    "quarantine/web_events",
    "quarantine/email_events",
    "silver/events",
    "silver/customer_records",
    "ops/ingest_audit",
)


def _project(root: Path, bootstrap: str, topics: dict[str, str]):
    from lakecdp.config import load_project

    conf = write_conf(root)
    environment = conf / "environments" / "apitest.yaml"
    environment.write_text(yaml.safe_dump({**yaml.safe_load(environment.read_text()), "engine": "embedded"}))
    (conf / "streaming.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "kafka": {"bootstrap_servers": bootstrap, "starting_offsets": "earliest"},
                "streams": [{"source": source, "topic": topic} for source, topic in topics.items()],
            }
        )
    )
    return load_project(conf, env="apitest")


def _produce(bootstrap: str, topics: dict[str, str], events: list[tuple[str, object]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for source, event in events:
        producer.produce(topics[source], json.dumps(event, separators=(",", ":")).encode())
    assert producer.flush(30) == 0


def _rows(root: Path, table: str, *, leave_out: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    path = root / "warehouse" / table
    if not DeltaTable.is_deltatable(str(path)):
        return []
    found = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    kept = [{k: v for k, v in r.items() if k not in leave_out} for r in found]
    return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _audit_sums(root: Path) -> dict[str, tuple[int, ...]]:
    """source -> (read, loaded, quarantined, duplicates, erased) over its audit rows."""
    sums: dict[str, tuple[int, ...]] = {}
    for a in _rows(root, "ops/ingest_audit"):
        counts = (a["rows_read"], a["rows_loaded"], a["rows_quarantined"], a["duplicates_removed"], a["rows_erased"])
        sums[a["source"]] = tuple(x + y for x, y in zip(sums.get(a["source"], (0,) * 5), counts))
    return sums


def _done_offsets(root: Path) -> dict[str, set[int]]:
    """topic -> the offsets the ledger's done chunks cover (each once: no two done chunks overlap)."""
    covered: dict[str, list[int]] = {}
    for r in _rows(root, "ops/kafka_intake"):
        if r["status"] == "done":
            covered.setdefault(r["topic"], []).extend(range(r["start_offset"], r["end_offset"]))
    assert all(len(v) == len(set(v)) for v in covered.values()), covered
    return {topic: set(v) for topic, v in covered.items()}


def _follow_backlog(project, **feed_kw) -> dict[str, int]:
    """The follow loop over Kafka until a pass finds nothing new (no event segments here)."""
    from lakecdp.api.follow import follow

    return follow(project, kafka=True, intake_log=False, once=True, interval=1.0, segments={}, **feed_kw)


@pytest.fixture
def topics(kafka_topic_factory) -> dict[str, str]:
    return {"web_events": kafka_topic_factory("follow-web"), "email_events": kafka_topic_factory("follow-email")}


def test_hand_written_messages_through_the_kafka_follower(tmp_path, kafka_broker, topics):
    project = _project(tmp_path, kafka_broker, topics)
    _produce(kafka_broker, topics, FIRST)
    totals = _follow_backlog(project)
    assert totals["rows_loaded"] == 8

    events = {e["event_id"]: e for e in _rows(tmp_path, "silver/events")}
    assert sorted(events) == ["e-1", "e-2", "e-3", "w-1", "w-2", "w-3", "w-4", "w-5"]
    assert (events["w-1"]["email"], events["w-1"]["event_type"], events["w-1"]["value"]) == (
        "ada.1@example.com",
        "add_to_cart",
        19.99,
    )
    assert events["w-2"]["email"] is None and events["w-2"]["customer_number"] == "C-7"
    assert events["w-4"]["device_id"] is None  # "n/a" is junk
    assert (events["e-3"]["event_type"], events["e-3"]["bounce_type"]) == ("email_bounce", "hard")
    [record] = _rows(tmp_path, "silver/customer_records")
    assert (record["record_id"], record["email"], record["customer_number"]) == ("web:d-login", "cy@example.com", "42")

    quarantine = {
        json.loads(q["raw"]).get("event_id") if q["raw"].startswith("{") else q["raw"]: q
        for q in _rows(tmp_path, "quarantine/web_events")
    }
    # the provenance is the real topic, partition and offset (FIRST's web events are offsets 0..9)
    assert {k: (q["reasons"], q["kafka_topic"], q["kafka_offset"]) for k, q in quarantine.items()} == {
        "w-6": (["MISSING_REQUIRED"], topics["web_events"], 5),
        "w-7": (["INVALID_TYPE"], topics["web_events"], 6),
        # judged against the broker's time of the message: 2027-06 is in the future
        "w-8": (["FUTURE_TIMESTAMP"], topics["web_events"], 7),
        '["not","an","object"]': (["MALFORMED_LINE"], topics["web_events"], 8),
    }
    [bad_email] = _rows(tmp_path, "quarantine/email_events")
    assert bad_email["reasons"] == ["INVALID_EMAIL"]
    bronze = {(b["event_id"], b["_kafka_offset"]) for b in _rows(tmp_path, "bronze/web_events")}
    # the repeated w-1 (offset 9) passed validation: bronze keeps it, silver.events once
    assert ("w-1", 0) in bronze and ("w-1", 9) in bronze

    # one audit row per chunk; how many chunks a backlog makes depends on the client's fetches
    assert _audit_sums(tmp_path) == {"web_events": (10, 5, 4, 1, 0), "email_events": (4, 3, 1, 0, 0)}
    audit_keys = {a["stream_batch"] for a in _rows(tmp_path, "ops/ingest_audit")}
    assert f"kafka-embedded:{topics['web_events']}:0:0" in audit_keys
    assert _done_offsets(tmp_path) == {topics["web_events"]: set(range(10)), topics["email_events"]: set(range(4))}

    # a second follower goes on where the ledger ends: a re-delivery is a duplicate, the newer login wins
    _produce(kafka_broker, topics, SECOND)
    assert _follow_backlog(project)["rows_loaded"] == 2
    [record] = _rows(tmp_path, "silver/customer_records")
    assert (record["customer_number"], record["updated_at"]) == ("43", datetime(2026, 10, 31, 13, tzinfo=timezone.utc))
    assert _audit_sums(tmp_path) == {"web_events": (12, 7, 4, 1, 0), "email_events": (5, 3, 1, 1, 0)}


def test_a_follower_killed_before_its_done_row_replays_the_chunk(tmp_path, kafka_broker, topics):
    from lakecdp.api.kafka_follow import KafkaFeed
    from lakecdp.context import JobContext

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _produce(kafka_broker, topics, FIRST)
    projects = {root: _project(root, kafka_broker, topics) for root in (clean, crashed)}
    _follow_backlog(projects[clean])

    def die(point: str) -> None:
        if point == f"after_{topics['web_events']}[0]":
            raise KeyboardInterrupt("killed after the web rows, before the ledger's done row")

    project = projects[crashed]
    with pytest.raises(KeyboardInterrupt):
        KafkaFeed(project, fault_hook=die).take(JobContext.create(project, None), wait=5.0)
    started = [r for r in _rows(crashed, "ops/kafka_intake") if r["status"] == "started"]
    assert not [r for r in _rows(crashed, "ops/kafka_intake") if r["status"] == "done"] and len(started) == 2
    # more messages arrive before the next follower starts: it must replay both started chunks
    # with their bounds (a fresh read from offset 0 would make other chunks and other audit rows)
    _produce(kafka_broker, topics, SECOND)
    for root in (clean, crashed):
        _follow_backlog(projects[root])
    # the rows are the clean run's; the audit sums too (a replay that re-read from offset 0
    # would find the killed chunk's audit row and count the later messages nowhere)
    for table in TABLES[:-1]:
        assert _rows(crashed, table, leave_out=VARYING) == _rows(clean, table, leave_out=VARYING), table
    assert (
        _audit_sums(crashed) == _audit_sums(clean) == {"web_events": (12, 7, 4, 1, 0), "email_events": (5, 3, 1, 1, 0)}
    )
    assert _done_offsets(crashed) == _done_offsets(clean)


def test_an_add_to_cart_on_kafka_becomes_a_segment_change_while_the_loop_runs(tmp_path, kafka_broker, topics):
    from lakecdp.api.follow import follow

    project = _project(tmp_path, kafka_broker, topics)
    write_three_customers(tmp_path)
    stop = threading.Event()
    totals: dict = {}
    loop = threading.Thread(
        target=lambda: totals.update(follow(project, interval=0.2, kafka=True, intake_log=False, stop=stop)),
        daemon=True,
    )
    loop.start()

    def changes() -> list[tuple[str, str, str]]:
        return sorted(
            (c["segment_id"], c["change_type"], c["customer_id"])
            for c in _rows(tmp_path, "segments/changes")
            if c["segment_id"] == "cart_abandoners"
        )

    def wait_for(expected: list[tuple[str, str, str]]) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            if changes() == expected:
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"after 60 s segments.changes has {changes()}, expected {expected}")

    try:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        _produce(kafka_broker, topics, [("web_events", web("k1", ts=stamp, user={"email": "c2@x.io"}))])
        assert wait_for([("cart_abandoners", "entered", "c2")]) < 15
        _produce(
            kafka_broker,
            topics,
            [("web_events", web("k2", ts=stamp, event_type="purchase", user={"email": "c2@x.io"}))],
        )
        wait_for([("cart_abandoners", "entered", "c2"), ("cart_abandoners", "exited", "c2")])
    finally:
        stop.set()
        loop.join(timeout=30)
    assert (totals["rows_loaded"], totals["entered"], totals["exited"]) == (2, 1, 1)
