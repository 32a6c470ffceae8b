"""Lifecycle stage from ordered, configurable SQL rules over the feature columns."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.features.config import LifecycleConfig, condition_columns


class LifecycleRuleError(ValueError):
    """A lifecycle rule refers to a column the features do not have."""


def lifecycle_stage(features: DataFrame, *, config: LifecycleConfig) -> DataFrame:
    """Add ``lifecycle_stage``: the stage of the first rule whose condition is true.

    A condition that is null (e.g. ``recency_days <= 90`` for a customer who never bought)
    counts as false. No rule true -> ``config.default_stage``.

    Args:
        features: one row per customer with the columns the rule conditions use.
        config: the ordered rules.

    Returns:
        ``features`` with ``lifecycle_stage string``.

    Example:
        >>> features.transform(lifecycle_stage, config=config.lifecycle)
    """
    require_columns(features, (), what="features")
    available = set(features.columns)
    for position, rule in enumerate(config.rules):
        unknown = sorted(condition_columns(rule.condition) - available)
        if unknown:
            raise LifecycleRuleError(
                f"lifecycle.rules[{position}] ({rule.stage}): condition {rule.condition!r} "
                f"refers to unknown column(s) {unknown}"
            )
    first, *rest = config.rules
    stage = F.when(F.coalesce(F.expr(first.condition), F.lit(False)), F.lit(first.stage))
    for rule in rest:
        stage = stage.when(F.coalesce(F.expr(rule.condition), F.lit(False)), F.lit(rule.stage))
    return features.withColumn("lifecycle_stage", stage.otherwise(F.lit(config.default_stage)))
