"""``lakecdp generate``: write the sample world's raw sources and labels."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone

logger = logging.getLogger(__name__)


def _as_of(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--as-of: not an ISO-8601 time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _generate(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project
    from lakecdp.sample.config import load_sample_config
    from lakecdp.context import open_session
    from lakecdp.sample.generator import generate

    project = load_project(args.conf, env=args.env)
    config = load_sample_config(project.conf_dir)
    landing = project.path(args.landing) if args.landing else project.landing
    labels = project.path(args.labels) if args.labels else project.warehouse / "labels"
    # the environment's engine: Spark generates in parallel on its cluster, embedded in this process
    spark = open_session(project, app_name="lakecdp-generate") if project.environment.engine == "spark" else None
    counts = generate(
        spark,
        landing=landing,
        labels=labels,
        people=args.people,
        seed=args.seed,
        increment=args.increment,
        as_of=args.as_of or project.as_of(),
        config=config,
    )
    # the counts are the command's output, for people and scripts alike
    print(json.dumps(counts, sort_keys=True))  # noqa: T201
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="write the sample world's raw sources (landing) and ground truth (labels)"
    )
    parser.add_argument("--people", type=_positive, default=5_000, help="population of increment 0")
    parser.add_argument("--seed", type=int, default=42, help="fixes the world (default 42)")
    parser.add_argument("--increment", type=int, default=0, help="0 = initial load; n >= 1 later deliveries")
    parser.add_argument("--landing", default=None, help="landing folder (default: the environment's)")
    parser.add_argument("--labels", default=None, help="labels folder (default: <warehouse>/labels)")
    parser.add_argument(
        "--as-of",
        dest="as_of",
        type=_as_of,
        default=None,
        help="the delivery's now, ISO-8601 (default: the environment's as_of)",
    )
    parser.set_defaults(handler=_generate)
