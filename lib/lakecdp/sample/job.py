"""Pipeline step of the demo: the sample world (5,000 people, seed 42) into the project's landing folder."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lakecdp.sample.config import load_sample_config
from lakecdp.sample.generator import generate, is_generated, request_fingerprint

if TYPE_CHECKING:
    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)


def run_demo_generate(ctx: JobContext) -> dict[str, int]:
    """Write increment 0 of the demo world to ``ctx.project.landing`` and labels to ``<warehouse>/labels``.

    Does nothing when the exact same files (same request, same bytes) are already there, so
    ``lakecdp demo`` can be re-run without touching the landing folder.
    """
    config = load_sample_config(ctx.project.conf_dir)
    landing = ctx.project.landing
    labels = ctx.project.warehouse / "labels"
    fingerprint = request_fingerprint(
        people=config.demo_people, seed=config.demo_seed, increment=0, as_of=ctx.as_of, config=config
    )
    existing = is_generated(landing=landing, labels=labels, fingerprint=fingerprint)
    if existing is not None:
        logger.info("sample data already in %s (same request, files unchanged): skipped", landing)
        return existing
    # the embedded engine generates in this process (no JVM); Spark generates in parallel
    return generate(
        ctx.spark if ctx.project.environment.engine == "spark" else None,
        landing=landing,
        labels=labels,
        people=config.demo_people,
        seed=config.demo_seed,
        increment=0,
        as_of=ctx.as_of,
        config=config,
    )
