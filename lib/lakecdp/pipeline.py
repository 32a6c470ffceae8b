"""The pipeline runner: the registered steps in order (lakecdp.steps), each recorded in ops.runs.

A step (:class:`lakecdp.steps.Step`) runs a function taking a :class:`~lakecdp.context.JobContext`
and returning counts (``dict[str, int]``). Every step of a run is recorded in ``ops.runs`` (run id,
step, status, the Delta versions of the step's declared inputs, counts, timings), through the
run's table store (:func:`runs_store`: delta-rs on the embedded engine with path-based tables, so
recording needs no SparkSession; Spark otherwise; the same rows either way). A failed step
stops the run with its error; running again resumes the unfinished run (same run id and as-of
time) after its last completed step. Steps are idempotent, so a step that was killed half way
simply runs again.

``lakecdp run``, ``lakecdp demo``, ``lakecdp step NAME``, the console scripts and the stage
commands that run a step (``lakecdp ingest``, ``lakecdp features`` ...) all come here, so every
run of a step is in ``ops.runs``.

Example:
    >>> result = run_pipeline(project, spark)            # resumes or starts a run
    >>> result.run_id, result.steps["identity"]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lakecdp import catalog
from lakecdp import steps as _registry
from lakecdp.config import Project, load_project
from lakecdp.context import JobContext, SparkHandle, new_run_id
from lakecdp.steps import Step, StepFunction
from lakecdp.tables import utc

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakecdp.tables import TableStore

logger = logging.getLogger(__name__)

RUNS_TABLE = catalog.RUNS.name
RUNS_SCHEMA = catalog.RUNS.ddl


class StepFailedError(RuntimeError):
    """A pipeline step raised; the run stops and can be resumed."""


@dataclass
class PipelineResult:
    run_id: str
    as_of: datetime
    resumed: bool
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(timezone.utc)


#: first word of the userMetadata of ops.runs commits written with delta-rs
_LABEL = "lakecdp-pipeline"


def runs_store(ctx: JobContext) -> TableStore:
    """Where the runner records ``ops.runs`` and reads input versions: delta-rs on the embedded
    engine with path-based tables (no JVM), else Spark (:func:`lakecdp.delta_store.table_store`).
    Both write the same rows, and each continues a table the other wrote."""
    from lakecdp.delta_store import table_store

    return table_store(ctx, label=_LABEL)


def _record(store: TableStore, row: dict[str, Any]) -> None:
    """Upsert one step's row of ``ops.runs`` (keyed by run id, job and step)."""
    store.upsert_rows([row], RUNS_TABLE, RUNS_SCHEMA, keys=catalog.RUNS.keys, run_id=row["run_id"])


def _input_versions(store: TableStore, step: Step) -> dict[str, int]:
    """Lineage: the Delta version of each declared input that exists, before the step runs."""
    versions = {}
    for name in step.input_names:
        version = store.version_or_none(name)
        if version is not None:
            versions[name] = version
    return versions


def _unfinished_run(store: TableStore, job: str) -> tuple[str, datetime, set[str]] | None:
    """The latest run of ``job`` that has a step not succeeded: (run id, as_of, done steps)."""
    if not store.exists(RUNS_TABLE):
        return None
    rows = store.read_rows(RUNS_TABLE, columns=["run_id", "as_of", "started_at", "step", "status"], where={"job": job})
    if not rows:
        return None
    latest = max(rows, key=lambda r: (utc(r["started_at"]), r["run_id"]))
    steps = [r for r in rows if r["run_id"] == latest["run_id"]]
    if all(r["status"] == "succeeded" for r in steps):
        return None
    done = {r["step"] for r in steps if r["status"] == "succeeded"}
    return latest["run_id"], utc(latest["as_of"]), done


