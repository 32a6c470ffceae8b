"""Blocking rules: which record pairs the model scores, as SQL over ``l`` and ``r``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp.identity.config import IdentityConfig
from lakecdp.identity.named_rules import SPECIAL_RULES, rule_columns, special_rule, special_rule_sql
from lakecdp.identity.prepare import is_arrow

if TYPE_CHECKING:
    from lakecdp.identity.prepare import Prepared

__all__ = ["SPECIAL_RULES", "blocking_rule_sql", "blocking_rules_sql", "populated_rules", "rule_label", "special_rule"]

logger = logging.getLogger(__name__)


def blocking_rule_sql(columns: list[str]) -> str:
    """A blocking rule as SQL over ``l``/``r``; columns come from validated config only."""
    if special_rule(columns):
        return special_rule_sql(columns)
    return " and ".join(f"l.{c} = r.{c}" for c in columns)


def blocking_rules_sql(config: IdentityConfig) -> list[str]:
    """The configured prediction blocking rules as SQL over ``l`` and ``r``."""
    return [blocking_rule_sql(rule) for rule in config.model.blocking_rules]


def rule_label(columns: list[str]) -> str:
    return "+".join(columns)


def populated_rules(config: IdentityConfig, prepared: Prepared) -> list[list[str]]:
    """The configured blocking rules whose columns all hold a value somewhere in ``prepared``.

    A rule over a column no record fills (a benchmark without email, a source set without
    birth dates) can pair nothing; skipping it saves a join per rule. One aggregate job.
    """
    needed = sorted({c for rule in config.model.blocking_rules for c in _rule_columns(rule)})
    if is_arrow(prepared):
        empty = {c for c in needed if prepared.num_rows == prepared.column(c).null_count}
    else:
        counts = prepared.select(*[F.count(c).alias(c) for c in needed]).first()
        assert counts is not None  # an aggregate without grouping has one row
        empty = {c for c in needed if counts[c] == 0}
    if empty:
        logger.info("blocking rules over columns no record fills are skipped: %s", sorted(empty))
    return [rule for rule in config.model.blocking_rules if not set(_rule_columns(rule)) & empty]


def _rule_columns(rule: list[str]) -> list[str]:
    return rule_columns(rule)
