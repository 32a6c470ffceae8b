"""Planted campaign outcomes for a generated world (``lakecdp.sample.world``), with known truth.

For people ``0 .. n-1`` of the world with ``seed``, :func:`plant_campaign` gives each person a
``customer_id`` (``cust-<index>``), linked identifiers in ``identity.identifiers`` (their
``email`` and ``other_email``, and a customer number ``SN-<index>``), the campaign's deterministic arm
(:func:`lakecdp.personalization.variants.assign_variant`), one exposure, and outcomes drawn
at known rates:

- every arm, the holdout included, converts (purchases within the window) at ``base_rate``;
- in the subgroup (people whose ``country`` is ``subgroup_country``), an arm named in
  ``subgroup_rates`` converts at that rate instead: the planted lift of that arm is
  ``subgroup_rates[arm] - base_rate`` inside the subgroup, and that times the subgroup's share
  overall;
- half the purchases are made under the person's second linked identifier (their other email,
  or their customer number), so attribution must go through the identity graph; every 5th person also buys 1 second after their window closes (must not
  count); sent arms open, click, unsubscribe and complain at fixed rates, tagged with the
  campaign id. Nothing here reads or writes the generator's customer-record sources.

An A/A campaign is the same call with ``subgroup_rates={}``: no arm differs from the holdout.

Shipped on purpose, like the rest of :mod:`lakecdp.sample`: sample data is a user feature
(``lakecdp campaign plant-sample`` into an empty scratch warehouse, the campaign report
notebook); the tests use it as their generator of known truth, nothing here is test-only.

Example:
    >>> planted = plant_campaign(42, 6000, campaign_id="welcome", campaign=config.campaigns["welcome"],
    ...                          base_rate=0.10, subgroup_rates={"B": 0.30}, exposed_at=T)
    >>> write_planted(JobContext.create(project, spark), planted)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lakecdp import catalog
from lakecdp.campaign.exposures import exposure_key
from lakecdp.personalization.config import Campaign
from lakecdp.personalization.variants import HOLDOUT, assign_variant
from lakecdp.sample.config import SampleConfig
from lakecdp.sample.draws import Draw
from lakecdp.sample.world import make_person

if TYPE_CHECKING:
    from lakecdp.context import JobContext

#: the columns a planted event has (silver.events has these and more, null in planted rows)
EVENTS_SCHEMA = (
    "event_id string, source string, event_type string, occurred_at timestamp, email string, "
    "device_id string, customer_number string, product_id string, category string, value double, "
    "order_id string, campaign_id string, channel string, run_id string, ingested_at timestamp"
)
IDENTIFIERS_SCHEMA = catalog.IDENTIFIERS.schema

# per sent exposure: chance of each email engagement event (tagged with the campaign id)
ENGAGEMENT_RATES = {"email_open": 0.40, "email_click": 0.10, "email_unsubscribe": 0.01, "email_complaint": 0.002}
RUN_ID = "sample-campaigns"


@dataclass(frozen=True)
class PlantedCampaign:
    campaign_id: str
    exposures: list[dict[str, Any]]
    events: list[dict[str, Any]]
    identifiers: list[dict[str, Any]]
    # customer ids of the subgroup with the planted lift
    subgroup: frozenset[str]
    # customer id -> arm (variant or holdout)
    arms: Mapping[str, str]


def plant_campaign(
    seed: int,
    people: int,
    *,
    campaign_id: str,
    campaign: Campaign,
    base_rate: float,
    subgroup_rates: Mapping[str, float],
    exposed_at: datetime,
    subgroup_country: str = "DE",
    window_hours: float | None = None,
    config: SampleConfig | None = None,
) -> PlantedCampaign:
    """Exposures, events and identifiers of one planted campaign (see the module docstring).

    Args:
        seed: the world's seed; people: how many of its people (indexes ``0 .. people-1``).
        base_rate: conversion rate of the holdout and of every arm outside the subgroup.
        subgroup_rates: arm -> conversion rate inside the subgroup (arms not named: base_rate).
        exposed_at: every exposure's time (the window starts here).
        window_hours: the attribution window (default: the campaign's ``measurement``).
    """
    unknown = sorted(set(subgroup_rates) - set(campaign.variants) - {HOLDOUT})
    if unknown:
        raise ValueError(
            f"subgroup_rates names arms {unknown} the campaign does not have ({sorted(campaign.variants)})"
        )
    config = config or SampleConfig(version=1)
    window = timedelta(
        hours=window_hours if window_hours is not None else campaign.measurement.attribution_window_hours
    )
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    identifiers: list[dict[str, Any]] = []
    subgroup: set[str] = set()
    arms: dict[str, str] = {}
    owners: dict[str, str] = {}
    for index in range(people):
        person = make_person(seed, index, config, initial=people)
        customer_id = f"cust-{index:06d}"
        arm = assign_variant(customer_id, campaign_id, campaign)
        arms[customer_id] = arm
        in_subgroup = person.country == subgroup_country
        if in_subgroup:
            subgroup.add(customer_id)
        # two linked identifiers per person: their emails (a household email shared with an earlier
        # person stays that person's: identity.identifiers has one owner per value), else a customer number
        linked = [
            ("email", e)
            for e in dict.fromkeys((person.email, person.other_email))
            if owners.setdefault(e, customer_id) == customer_id
        ]
        linked.append(("customer_number", f"SN-{index:06d}"))
        identifiers.extend(
            {"identifier_type": kind, "identifier_value": value, "customer_id": customer_id, "run_id": RUN_ID}
            for kind, value in linked
        )
        change_id = f"{campaign_id}-change-{index}"
        exposures.append(
            {
                "exposure_key": exposure_key(campaign_id, customer_id, change_id),
                "campaign_id": campaign_id,
                "customer_id": customer_id,
                "change_id": change_id,
                "segment_id": "sample",
                "destination": "sample",
                "variant": arm,
                "is_holdout": arm == HOLDOUT,
                "sent": arm != HOLDOUT,
                "template": campaign.template,
                "template_sha256": None,
                "git_revision": None,
                "exposed_at": exposed_at,
                "run_id": RUN_ID,
            }
        )
        draw = Draw(seed, "campaign", campaign_id, index)
        rate = subgroup_rates.get(arm, base_rate) if in_subgroup else base_rate
        window_seconds = int(window.total_seconds())

        def event(kind: str, at: datetime, purpose: str, *, other: bool = False, **extra: Any) -> dict[str, Any]:
            identifier_type, value = linked[1] if other else linked[0]
            return {
                "event_id": f"{campaign_id}-{index}-{purpose}",
                "source": "sample",
                "event_type": kind,
                "occurred_at": at,
                identifier_type: value,
                "channel": "email" if kind.startswith("email_") else "web",
                "run_id": RUN_ID,
                "ingested_at": at,
                **extra,
            }

        if draw.chance("converted", rate):
            at = exposed_at + timedelta(seconds=draw.integer("converted_at", 1, window_seconds - 1))
            events.append(
                event(
                    "purchase",
                    at,
                    "purchase",
                    value=float(draw.integer("value", 20, 120)),
                    order_id=f"{campaign_id}-order-{index}",
                    other=draw.chance("other_email", 0.5),
                )
            )
        if index % 5 == 0:
            # one second after the window: outside, whatever the arm
            events.append(
                event(
                    "purchase",
                    exposed_at + window + timedelta(seconds=1),
                    "late",
                    value=50.0,
                    order_id=f"{campaign_id}-late-{index}",
                )
            )
        if arm != HOLDOUT:
            for kind, chance in ENGAGEMENT_RATES.items():
                if draw.chance(kind, chance):
                    events.append(event(kind, exposed_at + timedelta(hours=1), kind, campaign_id=campaign_id))
    return PlantedCampaign(
        campaign_id=campaign_id,
        exposures=exposures,
        events=events,
        identifiers=identifiers,
        subgroup=frozenset(subgroup),
        arms=arms,
    )


def write_planted(ctx: JobContext, planted: PlantedCampaign) -> None:
    """Write the planted rows through their tables' writers: ``silver.events``
    (:func:`lakecdp.ingest.writes.insert_events`), ``identity.identifiers``
    (:func:`lakecdp.identity.job.link_identifiers`) and ``gold.campaign_exposures``
    (:func:`lakecdp.campaign.exposures.record_exposures`). Meant for a scratch warehouse: these
    are not the generator's sources."""
    from lakecdp.campaign.exposures import record_exposures
    from lakecdp.identity.job import link_identifiers
    from lakecdp.ingest.writes import insert_events

    spark = ctx.spark
    events = [tuple(e.get(c) for c in catalog.EVENTS.columns) for e in planted.events]
    insert_events(ctx, spark.createDataFrame(events, catalog.EVENTS.struct()))
    identifiers = [tuple(i[c] for c in catalog.IDENTIFIERS.columns) for i in planted.identifiers]
    link_identifiers(ctx, spark.createDataFrame(identifiers, catalog.IDENTIFIERS.struct()))
    record_exposures(ctx, planted.exposures)
