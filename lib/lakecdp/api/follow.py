"""``lakecdp api-pickup --follow``: HTTP events to segment change rows in one small loop, no JVM.

On the embedded engine the loop watches the intake log; when a segment file grew it picks the
new lines up (:func:`lakecdp.api.pickup.pickup`, embedded: validation and mapping in Python and
DuckDB, writes with delta-rs) and, when that loaded events, runs one event micro-batch
(:func:`lakecdp.segments.event_batch.process_new_events`: the event segments of the customers of
the new events, changes and membership). An idle pass only stats the log's files. Both steps are
exactly once on their own (the pickup's ledger, the micro-batch's run ids from silver.events
versions), so the loop can be killed and restarted at any point; a restart first catches up with
whatever the log and silver.events hold.

Example:
    >>> follow(project, interval=0.2)          # until interrupted
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from lakecdp.config import Project
    from lakecdp.segments.definitions import SegmentDefinition

logger = logging.getLogger(__name__)

#: run ids of the loop's event micro-batches: ``api-events-v<silver.events version>``
RUN_PREFIX = "api-events"


def _log_sizes(log_dir: Path) -> dict[int, int]:
    from lakecdp.api.intake_log import segments

    return {number: path.stat().st_size for number, path in segments(log_dir)}


def follow(
    project: Project,
    *,
    interval: float = 0.2,
    log_dir: Path | None = None,
    segments: dict[str, SegmentDefinition] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Pick up the intake log and run event micro-batches until ``stop`` is set (or interrupted).

    Args:
        interval: seconds between looks at the log when nothing changed.
        log_dir: the intake log (default: ``conf/api.yaml`` ``log_dir``).
        segments: the definitions (default ``conf/segments``); without event segments only the
            pickup runs.
        stop: set it to end the loop after the current pass (tests, benchmarks).

    Returns:
        Totals: the pickup's audit counts and the micro-batches' entered / exited changes.

    Raises:
        ValueError: the environment's engine is not ``embedded`` (run the Spark pickup with
            ``--every`` and the Spark segment stream instead).
    """
    from lakecdp.api.config import load_api_config
    from lakecdp.api.pickup import pickup
    from lakecdp.context import JobContext
    from lakecdp.segments.definitions import load_segments
    from lakecdp.segments.event_batch import process_new_events

    if project.environment.engine != "embedded":
        raise ValueError(
            f"api-pickup --follow runs on the embedded engine; environment {project.environment.name!r} has "
            f"engine: {project.environment.engine} (use --every with the Spark segment stream)"
        )
    directory = log_dir if log_dir is not None else project.path(load_api_config(project.conf_dir).log_dir)
    definitions = segments if segments is not None else load_segments(project.conf_dir / "segments")
    has_event_rules = any(d.kind == "event" for d in definitions.values())
    totals: dict[str, int] = {"passes": 0, "rows_loaded": 0, "entered": 0, "exited": 0}
    seen: dict[int, int] | None = None
    catch_up = True
    while stop is None or not stop.is_set():
        sizes = _log_sizes(directory)
        if sizes == seen and not catch_up:
            time.sleep(interval)
            continue
        seen = sizes
        ctx = JobContext.create(project, None)  # no Spark session on this engine
        counts = pickup(ctx, directory, engine="embedded")
        totals["passes"] += 1
        totals["rows_loaded"] += counts["rows_loaded"]
        if has_event_rules and (counts["rows_loaded"] or catch_up):
            changed = process_new_events(ctx, definitions, run_prefix=RUN_PREFIX)
            totals["entered"] += changed.get("entered", 0)
            totals["exited"] += changed.get("exited", 0)
            if changed:
                logger.info("api follow: %s picked up, %s", counts, changed)
        catch_up = False
    return totals
