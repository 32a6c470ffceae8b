"""Runs the jobs in order: generate (demo only) -> ingest -> identity -> features -> segments
-> activation -> personalisation preview.

A step is ``"module:function"`` taking a :class:`~lakecdp.context.JobContext` and returning
counts (``dict[str, int]``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from collections.abc import Callable, Sequence

from lakecdp.config import load_project
from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

Step = tuple[str, str]

# (step name, "module:function"); each part appends its step when it is ready
PIPELINE_STEPS: tuple[Step, ...] = ()
DEMO_STEPS: tuple[Step, ...] = (("generate", "lakecdp.sample.job:run_demo_generate"), *PIPELINE_STEPS)


def resolve(target: str) -> Callable[[JobContext], dict[str, int]]:
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def run_steps(ctx: JobContext, steps: Sequence[Step]) -> dict[str, dict[str, int]]:
    """Run ``steps`` in order; the first failure stops the run."""
    results: dict[str, dict[str, int]] = {}
    for position, (name, target) in enumerate(steps, start=1):
        logger.info("[%d/%d] %s ...", position, len(steps), name)
        started = time.monotonic()
        results[name] = resolve(target)(ctx) or {}
        logger.info(
            "[%d/%d] %s done in %.1fs %s", position, len(steps), name,
            time.monotonic() - started, results[name],
        )
    return results


def _run(args: argparse.Namespace, steps: Sequence[Step]) -> int:
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name=f"lakecdp-{args.command}")
    ctx = JobContext.create(project, spark)
    logger.info("run %s as of %s", ctx.run_id, ctx.as_of.isoformat())
    run_steps(ctx, steps)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="generate the sample data and run the whole pipeline")
    demo.set_defaults(handler=lambda args: _run(args, DEMO_STEPS))
    run = subparsers.add_parser("run", help="run the pipeline on the landing folder")
    run.set_defaults(handler=lambda args: _run(args, PIPELINE_STEPS))
