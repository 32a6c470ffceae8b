"""``conf/personalization.yaml``: where templates live, recommendation cut-off, campaigns.

Example::

    version: 1
    templates_dir: templates
    recommendation_min_confidence: 0.8
    segment_names: {interested_in_product: Interested in Product X}
    campaigns:
      welcome: {variants: {A: 50, B: 50}, holdout_percent: 10}
    render_budget: {max_seconds: 2, max_output_chars: 1000000, max_loop_iterations: 100000}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from lakecdp.campaign.config import Measurement
from lakecdp.config import StrictModel, load_model
from lakecdp.personalization.sandbox import RenderBudget


class Campaign(StrictModel):
    # variant name -> weight (relative)
    variants: dict[str, int] = Field(default_factory=lambda: {"A": 1})
    # share of customers (0-100) who get nothing, to measure the campaign's lift
    holdout_percent: float = Field(default=0.0, ge=0, lt=100)
    # measurement (lakecdp.campaign): activation destinations that send this campaign (empty: it is
    # not sent by activation); their changes of these segments (empty: all) and change types are its
    # exposures, and its holdout is not sent; the template is hashed into every exposure
    destinations: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    change_types: list[str] = Field(default_factory=lambda: ["entered"])
    template: str | None = None
    measurement: Measurement = Field(default_factory=Measurement)

    @field_validator("variants")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        if not value or any(w <= 0 for w in value.values()):
            raise ValueError("variants need at least one entry and positive weights")
        return value

    @field_validator("template")
    @classmethod
    def _inside_templates(cls, value: str | None) -> str | None:
        # its bytes are hashed into every exposure: a path may not leave templates_dir
        if value is not None and (value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/")):
            raise ValueError(f"template must be a file under templates_dir (no absolute path, no '..'), got {value!r}")
        return value


class RenderBudgetConfig(StrictModel):
    """Limits of one template render (see :mod:`lakecdp.personalization.sandbox`)."""

    max_seconds: float = Field(default=2.0, gt=0, le=60)
    max_output_chars: int = Field(default=1_000_000, ge=1_000)
    max_loop_iterations: int = Field(default=100_000, ge=1)

    def budget(self) -> RenderBudget:
        return RenderBudget(
            max_seconds=self.max_seconds,
            max_output_chars=self.max_output_chars,
            max_loop_iterations=self.max_loop_iterations,
        )


class PersonalizationConfig(StrictModel):
    @field_validator("feedback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(("https://", "http://")) or any(c.isspace() or ord(c) < 32 for c in value)
        ):
            raise ValueError(f"feedback_url must be an http(s) URL without spaces, got {value!r}")
        return value

    version: Literal[1] = 1
    # folder of templates, relative to the project root
    templates_dir: str = "templates"
    # previews go here, relative to the warehouse
    preview_dir: str = "previews"
    # recommendations below this confidence are never shown
    recommendation_min_confidence: float = Field(default=0.8, ge=0, le=1)
    max_recommendations: int = Field(default=3, ge=0)
    # display names a template may compare customer_segment with; default: the segment id
    segment_names: dict[str, str] = Field(default_factory=dict)
    # the order in which a customer's segments pick their customer_segment (first wins)
    segment_priority: list[str] = Field(default_factory=list)
    campaigns: dict[str, Campaign] = Field(default_factory=dict)
    # recommendation feedback links (feedback_link() in templates) point here; the email
    # platform reports their clicks (conf/sources/email_events.yaml maps them to feedback)
    feedback_url: str | None = None
    # every render keeps to this budget; going over is a render error naming the limit
    render_budget: RenderBudgetConfig = Field(default_factory=RenderBudgetConfig)
    # validation renders each template against this many real profiles
    validation_sample: int = Field(default=20, ge=1)
    # the pipeline's preview step: this customer (default: the first by id) and template
    demo_customer: str | None = None
    demo_template: str = "welcome.html"
    demo_campaign: str | None = "welcome"


def load_personalization(conf_dir: str | os.PathLike[str]) -> PersonalizationConfig:
    """``<conf_dir>/personalization.yaml``; defaults when the file does not exist."""
    path = Path(conf_dir) / "personalization.yaml"
    if not path.is_file():
        return PersonalizationConfig()
    return load_model(path, PersonalizationConfig)
