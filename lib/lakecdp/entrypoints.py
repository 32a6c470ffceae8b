"""Console-script entry points: ``lakecdp-pipeline``, ``lakecdp-demo`` and one ``lakecdp-<step>``
per scheduled step of the registry (:mod:`lakecdp.steps`; see resources/ and jobs/).

Each parses ``--conf`` / ``--env``, loads the project and runs the pipeline,
the demo or one step as its own recorded run, returning a process exit code. A step's function
is ``<step>_main`` (``lakecdp.entrypoints:ingest_main``), made from the registry on first use:
setup.cfg names it, tests/test_steps.py checks setup.cfg against the registry.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from lakecdp import steps
from lakecdp.config import load_project
from lakecdp.context import SparkHandle, setup_logging
from lakecdp.pipeline import StepFailedError, run_pipeline, run_single_step

logger = logging.getLogger(__name__)

EntryPoint = Callable[[Sequence[str] | None], int]


def _parse(job: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"lakecdp-{job}")
    parser.add_argument("--conf", default="conf", help="config folder (default: ./conf)")
    parser.add_argument("--env", default=None, help="environment (default: $LAKECDP_ENV or local)")
    if job in ("pipeline", "demo"):
        parser.add_argument("--new-run", action="store_true", help="do not resume an unfinished run")
    return parser.parse_args(list(argv) if argv is not None else sys.argv[1:])


def main(job: str, argv: Sequence[str] | None = None) -> int:
    """Run ``job``: ``pipeline``, ``demo`` or a registered step's name."""
    args = _parse(job, argv)
    setup_logging()
    project = load_project(args.conf, env=args.env)
    # started when a step first asks for it: a step on the embedded engine starts no JVM
    session = SparkHandle(project, app_name=f"lakecdp-{job}")
    try:
        if job == "pipeline":
            run_pipeline(project, session, resume=not args.new_run)
        elif job == "demo":
            from lakecdp.demo import run_demo

            run_demo(project, session, resume=not args.new_run)
        else:
            run_single_step(project, session, job)
    except StepFailedError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    return main("pipeline", argv)


def demo_main(argv: Sequence[str] | None = None) -> int:
    """Generate the sample data and run the whole pipeline (what ``make demo`` runs)."""
    return main("demo", argv)


def step_main(name: str) -> EntryPoint:
    """The console-script function of a scheduled step: ``step_main("ingest")(argv)``."""
    if name not in {s.name for s in steps.scheduled_steps()}:
        raise ValueError(f"{name!r} is not a scheduled step; scheduled: {[s.name for s in steps.scheduled_steps()]}")

    def run(argv: Sequence[str] | None = None) -> int:
        return main(name, argv)

    run.__name__ = run.__qualname__ = f"{name}_main"
    run.__doc__ = f"``lakecdp-{name}``: run the {name} step as its own recorded run."
    return run


def __getattr__(attribute: str) -> EntryPoint:
    # ``<step>_main`` for every scheduled step: what setup.cfg's console scripts import
    if attribute.endswith("_main"):
        try:
            return step_main(attribute[: -len("_main")])
        except ValueError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
