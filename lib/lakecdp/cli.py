"""``lakecdp <command>`` / ``python -m lakecdp <command>``.

Each part of the package adds its commands in a ``register(subparsers)`` function of its own
``cli`` module: the pipeline's (``run``, ``demo``, ``step``), then each registered step's stage
module (``Step.cli`` in :mod:`lakecdp.steps`, in pipeline order), then the parts that are no
pipeline step (``_OTHER_COMMAND_MODULES``). A command's handler receives the parsed args and
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lakecdp import steps
from lakecdp.context import setup_logging

# modules with a ``register(subparsers)`` function that belong to no pipeline step
_OTHER_COMMAND_MODULES = (
    "lakecdp.erasure",
    "lakecdp.campaign.cli",
    "lakecdp.identity.cli",
    "lakecdp.api.cli",
    "lakecdp.alerts",
)


def command_modules() -> list[str]:
    """Modules with a ``register(subparsers)`` function, in the order they appear in --help."""
    modules = ["lakecdp.pipeline"]
    for module in (s.cli for s in steps.registry()):
        if module is not None and module not in modules:
            modules.append(module)
    return modules + [m for m in _OTHER_COMMAND_MODULES if m not in modules]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakecdp", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf", help="config folder (default: ./conf)")
    parser.add_argument("--env", default=None, help="environment name (default: $LAKECDP_ENV or local)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module_name in command_modules():
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    setup_logging(verbose=args.verbose, datefmt="%H:%M:%S")
    return int(args.handler(args) or 0)
