"""``lakecdp features [--as-of TIME]``: compute gold.customer_features, e.g. for a past date."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone

logger = logging.getLogger(__name__)


def parse_as_of(text: str) -> datetime:
    """ISO-8601 date or time (``2026-10-01``, ``2026-10-01T12:00:00Z``); no zone means UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--as-of: {text!r} is not an ISO-8601 date or time (e.g. 2026-10-01T00:00:00Z)"
        ) from exc
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _features(args: argparse.Namespace) -> int:
    """The pipeline step ``features`` as of ``--as-of``, recorded in ``ops.runs``."""
    from lakecdp.config import load_project
    from lakecdp.pipeline import run_step_command

    counts = run_step_command(load_project(args.conf, env=args.env), "features", as_of=args.as_of)
    return 1 if counts is None else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="compute gold.customer_features as of a point in time")
    parser.add_argument(
        "--as-of",
        type=parse_as_of,
        default=None,
        metavar="TIME",
        help="compute as of this time (default: the environment's as_of, else now)",
    )
    parser.set_defaults(handler=_features)
