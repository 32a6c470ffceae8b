"""Customer features as of a point in time: RFM, engagement, lifecycle, affinities, cart, recommendations.

Every feature is defined once, as Spark SQL (:mod:`lakecdp.features.definitions`), reads only
rows at or before ``as_of`` and does no IO. The transforms here bind DataFrames to those
definitions on Spark; :mod:`lakecdp.features.embedded` runs the same definitions on DuckDB;
:mod:`lakecdp.features.job` reads the tables and writes ``gold.customer_features`` on the run's
engine.
"""

from __future__ import annotations

from lakecdp.columns import MissingColumnsError
from lakecdp.features.cart import cart_state
from lakecdp.features.compute import FEATURES_SCHEMA, compute_features
from lakecdp.features.config import FeaturesConfig, load_features_config
from lakecdp.features.customers import attach_customer_id, purchased_items, unmatched_rows
from lakecdp.features.engagement import engagement
from lakecdp.features.interest import category_affinities, product_interest
from lakecdp.features.lifecycle import LifecycleRuleError, lifecycle_stage
from lakecdp.features.recommend import recommendation_feedback, recommendations
from lakecdp.features.rfm import rfm

__all__ = [
    "FEATURES_SCHEMA",
    "FeaturesConfig",
    "LifecycleRuleError",
    "MissingColumnsError",
    "attach_customer_id",
    "cart_state",
    "category_affinities",
    "compute_features",
    "engagement",
    "lifecycle_stage",
    "load_features_config",
    "product_interest",
    "purchased_items",
    "recommendation_feedback",
    "recommendations",
    "rfm",
    "unmatched_rows",
]
