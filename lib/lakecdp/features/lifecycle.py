"""Lifecycle stage from ordered, configurable SQL rules over the feature columns (definition:
:func:`lakecdp.features.definitions.lifecycle_stage_sql`)."""

from __future__ import annotations

from pyspark.sql import DataFrame

from lakecdp.features.config import LifecycleConfig
from lakecdp.features.definitions import LifecycleRuleError, Sql, lifecycle_stage_sql
from lakecdp.features.engines import spark_query

__all__ = ["LifecycleRuleError", "lifecycle_stage"]


def lifecycle_stage(features: DataFrame, *, config: LifecycleConfig) -> DataFrame:
    """Add ``lifecycle_stage``: the stage of the first rule whose condition is true.

    A condition that is null (e.g. ``recency_days <= 90`` for a customer who never bought)
    counts as false. No rule true -> ``config.default_stage``.

    Args:
        features: one row per customer with the columns the rule conditions use.
        config: the ordered rules.

    Returns:
        ``features`` with ``lifecycle_stage string``.

    Raises:
        LifecycleRuleError: a condition names a column ``features`` lacks.

    Example:
        >>> features.transform(lifecycle_stage, config=config.lifecycle)
    """
    stage = lifecycle_stage_sql(config, available=features.columns)
    return spark_query(
        features.sparkSession,
        lambda n: Sql((), f"SELECT *, {stage} AS lifecycle_stage FROM {n['features']}"),
        features=features,
    )
