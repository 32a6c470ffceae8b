"""What training adds to Splink's own estimates: the u sample size, the prior's recall by
the trained model, m floored for levels EM never saw, and those levels said once in plain words.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from lakecdp.identity.prepare import is_arrow

if TYPE_CHECKING:
    import pyarrow as pa

    from lakecdp.identity.config import TrainingSettings
    from lakecdp.identity.prepare import Prepared

logger = logging.getLogger(__name__)


class UnseenLevels(logging.Filter):
    """Collects Splink's "level ... not observed in dataset, unable to train m value"
    warnings (one per level and EM session) and says it once, in plain words.

    On data without email or phone, or where no two records of one person show a given
    kind of typo, EM never sees those levels among matches; that is expected, not a fault:
    their m is floored at ``min_m_probability`` so they can neither veto nor carry a link.
    """

    _PATTERN = re.compile(r"Level (?P<level>.+?) on comparison (?P<comparison>\S+) not observed")

    def __init__(self) -> None:
        super().__init__()
        self.levels: dict[str, set[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._PATTERN.search(record.getMessage())
        if found is None:
            return True
        self.levels.setdefault(found["comparison"], set()).add(found["level"])
        return False

    def report(self) -> None:
        if not self.levels:
            return
        listed = "; ".join(f"{c}: {', '.join(sorted(v))}" for c, v in sorted(self.levels.items()))
        logger.info(
            "training saw no matching pairs at some comparison levels (expected when the data "
            "lacks those fields or those kinds of typo; they get the floor m value and carry "
            "little weight): %s",
            listed,
        )


def u_sample_size(training: TrainingSettings, records: int) -> int:
    """Record pairs to sample for u: ``u_pairs_per_record`` per record, between
    ``min_pairs_for_u`` and ``max_pairs_for_u``.

    Example: at 40 per record, floor 200,000 and cap 2,000,000: 5,000 records -> 200,000
    pairs (the floor), 20,000 -> 800,000, 100,000 -> the cap.
    """
    wanted = max(training.min_pairs_for_u, training.u_pairs_per_record * records)
    return min(training.max_pairs_for_u, wanted)


#: rule columns -> (comparison, level label) whose m is the share of true matches agreeing on them
_EXACT_LEVELS = {
    ("first_name", "last_name"): ("name", "first and last name exact"),
    ("dob",): ("date_of_birth", "same date of birth"),
}


def prior_rule_recall(model: dict[str, Any], prior_rules: list[list[str]]) -> float | None:
    """Share of true matches one prior rule finds, by the trained model: the product of
    the m of each exact level the rule's columns make up (name and birth date are taken
    as independent among matches). ``None`` when the rule is not made of such levels (or
    there is more than one rule): the configured recall stays.

    Example: m("first and last name exact") 0.46 and m("same date of birth") 0.95 give
    0.44 for ``[first_name, last_name, dob]``.
    """
    if len(prior_rules) != 1:
        return None
    columns = set(prior_rules[0])
    levels = {
        (c["output_column_name"], lv.get("label_for_charts")): lv.get("m_probability")
        for c in model["comparisons"]
        for lv in c["comparison_levels"]
    }
    recall = 1.0
    for parts, level in _EXACT_LEVELS.items():
        if set(parts) <= columns:
            columns -= set(parts)
            m = levels.get(level)
            if not m:
                return None
            recall *= m
    if columns:
        return None
    return min(1.0, max(recall, 0.05))


def populated_share(prepared: Prepared, rule: list[str]) -> float:
    """Share of same-full-name record pairs (mostly true matches) in which every column of
    ``rule`` other than the names holds a value on both sides; 1.0 when no two records
    share a full name. One aggregate over full-name groups, no self-join.

    Example: a CRM with birth dates and a shop without: most same-name pairs are CRM-shop
    pairs, so the share for ``[first_name, last_name, dob]`` is low (0.25 on the generated
    world with such a shop, 0.93 on FEBRL) and the prior rule's recall is that much smaller.
    """
    others = [c for c in rule if c not in ("first_name", "last_name")]
    if not others:
        return 1.0
    if is_arrow(prepared):
        return _populated_share_arrow(prepared, others)
    present = F.lit(1)
    for column in others:
        present = present * F.col(column).isNotNull().cast("int")
    groups = (
        prepared.where(F.col("full_name").isNotNull())
        .groupBy("full_name")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(present).alias("k"))
        .where(F.col("n") > 1)
        .agg(
            F.sum(F.col("n") * (F.col("n") - 1) / 2).alias("pairs"),
            F.sum(F.col("k") * (F.col("k") - 1) / 2).alias("present"),
        )
        .first()
    )
    if groups is None or not groups["pairs"]:
        return 1.0
    return float(groups["present"]) / float(groups["pairs"])


def _populated_share_arrow(prepared: pa.Table, others: list[str]) -> float:
    """:func:`populated_share` over an Arrow table, in DuckDB (the same aggregate)."""
    import duckdb

    con = duckdb.connect()
    con.register("prepared", prepared.select(["full_name", *others]))
    present = " * ".join(f"cast({c} is not null as integer)" for c in others)
    pairs, both = con.sql(f"""
        select sum(n * (n - 1) / 2), sum(k * (k - 1) / 2) from (
            select count(*) as n, sum({present}) as k from prepared
            where full_name is not null group by full_name
        ) where n > 1
    """).fetchall()[0]
    con.close()
    if not pairs:
        return 1.0
    return float(both) / float(pairs)


def floor_m_probabilities(model: dict[str, Any], floor: float) -> dict[str, Any]:
    """No evidence level may be impossible for a true match.

    EM leaves m at 0 (or unset) for a level it never saw among matches, which would make
    that level veto a link for ever (weight minus infinity), e.g. a birth-date typo in a
    small training set. Null levels carry no m.
    """
    for comparison in model["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        # a level random sampling never met is taken as rare as the rarest level it met:
        # an unobserved u must not turn into an infinite weight
        observed_u = [lv["u_probability"] for lv in levels if (lv.get("u_probability") or 0) > 0]
        rarest_u = min(observed_u) if observed_u else floor
        for level in levels:
            m = level.get("m_probability")
            if m is None or m < floor:
                level["m_probability"] = floor
            if not (level.get("u_probability") or 0) > 0:
                level["u_probability"] = rarest_u
    return model
