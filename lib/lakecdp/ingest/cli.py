"""``lakecdp ingest [--source NAME ...]``: load new landing files into bronze / quarantine / silver."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def _ingest(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project
    from lakecdp.context import JobContext
    from lakecdp.ingest.job import ingest
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name="lakecdp-ingest")
    ctx = JobContext.create(project, spark)
    counts = ingest(ctx, only=args.source or None)
    logger.info("ingest run %s: %s", ctx.run_id, counts)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingest", help="load new landing files (exactly once per file)")
    parser.add_argument(
        "--source", action="append", metavar="NAME",
        help="only this source (repeatable); default: every conf/sources/*.yaml",
    )
    parser.set_defaults(handler=_ingest)
