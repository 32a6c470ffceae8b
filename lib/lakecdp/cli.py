"""``lakecdp <command>`` / ``python -m lakecdp <command>``.

Each part of the package adds its commands in a ``register(subparsers)`` function of its own
``cli`` module, listed in ``_COMMAND_MODULES``; a command's handler receives the parsed args
and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# modules with a ``register(subparsers)`` function, in the order they appear in --help
_COMMAND_MODULES = (
    "lakecdp.pipeline",
    "lakecdp.sample.cli",
    "lakecdp.ingest.cli",
    "lakecdp.erasure",
    "lakecdp.segments.cli",
    "lakecdp.activation.cli",
    "lakecdp.personalization.cli",
    "lakecdp.campaign.cli",
    "lakecdp.identity.cli",
    "lakecdp.identity.job",
    "lakecdp.features.cli",
    "lakecdp.api.cli",
    "lakecdp.alerts",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakecdp", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf", help="config folder (default: ./conf)")
    parser.add_argument("--env", default=None, help="environment name (default: $LAKECDP_ENV or local)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # py4j logs every JVM call at INFO
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return int(args.handler(args) or 0)
