"""``lakecdp activate`` (the activation step on its own), ``lakecdp validate-destinations``
(check every ``conf/destinations/*.yaml`` without Spark) and ``lakecdp webhook-receiver``
(the local demo receiver, in the foreground)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _activate(args: argparse.Namespace) -> int:
    """The pipeline step ``activation``, recorded in ``ops.runs``."""
    from lakecdp.activation.config import load_destinations
    from lakecdp.config import load_project
    from lakecdp.pipeline import run_step_command

    project = load_project(args.conf, env=args.env)
    load_destinations(project.conf_dir)  # a bad destination fails here, before Spark starts
    counts = run_step_command(project, "activation")
    if counts is None:
        return 1
    for key in sorted(counts):
        print(f"{key}: {counts[key]}")
    return 1 if counts.get("dead_letter") else 0


def _validate(args: argparse.Namespace) -> int:
    """Load every destination (schema, secrets by env name only, paths, payload template
    syntax); with ``--resolve`` also expand its environment variables as delivery would."""
    from lakecdp.activation.config import load_destinations
    from lakecdp.activation.webhook import WebhookClient
    from lakecdp.config import ConfigError, load_project

    project = load_project(args.conf, env=args.env)
    try:
        destinations = load_destinations(project.conf_dir)
        for name, destination in destinations.items():
            destination.check(project, name)
            settings = destination.webhook_settings()
            if args.resolve and settings is not None and destination.demo_url() is None:
                WebhookClient(name, settings, run_id="validate")
            print(f"ok: {name} ({destination.type})")
    except ConfigError as exc:
        print(f"ERROR {exc}")
        return 1
    return 0


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
    validate = subparsers.add_parser(
        "validate-destinations", help="check conf/destinations/*.yaml (no Spark); exit 1 on the first error"
    )
    validate.add_argument(
        "--resolve", action="store_true", help="also resolve ${VAR} urls, headers and credentials from the environment"
    )
    validate.set_defaults(handler=_validate)
    receiver = subparsers.add_parser("webhook-receiver", help="run the local demo webhook receiver")
    receiver.add_argument(
        "--output", default="warehouse/demo_receiver/manual.jsonl", help="file that gets one JSON line per request"
    )
    receiver.set_defaults(handler=_receiver)
