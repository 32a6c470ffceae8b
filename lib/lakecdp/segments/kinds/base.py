"""The interface every segment kind implements (see docs/extending.md#adding-a-segment-kind).

A segment definition holds its common settings (schedule, exclusions, limits ...) and exactly
one *kind key*; the value under that key is validated by the kind's pydantic model, a
:class:`SegmentKind`. The kind says what its rule reads as text and how the Spark engine
computes its raw matches; a kind with a SQL form (:meth:`SegmentKind.matches_sql`) also runs
on the embedded engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from lakecdp.segments.definitions import SegmentDefinition
    from lakecdp.segments.guard import GuardedSql


class SegmentKind:
    """Mixed into the pydantic model of one kind (a ``StrictModel`` or a ``RootModel``).

    Class attributes:
        key: the YAML key that selects the kind (``condition``, ``event`` ...).
        reads_views: the rule is SQL over the segment views (``customers``, ``profile``,
            ``features``, ``events``); the views are registered and plan-checked first.
    """

    key: ClassVar[str]
    reads_views: ClassVar[bool] = False

    def rule(self) -> str:
        """The rule as one line of text: shown by ``lakecdp segments validate`` and stored in
        every reason JSON."""
        raise NotImplementedError

    def guarded(self) -> GuardedSql | None:
        """The sqlglot reading of the rule's SQL (SQL kinds only)."""
        return None

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        """Raw matches: ``customer_id, member_key, reason`` (``member_key`` ``""`` unless the
        segment is parameterised; ``reason`` from :func:`reason_json`).

        Args:
            events: resolved events (``customer_id`` added) up to ``as_of``.
        """
        raise NotImplementedError

    def matches_sql(self, *, as_of: datetime) -> str | None:
        """The raw matches as one Spark SQL query over the segment views, for the embedded engine.

        The embedded engine translates it to DuckDB with :mod:`lakecdp.sqldialect.translate` and checks
        it with :mod:`lakecdp.segments.duck_guard` before it runs, as it does a ``query``. Columns:
        ``customer_id``, ``member_key``, then the reason's values in the order
        :meth:`spark_matches` puts them in its reason struct. Values of the rule are literals
        written by sqlglot, never pasted text.

        Returns:
            The query, or None when the kind has no SQL form: a run holding it uses Spark.
        """
        return None


def reason_json(rule: str, values: Column) -> Column:
    """The reason stored with each membership: ``{"rule": ..., "values": {...}}``."""
    from pyspark.sql import functions as F

    return F.to_json(F.struct(F.lit(rule).alias("rule"), values.alias("values")))
