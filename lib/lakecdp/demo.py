"""What ``lakecdp demo`` (and ``lakecdp-demo``, ``jobs/run_demo.py``) runs: the sample world through
the whole pipeline, with a local webhook receiver standing in for the demo destinations' endpoints.

The receiver belongs to the demo, not to the activation step. ``conf/destinations/demo_webhook.yaml``
and ``demo_sms.yaml`` take their url from ``${LAKECDP_DEMO_RECEIVER_URL}``, as any destination takes
its url or secret from an environment variable it names; :func:`demo_receiver` sets that variable
while the receiver runs, as a user would ``export`` it in a shell. Other runs (``lakecdp run``, the
scheduled jobs) leave a demo destination out while its variable is unset, and its changes wait.

Example:
    >>> result = run_demo(project, spark)     # requests land in <warehouse>/demo_receiver/*.jsonl
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp.activation.config import DEMO_RECEIVER_ENV
from lakecdp.activation.receiver import LocalReceiver

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakecdp.config import Project
    from lakecdp.context import SparkHandle
    from lakecdp.pipeline import PipelineResult

logger = logging.getLogger(__name__)


@contextmanager
def demo_receiver(warehouse: Path) -> Iterator[LocalReceiver | None]:
    """Run the local receiver, writing to ``<warehouse>/demo_receiver/<UTC start>.jsonl``, and set
    ``LAKECDP_DEMO_RECEIVER_URL`` to its url for the block; both are undone on exit.

    A url already set (a receiver or endpoint of your own) is kept: no receiver is started and
    ``None`` is yielded.
    """
    if os.environ.get(DEMO_RECEIVER_ENV):
        logger.info("demo destinations deliver to %s (%s is set)", os.environ[DEMO_RECEIVER_ENV], DEMO_RECEIVER_ENV)
        yield None
        return
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    with LocalReceiver(warehouse / "demo_receiver" / f"{started}.jsonl") as receiver:
        os.environ[DEMO_RECEIVER_ENV] = receiver.url
        try:
            yield receiver
        finally:
            os.environ.pop(DEMO_RECEIVER_ENV, None)


def run_demo(project: Project, spark: SparkSession | SparkHandle, *, resume: bool = True) -> PipelineResult:
    """Generate the sample data and run every pipeline step as the ``demo`` job, with the demo
    receiver up for the whole run.

    Args:
        spark: the session, or a handle that starts it when a step first asks (on the embedded
            engine none does: the demo starts no JVM).
        resume: continue an unfinished demo run (same run id and as-of) after its completed steps.

    Returns:
        The pipeline's result (run id, counts per step).
    """
    from lakecdp.pipeline import run_pipeline
    from lakecdp.steps import demo_steps

    with demo_receiver(project.warehouse):
        return run_pipeline(project, spark, steps=demo_steps(), job="demo", resume=resume)
