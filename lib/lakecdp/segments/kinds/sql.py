"""SQL segment kinds: ``condition`` (a boolean over the ``customers`` view) and ``query`` (a
SELECT returning ``customer_id``). Both are checked by the sqlglot guard when loaded and by the
plan check before they run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from pydantic import ConfigDict, RootModel, field_validator

from lakecdp.segments.guard import GuardedSql, SqlRefused, check_condition, check_query
from lakecdp.segments.kinds.base import SegmentKind

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.segments.definitions import SegmentDefinition


class _GuardedSqlKind(RootModel[str], SegmentKind):
    """A segment kind whose rule is Spark SQL text, checked by ``check`` (the sqlglot guard) when
    loaded and by the plan check before it runs; the two kinds differ only in their check."""

    model_config = ConfigDict(frozen=True)
    reads_views: ClassVar[bool] = True
    check: ClassVar[Callable[[str], GuardedSql]]

    @field_validator("root")
    @classmethod
    def _guard(cls, value: str) -> str:
        try:
            cls.check(value)
        except SqlRefused as exc:
            raise ValueError(f"SQL refused at {exc}") from None
        return value

    def rule(self) -> str:
        return self.root

    def guarded(self) -> GuardedSql:
        return type(self).check(self.root)

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        from lakecdp.segments.evaluate import sql_segment_matches

        return sql_segment_matches(spark, definition, as_of)


class ConditionKind(_GuardedSqlKind):
    """``condition: last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500``"""

    key: ClassVar[str] = "condition"
    check: ClassVar[Callable[[str], GuardedSql]] = staticmethod(check_condition)


class QueryKind(_GuardedSqlKind):
    """``query: SELECT customer_id FROM customers JOIN ...`` (optionally a ``member_key``)."""

    key: ClassVar[str] = "query"
    check: ClassVar[Callable[[str], GuardedSql]] = staticmethod(check_query)