def run_steps(
    ctx: JobContext,
    steps: Sequence[Step],
    *,
    job: str = "pipeline",
    done: frozenset[str] | set[str] = frozenset(),
) -> PipelineResult:
    """Run ``steps`` in order, recording each in ``ops.runs``; skip those in ``done``."""
    result = PipelineResult(run_id=ctx.run_id, as_of=ctx.as_of, resumed=bool(done))
    store = runs_store(ctx)
    for position, step in enumerate(steps, start=1):
        name = step.name
        prefix = f"[{position}/{len(steps)}] {name}"
        if name in done:
            logger.info("%s: already done in run %s, skipped", prefix, ctx.run_id)
            result.skipped.append(name)
            continue
        started = _now()
        row = {
            "run_id": ctx.run_id,
            "job": job,
            "step": name,
            "position": position,
            "status": "running",
            "as_of": ctx.as_of,
            "started_at": started,
            "finished_at": None,
            "duration_s": None,
            "input_versions": _input_versions(store, step),
            "counts": {},
            "message": None,
        }
        _record(store, row)
        logger.info("%s ...", prefix)
        clock = time.monotonic()
        try:
            counts = step.function()(ctx) or {}
        except Exception as exc:
            row.update(
                status="failed",
                finished_at=_now(),
                duration_s=time.monotonic() - clock,
                message=f"{type(exc).__name__}: {exc}"[:4000],
            )
            _record(store, row)
            logger.error("%s failed after %.1fs: %s", prefix, row["duration_s"], exc)
            raise StepFailedError(
                f"step '{name}' of run {ctx.run_id} failed: {type(exc).__name__}: {exc}. "
                "Fix the cause and run again: the run resumes at this step."
            ) from exc
        counts = {str(k): int(v) for k, v in counts.items()}
        row.update(status="succeeded", finished_at=_now(), duration_s=time.monotonic() - clock, counts=counts)
        _record(store, row)
        logger.info("%s done in %.1fs %s", prefix, row["duration_s"], counts)
        result.steps[name] = counts
    return result


def run_pipeline(
    project: Project,
    spark: SparkSession | SparkHandle | None,
    *,
    steps: Sequence[Step] | None = None,
    job: str = "pipeline",
    resume: bool = True,
    as_of: datetime | None = None,
) -> PipelineResult:
    """Run the pipeline, resuming the last unfinished run of ``job`` unless ``resume=False``.

    Args:
        spark: the session, a handle that starts it when a step first asks (None: a handle of
            its own, ``lakecdp-<job>``); ``ops.runs`` is recorded without it on the embedded engine.
        steps: defaults to the registry's pipeline (:func:`lakecdp.steps.pipeline_steps`).
        job: name under which runs are recorded (``pipeline``, ``demo``, ...).
        resume: continue an unfinished run (same run id and as-of) after its completed steps.
        as_of: the time to compute as of for a new run (default: the project's).

    Returns:
        The run id, whether it resumed, counts per step and the steps skipped.
    """
    from lakecdp.alerts import after_run

    chosen = tuple(_registry.pipeline_steps() if steps is None else steps)
    for item in chosen:
        if not isinstance(item, Step):
            raise TypeError(f"steps must be lakecdp.steps.Step objects (e.g. steps.step('features')), got {item!r}")
    session = (
        spark if isinstance(spark, SparkHandle) else SparkHandle(project, app_name=f"lakecdp-{job}", session=spark)
    )
    moment = as_of or project.as_of()
    ctx = JobContext.create(project, session, as_of=moment, run_id=new_run_id(moment))
    unfinished = _unfinished_run(runs_store(ctx), job) if resume else None
    try:
        if unfinished is not None:
            run_id, run_as_of, done = unfinished
            logger.info(
                "resuming run %s (as of %s); done: %s",
                run_id,
                run_as_of.isoformat(),
                ", ".join(sorted(done)) or "nothing",
            )
            ctx = JobContext.create(project, session, as_of=run_as_of, run_id=run_id)
            return run_steps(ctx, chosen, job=job, done=done)
        logger.info("run %s as of %s: %s", ctx.run_id, moment.isoformat(), " -> ".join(s.name for s in chosen))
        return run_steps(ctx, chosen, job=job)
    finally:
        # the run checks its own outcome: failed step, slow step, held segment, quarantine, merges,
        # dead letters (conf/alerts.yaml; each cause once); never raises
        after_run(project)


