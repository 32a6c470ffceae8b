"""What every job receives: the project, its session, the table resolver, run id and as-of time.

:func:`start_job` is the one bootstrap of a command or scheduled job: project -> session ->
context. The SparkSession is started on first use of ``ctx.spark`` (:class:`SparkHandle`), so a
step that runs on the embedded engine (DuckDB + delta-rs) starts no JVM at all. Example:

    >>> ctx = start_job("conf", env=None, app_name="lakecdp-features")
    >>> ctx.spark        # the session starts here, not in start_job
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from lakecdp.config import Project, load_project
from lakecdp.tables import Tables

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


def new_run_id(as_of: datetime) -> str:
    """A sortable, unique run id: ``20261101T000000-1a2b3c4d``."""
    return f"{as_of.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


class SparkHandle:
    """A project's SparkSession, started by the first :meth:`get` (or given, already started).

    The contexts of one command share one handle, so the session starts at most once however
    many contexts (a resumed run, a stage's own) ask for it.

    Args:
        project: the project whose environment configures the session.
        app_name: shown in the Spark UI (``lakecdp-<command>``).
        session: a session already started (a test's, a notebook's): :meth:`get` returns it.
    """

    def __init__(self, project: Project, *, app_name: str, session: SparkSession | None = None) -> None:
        self.project = project
        self.app_name = app_name
        self._session = session

    @property
    def started(self) -> bool:
        """Whether the session exists (given, or started by :meth:`get`)."""
        return self._session is not None

    def get(self) -> SparkSession:
        """The session, started now when this is the first call."""
        if self._session is None:
            logger.info("starting the Spark session (%s)", self.app_name)
            self._session = open_session(self.project, app_name=self.app_name)
        return self._session


@dataclass(frozen=True, init=False)
class JobContext:
    """Passed to every step function ``run(ctx) -> dict[str, int]`` (counts for ops.runs).

    ``spark`` is a SparkSession, a :class:`SparkHandle` (shared with other contexts) or None (a
    handle of the project's own, app name ``spark.app_name`` of the environment); the session
    starts on first use of :attr:`spark`.
    """

    project: Project
    session: SparkHandle
    as_of: datetime
    run_id: str
    tables: Tables

    def __init__(
        self,
        project: Project,
        spark: SparkSession | SparkHandle | None,
        as_of: datetime,
        run_id: str,
    ) -> None:
        if not isinstance(spark, SparkHandle):
            spark = SparkHandle(project, app_name=project.environment.spark.app_name, session=spark)
        object.__setattr__(self, "project", project)
        object.__setattr__(self, "session", spark)
        object.__setattr__(self, "as_of", as_of)
        object.__setattr__(self, "run_id", run_id)
        object.__setattr__(self, "tables", Tables(project))

    @property
    def spark(self) -> SparkSession:
        """The run's SparkSession, started on first use (steps on the embedded engine never ask)."""
        return self.session.get()

    @classmethod
    def create(
        cls,
        project: Project,
        spark: SparkSession | SparkHandle | None = None,
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
    """Project -> context (its session started on first use of ``ctx.spark``): how every
    command and job starts.

    Args:
        conf: the config folder (``--conf``), or a project already loaded (and perhaps adjusted).
        env: the environment (``--env``; default ``$LAKECDP_ENV`` or local); ignored for a project.
        app_name: shown in the Spark UI (``lakecdp-<command>``).
        as_of: the time to compute as of (default: the project's).
    """
    project = conf if isinstance(conf, Project) else load_project(conf, env=env)
    return JobContext.create(project, SparkHandle(project, app_name=app_name), as_of=as_of)


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
