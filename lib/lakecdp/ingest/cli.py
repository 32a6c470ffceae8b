"""``lakecdp ingest [--source NAME ...]``: load new landing files into bronze / quarantine / silver.

The pipeline step ``ingest`` with the command's options, recorded in ``ops.runs`` like
``lakecdp step ingest``."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def _ingest(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project
    from lakecdp.ingest.job import ingest
    from lakecdp.pipeline import run_step_command

    only = args.source or None
    counts = run_step_command(load_project(args.conf, env=args.env), "ingest", call=lambda ctx: ingest(ctx, only=only))
    return 1 if counts is None else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingest", help="load new landing files (exactly once per file)")
    parser.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="only this source (repeatable); default: every conf/sources/*.yaml",
    )
    parser.set_defaults(handler=_ingest)
