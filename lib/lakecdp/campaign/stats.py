"""Lift against the control, its confidence interval and p-value, sample-ratio check (no Spark).

The control is the holdout when the campaign has one, else its first listed variant.

- Lift: difference of conversion rates (variant - control), with a two-sided **two-proportion
  z-test with unpooled (Wald) variance** and the Wald confidence interval of the difference
  (statsmodels ``test_proportions_2indep(method="wald")`` /
  ``confint_proportions_2indep(method="wald")``): ``diff +- z * sqrt(p1 q1 / n1 + p2 q2 / n2)``.
  Test and interval use the same standard error, so "CI excludes 0" and "p < alpha" agree.
  (The score method's interval failed to converge in statsmodels 0.15 on ordinary counts.)
- Sample-ratio mismatch: Pearson chi-square goodness of fit of the exposed counts against the
  configured split (``scipy.stats.chisquare``); flagged when its p-value < ``srm_threshold``.
- Minimum sample size: exposed per arm needed to detect ``minimum_detectable_lift`` over the
  control's rate at ``alpha`` (two-sided) and 80 % power (statsmodels ``NormalIndPower`` on
  Cohen's h, ``proportion_effectsize``).
"""

from __future__ import annotations

from typing import Any
import math
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence

from lakecdp.personalization.variants import HOLDOUT

LIFT_TEST = (
    "two-sided two-proportion z-test, unpooled (Wald) variance (statsmodels test_proportions_2indep, method='wald')"
)
SRM_TEST = "Pearson chi-square goodness of fit vs configured split (scipy.stats.chisquare)"
POWER = 0.8


@dataclass(frozen=True)
class ArmCounts:
    """What :func:`lakecdp.campaign.attribution.variant_totals` gives for one arm."""

    variant: str
    exposed: int
    converted: int
    revenue: float = 0.0
    opened: int = 0
    clicked: int = 0
    complained: int = 0
    unsubscribed: int = 0
    had_open_cart: int = 0
    cart_recovered: int = 0


@dataclass(frozen=True)
class ArmResult:
    counts: ArmCounts
    is_control: bool
    expected_share: float
    conversion_rate: float | None
    revenue_per_exposed: float | None
    open_rate: float | None
    click_rate: float | None
    complaint_rate: float | None
    unsubscribe_rate: float | None
    cart_recovery_rate: float | None
    lift: float | None = None
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    significant: bool | None = None


@dataclass(frozen=True)
class CampaignAnalysis:
    control: str
    arms: list[ArmResult]
    alpha: float
    srm_chi2: float | None
    srm_p_value: float | None
    srm_mismatch: bool
    min_sample_per_arm: int | None
    underpowered: bool
    notes: list[str] = field(default_factory=list)
    lift_test: str = LIFT_TEST
    srm_test: str = SRM_TEST


def _rate(part: int | float, whole: int) -> float | None:
    return None if whole <= 0 else part / whole


def expected_shares(variants: Mapping[str, int], holdout_percent: float) -> dict[str, float]:
    """Configured share of exposures per arm (the holdout and every variant), summing to 1."""
    total = sum(variants.values())
    shares = {name: (1 - holdout_percent / 100) * weight / total for name, weight in variants.items()}
    if holdout_percent > 0:
        shares[HOLDOUT] = holdout_percent / 100
    return shares


def sample_ratio_check(observed: Mapping[str, int], shares: Mapping[str, float]) -> tuple[float, float] | None:
    """``(chi2, p_value)`` of the exposed counts against the configured shares, or None with
    fewer than two arms or no exposures. An arm seen but not configured is a KeyError's
    worth of trouble, so it is reported by the caller, not tested here."""
    arms = [a for a in shares if shares[a] > 0]
    total = sum(observed.get(a, 0) for a in arms)
    if len(arms) < 2 or total == 0:
        return None
    from scipy.stats import chisquare

    counts = [observed.get(a, 0) for a in arms]
    expected = [total * shares[a] / sum(shares[x] for x in arms) for a in arms]
    result = chisquare(counts, f_exp=expected)
    return float(result.statistic), float(result.pvalue)


def min_sample_per_arm(base_rate: float, lift: float, *, alpha: float, power: float = POWER) -> int | None:
    """Exposed per arm to detect ``base_rate -> base_rate + lift`` (two-sided), or None when
    the target rate is outside (0, 1)."""
    target = base_rate + lift
    if not 0 < target < 1 or not 0 <= base_rate < 1:
        return None
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    effect = proportion_effectsize(target, base_rate)
    return int(
        math.ceil(
            NormalIndPower().solve_power(
                effect_size=effect, alpha=alpha, power=power, ratio=1.0, alternative="two-sided"
            )
        )
    )


