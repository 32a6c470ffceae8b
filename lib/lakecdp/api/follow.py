"""The follow loop: new events to segment change rows in one small loop, no JVM.

``lakecdp api-pickup --follow`` follows the HTTP intake log, ``lakecdp kafka-follow`` the Kafka
topics of ``conf/streaming.yaml`` (``--intake-log`` both in one loop). On the embedded engine each
pass takes what the feeds hold: the intake log's new complete lines when a segment file grew
(:func:`lakecdp.api.pickup.pickup`, embedded: validation and mapping in Python and DuckDB, writes
with delta-rs; an idle pass only stats the log's files), the topics' new messages
(:class:`lakecdp.api.kafka_follow.KafkaFeed`, the same writer; an idle pass waits up to
``interval`` for a message). When that loaded events, it runs one event micro-batch
(:func:`lakecdp.segments.event_batch.process_new_events`: the event segments of the customers of
the new events, changes and membership). Each step is exactly once on its own (the pickup's and
the Kafka feed's ledgers, the micro-batch's run ids from silver.events versions), so the loop can
be killed and restarted at any point; a restart first catches up with whatever the feeds and
silver.events hold.

Example:
    >>> follow(project, interval=0.2)                # the intake log, until interrupted
    >>> follow(project, kafka=True, intake_log=False, once=True)   # the topics' backlog, then return
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from lakecdp.config import Project
    from lakecdp.context import JobContext
    from lakecdp.segments.definitions import SegmentDefinition

logger = logging.getLogger(__name__)

#: run ids of the loop's event micro-batches: ``api-events-v<silver.events version>``
RUN_PREFIX = "api-events"


class LogFeed:
    """The HTTP intake log: new complete lines picked up (:func:`lakecdp.api.pickup.pickup`,
    embedded) when a segment file grew; an idle pass only stats the files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[int, int] | None = None

    def take(self, ctx: JobContext, *, wait: float) -> int:
        from lakecdp.api.intake_log import segments
        from lakecdp.api.pickup import pickup

        sizes = {number: path.stat().st_size for number, path in segments(self.directory)}
        if sizes == self._seen:
            return 0
        self._seen = sizes
        return pickup(ctx, self.directory, engine="embedded")["rows_loaded"]


def follow(
    project: Project,
    *,
    interval: float = 0.2,
    log_dir: Path | None = None,
    segments: dict[str, SegmentDefinition] | None = None,
    stop: threading.Event | None = None,
    intake_log: bool = True,
    kafka: bool = False,
    once: bool = False,
) -> dict[str, int]:
    """Pick up new events and run event micro-batches until ``stop`` is set (or interrupted).

    Args:
        interval: seconds between looks at the feeds when nothing changed (Kafka: the longest
            wait for a first message).
        log_dir: the intake log (default: ``conf/api.yaml`` ``log_dir``).
        segments: the definitions (default ``conf/segments``); without event segments only the
            feeds run.
        stop: set it to end the loop after the current pass (tests, benchmarks).
        intake_log: follow the HTTP intake log.
        kafka: follow the topics of ``conf/streaming.yaml`` (:class:`lakecdp.api.kafka_follow.KafkaFeed`).
        once: return after the first pass that finds nothing new (a backlog processed, then stop).

    Returns:
        Totals: passes, rows loaded and the micro-batches' entered / exited changes.

    Raises:
        ValueError: the environment's engine is not ``embedded`` (run the Spark pickup with
            ``--every`` and the Spark streams instead), or no feed is asked for.
    """
    from lakecdp.api.config import load_api_config
    from lakecdp.context import JobContext
    from lakecdp.segments.definitions import load_segments
    from lakecdp.segments.event_batch import process_new_events

    if project.environment.engine != "embedded":
        raise ValueError(
            f"the follow loop runs on the embedded engine; environment {project.environment.name!r} has "
            f"engine: {project.environment.engine} (use api-pickup --every, jobs/stream_events.py and the Spark "
            "segment stream instead)"
        )
    feeds: list[Any] = []
    if intake_log:
        directory = log_dir if log_dir is not None else project.path(load_api_config(project.conf_dir).log_dir)
        feeds.append(LogFeed(directory))
    if kafka:
        from lakecdp.api.kafka_follow import KafkaFeed

        feeds.append(KafkaFeed(project))
    if not feeds:
        raise ValueError("nothing to follow: ask for the intake log, Kafka or both")
    waits = any(not isinstance(feed, LogFeed) for feed in feeds)
    definitions = segments if segments is not None else load_segments(project.conf_dir / "segments")
    has_event_rules = any(d.kind == "event" for d in definitions.values())
    totals: dict[str, int] = {"passes": 0, "rows_loaded": 0, "entered": 0, "exited": 0}
    catch_up = True
    try:
        while stop is None or not stop.is_set():
            ctx = JobContext.create(project, None)  # no Spark session on this engine
            loaded = sum(feed.take(ctx, wait=interval) for feed in feeds)
            totals["passes"] += 1
            totals["rows_loaded"] += loaded
            if has_event_rules and (loaded or catch_up):
                changed = process_new_events(ctx, definitions, run_prefix=RUN_PREFIX)
                totals["entered"] += changed.get("entered", 0)
                totals["exited"] += changed.get("exited", 0)
                if changed:
                    logger.info("follow: %d rows loaded, %s", loaded, changed)
            if not loaded and not catch_up:
                if once:
                    break
                if not waits:
                    time.sleep(interval)
            catch_up = False
    finally:
        for feed in feeds:
            close = getattr(feed, "close", None)
            if close is not None:
                close()
    return totals