def run_single_step(project: Project, spark: SparkSession | SparkHandle | None, name: str) -> PipelineResult:
    """Run one registered step as its own recorded run (``job`` = the step's name), resuming
    its last unfinished run: ``lakecdp step NAME`` and the scheduled jobs."""
    return run_pipeline(project, spark, steps=[_registry.step(name)], job=name)


def run_step_command(
    project: Project,
    name: str,
    *,
    call: StepFunction | None = None,
    as_of: datetime | None = None,
) -> dict[str, int] | None:
    """A stage command that runs a step with its own options (``lakecdp ingest --source crm``).

    Runs the step as a new recorded run of job ``name`` in ``ops.runs``, with the step's
    declared inputs as lineage, exactly as ``lakecdp step NAME`` records it; the Spark session
    starts only if the step (or the runner, on engine ``spark``) asks for it.

    Args:
        call: the step function with the command's options bound (default: the step's own).
        as_of: the time to compute as of (default: the project's).

    Returns:
        The step's counts, or None when it failed (the error is logged).
    """
    step = _registry.step(name)
    if call is not None:
        step = dataclasses.replace(step, run=call)
    session = SparkHandle(project, app_name=f"lakecdp-{name}")
    try:
        result = run_pipeline(project, session, steps=[step], job=name, resume=False, as_of=as_of)
    except StepFailedError as exc:
        logger.error("%s", exc)
        return None
    return result.steps[name]


def _cli_run(args: argparse.Namespace, job: str) -> int:
    project = load_project(args.conf, env=args.env)
    # started when a step first asks for it: on the embedded engine the demo starts no JVM
    spark = SparkHandle(project, app_name=f"lakecdp-{job}")
    try:
        if job == "demo":  # the demo also runs the local receiver its destinations deliver to
            from lakecdp.demo import run_demo

            result = run_demo(project, spark, resume=not args.new_run)
        else:
            result = run_pipeline(project, spark, steps=_registry.pipeline_steps(), job=job, resume=not args.new_run)
    except StepFailedError as exc:
        logger.error("%s", exc)
        return 1
    logger.info(
        "run %s finished%s", result.run_id, f" (resumed; skipped {', '.join(result.skipped)})" if result.skipped else ""
    )
    if job == "demo":
        # the real-time part: the HTTP service, an add-to-cart and a purchase, the changes API
        from lakecdp.api.demo import show_intake

        try:
            show_intake(project, spark)
        except (RuntimeError, StepFailedError) as exc:
            logger.error("demo over HTTP: %s", exc)
            return 1
    logger.info("%s: %s", job, "a Spark session was started" if spark.started else "no Spark session was started")
    return 0


def _cli_step(args: argparse.Namespace) -> int:
    project = load_project(args.conf, env=args.env)
    try:  # the session starts when a step asks for it (never, on the embedded engine's steps)
        run_single_step(project, SparkHandle(project, app_name=f"lakecdp-{args.step}"), args.step)
    except StepFailedError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("demo", "generate the sample data and run the whole pipeline"),
        ("run", "run the pipeline on the landing folder (resumes an unfinished run)"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(
            "--new-run", action="store_true", help="start a new run even if the last one did not finish"
        )
        parser.set_defaults(handler=lambda args, j=name: _cli_run(args, j))
    names = [s.name for s in _registry.registry()]
    step = subparsers.add_parser("step", help="run one pipeline step as its own recorded run")
    step.add_argument("step", choices=names, metavar="step", help=f"one of: {', '.join(names)}")
    step.set_defaults(handler=_cli_step)
