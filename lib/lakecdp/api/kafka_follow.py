"""Kafka topics of ``conf/streaming.yaml`` into silver on the embedded engine, exactly once, no JVM.

The embedded twin of the Spark Kafka stream (:mod:`lakecdp.ingest.stream`), for the follow loop
(:mod:`lakecdp.api.follow`, ``lakecdp kafka-follow``): a Kafka consumer (librdkafka through
``confluent-kafka``) reads the configured topics, and each partition's new messages go through
the embedded pickup's writer (:func:`lakecdp.api.embedded_pickup.write_chunk`: the source YAML's
rules, erasure refusal, quarantine / bronze keyed on (topic, partition, offset), silver.events on
``event_id``, one ``ops.ingest_audit`` row per chunk), the rows the Spark stream writes.

Progress lives in the Delta table ``ops.kafka_intake``, not in the consumer group: a chunk
(topic, partition, start offset, end offset) is recorded ``started`` before it is written and
``done`` after. A follower killed half way replays its started chunks first, with the same bounds
(the same audit key ``kafka-embedded:<topic>:<partition>:<start>``, the same rows: the writes are
insert-if-new, so nothing is doubled), then goes on from the end of the last done chunk of each
partition. A partition with no chunk yet starts where ``kafka.starting_offsets`` says. One
follower per warehouse (as one query per checkpoint on Spark); moving between the Spark stream and
this one re-reads from the ledger's position, and the keyed writes keep the rows exactly once.

Example:
    >>> feed = KafkaFeed(project)
    >>> feed.take(JobContext.create(project, None), wait=0.2)   # rows loaded
    3
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lakecdp import catalog
from lakecdp.api.chunk_ledger import ChunkLedger

if TYPE_CHECKING:
    from collections.abc import Callable

    from lakecdp.config import Project
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore
    from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

LEDGER = catalog.KAFKA_INTAKE.name
CHUNKS = ChunkLedger(catalog.KAFKA_INTAKE, key=("topic", "partition"))
#: messages taken from the consumer in one pass at most (a backlog is cut into passes of this size)
MAX_MESSAGES = 20_000
#: how long a replay of a started chunk waits for its messages before it says the topic lost them
REPLAY_TIMEOUT_S = 60.0

#: a partition's messages of one pass: (raw text, topic, partition, offset, broker time)
Message = tuple[str, str, int, int, datetime]


class KafkaFeedError(RuntimeError):
    """The topics cannot be read as configured (an unknown topic, a chunk the broker no longer has)."""


def audit_key(topic: str, partition: int, start: int) -> str:
    """The ``ops.ingest_audit`` ``stream_batch`` of the chunk of ``topic`` / ``partition`` from ``start``."""
    return f"kafka-embedded:{topic}:{partition}:{start}"


def ledger_state(store: DeltaStore) -> dict[tuple[str, int], tuple[int | None, tuple[int, int] | None]]:
    """(topic, partition) -> (end of the last done chunk or None, a started chunk not done or None)."""
    store.create_if_missing(LEDGER, catalog.KAFKA_INTAKE.ddl)
    state = CHUNKS.state(store.read(LEDGER, columns=CHUNKS.columns).to_pylist())
    return {(topic, partition): position for (topic, partition), position in state.items()}


def _record(store: DeltaStore, ctx: JobContext, chunks: list[tuple[str, int, int, int, int]], status: str) -> None:
    """One ledger commit for ``chunks`` [(topic, partition, start, end, events)]."""
    if not chunks:
        return
    rows = CHUNKS.rows([((t, p), start, end, n) for t, p, start, end, n in chunks], status, run_id=ctx.run_id)
    store.append(rows, LEDGER, catalog.KAFKA_INTAKE.ddl, run_id=ctx.run_id)


def _message(record: Any) -> Message:
    """A consumed record as the writer takes it: the value as text (undecodable bytes as U+FFFD,
    as Spark's cast of the binary value), the broker's timestamp (what FUTURE_TIMESTAMP is judged by)."""
    value = record.value()
    raw = value.decode("utf-8", errors="replace") if value is not None else ""
    _kind, millis = record.timestamp()
    received = datetime.fromtimestamp(millis / 1000, tz=timezone.utc) if millis and millis > 0 else None
    return raw, record.topic(), record.partition(), record.offset(), received or datetime.now(timezone.utc)


class KafkaFeed:
    """The configured topics, consumed from where ``ops.kafka_intake`` says, written embedded."""

    def __init__(
        self,
        project: Project,
        *,
        consumer_settings: dict[str, str] | None = None,
        fault_hook: Callable[[str], None] | None = None,
    ) -> None:
        """The streams of ``conf/streaming.yaml``; each source must be one the embedded writer reads.

        Args:
            consumer_settings: librdkafka settings over ``kafka.consumer`` of conf/streaming.yaml.
            fault_hook: called with ``"after_<topic>[<partition>]"`` after each partition's rows of
                a pass are written, before the ledger's ``done`` row (tests kill the feed there).
        """
        from lakecdp.api.embedded_pickup import unsupported_reason
        from lakecdp.ingest.sources import load_sources
        from lakecdp.ingest.stream_config import as_json_messages, load_streaming_config

        config = load_streaming_config(project.conf_dir)
        sources = load_sources(project.conf_dir)
        self.project = project
        self.settings = config.kafka
        self.sources: dict[str, SourceConfig] = {}
        for spec in config.streams:
            source = as_json_messages(sources[spec.source])
            reason = unsupported_reason(source)
            if reason is not None:
                raise KafkaFeedError(
                    f"conf/streaming.yaml: source {spec.source!r} cannot be read on the embedded engine ({reason}); "
                    "run the Spark stream (jobs/stream_events.py) for it"
                )
            self.sources[spec.topic] = source
        self._extra = dict(consumer_settings or {})
        self._fault_hook = fault_hook
        self._consumer: Any = None

    # -- the consumer ----------------------------------------------------------------------------

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        settings = {
            "bootstrap.servers": self.settings.bootstrap_servers,
            # partitions are assigned by hand and offsets kept in ops.kafka_intake: the group id
            # only names the client to the broker, nothing is committed to it
            "group.id": "lakecdp-embedded",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            **self.settings.consumer,
            **self._extra,
        }
        return Consumer(settings)

    def _partitions(self, consumer: Any) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        for topic in self.sources:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                error = metadata.error if metadata is not None else "not found"
                raise KafkaFeedError(
                    f"topic {topic!r} of conf/streaming.yaml is not readable on {self.settings.bootstrap_servers}: "
                    f"{error}"
                )
            found.extend((topic, p) for p in sorted(metadata.partitions))
        return found

    def _start(self, ctx: JobContext, store: DeltaStore) -> int:
        """Open the consumer: replay started chunks, then assign every partition after its done end."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        consumer = self._new_consumer()
        state = ledger_state(store)
        loaded = 0
        for (topic, partition), (_end, pending) in sorted(state.items()):
            if pending is not None and topic in self.sources:
                loaded += self._replay(ctx, store, consumer, topic, partition, pending)
        state = ledger_state(store)
        default = OFFSET_BEGINNING if self.settings.starting_offsets == "earliest" else OFFSET_END
        assignment = []
        for topic, partition in self._partitions(consumer):
            end, _pending = state.get((topic, partition), (None, None))
            assignment.append(TopicPartition(topic, partition, end if end is not None else default))
        consumer.assign(assignment)
        self._consumer = consumer
        return loaded

    def _replay(
        self, ctx: JobContext, store: DeltaStore, consumer: Any, topic: str, partition: int, bounds: tuple[int, int]
    ) -> int:
        """Write a chunk a killed follower started, with its recorded bounds."""
        import time

        from confluent_kafka import TopicPartition

        start, end = bounds
        logger.info("kafka %s[%d]: replaying unfinished chunk [%d, %d)", topic, partition, start, end)
        consumer.assign([TopicPartition(topic, partition, start)])
        messages: list[Message] = []
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while (not messages or messages[-1][3] < end - 1) and time.monotonic() < deadline:
            for record in consumer.consume(num_messages=MAX_MESSAGES, timeout=0.5):
                if record.error() is None and start <= record.offset() < end:
                    messages.append(_message(record))
                if record.error() is None and record.offset() >= end - 1:
                    break
        consumer.unassign()
        if not messages or messages[-1][3] < end - 1:
            raise KafkaFeedError(
                f"kafka {topic}[{partition}]: the started chunk [{start}, {end}) is no longer on the broker "
                f"(retention?) after {REPLAY_TIMEOUT_S:.0f} s: its rows may be partly written"
            )
        return self._write(ctx, store, {(topic, partition): messages}, record_started=False)

    # -- a pass ----------------------------------------------------------------------------------

    def take(self, ctx: JobContext, *, wait: float) -> int:
        """Write what the topics hold beyond the ledger (at most :data:`MAX_MESSAGES`), waiting up to
        ``wait`` seconds for the first message; returns the rows loaded into silver.events."""
        from confluent_kafka import KafkaError, KafkaException

        from lakecdp.delta_store import DeltaStore

        store = DeltaStore(ctx, label="lakecdp-kafka-follow")
        loaded = 0
        if self._consumer is None:
            loaded += self._start(ctx, store)
        records = self._consumer.consume(num_messages=MAX_MESSAGES, timeout=wait)
        while records and len(records) < MAX_MESSAGES:
            # what the client has fetched by now joins the pass: fewer, larger chunks
            more = self._consumer.consume(num_messages=MAX_MESSAGES - len(records), timeout=0.05)
            if not more:
                break
            records.extend(more)
        by_partition: dict[tuple[str, int], list[Message]] = {}
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            by_partition.setdefault((record.topic(), record.partition()), []).append(_message(record))
        return loaded + self._write(ctx, store, by_partition, record_started=True)

    def _write(
        self,
        ctx: JobContext,
        store: DeltaStore,
        by_partition: dict[tuple[str, int], list[Message]],
        *,
        record_started: bool,
    ) -> int:
        from lakecdp.api.embedded_pickup import write_chunk

        chunks = [
            (topic, partition, messages[0][3], messages[-1][3] + 1, len(messages))
            for (topic, partition), messages in sorted(by_partition.items())
            if messages
        ]
        if record_started:
            _record(store, ctx, [(t, p, s, e, 0) for t, p, s, e, _n in chunks], "started")
        loaded = 0
        for topic, partition, start, _end, _n in chunks:
            counts = write_chunk(
                ctx,
                store,
                sorted(by_partition[(topic, partition)], key=lambda m: m[3]),
                source=self.sources[topic],
                topic=topic,
                stream_batch=audit_key(topic, partition, start),
            )
            loaded += counts["rows_loaded"]
            if self._fault_hook is not None:
                self._fault_hook(f"after_{topic}[{partition}]")
        _record(store, ctx, chunks, "done")
        if chunks:
            logger.info("kafka: %s", ", ".join(f"{t}[{p}] [{s}, {e}): {n} messages" for t, p, s, e, n in chunks))
        return loaded

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
