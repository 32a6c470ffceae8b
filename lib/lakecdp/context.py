"""What every job receives: the project, its session, the table resolver, run id and as-of time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from lakecdp.config import Project
from lakecdp.tables import Tables

if TYPE_CHECKING:
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
