"""``lakecdp campaign report``: results per arm of one campaign, as of a point in time.

Reads ``gold.campaign_exposures``, ``silver.events`` and ``identity.identifiers``; writes
``gold.campaign_results`` (merged on ``campaign_id, as_of, variant``: a re-run as of the same
time replaces its rows, another as-of adds rows); renders a text table and, on request, a PNG.

As of ``T``: exposures with ``exposed_at <= T`` and events that occurred and were ingested at or
before ``T`` (``ingested_at`` is the ingest run's as-of time), so a report as of a past time
reproduces what was known then. The identity graph is read as it is now: a later merge of
two customers moves their events to the merged ``customer_id`` (docs/campaigns.md).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.campaign import EXPOSURES, RESULTS
from lakecdp.campaign.attribution import attribute_outcomes, customer_events, first_exposures, variant_totals
from lakecdp.campaign.stats import ArmCounts, CampaignAnalysis, analyse
from lakecdp.config import ConfigError
from lakecdp.personalization.config import Campaign, load_personalization

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

EVENTS = catalog.EVENTS.name
IDENTIFIERS = catalog.IDENTIFIERS.name

RESULTS_SCHEMA = catalog.CAMPAIGN_RESULTS.struct()


def campaign_config(conf_dir, campaign_id: str) -> Campaign:
    campaigns = load_personalization(conf_dir).campaigns
    if campaign_id not in campaigns:
        raise ConfigError(
            f"personalization.yaml: campaigns: no campaign {campaign_id!r}; configured: {sorted(campaigns)}"
        )
    return campaigns[campaign_id]


def known_at(events: DataFrame, as_of: datetime) -> DataFrame:
    """Events that occurred, and were ingested, at or before ``as_of``."""
    known = events.where(F.col("occurred_at") <= F.lit(as_of))
    if "ingested_at" in events.columns:
        known = known.where(F.col("ingested_at").isNull() | (F.col("ingested_at") <= F.lit(as_of)))
    return known


def arm_counts(
    exposures: DataFrame,
    events: DataFrame,
    identifiers: DataFrame,
    *,
    campaign_id: str,
    campaign: Campaign,
    as_of: datetime,
    customers: DataFrame | None = None,
) -> list[ArmCounts]:
    """Per arm totals of exposed customers and their attributed outcomes (one Spark action).

    Args:
        customers: only these ``customer_id`` (a subgroup, e.g. one country), default all.
    """
    exposed = first_exposures(exposures, campaign_id=campaign_id, as_of=as_of)
    if customers is not None:
        exposed = exposed.join(customers.select("customer_id").distinct(), "customer_id", "left_semi")
    outcomes = attribute_outcomes(
        exposed,
        customer_events(known_at(events, as_of), identifiers, as_of=as_of),
        window_seconds=int(round(campaign.measurement.attribution_window_hours * 3600)),
        conversion_event=campaign.measurement.conversion_event,
    )
    return [
        ArmCounts(
            variant=r["variant"],
            exposed=int(r["exposed"]),
            converted=int(r["converted"]),
            revenue=float(r["revenue"] or 0.0),
            opened=int(r["opened"]),
            clicked=int(r["clicked"]),
            complained=int(r["complained"]),
            unsubscribed=int(r["unsubscribed"]),
            had_open_cart=int(r["had_open_cart"]),
            cart_recovered=int(r["cart_recovered"]),
        )
        for r in variant_totals(outcomes).collect()
    ]


def analyse_campaign(counts: list[ArmCounts], campaign: Campaign) -> CampaignAnalysis:
    m = campaign.measurement
    return analyse(
        counts,
        variants=campaign.variants,
        holdout_percent=campaign.holdout_percent,
        alpha=m.alpha,
        minimum_detectable_lift=m.minimum_detectable_lift,
        srm_threshold=m.srm_threshold,
    )


def result_rows(
    analysis: CampaignAnalysis, *, campaign_id: str, campaign: Campaign, as_of: datetime, run_id: str
) -> list[dict]:
    """One ``gold.campaign_results`` row per arm."""
    m = campaign.measurement
    notes = "\n".join(analysis.notes) or None
    rows = []
    for arm in analysis.arms:
        c = arm.counts
        rows.append(
            {
                "campaign_id": campaign_id,
                "as_of": as_of,
                "variant": c.variant,
                "is_control": arm.is_control,
                "expected_share": arm.expected_share,
                "exposed": c.exposed,
                "converted": c.converted,
                "conversion_rate": arm.conversion_rate,
                "revenue": c.revenue,
                "revenue_per_exposed": arm.revenue_per_exposed,
                "open_rate": arm.open_rate,
                "click_rate": arm.click_rate,
                "complaint_rate": arm.complaint_rate,
                "unsubscribe_rate": arm.unsubscribe_rate,
                "open_carts": c.had_open_cart,
                "carts_recovered": c.cart_recovered,
                "cart_recovery_rate": arm.cart_recovery_rate,
                "lift": arm.lift,
                "relative_lift": arm.relative_lift,
                "ci_low": arm.ci_low,
                "ci_high": arm.ci_high,
                "confidence": 1 - analysis.alpha,
                "p_value": arm.p_value,
                "significant": arm.significant,
                "lift_test": analysis.lift_test,
                "srm_p_value": analysis.srm_p_value,
                "srm_mismatch": analysis.srm_mismatch,
                "min_sample_per_arm": analysis.min_sample_per_arm,
                "underpowered": analysis.underpowered,
                "conversion_event": m.conversion_event,
                "attribution_window_hours": m.attribution_window_hours,
                "notes": notes,
                "run_id": run_id,
            }
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}pp"


def format_report(analysis: CampaignAnalysis, *, campaign_id: str, campaign: Campaign, as_of: datetime) -> str:
    """The text ``lakecdp campaign report`` prints."""
    m = campaign.measurement
    confidence = f"{1 - analysis.alpha:.0%}"
    lines = [
        f"campaign {campaign_id} as of {as_of.isoformat()}: conversion = {m.conversion_event} within "
        f"{m.attribution_window_hours:g} h of first exposure; control = {analysis.control}",
        f"{'arm':<10}{'exposed':>8}{'conv':>7}{'rate':>8}{'rev/exp':>9}{'open':>7}{'click':>7}{'compl':>7}"
        f"{'unsub':>7}{'cart rec':>9}  lift vs {analysis.control} [{confidence} CI]  p",
    ]
    for arm in analysis.arms:
        c = arm.counts
        rev = "-" if arm.revenue_per_exposed is None else f"{arm.revenue_per_exposed:.2f}"
        if arm.is_control:
            lift = "(control)"
        elif arm.lift is None:
            lift = "-"
        else:
            interval = "" if arm.ci_low is None else f" [{_pp(arm.ci_low)}, {_pp(arm.ci_high)}]"
            star = " *" if arm.significant else ""
            lift = f"{_pp(arm.lift)}{interval}  p={arm.p_value:.3g}{star}"
        lines.append(
            f"{c.variant:<10}{c.exposed:>8}{c.converted:>7}{_pct(arm.conversion_rate):>8}{rev:>9}"
            f"{_pct(arm.open_rate):>7}{_pct(arm.click_rate):>7}{_pct(arm.complaint_rate):>7}"
            f"{_pct(arm.unsubscribe_rate):>7}{_pct(arm.cart_recovery_rate):>9}  {lift}"
        )
    lines.append(f"lift test: {analysis.lift_test}; * = p < {analysis.alpha}")
    if analysis.srm_p_value is None:
        lines.append("sample ratio: not checked (fewer than two arms with exposures)")
    else:
        verdict = "MISMATCH" if analysis.srm_mismatch else "ok"
        lines.append(
            f"sample ratio: chi2 = {analysis.srm_chi2:.2f}, p = {analysis.srm_p_value:.3g} ({verdict}; "
            f"{analysis.srm_test}, split "
            + ", ".join(f"{a.counts.variant} {a.expected_share:.0%}" for a in analysis.arms if a.expected_share > 0)
            + ")"
        )
    lines.extend(f"note: {n}" for n in analysis.notes if not n.startswith("sample ratio mismatch"))
    return "\n".join(lines)


def write_chart(analysis: CampaignAnalysis, path: Path, *, title: str) -> Path:
    """A PNG: conversion rate per arm with its Wilson interval, and lift vs the control with its CI.

    Needs matplotlib (``pip install 'lakecdp[charts]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the campaign chart needs matplotlib: pip install 'lakecdp[charts]'") from exc
    from statsmodels.stats.proportion import proportion_confint

    arms = [a for a in analysis.arms if a.counts.exposed > 0]
    names = [a.counts.variant for a in arms]
    rates = [a.conversion_rate or 0.0 for a in arms]
    bounds = [
        proportion_confint(a.counts.converted, a.counts.exposed, alpha=analysis.alpha, method="wilson") for a in arms
    ]
    errors = [[r - lo for r, (lo, _) in zip(rates, bounds)], [hi - r for r, (_, hi) in zip(rates, bounds)]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colours = ["#888888" if a.is_control else "#1f77b4" for a in arms]
    left.bar(
        names, [r * 100 for r in rates], yerr=[[e * 100 for e in side] for side in errors], color=colours, capsize=6
    )
    left.set_ylabel("conversion rate (%)")
    left.set_title(f"conversion per arm ({1 - analysis.alpha:.0%} Wilson interval)")
    lifted = [
        (a.counts.variant, a.lift, a.ci_low, a.ci_high)
        for a in arms
        if a.lift is not None and a.ci_low is not None and a.ci_high is not None
    ]
    if lifted:
        right.errorbar(
            [lift * 100 for _, lift, _, _ in lifted],
            [variant for variant, _, _, _ in lifted],
            xerr=[
                [(lift - low) * 100 for _, lift, low, _ in lifted],
                [(high - lift) * 100 for _, lift, _, high in lifted],
            ],
            fmt="o",
            capsize=6,
        )
    right.axvline(0, color="#888888", linewidth=1)
    right.set_xlabel(f"lift vs {analysis.control} (percentage points)")
    right.set_title(f"lift, {1 - analysis.alpha:.0%} CI")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run_report(ctx: JobContext, campaign_id: str) -> tuple[CampaignAnalysis, str]:
    """Compute the campaign's results as of ``ctx.as_of``, write ``gold.campaign_results`` and
    return the analysis with its text.

    Raises:
        ConfigError: the campaign is not configured.
        LookupError: a table the report needs does not exist yet.
    """
    campaign = campaign_config(ctx.project.conf_dir, campaign_id)
    missing = [n for n in (EXPOSURES, EVENTS, IDENTIFIERS) if not ctx.tables.exists(ctx.spark, n)]
    if missing:
        raise LookupError(
            f"campaign report {campaign_id}: tables {missing} do not exist yet "
            "(exposures are written by activation for campaigns with destinations)"
        )
    as_of = ctx.as_of.astimezone(timezone.utc)
    counts = arm_counts(
        ctx.tables.read(ctx.spark, EXPOSURES),
        ctx.tables.read(ctx.spark, EVENTS),
        ctx.tables.read(ctx.spark, IDENTIFIERS),
        campaign_id=campaign_id,
        campaign=campaign,
        as_of=as_of,
    )
    analysis = analyse_campaign(counts, campaign)
    rows = result_rows(analysis, campaign_id=campaign_id, campaign=campaign, as_of=as_of, run_id=ctx.run_id)
    frame = ctx.spark.createDataFrame([tuple(r[f.name] for f in RESULTS_SCHEMA.fields) for r in rows], RESULTS_SCHEMA)
    ctx.tables.merge(ctx.spark, frame, RESULTS, keys=["campaign_id", "as_of", "variant"])
    logger.info("campaign %s: %d arms written to %s", campaign_id, len(rows), RESULTS)
    return analysis, format_report(analysis, campaign_id=campaign_id, campaign=campaign, as_of=as_of)


__all__ = [
    "RESULTS_SCHEMA",
    "analyse_campaign",
    "arm_counts",
    "format_report",
    "result_rows",
    "run_report",
    "write_chart",
]