def lift_vs_control(arm: ArmCounts, control: ArmCounts, *, alpha: float):
    """``(lift, ci_low, ci_high, p_value)`` of ``arm`` minus ``control`` conversion rates."""
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    lift = arm.converted / arm.exposed - control.converted / control.exposed
    if arm.converted + control.converted == 0:
        # no conversion anywhere: the standard error is 0; nothing distinguishes the arms
        return lift, None, None, 1.0
    import numpy as np

    # statsmodels also works out ratio and odds ratio, which divide by zero at a 0 % control
    with np.errstate(divide="ignore", invalid="ignore"):
        test = test_proportions_2indep(
            arm.converted,
            arm.exposed,
            control.converted,
            control.exposed,
            method="wald",
            compare="diff",
            alternative="two-sided",
        )
        low, high = confint_proportions_2indep(
            arm.converted, arm.exposed, control.converted, control.exposed, method="wald", compare="diff", alpha=alpha
        )
    return lift, float(low), float(high), float(test.pvalue)


def analyse(
    counts: Sequence[ArmCounts],
    *,
    variants: Mapping[str, int],
    holdout_percent: float,
    alpha: float = 0.05,
    minimum_detectable_lift: float = 0.02,
    srm_threshold: float = 0.001,
) -> CampaignAnalysis:
    """Results per arm with lift against the control.

    Example:
        >>> analyse([ArmCounts("holdout", 100, 10), ArmCounts("A", 900, 120)],
        ...         variants={"A": 1}, holdout_percent=10).arms[1].lift   # 0.1333 - 0.10
        0.0333...
    """
    shares = expected_shares(variants, holdout_percent)
    control_name = HOLDOUT if holdout_percent > 0 else next(iter(variants))
    by_name = {c.variant: c for c in counts}
    notes: list[str] = []
    unknown = sorted(set(by_name) - set(shares))
    if unknown:
        notes.append(f"exposures of arms not in the configured split: {unknown} (config changed mid-campaign?)")
    order = [control_name, *[a for a in shares if a != control_name], *unknown]
    control = by_name.get(control_name)
    if control is None or control.exposed == 0:
        notes.append(f"control {control_name!r} has no exposures: no lift can be computed")
        control = None
    arms: list[ArmResult] = []
    for name in order:
        c = by_name.get(name, ArmCounts(name, 0, 0))
        result: dict[str, Any] = dict(
            counts=c,
            is_control=name == control_name,
            expected_share=shares.get(name, 0.0),
            conversion_rate=_rate(c.converted, c.exposed),
            revenue_per_exposed=_rate(c.revenue, c.exposed),
            open_rate=_rate(c.opened, c.exposed),
            click_rate=_rate(c.clicked, c.exposed),
            complaint_rate=_rate(c.complained, c.exposed),
            unsubscribe_rate=_rate(c.unsubscribed, c.exposed),
            cart_recovery_rate=_rate(c.cart_recovered, c.had_open_cart),
        )
        if control is not None and name != control_name and c.exposed > 0:
            lift, low, high, p_value = lift_vs_control(c, control, alpha=alpha)
            base = control.converted / control.exposed
            result.update(
                lift=lift,
                relative_lift=None if base == 0 else lift / base,
                ci_low=low,
                ci_high=high,
                p_value=p_value,
                significant=p_value < alpha,
            )
        arms.append(ArmResult(**result))

    srm = sample_ratio_check({c.variant: c.exposed for c in counts}, shares)
    srm_mismatch = srm is not None and srm[1] < srm_threshold
    if srm is not None and srm_mismatch:
        notes.append(
            f"sample ratio mismatch: p = {srm[1]:.2g} < {srm_threshold} - the split is broken "
            "(assignment, suppression or delivery differs by arm); do not trust the lift"
        )
    base_rate = control.converted / control.exposed if control is not None else None
    needed = min_sample_per_arm(base_rate, minimum_detectable_lift, alpha=alpha) if base_rate is not None else None
    smallest = min((a.counts.exposed for a in arms if a.expected_share > 0), default=0)
    underpowered = needed is not None and smallest < needed
    if needed is not None:
        notes.append(
            f"minimum sample size: {needed} exposed per arm to detect +{minimum_detectable_lift * 100:.1f} pp "
            f"over the control's {base_rate:.1%} (alpha {alpha}, power {POWER:.0%}); smallest arm "
            f"has {smallest}" + (" - underpowered, a missing lift proves little" if underpowered else "")
        )
    return CampaignAnalysis(
        control=control_name,
        arms=arms,
        alpha=alpha,
        srm_chi2=None if srm is None else srm[0],
        srm_p_value=None if srm is None else srm[1],
        srm_mismatch=srm_mismatch,
        min_sample_per_arm=needed,
        underpowered=underpowered,
        notes=notes,
    )
