"""``lakecdp activate`` (the activation step on its own) and ``lakecdp webhook-receiver``
(the local demo receiver, in the foreground)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _activate(args: argparse.Namespace) -> int:
    from lakecdp.activation.job import run
    from lakecdp.config import load_project
    from lakecdp.context import JobContext
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name="lakecdp-activate")
    counts = run(JobContext.create(project, spark))
    for key in sorted(counts):
        print(f"{key}: {counts[key]}")
    return 1 if counts.get("dead_letter") else 0


def _receiver(args: argparse.Namespace) -> int:
    from lakecdp.activation.receiver import LocalReceiver

    with LocalReceiver(Path(args.output)) as receiver:
        print(f"listening on {receiver.url}; writing to {args.output}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    activate = subparsers.add_parser(
        "activate", help="deliver new segment changes to every destination (exit 1 if any dead-lettered)"
    )
    activate.set_defaults(handler=_activate)
    receiver = subparsers.add_parser("webhook-receiver", help="run the local demo webhook receiver")
    receiver.add_argument("--output", default="warehouse/demo_receiver/manual.jsonl",
                          help="file that gets one JSON line per request")
    receiver.set_defaults(handler=_receiver)
