"""``conf/sample.yaml``: sizes, coverage and the rates of every kind of dirt the generator plants.

Rates are probabilities per record (or per event) in [0, 1]. Defect rates of one source are
drawn from a single uniform number per row, so a row carries at most one planted defect and
their sum must stay below 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lakecdp.config import StrictModel, load_model

Rate = float


class Coverage(StrictModel):
    """Share of people who appear in each customer source."""

    crm: Rate = Field(0.70, ge=0, le=1)
    shop: Rate = Field(0.60, ge=0, le=1)
    third_party: Rate = Field(0.30, ge=0, le=1)
    web_login: Rate = Field(0.50, ge=0, le=1)
    # people browsing anonymously who never log in
    web_anonymous: Rate = Field(0.20, ge=0, le=1)
    # a person with a second account in the same source (CRM or shop)
    duplicate_account: Rate = Field(0.05, ge=0, le=1)


class Dirt(StrictModel):
    """Cleanable dirt: rows that must load (ingest and identity clean it up)."""

    typo: Rate = Field(0.04, ge=0, le=1)
    nickname: Rate = Field(0.10, ge=0, le=1)
    swapped_name: Rate = Field(0.02, ge=0, le=1)
    missing_field: Rate = Field(0.05, ge=0, le=1)
    changed_email: Rate = Field(0.08, ge=0, le=1)
    changed_address: Rate = Field(0.05, ge=0, le=1)
    email_variant: Rate = Field(0.10, ge=0, le=1)
    junk_identifier: Rate = Field(0.02, ge=0, le=1)
    # households sharing one email address
    shared_household_email: Rate = Field(0.15, ge=0, le=1)
    # hard shapes for identity resolution (off in the demo world unless conf/sample.yaml sets
    # them): a first name or postcode with one typo or transposition, a record without surname
    first_name_typo: Rate = Field(0.0, ge=0, le=1)
    postcode_typo: Rate = Field(0.0, ge=0, le=1)
    missing_surname: Rate = Field(0.0, ge=0, le=1)


CustomerSource = Literal["crm", "shop_customers", "third_party"]


class MissingFields(StrictModel):
    """Customer sources that never deliver a kind of field (a partner without birth dates, a
    shop without addresses): every row leaves it empty, so identity must link such a source
    through what it does have."""

    birth_date: list[CustomerSource] = Field(default_factory=list)
    # street, postcode and town
    address: list[CustomerSource] = Field(default_factory=list)
    # email and phone (the third-party file has none in any case)
    contact: list[CustomerSource] = Field(default_factory=list)


class Defects(StrictModel):
    """Planted bad rows (reason codes of docs/sample-data.md), rate per row of a source."""

    malformed_line: Rate = Field(0.004, ge=0, le=1)
    wrong_field_count: Rate = Field(0.004, ge=0, le=1)
    missing_required: Rate = Field(0.004, ge=0, le=1)
    invalid_timestamp: Rate = Field(0.004, ge=0, le=1)
    invalid_type: Rate = Field(0.004, ge=0, le=1)
    invalid_email: Rate = Field(0.006, ge=0, le=1)
    invalid_date: Rate = Field(0.006, ge=0, le=1)
    impossible_date: Rate = Field(0.006, ge=0, le=1)
    field_too_long: Rate = Field(0.002, ge=0, le=1)
    bad_encoding: Rate = Field(0.002, ge=0, le=1)
    # events repeated with the same event_id (web and email)
    duplicate_event: Rate = Field(0.01, ge=0, le=1)
    # events of an earlier period delivered in a later increment (increments >= 1)
    late_event: Rate = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _one_defect_per_row(self) -> Defects:
        total = sum(getattr(self, name) for name in _ROW_DEFECTS)
        if total >= 0.9:
            raise ValueError(f"row defect rates sum to {total:.3f}; keep them below 0.9")
        return self


_ROW_DEFECTS = (
    "malformed_line",
    "wrong_field_count",
    "missing_required",
    "invalid_timestamp",
    "invalid_type",
    "invalid_email",
    "invalid_date",
    "impossible_date",
    "field_too_long",
    "bad_encoding",
)


class Behaviours(StrictModel):
    """Share of people planted with each segment behaviour (one behaviour per person)."""

    high_spender_recent: Rate = Field(0.03, ge=0, le=1)
    cart_abandoner: Rate = Field(0.04, ge=0, le=1)
    repeat_browser: Rate = Field(0.04, ge=0, le=1)
    churn_risk: Rate = Field(0.08, ge=0, le=1)
    unsubscribed: Rate = Field(0.03, ge=0, le=1)
    hard_bounced: Rate = Field(0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_below_one(self) -> Behaviours:
        total = sum(self.model_dump().values())
        if total > 1:
            raise ValueError(f"behaviour rates sum to {total:.3f}; they must not exceed 1")
        return self


class Increments(StrictModel):
    """Later deliveries of the same world."""

    # each increment n >= 1 covers this many days before its as_of
    days: int = Field(7, ge=4, le=10)
    # new people per increment, as a share of the initial population
    new_people: Rate = Field(0.05, ge=0, le=1)
    # CRM records re-delivered with a new email or address and a later LastModified
    crm_changes: Rate = Field(0.10, ge=0, le=1)


class SampleConfig(StrictModel):
    """``conf/sample.yaml``."""

    version: Literal[1]
    # what `lakecdp demo` generates (tests and the cluster test use a smaller world)
    demo_people: int = Field(5_000, ge=10, le=10_000_000)
    demo_seed: int = 42
    # the event period of increment 0, ending at as_of
    period_days: int = Field(180, ge=100, le=3650)
    products: int = Field(200, ge=10, le=99999)
    coverage: Coverage = Field(default_factory=Coverage)
    dirt: Dirt = Field(default_factory=Dirt)
    missing_fields: MissingFields = Field(default_factory=MissingFields)
    defects: Defects = Field(default_factory=Defects)
    behaviours: Behaviours = Field(default_factory=Behaviours)
    increments: Increments = Field(default_factory=Increments)
    # email campaigns per 7 days and the share of mailable people each one reaches
    campaigns_per_week: int = Field(1, ge=0, le=7)
    campaign_reach: Rate = Field(0.35, ge=0, le=1)


def load_sample_config(conf_dir: str | os.PathLike[str]) -> SampleConfig:
    """Load ``<conf_dir>/sample.yaml``; errors name the file and the field."""
    return load_model(Path(conf_dir) / "sample.yaml", SampleConfig)
