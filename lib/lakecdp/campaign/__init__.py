"""Campaign measurement: exposure facts, outcome attribution, results with lift against the holdout.

- :mod:`lakecdp.campaign.exposures`: the activation hook that holds out the holdout and writes
  ``gold.campaign_exposures`` exactly once per (campaign, customer, change);
- :mod:`lakecdp.campaign.attribution`: outcomes from ``silver.events`` within the attribution
  window, through ``identity.identifiers`` (Spark transformations);
- :mod:`lakecdp.campaign.stats`: lift, confidence interval, p-value, sample-ratio check (no Spark);
- :mod:`lakecdp.campaign.report`: ``lakecdp campaign report`` and ``gold.campaign_results``.
"""

from __future__ import annotations

from lakecdp import catalog

EXPOSURES = catalog.CAMPAIGN_EXPOSURES.name
RESULTS = catalog.CAMPAIGN_RESULTS.name

__all__ = ["EXPOSURES", "RESULTS"]
