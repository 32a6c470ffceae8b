"""Streaming ingest from a real Kafka broker into Delta, exactly once.

Every expected row is written out by hand next to the messages that produce it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable as RsDeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakecdp.config import ConfigError
from lakecdp.context import JobContext
from lakecdp.ingest import stream
from lakecdp.ingest.stream import StreamDefinitionError, parse_trigger, start_kafka_stream
from tests.support.kafka_broker import produce_messages

pytestmark = pytest.mark.kafka


def web(event_id: str, event_type: str, ts: str | None, **extra) -> str:
    body = {"event_id": event_id, "event_type": event_type, **({"ts": ts} if ts else {}), **extra}
    return json.dumps(body)


def run_available_now(ctx, bootstrap, topic, source, **kwargs):
    query = start_kafka_stream(
        ctx, bootstrap_servers=bootstrap, topic=topic, source=source, trigger="available_now", **kwargs
    )
    query.awaitTermination()
    assert query.exception() is None
    return query


def delta_rows(tables, name: str, columns: list[str]) -> list[tuple]:
    """A table's rows as delta-rs (not Spark) reads them, in a stable order."""
    table = RsDeltaTable(tables.location(name)).to_pyarrow_table(columns=columns)
    return sorted((tuple(row[c] for c in columns) for row in table.to_pylist()), key=repr)


AUDIT_COLUMNS = [
    "source",
    "source_file",
    "stream_batch",
    "rows_read",
    "rows_loaded",
    "rows_quarantined",
    "duplicates_removed",
    "rows_erased",
]


def audit(ctx) -> list[tuple]:
    return delta_rows(ctx.tables, "ops.ingest_audit", AUDIT_COLUMNS)


def audit_totals(rows: list[tuple]) -> tuple[int, ...]:
    """read, loaded, quarantined, duplicates, erased summed over audit rows (a continuous query
    may split what one produce call sent into several micro-batches)."""
    return tuple(sum(row[i] for row in rows) for i in range(3, len(AUDIT_COLUMNS)))


def silver_events(ctx):
    return ctx.tables.read(ctx.spark, "silver.events").select(
        "event_id",
        "event_type",
        F.date_format("occurred_at", "yyyy-MM-dd HH:mm:ss.SSS").alias("at"),
        "email",
        "device_id",
        "customer_number",
        "channel",
    )


def quarantine(ctx, source):
    return ctx.tables.read(ctx.spark, f"quarantine.{source}").select(
        "kafka_partition", "kafka_offset", "reasons", "raw"
    )


