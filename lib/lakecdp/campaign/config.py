"""How a campaign is measured: the ``measurement:`` block of a campaign in
``conf/personalization.yaml``.

Example::

    campaigns:
      welcome:
        variants: {A: 50, B: 50}
        holdout_percent: 10
        destinations: [demo_webhook]
        segments: [vip]
        template: welcome.html
        measurement: {attribution_window_hours: 168, conversion_event: purchase,
                      minimum_detectable_lift: 0.02}
"""

from __future__ import annotations

from pydantic import Field, field_validator

from lakecdp.config import StrictModel

# event types of silver.events a campaign may count as its conversion
CONVERSION_EVENTS = ("purchase", "checkout", "add_to_cart", "email_click", "email_open")


class Measurement(StrictModel):
    # an outcome counts when it occurs in [exposed_at, exposed_at + window] (both ends included)
    attribution_window_hours: float = Field(default=168.0, gt=0, le=24 * 365)
    # the silver.events event_type that counts as converted
    conversion_event: str = "purchase"
    # two-sided significance level of the lift test and 1 - confidence of its interval
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # smallest absolute lift in conversion rate worth detecting (0.02 = 2 percentage points);
    # the report says how many exposed per arm that needs at 80 % power
    minimum_detectable_lift: float = Field(default=0.02, gt=0, lt=1)
    # p-value of the sample-ratio chi-square test below which the split is called broken
    srm_threshold: float = Field(default=0.001, gt=0, lt=1)

    @field_validator("conversion_event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in CONVERSION_EVENTS:
            raise ValueError(f"must be one of {list(CONVERSION_EVENTS)}, got {value!r}")
        return value
