"""What every job receives: the project, its session, the table resolver, run id and as-of time.

:func:`start_job` is the one bootstrap of a command or scheduled job: project -> session ->
context. Example:

    >>> ctx = start_job("conf", env=None, app_name="lakecdp-features")
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from lakecdp.config import Project, load_project
from lakecdp.tables import Tables

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession


def new_run_id(as_of: datetime) -> str:
    """A sortable, unique run id: ``20261101T000000-1a2b3c4d``."""
    return f"{as_of.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class JobContext:
    """Passed to every step function ``run(ctx) -> dict[str, int]`` (counts for ops.runs)."""

    project: Project
    spark: SparkSession
    as_of: datetime
    run_id: str
    tables: Tables = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", Tables(self.project))

    @classmethod
    def create(
        cls,
        project: Project,
        spark: SparkSession,
        *,
        as_of: datetime | None = None,
        run_id: str | None = None,
    ) -> JobContext:
        moment = as_of or project.as_of()
        return cls(project=project, spark=spark, as_of=moment, run_id=run_id or new_run_id(moment))


def open_session(project: Project, *, app_name: str) -> SparkSession:
    """The project's SparkSession (``lakecdp.spark.get_session``, imported only when asked)."""
    from lakecdp.spark import get_session

    return get_session(project, app_name=app_name)


def start_job(
    conf: str | Path | Project,
    env: str | None = None,
    *,
    app_name: str,
    as_of: datetime | None = None,
) -> JobContext:
    """Project -> session -> context: how every command and job starts.

    Args:
        conf: the config folder (``--conf``), or a project already loaded (and perhaps adjusted).
        env: the environment (``--env``; default ``$LAKECDP_ENV`` or local); ignored for a project.
        app_name: shown in the Spark UI (``lakecdp-<command>``).
        as_of: the time to compute as of (default: the project's).
    """
    project = conf if isinstance(conf, Project) else load_project(conf, env=env)
    return JobContext.create(project, open_session(project, app_name=app_name), as_of=as_of)


def setup_logging(
    *, verbose: bool = False, datefmt: str | None = None, quiet_loggers: Sequence[str] = ("py4j",)
) -> None:
    """The log format of every command and job; py4j logs every JVM call at INFO."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt=datefmt,
    )
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