def test_web_events_good_bad_duplicate_restart_and_redelivery(spark, project, kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory("web", partitions=2)
    ctx = JobContext.create(project, spark)
    p0 = [
        web("w-1", "page_view", "2026-10-01T12:34:56.123+01:00", anonymous_id="d-1", session_id="s-1"),  # offset 0
        "{not json",  # offset 1
        web(
            "w-2",
            "login",
            "2026-10-01T12:40:00Z",
            anonymous_id="d-1",
            user={"email": " Ada@Example.COM ", "customer_no": "S0001"},
        ),  # offset 2
        web(
            "w-1", "page_view", "2026-10-01T12:34:56.123+01:00", anonymous_id="d-1", session_id="s-1"
        ),  # offset 3: duplicate
    ]
    p1 = [
        web("w-3", "product_view", None, product_id="P1"),  # offset 0: no ts
        web("w-4", "add_to_cart", "2026-10-01T13:00:00Z", product_id="P1", price="abc"),  # offset 1: bad price
        web("w-5", "add_to_cart", "2026-10-01T13:05:00Z", product_id="P2", price=9.5, anonymous_id="n/a"),  # offset 2
    ]
    produce_messages(spark, kafka_broker, topic, p0, partition=0)
    produce_messages(spark, kafka_broker, topic, p1, partition=1)

    first = run_available_now(ctx, kafka_broker, topic, "web_events")

    expected_silver = [
        ("w-1", "page_view", "2026-10-01 11:34:56.123", None, "d-1", None, "web"),
        ("w-2", "login", "2026-10-01 12:40:00.000", "ada@example.com", "d-1", "S0001", "web"),
        ("w-5", "add_to_cart", "2026-10-01 13:05:00.000", None, None, None, "web"),
    ]
    assertDataFrameEqual(silver_events(ctx), expected_silver)
    expected_quarantine = [
        (0, 1, ["MALFORMED_LINE"], "{not json"),
        (1, 0, ["MISSING_REQUIRED"], p1[0]),
        (1, 1, ["INVALID_TYPE"], p1[1]),
    ]
    assertDataFrameEqual(quarantine(ctx, "web_events"), expected_quarantine)
    bronze = ctx.tables.read(spark, "bronze.web_events").select(
        "event_id", "_kafka_topic", "_kafka_partition", "_kafka_offset", "ts"
    )
    assertDataFrameEqual(
        bronze,
        [
            ("w-1", topic, 0, 0, "2026-10-01T12:34:56.123+01:00"),
            ("w-2", topic, 0, 2, "2026-10-01T12:40:00Z"),
            ("w-5", topic, 1, 2, "2026-10-01T13:05:00Z"),
        ],
    )
    # one audit row for the batch: 7 messages, w-1's repeat (p0 offset 3) dropped by the query's
    # de-duplication before the batch, so read 6 = loaded 3 (w-1, w-2, w-5) + quarantined 3
    kafka_file = f"kafka://{topic}"
    expected_audit = [("web_events", kafka_file, f"{first.name}:0", 6, 3, 3, 0, 0)]
    assert audit(ctx) == expected_audit
    # the login w-2 of device d-1 is also a customer record, keyed as the batch ingest keys it
    record_columns = [
        "record_id",
        "source",
        "source_record_id",
        "email",
        "customer_number",
        "device_ids",
        "updated_at",
        "first_name",
        "phone",
        "crm_id",
    ]
    expected_records = [
        (
            "web:d-1",
            "web",
            "d-1",
            "ada@example.com",
            "S0001",
            ["d-1"],
            datetime(2026, 10, 1, 12, 40, tzinfo=timezone.utc),
            None,
            None,
            None,
        )
    ]
    assert delta_rows(ctx.tables, "silver.customer_records", record_columns) == expected_records

    # restart from the same checkpoint: only the new messages are read, the re-delivered w-2
    # (same event id, new offset) is dropped by the query's de-duplication state
    more = [
        web("w-6", "checkout", "2026-10-01T14:00:00Z", anonymous_id="d-2"),  # p0 offset 4
        web(
            "w-2",
            "login",
            "2026-10-01T12:40:00Z",
            anonymous_id="d-1",
            user={"email": " Ada@Example.COM ", "customer_no": "S0001"},
        ),  # p0 offset 5
        "",  # p0 offset 6
    ]
    produce_messages(spark, kafka_broker, topic, more, partition=0)
    assert run_available_now(ctx, kafka_broker, topic, "web_events").name == first.name
    expected_silver.append(("w-6", "checkout", "2026-10-01 14:00:00.000", None, "d-2", None, "web"))
    assertDataFrameEqual(silver_events(ctx), expected_silver)
    expected_quarantine.append((0, 6, ["MALFORMED_LINE"], ""))
    assertDataFrameEqual(quarantine(ctx, "web_events"), expected_quarantine)

    # a second consumer with its own (empty) checkpoint re-reads the whole topic: the Delta
    # MERGEs on event_id / Kafka position add nothing
    versions = {n: ctx.tables.version(spark, n) for n in ("silver.events", "quarantine.web_events")}
    stamped_records = delta_rows(ctx.tables, "silver.customer_records", [*record_columns, "run_id", "ingested_at"])
    replay = run_available_now(ctx, kafka_broker, topic, "web_events", checkpoint=project.checkpoints / "replay")
    assertDataFrameEqual(silver_events(ctx), expected_silver)
    assertDataFrameEqual(quarantine(ctx, "web_events"), expected_quarantine)
    assert ctx.tables.read(spark, "bronze.web_events").count() == 4
    # nothing new for any table: the insert-only MERGEs found every key, and Delta skips the
    # commit of a MERGE that inserts no row
    assert {n: ctx.tables.version(spark, n) for n in versions} == versions
    # the re-read login w-2 (same updated_at) leaves its record as it was, stamps included (the
    # upsert may commit a version that changes no row)
    assert (
        delta_rows(ctx.tables, "silver.customer_records", [*record_columns, "run_id", "ingested_at"]) == stamped_records
    )
    # the audit has a row per batch that held messages: batch 1 held none (Spark ran it to move
    # the watermark) and wrote none; the restart's batch 2 read w-6 and the blank message (the
    # re-delivered w-2 was dropped by the query's state); the second consumer read all 10
    # messages, 8 after its own de-duplication (w-1 and w-2 repeats dropped): its 4 accepted
    # events were in silver.events already, so all 4 are duplicates removed
    expected_audit += [
        ("web_events", kafka_file, f"{first.name}:2", 2, 1, 1, 0, 0),
        ("web_events", kafka_file, f"{replay.name}:0", 8, 0, 4, 4, 0),
    ]
    assert audit(ctx) == sorted(expected_audit, key=repr)


def email(event_id: str, event_type: str, address: str, occurred_at: str, **extra) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "email": address,
            "occurred_at": occurred_at,
            "campaign_id": "c-9",
            **extra,
        }
    )


