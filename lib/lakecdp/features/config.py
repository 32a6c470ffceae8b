"""``conf/features.yaml``: windows, RFM bins, lifecycle rules, affinity, cart and recommendations.

Example:
    >>> config = load_features_config("conf/features.yaml")
    >>> config.rfm.recency_days
"""

from __future__ import annotations

import os
from typing import Literal

import sqlglot
from pydantic import Field, field_validator, model_validator
from sqlglot import exp

from lakecdp.config import StrictModel, load_model

# lifecycle rules are marketer-written SQL conditions over feature columns: they must be a
# single boolean expression, never a query
_FORBIDDEN_NODES = (exp.Query, exp.Subquery, exp.Command, exp.DDL, exp.DML)


def parse_condition(condition: str) -> exp.Expression:
    """Parse a Spark SQL condition; raise ValueError when it is not one read-only expression."""
    try:
        parsed = sqlglot.parse(condition, read="spark")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"not a valid Spark SQL condition: {exc}") from exc
    if len(parsed) != 1 or parsed[0] is None:
        raise ValueError("must be exactly one SQL expression")
    tree: exp.Expression = parsed[0]  # type: ignore[assignment]  # sqlglot types parse() as Expr
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise ValueError(f"may not contain a query or statement ({node.key})")
    return tree


def condition_columns(condition: str) -> set[str]:
    """Column names a condition refers to."""
    return {column.name for column in parse_condition(condition).find_all(exp.Column)}


def _ascending(values: list[float], *, field: str) -> list[float]:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{field} bin edges must be strictly increasing, got {values}")
    return values


class RfmConfig(StrictModel):
    """Fixed score bins: scores stay comparable from one run to the next (quantiles would not).

    ``recency_days``: upper bounds (inclusive) for the best scores first: ``[30, 90, 180, 365]``
    gives <=30 days -> 5, <=90 -> 4, <=180 -> 3, <=365 -> 2, older -> 1.
    ``frequency`` / ``monetary``: lower bounds (inclusive) for scores 2, 3, ...: ``[2, 3, 5, 10]``
    gives 1 order -> 1, 2 -> 2, 3-4 -> 3, 5-9 -> 4, 10+ -> 5.
    """

    # frequency and monetary count completed orders in this many days up to as_of
    window_days: int = Field(365, gt=0)
    recency_days: list[int] = Field(default_factory=lambda: [30, 90, 180, 365], min_length=1)
    frequency: list[int] = Field(default_factory=lambda: [2, 3, 5, 10], min_length=1)
    monetary: list[float] = Field(default_factory=lambda: [50.0, 150.0, 500.0, 1000.0], min_length=1)
    # only orders with this status count as purchases
    completed_statuses: list[str] = Field(default_factory=lambda: ["completed"], min_length=1)

    @field_validator("recency_days", "frequency", "monetary")
    @classmethod
    def _increasing(cls, values, info):
        return _ascending(values, field=info.field_name)


class LifecycleRule(StrictModel):
    stage: str = Field(min_length=1)
    # Spark SQL boolean expression over gold.customer_features columns
    condition: str = Field(min_length=1)

    @field_validator("condition")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_condition(value)
        return value


class LifecycleConfig(StrictModel):
    """Ordered rules: the first whose condition holds gives the stage; none -> ``default_stage``."""

    rules: list[LifecycleRule] = Field(min_length=1)
    default_stage: str = "prospect"

    @model_validator(mode="after")
    def _unique_stages(self) -> LifecycleConfig:
        stages = [rule.stage for rule in self.rules]
        duplicates = sorted({s for s in stages if stages.count(s) > 1})
        if duplicates:
            raise ValueError(f"stage(s) {duplicates} appear in more than one rule")
        return self


class AffinityConfig(StrictModel):
    # a view or purchase counts half as much after this many days
    half_life_days: float = Field(30.0, gt=0)
    view_weight: float = Field(1.0, ge=0)
    # per unit bought
    purchase_weight: float = Field(3.0, ge=0)
    # only this many days up to as_of are read
    lookback_days: int = Field(365, gt=0)


class InterestConfig(StrictModel):
    recent_views_limit: int = Field(10, gt=0)
    # views in the last trend_recent_days vs the trend_baseline_days before them, per day
    trend_recent_days: int = Field(7, gt=0)
    trend_baseline_days: int = Field(30, gt=0)
    # a category is trending when its recent daily view rate exceeds baseline rate * lift
    trend_min_lift: float = Field(1.0, ge=0)
    trend_min_recent_views: int = Field(2, ge=1)
    trending_limit: int = Field(5, gt=0)


class CartConfig(StrictModel):
    abandon_after_minutes: int = Field(60, gt=0)


class RecommendationConfig(StrictModel):
    top_n: int = Field(5, gt=0)
    # a pair of products needs this many customers who viewed (or bought) both
    min_support: int = Field(2, ge=1)
    min_confidence: float = Field(0.0, ge=0, le=1)
    lookback_days: int = Field(180, gt=0)
    # a customer's "not interested" / "wrong recommendation" feedback on a product (or a
    # category) keeps it out of their recommendations for this many days
    feedback_suppression_days: int = Field(90, gt=0)


class FeaturesConfig(StrictModel):
    """``conf/features.yaml``."""

    version: Literal[1]
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    lifecycle: LifecycleConfig
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    interest: InterestConfig = Field(default_factory=InterestConfig)
    cart: CartConfig = Field(default_factory=CartConfig)
    recommendations: RecommendationConfig = Field(default_factory=RecommendationConfig)


def load_features_config(path: str | os.PathLike[str]) -> FeaturesConfig:
    """Load and validate ``conf/features.yaml``; errors name the file and field."""
    return load_model(path, FeaturesConfig)
