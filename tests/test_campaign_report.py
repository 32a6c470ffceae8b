"""Campaign measurement on Spark and Delta: attribution through the identity graph and window
edges, the planted lift of a generated world found within its interval, no lift in an A/A
campaign, and exposures exactly once when activation runs again."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone

import pytest

from lakecdp.campaign import EXPOSURES, RESULTS
from lakecdp.campaign.config import Measurement
from lakecdp.campaign.exposures import EXPOSURES_SCHEMA, exposure_key
from lakecdp.campaign.report import analyse_campaign, arm_counts, run_report, write_chart
from lakecdp.context import JobContext
from lakecdp.personalization.config import Campaign, load_personalization
from lakecdp.personalization.variants import assign_variant
from lakecdp.sample.campaigns import EVENTS_SCHEMA, IDENTIFIERS_SCHEMA, plant_campaign, write_planted
from lakecdp.tables import Tables

T = datetime(2026, 10, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def _exposure(customer_id, variant, at, change_id=None):
    change_id = change_id or f"ch-{customer_id}"
    return (
        exposure_key("welcome", customer_id, change_id),
        "welcome",
        customer_id,
        change_id,
        "vip",
        "mail",
        variant,
        variant == "holdout",
        variant != "holdout",
        None,
        None,
        None,
        at,
        "r1",
    )


def _event(event_id, kind, at, *, email=None, customer_number=None, value=None, campaign_id=None, ingested=None):
    return (
        event_id,
        "test",
        kind,
        at,
        email,
        None,
        customer_number,
        None,
        None,
        value,
        None,
        campaign_id,
        "web",
        "r0",
        ingested or at,
    )


def test_attribution_counts_the_window_edges_linked_identifiers_and_cart_recovery(spark):
    campaign = Campaign(
        variants={"A": 1, "B": 1}, holdout_percent=10, measurement=Measurement(attribution_window_hours=24)
    )
    as_of = T + timedelta(days=3)
    exposures = spark.createDataFrame(
        [
            _exposure("h1", "holdout", T),
            _exposure("a1", "A", T),
            _exposure("a2", "A", T),
            _exposure("a2", "A", T + 10 * H, change_id="ch-a2-again"),  # window from the first
            _exposure("a3", "A", T),
            _exposure("b1", "B", T + H),
            _exposure("b2", "B", T + timedelta(days=5)),  # after as_of: not exposed yet
        ],
        EXPOSURES_SCHEMA,
    )
    identifiers = spark.createDataFrame(
        [
            ("email", "h1@example.com", "h1", "i"),
            ("email", "a1@example.com", "a1", "i"),
            ("email", "a1.work@example.com", "a1", "i"),  # a1's two emails
            ("email", "a2@example.com", "a2", "i"),
            ("email", "a3@example.com", "a3", "i"),
            ("customer_number", "N-b1", "b1", "i"),
            ("email", "b1@example.com", "b1", "i"),
        ],
        IDENTIFIERS_SCHEMA,
    )
    events = spark.createDataFrame(
        [
            # h1: cart at T-2h then bought at T-1h (before exposure): no open cart, no conversion
            _event("e1", "add_to_cart", T - 2 * H, email="h1@example.com"),
            _event("e2", "purchase", T - H, email="h1@example.com", value=99.0),
            # a1: open cart before; bought under the *other* email exactly at the window's end (counts)
            _event("e3", "add_to_cart", T - 3 * H, email="a1@example.com"),
            _event("e4", "purchase", T + 24 * H, email="a1.work@example.com", value=40.0),
            _event("e5", "email_open", T + H, email="a1@example.com", campaign_id="welcome"),
            _event("e6", "email_click", T + H, email="a1@example.com", campaign_id="another"),  # other campaign
            # a2: bought 1 s after the window (not counted), unsubscribed from this campaign's email
            _event("e7", "purchase", T + 24 * H + timedelta(seconds=1), email="a2@example.com", value=70.0),
            _event("e8", "email_unsubscribe", T + 2 * H, email="a2@example.com", campaign_id="welcome"),
            # a3: bought in the window, but the event was ingested after as_of: not known then
            _event("e9", "purchase", T + 2 * H, email="a3@example.com", value=15.0, ingested=as_of + H),
            # b1: bought at the exact moment of exposure (window start, counts) under the customer number
            _event("e10", "purchase", T + H, customer_number="N-b1", value=10.0),
            _event("e11", "email_complaint", T + 3 * H, email="b1@example.com", campaign_id="welcome"),
            # nobody we know
            _event("e12", "purchase", T + H, email="ghost@example.com", value=500.0),
        ],
        EVENTS_SCHEMA,
    )

    counts = {
        c.variant: c
        for c in arm_counts(exposures, events, identifiers, campaign_id="welcome", campaign=campaign, as_of=as_of)
    }

    assert set(counts) == {"holdout", "A", "B"}
    h, a, b = counts["holdout"], counts["A"], counts["B"]
    assert (h.exposed, h.converted, h.revenue, h.had_open_cart) == (1, 0, 0.0, 0)
    assert (a.exposed, a.converted, a.revenue) == (3, 1, 40.0)
    assert (a.opened, a.clicked, a.unsubscribed, a.complained) == (1, 0, 1, 0)
    assert (a.had_open_cart, a.cart_recovered) == (1, 1)
    assert (b.exposed, b.converted, b.revenue, b.complained) == (1, 1, 10.0, 1)


def _frames(spark, planted):
    events_columns = [c.split()[0] for c in EVENTS_SCHEMA.split(", ")]
    exposures = spark.createDataFrame(
        [tuple(x[f.name] for f in EXPOSURES_SCHEMA.fields) for x in planted.exposures], EXPOSURES_SCHEMA
    )
    events = spark.createDataFrame([tuple(e.get(c) for c in events_columns) for e in planted.events], EVENTS_SCHEMA)
    identifiers = spark.createDataFrame([tuple(i.values()) for i in planted.identifiers], IDENTIFIERS_SCHEMA)
    return exposures, events, identifiers


def _plant_welcome(campaign):
    """The demo world's first 6000 people in campaign 'welcome' (A/B 50/50, 10 % holdout, 168 h):
    everyone converts at 10 %, except variant B in Germany (20 % of households) at 45 %."""
    return plant_campaign(
        42, 6000, campaign_id="welcome", campaign=campaign, base_rate=0.10, subgroup_rates={"B": 0.45}, exposed_at=T
    )


# 17-21 s in make test (two workers on two cores): the full suite's tier
@pytest.mark.slow
def test_report_finds_the_planted_lift_within_its_interval(spark, project):
    campaign = load_personalization(project.conf_dir).campaigns["welcome"]
    planted = _plant_welcome(campaign)
    exposures, events, identifiers = _frames(spark, planted)
    as_of = T + timedelta(days=30)
    analysis = analyse_campaign(
        arm_counts(exposures, events, identifiers, campaign_id="welcome", campaign=campaign, as_of=as_of), campaign
    )
    arms = {a.counts.variant: a for a in analysis.arms}

    # planted truth: B's lift is 0.35 in the 20 % German subgroup, so 0.2 * 0.35 = 0.07 overall; A's is 0
    assert arms["B"].ci_low <= 0.07 <= arms["B"].ci_high
    assert arms["B"].ci_low > 0 and arms["B"].significant
    assert arms["A"].ci_low <= 0 <= arms["A"].ci_high and not arms["A"].significant
    # the holdout converts at the base rate: 10 % within 2.5 standard errors (sqrt(.09/~600) = 0.012)
    assert abs(arms["holdout"].conversion_rate - 0.10) < 0.031
    assert not analysis.srm_mismatch
    # every 5th person's purchase 1 s after the window is not counted: the late ones would add 20 %
    assert arms["A"].conversion_rate < 0.15

    # within the subgroup the planted lift itself, 0.45 - 0.10
    germans = spark.createDataFrame([(c,) for c in planted.subgroup], "customer_id string")
    sub = {
        a.counts.variant: a
        for a in analyse_campaign(
            arm_counts(
                exposures, events, identifiers, campaign_id="welcome", campaign=campaign, as_of=as_of, customers=germans
            ),
            campaign,
        ).arms
    }
    assert sub["B"].ci_low <= 0.35 <= sub["B"].ci_high
    assert sub["A"].ci_low <= 0 <= sub["A"].ci_high


@pytest.mark.slow
def test_report_writes_results_replayable_as_of_and_a_chart(spark, project, tmp_path):
    campaign = load_personalization(project.conf_dir).campaigns["welcome"]
    write_planted(JobContext.create(project, spark, run_id="plant"), _plant_welcome(campaign))
    ctx = JobContext.create(project, spark, as_of=T + timedelta(days=30), run_id="report-1")
    analysis, text = run_report(ctx, "welcome")
    arms = {a.counts.variant: a for a in analysis.arms}
    assert arms["B"].ci_low <= 0.07 <= arms["B"].ci_high and arms["B"].significant
    assert "two-proportion z-test" in text and "sample ratio: chi2 =" in text and "(ok;" in text

    tables = Tables(project)
    results = tables.read(spark, RESULTS)
    assert sorted(r["variant"] for r in results.collect()) == ["A", "B", "holdout"]
    # as of the same time again: rows replaced, not added; an earlier as-of adds its own rows
    run_report(JobContext.create(project, spark, as_of=ctx.as_of, run_id="report-2"), "welcome")
    early, _ = run_report(JobContext.create(project, spark, as_of=T - H, run_id="report-3"), "welcome")
    assert sum(a.counts.exposed for a in early.arms) == 0
    rows = tables.read(spark, RESULTS).collect()
    assert len(rows) == 6
    assert {r["run_id"] for r in rows if r["as_of"].replace(tzinfo=timezone.utc) == ctx.as_of} == {"report-2"}

    chart = write_chart(analysis, tmp_path / "welcome.png", title="welcome")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ~41 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_aa_campaign_finds_no_lift(spark):
    campaign = Campaign(variants={"A": 50, "B": 50}, holdout_percent=10)
    planted = plant_campaign(
        42, 6000, campaign_id="aa_check", campaign=campaign, base_rate=0.10, subgroup_rates={}, exposed_at=T
    )
    exposures, events, identifiers = _frames(spark, planted)
    analysis = analyse_campaign(
        arm_counts(
            exposures, events, identifiers, campaign_id="aa_check", campaign=campaign, as_of=T + timedelta(days=30)
        ),
        campaign,
    )
    lifted = [a for a in analysis.arms if not a.is_control]
    assert [a.counts.variant for a in lifted] == ["A", "B"]
    for arm in lifted:
        assert arm.ci_low <= 0 <= arm.ci_high, arm
        assert not arm.significant
    assert not analysis.srm_mismatch


# -- the activation hook -----------------------------------------------------------------------
CHANGES = (
    "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
    "change_type string, previous_customer_id string, changed_at timestamp, reason string"
)


def _write_conf(root):
    (root / "destinations").mkdir(parents=True)
    (root / "privacy.yaml").write_text("version: 1\n", encoding="utf-8")
    (root / "destinations" / "export.yaml").write_text(
        "version: 1\ntype: file\nformat: csv\nfields: [email]\n", encoding="utf-8"
    )
    (root / "personalization.yaml").write_text(
        "version: 1\ncampaigns:\n  welcome:\n    variants: {A: 50, B: 50}\n    holdout_percent: 30\n"
        "    destinations: [export]\n    segments: [vip]\n    template: welcome.html\n",
        encoding="utf-8",
    )


@pytest.mark.slow
def test_activation_records_exposures_once_and_sends_nothing_to_the_holdout(spark, project, tmp_path):
    from lakecdp.activation import job

    conf = tmp_path / "conf"
    _write_conf(conf)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "welcome.html").write_text("<p>Hello</p>\n", encoding="utf-8")
    project = project.model_copy(update={"conf_dir": conf})
    tables = Tables(project)
    customers = [f"c{n}" for n in range(1, 13)]
    tables.append(
        spark.createDataFrame(
            [(f"ch{c}", "seg-r1", "vip", c, "", "entered", None, T, "{}") for c in customers]
            + [("chx", "seg-r1", "lapsed", "c1", "", "entered", None, T, "{}")],
            CHANGES,
        ),
        "segments.changes",
    )
    campaign = Campaign(variants={"A": 50, "B": 50}, holdout_percent=30)
    holdout = {c for c in customers if assign_variant(c, "welcome", campaign) == "holdout"}
    assert 0 < len(holdout) < len(customers)  # the 12 ids give both kinds (checked, not assumed)

    first = job.run(JobContext.create(project, spark, as_of=T + H, run_id="act-1"))
    exposures = tables.read(spark, EXPOSURES).collect()
    assert sorted((r["customer_id"], r["is_holdout"], r["sent"]) for r in exposures) == sorted(
        (c, c in holdout, c not in holdout) for c in customers
    )
    # sha256 of "<p>Hello</p>\n" (sha256sum)
    assert {r["template_sha256"] for r in exposures} == {
        "3e9b68b71cc667168399f0bccfb64b2d16314cdc0ed78fac4819aba0dda121a0"
    }
    assert {r["exposed_at"].replace(tzinfo=timezone.utc) for r in exposures} == {T + H}
    sent = set()
    for path in (project.warehouse / "exports" / "export").rglob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            sent |= {(row["segment_id"], row["customer_id"]) for row in csv.DictReader(handle)}
    assert sent == {("vip", c) for c in customers if c not in holdout} | {("lapsed", "c1")}
    assert first["delivered"] == 13 - len(holdout)
    ledger = tables.read(spark, "activation.deliveries").where("status = 'holdout'").collect()
    assert sorted(r["customer_id"] for r in ledger) == sorted(holdout)

    again = job.run(JobContext.create(project, spark, as_of=T + 2 * H, run_id="act-2"))
    assert again["delivered"] == 0
    assert tables.read(spark, EXPOSURES).count() == 12
    # the same customer entering again is a new change: one more exposure, at the new time
    tables.append(
        spark.createDataFrame([("chc1-2", "seg-r2", "vip", "c1", "", "entered", None, T + 2 * H, "{}")], CHANGES),
        "segments.changes",
    )
    job.run(JobContext.create(project, spark, as_of=T + 3 * H, run_id="act-3"))
    job.run(JobContext.create(project, spark, as_of=T + 4 * H, run_id="act-4"))
    rows = tables.read(spark, EXPOSURES).where("customer_id = 'c1'").collect()
    assert sorted((r["change_id"], r["run_id"]) for r in rows) == [("chc1", "act-1"), ("chc1-2", "act-3")]