def test_email_events_batch_replayed_after_a_crash_is_written_once(
    spark, project, kafka_broker, kafka_topic_factory, monkeypatch
):
    topic = kafka_topic_factory("email")
    ctx = JobContext.create(project, spark)
    messages = [
        email("e-1", "open", "Bob@Example.com", "2026-10-02T08:00:00Z"),  # offset 0
        email("e-2", "bounce", "bob@@example.com", "2026-10-02T08:01:00Z", bounce_type="HARD"),  # 1
        email("e-3", "bounce", "carol@example.com", "2026-10-02T08:02:00Z", bounce_type="HARD"),  # 2
        email("e-4", "click", "carol@example.com", "not a time", url="https://x.test/a"),  # 3
    ]
    produce_messages(spark, kafka_broker, topic, messages, partition=0)

    real_insert = stream.insert_new_rows

    def crash_before(table: str):
        def insert(ctx_, df, name, **kwargs):
            if name == table:
                raise RuntimeError(f"simulated crash before the {table} commit")
            return real_insert(ctx_, df, name, **kwargs)

        return insert

    def crash_after(table: str):
        def insert(ctx_, df, name, **kwargs):
            inserted = real_insert(ctx_, df, name, **kwargs)
            if name == table:
                raise RuntimeError(f"simulated crash after the {table} commit")
            return inserted

        return insert

    def run_until_crash(crashing_insert, message: str) -> str:
        monkeypatch.setattr(stream, "insert_new_rows", crashing_insert)
        query = start_kafka_stream(
            ctx, bootstrap_servers=kafka_broker, topic=topic, source="email_events", trigger="available_now"
        )
        with pytest.raises(Exception, match=message):
            query.awaitTermination()
        monkeypatch.setattr(stream, "insert_new_rows", real_insert)
        return query.name

    # the process dies after quarantine and bronze were committed, before silver.events
    query_name = run_until_crash(crash_before("silver.events"), "simulated crash before the silver.events commit")
    # silver.events and the audit exist (created before the query started) but hold nothing yet
    assert ctx.tables.read(spark, "silver.events").count() == 0
    assert audit(ctx) == []

    # restart: the batch is replayed with the same offsets and written whole, but the process
    # dies after the audit commit, before the checkpoint records the batch as done
    assert (
        run_until_crash(crash_after("ops.ingest_audit"), "simulated crash after the ops.ingest_audit commit")
        == query_name
    )
    # read 4 = loaded 2 (e-1, e-3) + quarantined 2 (e-2 bad email, e-4 bad time)
    expected_audit = [("email_events", f"kafka://{topic}", f"{query_name}:0", 4, 2, 2, 0, 0)]
    assert audit(ctx) == expected_audit
    audit_version = ctx.tables.version(spark, "ops.ingest_audit")

    # restart again: the batch is replayed once more; the audit keeps its one row for it
    assert run_available_now(ctx, kafka_broker, topic, "email_events").name == query_name
    assert audit(ctx) == expected_audit
    assert ctx.tables.version(spark, "ops.ingest_audit") == audit_version

    events = ctx.tables.read(spark, "silver.events").select(
        "event_id", "event_type", "email", "bounce_type", "campaign_id", "channel", "source"
    )
    assertDataFrameEqual(
        events,
        [
            ("e-1", "email_open", "bob@example.com", None, "c-9", "email", "email_events"),
            ("e-3", "email_bounce", "carol@example.com", "hard", "c-9", "email", "email_events"),
        ],
    )
    assertDataFrameEqual(
        quarantine(ctx, "email_events").select("kafka_offset", "reasons"),
        [
            (1, ["INVALID_EMAIL"]),
            (3, ["INVALID_TIMESTAMP"]),
        ],
    )
    assertDataFrameEqual(
        ctx.tables.read(spark, "bronze.email_events").select("event_id", "_kafka_offset"),
        [("e-1", 0), ("e-3", 2)],
    )


