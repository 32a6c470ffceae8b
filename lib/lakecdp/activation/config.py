"""Destination config: one ``conf/destinations/<name>.yaml`` per destination.

Three kinds, told apart by ``type``:

- ``file``: CSV / JSON lines / Parquet exports of segment changes, one file per segment and
  segment run, under the warehouse (``exports/<destination>/<segment_id>/<run>.<ext>``).
- ``webhook``: a REST endpoint taking batches; the body is rendered from a Jinja2 template.
  Secrets never sit in YAML: the file names the environment variable that holds them.
- ``hashed_audience``: SHA-256 of the normalised email and E.164 phone, sent to a webhook
  or written to a file, as ad platforms (customer match / custom audiences) take them.

Example (``conf/destinations/crm_webhook.yaml``)::

    version: 1
    type: webhook
    url: https://hooks.example.com/cdp
    auth: {type: bearer, token_env: CRM_WEBHOOK_TOKEN}
    batch_size: 100
    segments: [vip]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, RootModel, field_validator, model_validator

from lakecdp.config import ConfigError, StrictModel, load_models

# the gold.customer_profile columns a destination may put in its payload
PROFILE_FIELDS = frozenset(
    {"email", "first_name", "last_name", "phone", "postcode", "city", "country", "date_of_birth"}
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEMO_RECEIVER_ENV = "LAKECDP_DEMO_RECEIVER_URL"
_SEGMENT_ID = re.compile(r"^[A-Za-z0-9_\-:.]+$")


class RetryPolicy(StrictModel):
    """Exponential backoff with full jitter: sleep ~ U(0, min(max_delay, base * 2**n))."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    base_delay_seconds: float = Field(default=0.5, ge=0)
    max_delay_seconds: float = Field(default=30.0, ge=0)
    # a 429's Retry-After is honoured up to this many seconds; beyond it the batch waits this long
    max_retry_after_seconds: float = Field(default=120.0, ge=0)


class Auth(StrictModel):
    """Credentials come from the environment variable named here, never from the YAML."""

    type: Literal["bearer", "basic", "header"]
    token_env: str | None = None  # bearer / header
    username_env: str | None = None  # basic
    password_env: str | None = None  # basic
    header: str = "X-Api-Key"  # header

    @model_validator(mode="after")
    def _needs_variables(self) -> Auth:
        if self.type in ("bearer", "header") and not self.token_env:
            raise ValueError(f"auth type {self.type!r} needs token_env")
        if self.type == "basic" and not (self.username_env and self.password_env):
            raise ValueError("auth type 'basic' needs username_env and password_env")
        return self


class WebhookSettings(StrictModel):
    # may reference environment variables as ${NAME} (e.g. a port chosen at run time)
    url: str
    method: Literal["POST", "PUT"] = "POST"
    auth: Auth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # requests per second; None = unlimited
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    content_type: str = "application/json"
    # Jinja2 (sandboxed) template of the request body; sees ``items``, ``destination``, ``run_id``
    payload_template: str = '{"items": {{ items | tojson }}}'

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "${")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


class _Common(StrictModel):
    version: Literal[1]
    # segment ids to deliver; empty = every segment
    segments: list[str] = Field(default_factory=list)
    # change types to deliver
    change_types: list[Literal["entered", "exited", "updated", "rekeyed"]] = Field(
        default_factory=lambda: ["entered", "exited", "updated", "rekeyed"]
    )
    enabled: bool = True

    @field_validator("segments")
    @classmethod
    def _segment_ids(cls, value: list[str]) -> list[str]:
        for segment in value:
            if not _SEGMENT_ID.match(segment):
                raise ValueError(f"invalid segment id {segment!r}")
        return value


class _WithFields(_Common):
    # profile columns added to each item (besides the change's own columns)
    fields: list[str] = Field(default_factory=lambda: ["email", "first_name"])

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - PROFILE_FIELDS)
        if unknown:
            raise ValueError(f"unknown profile fields {unknown}; allowed: {sorted(PROFILE_FIELDS)}")
        return value


class FileDestination(_WithFields):
    type: Literal["file"]
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    # folder under the warehouse (relative) or absolute; default exports/<destination name>
    path: str | None = None


class WebhookDestination(_WithFields, WebhookSettings):
    type: Literal["webhook"]
    # demo only: when the url's environment variable is unset, the job starts a local receiver
    # (lakecdp.activation.receiver) for the run and points DEMO_RECEIVER_ENV at it
    demo_receiver: bool = False


class HashedAudienceDestination(_Common):
    type: Literal["hashed_audience"]
    # region used to read phone numbers that are not already E.164
    default_region: str = "GB"
    # Google Customer Match takes "+4477..."; Meta takes digits only ("4477...")
    phone_format: Literal["e164", "digits"] = "e164"
    # deliver to a webhook (an ad platform's API) or, without one, to a CSV file
    webhook: WebhookSettings | None = None
    path: str | None = None


AnyDestination = Annotated[
    Union[FileDestination, WebhookDestination, HashedAudienceDestination],
    Field(discriminator="type"),
]


class DestinationFile(RootModel[AnyDestination]):
    """One destination YAML file (``type`` picks the kind)."""


def expand_env(value: str, *, what: str) -> str:
    """Replace ``${NAME}`` with the environment variable; a missing one is a ConfigError."""

    def _sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(_sub, value)


def load_destinations(conf_dir: str | os.PathLike[str]) -> dict[str, AnyDestination]:
    """Every ``<conf_dir>/destinations/*.yaml``, keyed by file stem (the destination name).

    A missing folder means no destinations.
    """
    folder = Path(conf_dir) / "destinations"
    if not folder.is_dir():
        return {}
    return {name: model.root for name, model in load_models(folder, DestinationFile).items()}
