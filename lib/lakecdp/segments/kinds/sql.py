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


def _refused_as_value_error(check: Callable[[str], object], value: str) -> str:
    try:
        check(value)
    except SqlRefused as exc:
        raise ValueError(f"SQL refused at {exc}") from None
    return value


class ConditionKind(RootModel[str], SegmentKind):
    """``condition: last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500``"""

    model_config = ConfigDict(frozen=True)
    key: ClassVar[str] = "condition"
    reads_views: ClassVar[bool] = True

    @field_validator("root")
    @classmethod
    def _guard(cls, value: str) -> str:
        return _refused_as_value_error(check_condition, value)

    def rule(self) -> str:
        return self.root

    def guarded(self) -> GuardedSql:
        return check_condition(self.root)

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        from lakecdp.segments.evaluate import sql_segment_matches

        return sql_segment_matches(spark, definition, as_of)


class QueryKind(RootModel[str], SegmentKind):
    """``query: SELECT customer_id FROM customers JOIN ...`` (optionally a ``member_key``)."""

    model_config = ConfigDict(frozen=True)
    key: ClassVar[str] = "query"
    reads_views: ClassVar[bool] = True

    @field_validator("root")
    @classmethod
    def _guard(cls, value: str) -> str:
        return _refused_as_value_error(check_query, value)

    def rule(self) -> str:
        return self.root

    def guarded(self) -> GuardedSql:
        return check_query(self.root)

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        from lakecdp.segments.evaluate import sql_segment_matches

        return sql_segment_matches(spark, definition, as_of)
