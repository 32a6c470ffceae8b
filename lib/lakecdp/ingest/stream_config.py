"""Streaming config (``conf/streaming.yaml``) and which sources a Kafka stream can carry.

A source is streamed by naming it in ``conf/streaming.yaml``: it must load a target a stream
writes (:data:`STREAM_TARGETS`) and its format must have a JSON message form
(:meth:`lakecdp.ingest.formats.SourceFormat.as_message`). The query itself:
:mod:`lakecdp.ingest.stream`.

Example:
    >>> config = load_streaming_config(project.conf_dir)
    >>> parse_trigger(config.trigger)
    {'processingTime': '10 seconds'}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from lakecdp.config import ConfigError, StrictModel, load_model

if TYPE_CHECKING:
    from lakecdp.ingest.sources import SourceConfig

#: the silver targets a Kafka stream writes: a source of one of these, whose format has a JSON
#: message form (lakecdp.ingest.formats), is streamed by naming it in conf/streaming.yaml
STREAM_TARGETS = ("events",)

AVAILABLE_NOW = "available_now"
# "1 second", "500 milliseconds", "2 minutes"
_INTERVAL_RE = re.compile(r"^\d+\s+(millisecond|milliseconds|second|seconds|minute|minutes|hour|hours)$")


class StreamDefinitionError(ValueError):
    """A stream is asked for with an unknown source, a bad topic or a bad trigger."""


class KafkaSettings(StrictModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    # where a query without a checkpoint starts; a checkpoint always wins
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    # cap a micro-batch (None: everything available); keeps the first batch of a backlog small
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
    # extra consumer settings passed as ``kafka.<key>`` (security, timeouts)
    consumer: dict[str, str] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class TopicStream(StrictModel):
    # a source of conf/sources that can be streamed (stream_refusal); checked when loaded
    source: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")


class StreamingConfig(StrictModel):
    """``conf/streaming.yaml``: where the events come from and how often to process them."""

    version: Literal[1]
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    streams: list[TopicStream]
    # continuous runs: "1 second", "30 seconds"; or "available_now" (process the backlog, stop)
    trigger: str = "10 seconds"
    # how long de-duplication remembers an event id (processing time); later re-deliveries
    # are still stopped by the MERGE on event_id, this only bounds the state store
    dedup_window: str = "1 hour"

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        parse_trigger(value)
        return value

    @field_validator("dedup_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not _INTERVAL_RE.match(value.strip()):
            raise ValueError(f"expected an interval like '1 hour', got {value!r}")
        return value.strip()


def load_streaming_config(conf_dir: str | Path) -> StreamingConfig:
    """Load ``<conf_dir>/streaming.yaml`` (errors name the file and field); each stream's
    source must be one of ``<conf_dir>/sources`` that can be streamed (:func:`stream_refusal`)."""
    from lakecdp.ingest.sources import load_sources

    path = Path(conf_dir) / "streaming.yaml"
    config = load_model(path, StreamingConfig)
    sources = load_sources(Path(conf_dir) / "sources") if config.streams else {}
    for index, spec in enumerate(config.streams):
        refusal = stream_refusal(sources.get(spec.source), spec.source)
        if refusal is not None:
            raise ConfigError(f"{path}: streams[{index}].source: {refusal}")
    return config


def parse_trigger(trigger: str) -> dict[str, Any]:
    """``"available_now"`` or an interval (``"1 second"``) -> ``DataStreamWriter.trigger`` kwargs."""
    text = trigger.strip()
    if text in (AVAILABLE_NOW, "availableNow"):
        return {"availableNow": True}
    if _INTERVAL_RE.match(text):
        return {"processingTime": text}
    raise StreamDefinitionError(f"trigger must be 'available_now' or an interval like '1 second', got {trigger!r}")


def as_json_messages(source: SourceConfig) -> SourceConfig:
    """The source as it arrives on Kafka: one JSON object per message, whatever its file format.

    Email events land as CSV files, but on Kafka they are JSON objects with the same fields;
    the columns, required fields and checks stay the source's own. The format decides
    (:meth:`lakecdp.ingest.formats.SourceFormat.as_message`).
    """
    try:
        return source.file_format.as_message(source)
    except ValueError as exc:
        raise StreamDefinitionError(
            f"source {source.name!r} ({source.format}) cannot arrive as Kafka JSON: {exc}"
        ) from None


def stream_refusal(source: SourceConfig | None, name: str) -> str | None:
    """Why source ``name`` cannot be streamed from Kafka, or None when it can: it must exist,
    load a target a stream writes (:data:`STREAM_TARGETS`) and have a JSON message form."""
    if source is None:
        return f"no source named {name!r} in conf/sources"
    if source.target not in STREAM_TARGETS:
        return (
            f"source {name!r} cannot be streamed from Kafka: it loads {source.target}; "
            f"a stream writes {', '.join(STREAM_TARGETS)} only"
        )
    try:
        as_json_messages(source)
    except StreamDefinitionError as exc:
        return f"source {name!r} cannot be streamed from Kafka: {exc}"
    return None
