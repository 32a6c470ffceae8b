"""Deterministic A/B variants and holdout per (customer, campaign).

``point = int(sha256("<campaign>:<customer_id>")[:8], 16) / 16**8 * 100`` is a number in
[0, 100) fixed for the pair. Below ``holdout_percent`` the customer is in the holdout (gets
nothing); the rest of the range is cut in proportion to the variant weights, in the order the
variants are listed. No state is stored: every run, preview and machine agrees.

Example:
    >>> assign_variant("c1", "welcome", Campaign(variants={"A": 1, "B": 1}, holdout_percent=10))
    'B'
"""

from __future__ import annotations

import hashlib

from lakecdp.personalization.config import Campaign

HOLDOUT = "holdout"


def bucket_point(customer_id: str, campaign_id: str) -> float:
    """The pair's fixed point in [0, 100)."""
    digest = hashlib.sha256(f"{campaign_id}:{customer_id}".encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 16**8 * 100


def assign_variant(customer_id: str, campaign_id: str, campaign: Campaign) -> str:
    """The variant name, or :data:`HOLDOUT`."""
    point = bucket_point(customer_id, campaign_id)
    if point < campaign.holdout_percent:
        return HOLDOUT
    share = (point - campaign.holdout_percent) / (100 - campaign.holdout_percent)
    total = sum(campaign.variants.values())
    cumulative = 0.0
    names = list(campaign.variants)
    for name in names:
        cumulative += campaign.variants[name] / total
        if share < cumulative:
            return name
    return names[-1]
