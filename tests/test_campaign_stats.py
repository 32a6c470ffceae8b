"""Campaign measurement without Spark: lift, interval, p-value, sample-ratio check, sample size,
the activation hook's split into delivered / held out / exposures, and the planted generator.

Expected values are worked by hand (formulas in the comments), not taken from the code."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lakecdp.campaign.exposures import exposure_key, plan_exposures
from lakecdp.campaign.stats import ArmCounts, analyse, expected_shares, min_sample_per_arm, sample_ratio_check
from lakecdp.config import ConfigError
from lakecdp.personalization.config import Campaign, PersonalizationConfig
from lakecdp.personalization.variants import assign_variant
from lakecdp.sample.campaigns import plant_campaign

Z975 = 1.959963984540054  # standard normal 97.5 % quantile
Z80 = 0.8416212335729143  # standard normal 80 % quantile
T = datetime(2026, 10, 1, tzinfo=timezone.utc)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_lift_interval_and_p_value_are_the_wald_z_test_worked_by_hand():
    result = analyse(
        [ArmCounts("holdout", 100, 10), ArmCounts("A", 450, 60), ArmCounts("B", 450, 45)],
        variants={"A": 1, "B": 1},
        holdout_percent=10,
    )
    holdout, a, b = result.arms
    assert (holdout.counts.variant, holdout.is_control, holdout.lift) == ("holdout", True, None)
    # A: 60/450 = 0.13333 vs 10/100 = 0.10; se = sqrt(.13333*.86667/450 + .1*.9/100) = 0.0340116
    se = math.sqrt((60 / 450) * (390 / 450) / 450 + 0.1 * 0.9 / 100)
    assert se == pytest.approx(0.0340116, abs=1e-6)
    assert a.lift == pytest.approx(0.0333333, abs=1e-6)
    assert a.relative_lift == pytest.approx(0.333333, abs=1e-5)
    assert (a.ci_low, a.ci_high) == pytest.approx((0.0333333 - Z975 * se, 0.0333333 + Z975 * se), abs=1e-6)
    assert a.p_value == pytest.approx(2 * (1 - _phi(0.0333333 / se)), abs=1e-5)  # 0.3271
    assert a.p_value == pytest.approx(0.3271, abs=1e-4)
    assert a.significant is False
    # B: 45/450 = 0.10, exactly the holdout's rate: lift 0, p = 1
    assert b.lift == pytest.approx(0.0, abs=1e-12)
    assert b.p_value == pytest.approx(1.0)


def test_a_clear_lift_is_significant_and_its_interval_excludes_zero():
    # 300/1000 vs 100/1000: lift .2, se = sqrt(.3*.7/1000 + .1*.9/1000) = sqrt(.0003) = 0.0173205
    result = analyse(
        [ArmCounts("holdout", 1000, 100), ArmCounts("A", 1000, 300)], variants={"A": 1}, holdout_percent=50
    )
    arm = result.arms[1]
    assert (arm.ci_low, arm.ci_high) == pytest.approx((0.2 - Z975 * 0.0173205, 0.2 + Z975 * 0.0173205), abs=1e-6)
    assert arm.significant is True and arm.p_value < 1e-20


def test_rates_beside_conversions():
    counts = ArmCounts(
        "A",
        200,
        20,
        revenue=1000.0,
        opened=80,
        clicked=20,
        complained=2,
        unsubscribed=5,
        had_open_cart=10,
        cart_recovered=4,
    )
    arm = analyse([ArmCounts("holdout", 50, 5), counts], variants={"A": 1}, holdout_percent=20).arms[1]
    assert (arm.conversion_rate, arm.revenue_per_exposed, arm.open_rate, arm.click_rate) == (0.1, 5.0, 0.4, 0.1)
    assert (arm.complaint_rate, arm.unsubscribe_rate, arm.cart_recovery_rate) == (0.01, 0.025, 0.4)


def test_without_holdout_the_first_variant_is_the_control():
    result = analyse([ArmCounts("A", 500, 50), ArmCounts("B", 500, 75)], variants={"A": 1, "B": 1}, holdout_percent=0)
    assert result.control == "A"
    assert [a.is_control for a in result.arms] == [True, False]
    assert result.arms[1].lift == pytest.approx(0.05)


def test_no_conversions_anywhere_gives_no_lift_and_p_one():
    arm = analyse([ArmCounts("holdout", 100, 0), ArmCounts("A", 900, 0)], variants={"A": 1}, holdout_percent=10).arms[1]
    assert (arm.lift, arm.p_value, arm.significant) == (0.0, 1.0, False)


def test_a_control_without_exposures_is_a_note_not_a_crash():
    result = analyse([ArmCounts("A", 900, 90)], variants={"A": 1}, holdout_percent=10)
    assert result.arms[1].lift is None
    assert any("control 'holdout' has no exposures" in n for n in result.notes)


def test_expected_shares_follow_holdout_then_weights():
    assert expected_shares({"A": 1, "B": 3}, 20) == pytest.approx({"A": 0.2, "B": 0.6, "holdout": 0.2})
    assert expected_shares({"A": 50, "B": 50}, 0) == pytest.approx({"A": 0.5, "B": 0.5})


def test_sample_ratio_chi_square_by_hand():
    shares = expected_shares({"A": 1, "B": 1}, 10)
    # expected 100 / 450 / 450; observed 130 / 435 / 435:
    # chi2 = 30^2/100 + 15^2/450 + 15^2/450 = 9 + 0.5 + 0.5 = 10; df 2: p = exp(-10/2)
    chi2, p_value = sample_ratio_check({"holdout": 130, "A": 435, "B": 435}, shares)
    assert chi2 == pytest.approx(10.0)
    assert p_value == pytest.approx(math.exp(-5))
    assert sample_ratio_check({"holdout": 100, "A": 450, "B": 450}, shares) == pytest.approx((0.0, 1.0))
    broken = analyse(
        [ArmCounts("holdout", 200, 20), ArmCounts("A", 400, 40), ArmCounts("B", 400, 40)],
        variants={"A": 1, "B": 1},
        holdout_percent=10,
    )
    # chi2 = 100^2/100 + 50^2/450*2 = 100 + 11.1: p far below 0.001
    assert broken.srm_mismatch is True
    assert broken.srm_chi2 == pytest.approx(100 + 2 * 2500 / 450)


def test_minimum_sample_size_is_cohens_h_formula():
    # 2 asin(sqrt(p^)) has variance 1/n, so the difference of two arms of n has 2/n:
    # n = 2 ((z_.975 + z_.8) / h)^2 with h = 2 asin(sqrt(.12)) - 2 asin(sqrt(.10)) = 0.063982
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    assert min_sample_per_arm(0.10, 0.02, alpha=0.05) == math.ceil(2 * ((Z975 + Z80) / h) ** 2)
    assert min_sample_per_arm(0.10, 0.02, alpha=0.05) == 3835
    result = analyse([ArmCounts("holdout", 100, 10), ArmCounts("A", 900, 90)], variants={"A": 1}, holdout_percent=10)
    assert result.min_sample_per_arm == 3835 and result.underpowered is True
    assert any("3835 exposed per arm" in n and "underpowered" in n for n in result.notes)


# -- the activation hook, without Spark -------------------------------------------------------
def _row(change_id, customer_id, destination="mail", segment_id="vip", change_type="entered", suppressed=None):
    return {
        "idempotency_key": f"{destination}/{change_id}",
        "change_id": change_id,
        "destination": destination,
        "segment_id": segment_id,
        "customer_id": customer_id,
        "change_type": change_type,
        "suppression_reason": suppressed,
    }


def _customer_in(arm: str, campaign: Campaign, campaign_id: str = "welcome") -> str:
    return next(f"c{n}" for n in range(1000) if assign_variant(f"c{n}", campaign_id, campaign) == arm)


def test_plan_exposures_holds_out_the_holdout_and_exposes_once_per_change():
    campaign = Campaign(variants={"A": 1, "B": 1}, holdout_percent=30, destinations=["mail", "crm"], segments=["vip"])
    held, sent = _customer_in("holdout", campaign), _customer_in("B", campaign)
    rows = [
        _row("ch1", held),
        _row("ch1", held, destination="crm"),  # holdout: two destinations, one exposure
        _row("ch2", sent),
        _row("ch2", sent, destination="crm"),  # variant B: both delivered, one exposure
        _row("ch3", sent, segment_id="lapsed"),  # not the campaign's segment
        _row("ch4", sent, change_type="exited"),  # exits are not exposures
        _row("ch5", held, suppressed="unsubscribed"),  # suppressed: not exposed, activation logs it
        _row("ch6", held, destination="files"),  # a destination the campaign does not use
    ]
    to_deliver, held_out, exposures = plan_exposures(
        rows, {"welcome": campaign}, exposed_at=T, run_id="r1", versions={"welcome": ("abc", "rev1")}
    )
    assert [(r["change_id"], r["destination"]) for r in held_out] == [("ch1", "mail"), ("ch1", "crm")]
    assert [(r["change_id"], r["destination"]) for r in to_deliver] == [
        ("ch2", "mail"),
        ("ch2", "crm"),
        ("ch3", "mail"),
        ("ch4", "mail"),
        ("ch5", "mail"),
        ("ch6", "files"),
    ]
    assert [(e["change_id"], e["customer_id"], e["variant"], e["is_holdout"], e["sent"]) for e in exposures] == [
        ("ch1", held, "holdout", True, False),
        ("ch2", sent, "B", False, True),
    ]
    assert exposures[0]["exposure_key"] == exposure_key("welcome", held, "ch1")
    assert (exposures[1]["template_sha256"], exposures[1]["git_revision"]) == ("abc", "rev1")


def test_two_campaigns_claiming_one_delivery_is_a_config_error():
    one = Campaign(destinations=["mail"])
    other = Campaign(destinations=["mail"], segments=["vip"])
    with pytest.raises(ConfigError, match=r"campaigns: \['one', 'other'\] all claim destination 'mail'"):
        plan_exposures([_row("ch1", "c1")], {"one": one, "other": other}, exposed_at=T, run_id="r", versions={})


def test_measurement_config_rejects_an_unknown_conversion_event():
    with pytest.raises(ValueError, match="conversion_event"):
        PersonalizationConfig(campaigns={"x": {"measurement": {"conversion_event": "purchased"}}})


@pytest.mark.parametrize("template", ["../../etc/passwd", "/etc/passwd", "blocks/../../conf/api.yaml", "\\\\host\\x"])
def test_a_campaign_template_outside_templates_dir_is_refused(template):
    with pytest.raises(ValueError, match="template must be a file under templates_dir"):
        PersonalizationConfig(campaigns={"x": {"template": template}})
    assert Campaign(template="blocks/welcome.html").template == "blocks/welcome.html"


# -- the generator ---------------------------------------------------------------------------
def test_planted_campaign_has_the_known_arms_window_and_linked_identifiers():
    campaign = Campaign(variants={"A": 1, "B": 1}, holdout_percent=10)
    planted = plant_campaign(
        42,
        300,
        campaign_id="welcome",
        campaign=campaign,
        base_rate=0.10,
        subgroup_rates={"B": 0.30},
        exposed_at=T,
        window_hours=72,
    )
    assert len(planted.exposures) == 300
    assert all(
        planted.arms[e["customer_id"]] == assign_variant(e["customer_id"], "welcome", campaign)
        for e in planted.exposures
    )
    late = [e for e in planted.events if e["event_id"].endswith("-late")]
    assert len(late) == 60  # every 5th of 300 people
    assert {e["occurred_at"] for e in late} == {T + timedelta(hours=72, seconds=1)}
    bought = [e for e in planted.events if e["event_id"].endswith("-purchase")]
    assert all(T < e["occurred_at"] < T + timedelta(hours=72) for e in bought)
    owner = {(i["identifier_type"], i["identifier_value"]): i["customer_id"] for i in planted.identifiers}
    assert len(owner) == len(planted.identifiers)  # one owner per identifier value
    # some purchases are under the person's second identifier, not the one their emails go to
    opened_with = {
        e["event_id"].split("-")[1]: e.get("email") for e in planted.events if e["event_type"] == "email_open"
    }
    assert any(
        e.get("email") != opened_with.get(e["event_id"].split("-")[1])
        for e in bought
        if e["event_id"].split("-")[1] in opened_with
    )
    with pytest.raises(ValueError, match=r"arms \['C'\]"):
        plant_campaign(
            42, 10, campaign_id="x", campaign=campaign, base_rate=0.1, subgroup_rates={"C": 0.2}, exposed_at=T
        )


# -- the command line ----------------------------------------------------------------------------
def test_campaign_report_command_parses_its_options():
    from lakecdp.campaign.cli import _report
    from lakecdp.cli import build_parser

    args = build_parser().parse_args(
        [
            "campaign",
            "report",
            "--campaign",
            "welcome",
            "--as-of",
            "2026-11-01",
            "--chart",
            "reports/welcome.png",
            "--fail-on-srm",
        ]
    )
    assert (args.handler, args.campaign, args.fail_on_srm) == (_report, "welcome", True)
    assert args.as_of == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert str(args.chart) == "reports/welcome.png"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["campaign", "report"])  # --campaign is required


def test_an_unknown_campaign_names_the_file_and_the_configured_ones():
    from lakecdp.campaign.report import campaign_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    assert campaign_config(conf, "welcome").measurement.attribution_window_hours == 168
    with pytest.raises(
        ConfigError, match=r"personalization.yaml: campaigns: no campaign 'spring'; configured: \['welcome'\]"
    ):
        campaign_config(conf, "spring")