def test_a_micro_batch_whose_counts_do_not_add_up_fails_before_its_audit_row(spark, project, monkeypatch):
    # no broker: one message as the Kafka source would give it, through the stream's own steps
    from lakecdp.ingest.job import AuditError
    from lakecdp.ingest.sources import load_sources
    from lakecdp.ingest.validate import parse_and_validate

    ctx = JobContext.create(project, spark)
    source = load_sources(project.conf_dir / "sources")["web_events"]
    message = spark.createDataFrame(
        [(web("w-1", "page_view", "2026-10-01T12:00:00Z"), "t", 0, 0)],
        "raw string, kafka_topic string, kafka_partition int, kafka_offset bigint",
    )
    batch = parse_and_validate(message, source, as_of=ctx.as_of).transform(stream.with_dedup_key)
    real_insert = stream.insert_new_rows

    def overcounting_insert(ctx_, df, name, **kwargs):
        inserted = real_insert(ctx_, df, name, **kwargs)
        return inserted + 1 if name == "silver.events" else inserted

    monkeypatch.setattr(stream, "insert_new_rows", overcounting_insert)
    # 1 accepted message, 2 "loaded": duplicates removed would be -1
    with pytest.raises(AuditError, match=r"web_events kafka://t batch q:7: duplicates_removed -1 below zero"):
        stream.write_micro_batch(ctx, batch, 7, source=source, topic="t", query_name="q")
    assert not ctx.tables.exists(spark, "ops.ingest_audit")


def test_processing_time_trigger_runs_until_stopped_and_refuses_a_person_erased_meanwhile(
    spark, project, kafka_broker, kafka_topic_factory
):
    from lakecdp.erasure import erase_person

    topic = kafka_topic_factory("web-continuous")
    ctx = JobContext.create(project, spark)
    query = start_kafka_stream(
        ctx, bootstrap_servers=kafka_broker, topic=topic, source="web_events", trigger="1 second"
    )
    try:
        produce_messages(
            spark,
            kafka_broker,
            topic,
            [
                web("w-10", "purchase", "2026-10-03T09:00:00Z", order_id="O1", price=20),
                # Eve logs in on device d-9: the customer record erasure finds her by
                web(
                    "w-11",
                    "login",
                    "2026-10-03T09:01:00Z",
                    anonymous_id="d-9",
                    user={"email": "eve@example.com", "customer_no": "S0009"},
                ),
            ],
        )
        query.processAllAvailable()
        assert query.isActive
        assertDataFrameEqual(
            ctx.tables.read(spark, "silver.events").select("event_id", "order_id", "value"),
            [("w-10", "O1", 20.0), ("w-11", None, None)],
        )
        # summed over however many micro-batches the trigger split them into: 2 read, 2 loaded
        assert audit_totals(audit(ctx)) == (2, 2, 0, 0, 0)

        # Eve is erased while the query runs; her browser and her shop account keep sending
        erase_person(JobContext.create(project, spark, run_id="erase-1"), email="eve@example.com")
        audit_before = audit(ctx)
        produce_messages(
            spark,
            kafka_broker,
            topic,
            [
                web("w-12", "page_view", "2026-10-03T10:00:00Z", user={"email": " EVE@Example.com "}),  # her email
                web("w-13", "page_view", "2026-10-03T10:01:00Z", anonymous_id="d-9"),  # her device
                web(
                    "w-14", "login", "2026-10-03T10:02:00Z", anonymous_id="d-9", user={"email": "eve@example.com"}
                ),  # her login
                web(
                    "w-15", "add_to_cart", "2026-10-03T10:03:00Z", price="abc", user={"customer_no": "S0009"}
                ),  # her shop id; invalid, yet not quarantined
                web(
                    "w-16", "login", "2026-10-03T10:04:00Z", anonymous_id="d-7", user={"email": "finn@example.com"}
                ),  # Finn
                web("w-17", "page_view", "2026-10-03T10:05:00Z", anonymous_id="d-7"),  # Finn's device
                "{not json",
            ],
        )
        query.processAllAvailable()
        assert query.isActive
    finally:
        query.stop()

    # Finn's events and login load, Eve's four messages are nowhere (her w-11 went with the erasure)
    assert delta_rows(ctx.tables, "silver.events", ["event_id", "email", "device_id"]) == [
        ("w-10", None, None),
        ("w-16", "finn@example.com", "d-7"),
        ("w-17", None, "d-7"),
    ]
    assert delta_rows(ctx.tables, "bronze.web_events", ["event_id", "anonymous_id"]) == [
        ("w-10", None),
        ("w-16", "d-7"),
        ("w-17", "d-7"),
    ]
    assert delta_rows(ctx.tables, "quarantine.web_events", ["raw", "reasons"]) == [("{not json", ["MALFORMED_LINE"])]
    assert delta_rows(ctx.tables, "silver.customer_records", ["record_id", "email", "device_ids"]) == [
        ("web:d-7", "finn@example.com", ["d-7"]),
    ]
    for name in ("bronze.web_events", "quarantine.web_events", "silver.events", "silver.customer_records"):
        rows = RsDeltaTable(ctx.tables.location(name)).to_pyarrow_table().to_pylist()
        assert [row for row in rows if re.search(r"(?i)eve@example\.com|\bd-9\b|S0009", str(row))] == [], name
    # the batch(es) after the erasure: read 7 = loaded 2 (w-16, w-17) + quarantined 1 + erased 4
    assert audit_totals([row for row in audit(ctx) if row not in audit_before]) == (7, 2, 1, 0, 4)


