"""The step registry: every pipeline step once — name, function, input and output tables, CLI.

:data:`STEPS` is the one list. Its order is the pipeline's order; it drives ``lakecdp run``,
``lakecdp demo`` and ``lakecdp step NAME`` (:mod:`lakecdp.pipeline`), the console scripts
``lakecdp-<step>`` (:mod:`lakecdp.entrypoints`, setup.cfg), the stage commands of ``lakecdp``
(:mod:`lakecdp.cli`), ``jobs/run_<step>.py`` and the bundle's tasks (resources/*.yml).
tests/test_steps.py checks setup.cfg, jobs/ and the bundle against it, and the declared inputs
against the catalogue's readers (lineage in ``ops.runs`` is the declared inputs' Delta versions).

A step function takes a :class:`~lakecdp.context.JobContext` and returns counts
(``dict[str, int]``, recorded in ``ops.runs``). The registry imports no stage: ``run`` is
``"module:function"``, imported when the step runs.

Example:
    >>> from lakecdp import steps
    >>> [s.name for s in steps.pipeline_steps()][:2]
    ['ingest', 'identity']
    >>> steps.step("features").inputs[0].name
    'silver.events'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.catalog import Table

if TYPE_CHECKING:
    from lakecdp.context import JobContext

StepFunction = Callable[["JobContext"], "dict[str, int] | None"]


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Attributes:
        name: the step's name: ``lakecdp step NAME``, ``ops.runs.step``, console script
            ``lakecdp-NAME``, ``jobs/run_NAME.py``, the bundle's task key.
        run: ``"module:function"`` (or the function) taking a JobContext, returning counts.
        inputs: catalogue tables the step reads; their Delta versions before the step runs are
            its lineage in ``ops.runs.input_versions``.
        outputs: catalogue tables the step writes.
        cli: the module whose ``register(subparsers)`` adds the stage's own ``lakecdp``
            commands (None: the stage has none).
        command: the command of ``cli`` that runs this step with the stage's options (e.g.
            ``lakecdp ingest --source crm``); it records the run in ``ops.runs`` like
            ``lakecdp step NAME`` does. None: only ``lakecdp step NAME`` runs it.
        scheduled: runs as a scheduled job of its own: has a console script, a ``jobs/`` file
            and a bundle task (tested).
        demo_only: part of ``lakecdp demo`` but not of ``lakecdp run`` (the sample data).
    """

    name: str
    run: str | StepFunction
    inputs: tuple[Table, ...] = ()
    outputs: tuple[Table, ...] = ()
    cli: str | None = None
    command: str | None = None
    scheduled: bool = True
    demo_only: bool = False

    def function(self) -> StepFunction:
        """The step function (imports its module)."""
        if callable(self.run):
            return self.run
        module_name, _, function_name = self.run.partition(":")
        return getattr(importlib.import_module(module_name), function_name)

    @property
    def module(self) -> str:
        """The module that holds the step function."""
        return self.run.partition(":")[0] if isinstance(self.run, str) else self.run.__module__

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)


# -- the registry: one line per step, in pipeline order --------------------------------------
STEPS: tuple[Step, ...] = (
    Step("generate", "lakecdp.sample.job:run_demo_generate", cli="lakecdp.sample.cli", scheduled=False, demo_only=True),
    Step(
        "ingest",
        "lakecdp.ingest.job:run",
        outputs=(
            catalog.BRONZE,
            catalog.QUARANTINE,
            *catalog.SILVER.values(),
            catalog.INGEST_AUDIT,
            catalog.DATA_QUALITY,
            catalog.INGEST_FILES,
        ),
        cli="lakecdp.ingest.cli",
        command="ingest",
    ),
    Step(
        "identity",
        "lakecdp.identity.job:run",
        inputs=(catalog.CUSTOMER_RECORDS,),
        outputs=(
            catalog.ID_MAP,
            catalog.IDENTIFIERS,
            catalog.ID_CHANGES,
            catalog.EDGES,
            catalog.IDENTITY_STATE,
            catalog.CUSTOMER_PROFILE,
        ),
        cli="lakecdp.identity.job",
        command="identity",
    ),
    Step(
        "features",
        "lakecdp.features.job:run",
        inputs=(catalog.EVENTS, catalog.ORDERS, catalog.ORDER_ITEMS, catalog.IDENTIFIERS),
        outputs=(catalog.CUSTOMER_FEATURES,),
        cli="lakecdp.features.cli",
        command="features",
    ),
    Step(
        "segments",
        "lakecdp.segments.job:run",
        inputs=(catalog.CUSTOMER_PROFILE, catalog.CUSTOMER_FEATURES, catalog.EVENTS, catalog.ID_CHANGES),
        outputs=(catalog.MEMBERSHIP, catalog.CHANGES, catalog.APPROVALS, catalog.SEGMENT_RUNS),
        cli="lakecdp.segments.cli",
    ),
    Step(
        "activation",
        "lakecdp.activation.job:run",
        inputs=(catalog.CHANGES, catalog.CUSTOMER_PROFILE, catalog.ID_MAP),
        outputs=(
            catalog.DELIVERIES,
            catalog.REJECTED,
            catalog.DEAD_LETTER,
            catalog.SUPPRESSIONS,
            catalog.CAMPAIGN_EXPOSURES,
        ),
        cli="lakecdp.activation.cli",
        command="activate",
    ),
    # renders the demo template into files (no table); not a scheduled job of its own
    Step(
        "preview",
        "lakecdp.personalization.job:run",
        inputs=(catalog.CUSTOMER_PROFILE, catalog.CUSTOMER_FEATURES, catalog.MEMBERSHIP),
        cli="lakecdp.personalization.cli",
        scheduled=False,
    ),
)


def registry() -> tuple[Step, ...]:
    """The registered steps, in pipeline order (read at call time, so a test can add one)."""
    return STEPS


def pipeline_steps() -> tuple[Step, ...]:
    """What ``lakecdp run`` runs, in order."""
    return tuple(s for s in registry() if not s.demo_only)


def demo_steps() -> tuple[Step, ...]:
    """What ``lakecdp demo`` runs, in order: the sample data, then the pipeline."""
    return registry()


def scheduled_steps() -> tuple[Step, ...]:
    """Steps that run as scheduled jobs of their own (console script, jobs/ file, bundle task)."""
    return tuple(s for s in registry() if s.scheduled)


def step(name: str) -> Step:
    """The registered step called ``name``.

    Raises:
        ValueError: no such step (the message lists the known ones).
    """
    for candidate in registry():
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown step {name!r}; known: {[s.name for s in registry()]}")


__all__ = ["STEPS", "Step", "StepFunction", "demo_steps", "pipeline_steps", "registry", "scheduled_steps", "step"]
