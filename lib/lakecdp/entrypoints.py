"""Console-script entry points, one per scheduled job (see ``bundle/`` and ``jobs/``).

Each parses ``--conf`` / ``--env``, loads the project, builds the session and runs one
step of the pipeline as its own recorded run, returning a process exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lakecdp.config import load_project
from lakecdp.pipeline import StepFailedError, run_pipeline, run_single_step

logger = logging.getLogger(__name__)


def _parse(job: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"lakecdp-{job}")
    parser.add_argument("--conf", default="conf", help="config folder (default: ./conf)")
    parser.add_argument("--env", default=None, help="environment (default: $LAKECDP_ENV or local)")
    if job in ("pipeline", "demo"):
        parser.add_argument("--new-run", action="store_true", help="do not resume an unfinished run")
    return parser.parse_args(list(argv) if argv is not None else sys.argv[1:])


def _main(job: str, argv: Sequence[str] | None = None) -> int:
    args = _parse(job, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name=f"lakecdp-{job}")
    try:
        if job == "pipeline":
            run_pipeline(project, spark, resume=not args.new_run)
        elif job == "demo":
            from lakecdp.demo import run_demo

            run_demo(project, spark, resume=not args.new_run)
        else:
            run_single_step(project, spark, job)
    except StepFailedError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    return _main("pipeline", argv)


def demo_main(argv: Sequence[str] | None = None) -> int:
    """Generate the sample data and run the whole pipeline (what ``make demo`` runs)."""
    return _main("demo", argv)


def ingest_main(argv: Sequence[str] | None = None) -> int:
    return _main("ingest", argv)


def identity_main(argv: Sequence[str] | None = None) -> int:
    return _main("identity", argv)


def features_main(argv: Sequence[str] | None = None) -> int:
    return _main("features", argv)


def segments_main(argv: Sequence[str] | None = None) -> int:
    return _main("segments", argv)


def activation_main(argv: Sequence[str] | None = None) -> int:
    return _main("activation", argv)