def test_bad_stream_definitions_name_the_problem(spark, project):
    ctx = JobContext.create(project, spark)
    assert parse_trigger("available_now") == {"availableNow": True}
    assert parse_trigger("500 milliseconds") == {"processingTime": "500 milliseconds"}
    with pytest.raises(StreamDefinitionError, match="trigger must be 'available_now' or an interval"):
        parse_trigger("often")
    with pytest.raises(StreamDefinitionError, match="source 'crm' cannot be streamed from Kafka"):
        start_kafka_stream(ctx, bootstrap_servers="127.0.0.1:1", topic="t", source="crm")
    with pytest.raises(StreamDefinitionError, match="invalid Kafka topic name 'a topic'"):
        start_kafka_stream(ctx, bootstrap_servers="127.0.0.1:1", topic="a topic", source="web_events")


def test_streaming_config_loads_and_errors_name_file_and_field(tmp_path):
    config = stream.load_streaming_config(Path(__file__).resolve().parents[1] / "conf")
    assert [(s.source, s.topic) for s in config.streams] == [
        ("web_events", "lakecdp.web_events"),
        ("email_events", "lakecdp.email_events"),
    ]
    assert config.kafka.starting_offsets == "earliest"
    assert parse_trigger(config.trigger) == {"processingTime": "10 seconds"}

    (tmp_path / "streaming.yaml").write_text(
        "version: 1\nkafka: {bootstrap_servers: 'localhost'}\nstreams: [{source: crm, topic: x}]\ntrigger: often\n"
    )
    with pytest.raises(ConfigError) as error:
        stream.load_streaming_config(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "streaming.yaml"))
    assert "kafka.bootstrap_servers: Value error, expected host:port" in message
    assert "trigger: Value error, trigger must be 'available_now' or an interval" in message

    # which sources stream is config, not code: one loading a target a stream writes, with a
    # JSON message form (conf/sources is read for it)
    import shutil

    shutil.copytree(Path(__file__).resolve().parents[1] / "conf" / "sources", tmp_path / "sources")
    for source, reason in (
        ("crm", "source 'crm' cannot be streamed from Kafka: it loads customer_records; a stream writes events only"),
        ("nowhere", "no source named 'nowhere' in conf/sources"),
    ):
        (tmp_path / "streaming.yaml").write_text(
            f"version: 1\nstreams: [{{source: web_events, topic: w}}, {{source: {source}, topic: x}}]\n"
        )
        with pytest.raises(ConfigError) as error:
            stream.load_streaming_config(tmp_path)
        assert str(error.value) == f"{tmp_path / 'streaming.yaml'}: streams[1].source: {reason}"


