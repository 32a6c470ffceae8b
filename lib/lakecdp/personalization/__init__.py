"""Personalisation: Jinja2 templates rendered in a sandbox from customer profiles, with
preview, validation, segment-conditional blocks, fallbacks and deterministic A/B variants."""

from __future__ import annotations

from lakecdp.personalization.config import Campaign, PersonalizationConfig, load_personalization
from lakecdp.personalization.engine import Rendered, TemplateEngine
from lakecdp.personalization.variants import HOLDOUT, assign_variant

__all__ = [
    "HOLDOUT",
    "Campaign",
    "PersonalizationConfig",
    "Rendered",
    "TemplateEngine",
    "assign_variant",
    "load_personalization",
]