def test_stream_events_job_runs_both_configured_streams_available_now(
    spark, tmp_path, kafka_broker, kafka_topic_factory
):
    import importlib.util
    import shutil

    from lakecdp.config import load_project
    from lakecdp.tables import Tables

    repo = Path(__file__).resolve().parents[1]
    conf = tmp_path / "conf"
    shutil.copytree(repo / "conf" / "sources", conf / "sources")
    (conf / "environments").mkdir()
    shutil.copy(repo / "conf" / "environments" / "local.yaml", conf / "environments" / "local.yaml")
    web_topic, email_topic = kafka_topic_factory("job-web"), kafka_topic_factory("job-email")
    (conf / "streaming.yaml").write_text(
        f"version: 1\nkafka: {{bootstrap_servers: '{kafka_broker}'}}\n"
        f"streams:\n  - {{source: web_events, topic: {web_topic}}}\n"
        f"  - {{source: email_events, topic: {email_topic}}}\n"
    )
    produce_messages(spark, kafka_broker, web_topic, [web("w-20", "login", "2026-10-04T10:00:00Z")])
    produce_messages(
        spark, kafka_broker, email_topic, [email("e-20", "click", "dan@example.com", "2026-10-04T10:01:00Z")]
    )

    spec = importlib.util.spec_from_file_location("stream_events_job", repo / "jobs" / "stream_events.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--conf", str(conf), "--env", "local", "--trigger", "available_now"]) == 0

    # both queries wrote the one silver.events table (concurrent MERGEs retried on conflict)
    tables = Tables(load_project(conf, env="local"))
    events = tables.read(spark, "silver.events")
    assertDataFrameEqual(
        events.select("event_id", "event_type", "channel"),
        [
            ("w-20", "login", "web"),
            ("e-20", "email_click", "email"),
        ],
    )
    # and the one audit table, a row each (their first batch); a login without an anonymous id
    # is no customer record
    assert delta_rows(tables, "ops.ingest_audit", AUDIT_COLUMNS[:2] + AUDIT_COLUMNS[3:]) == [
        ("email_events", f"kafka://{email_topic}", 1, 1, 0, 0, 0),
        ("web_events", f"kafka://{web_topic}", 1, 1, 0, 0, 0),
    ]
    assert [b.endswith(":0") for (b,) in delta_rows(tables, "ops.ingest_audit", ["stream_batch"])] == [True, True]
    assert delta_rows(tables, "silver.customer_records", ["record_id"]) == []


def test_a_source_loaded_from_files_then_streamed_keeps_both(spark, project, kafka_broker, kafka_topic_factory):
    # the usual path to production: the backlog from files first, then the live Kafka topic
    from lakecdp.ingest.job import ingest

    landed = project.landing / "web_events" / "web_events_0.jsonl"
    landed.parent.mkdir(parents=True, exist_ok=True)
    landed.write_text(web("w-1", "page_view", "2026-10-01T09:00:00Z") + "\n", encoding="utf-8")
    ctx = JobContext.create(project, spark)
    ingest(ctx, only=["web_events"])

    topic = kafka_topic_factory("web-after-files")
    produce_messages(
        spark, kafka_broker, topic, [web("w-2", "product_view", "2026-10-02T09:00:00Z", product_id="P1", price=5)]
    )
    query = run_available_now(ctx, kafka_broker, topic, "web_events")

    assertDataFrameEqual(
        ctx.tables.read(spark, "bronze.web_events").select(
            "event_id", "_source_file", "_line", "_kafka_topic", "_kafka_offset"
        ),
        [("w-1", "web_events/web_events_0.jsonl", 1, None, None), ("w-2", None, None, topic, 0)],
    )
    assertDataFrameEqual(
        ctx.tables.read(spark, "silver.events").select("event_id", "value"), [("w-1", None), ("w-2", 5.0)]
    )
    # the file's audit row and the micro-batch's share the table
    assert audit(ctx) == [
        ("web_events", f"kafka://{topic}", f"{query.name}:0", 1, 1, 0, 0, 0),
        ("web_events", "web_events/web_events_0.jsonl", None, 1, 1, 0, 0, 0),
    ]
