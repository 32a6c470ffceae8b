"""Destination config: one ``conf/destinations/<name>.yaml`` per destination.

Destination types, told apart by ``type`` (:data:`DESTINATION_TYPES`; a new type is one module
and one line there, docs/extending.md#adding-a-destination-type):

- ``file``: CSV / JSON lines / Parquet exports of segment changes, one file per segment and
  segment run, under the warehouse (``exports/<destination>/<segment_id>/<run>.<ext>``).
- ``webhook``: a REST endpoint taking batches; the body is rendered from a Jinja2 template.
  Secrets never sit in YAML: the file names the environment variable that holds them. A
  credential-like header (``Authorization``, ``X-Api-Key``, anything with key/token/secret/
  auth/password/signature/cookie in its name), userinfo (``user:pass@``) and credential-like
  query parameters in a URL are refused unless their value is a ``${VAR}`` reference.
  Loopback and private addresses are refused unless ``allow_private_network: true``;
  link-local addresses (cloud metadata, ``169.254.169.254``) always.
- ``hashed_audience``: SHA-256 of the normalised email and E.164 phone, sent to a webhook
  or written to a file, as ad platforms (customer match / custom audiences) take them.
- ``sms``: one text message per change to an SMS gateway's HTTP API (``gateway:`` takes the
  webhook settings and their rules): SMS consent, quiet hours in the customer's time zone,
  GSM-7 / UCS-2 length check (:mod:`lakecdp.activation.sms`).

Example (``conf/destinations/crm_webhook.yaml``)::

    version: 1
    type: webhook
    url: https://hooks.example.com/cdp
    auth: {type: bearer, token_env: CRM_WEBHOOK_TOKEN}
    batch_size: 100
    segments: [vip]
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_origin
from urllib.parse import parse_qsl, urlsplit

from jinja2 import TemplateSyntaxError
from pydantic import (
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from lakecdp.config import ConfigError, StrictModel, load_models

if TYPE_CHECKING:
    from lakecdp.activation.job import Delivery
    from lakecdp.config import Project

ChangeType = Literal["entered", "exited", "updated", "rekeyed"]
#: the segment change types, each delivered by default (an SMS destination: ``entered`` only)
CHANGE_TYPES: tuple[ChangeType, ...] = ("entered", "exited", "updated", "rekeyed")
# the gold.customer_profile columns a destination may put in its payload
PROFILE_FIELDS = frozenset(
    {"email", "first_name", "last_name", "phone", "postcode", "city", "country", "date_of_birth"}
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEMO_RECEIVER_ENV = "LAKECDP_DEMO_RECEIVER_URL"
_SEGMENT_ID = re.compile(r"^[A-Za-z0-9_\-:.]+$")
# RFC 9110 field-name: a token
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SECRET_NAME = re.compile(
    r"authoriz|auth|key|token|secret|passw|pwd|signature|\bsig\b|cookie|session|credential", re.IGNORECASE
)
# a secret-bearing value written as an env reference, optionally after a scheme word ("Bearer ${T}")
_ENV_ONLY_VALUE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]* )?\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_INLINE_CREDENTIAL = re.compile(r"^\s*(bearer|basic|token|digest)\s+(?!\$\{)", re.IGNORECASE)
# addresses no destination may target: cloud metadata endpoints (AWS/GCP/Azure, AWS IPv6, Alibaba)
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def address_refusal(address: str, *, allow_private_network: bool) -> str | None:
    """Why a webhook may not connect to ``address`` (an IP), or None when it may.

    Public addresses are fine; loopback, private (RFC 1918, ULA) and shared (100.64/10)
    ones only with ``allow_private_network``; link-local (169.254/16, fe80::/10, where cloud
    metadata lives), metadata, multicast, unspecified and reserved ones never.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address (never allowed)"
    if ip.is_link_local:
        return f"{ip} is link-local (never allowed: cloud metadata lives there)"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return f"{ip} is not a unicast host address (never allowed)"
    if ip.is_global:
        return None
    if allow_private_network:
        return None
    kind = "loopback" if ip.is_loopback else "private"
    return f"{ip} is a {kind} address (allowed only with allow_private_network: true)"


def _check_url_secrets(value: str) -> None:
    """Refuse credentials written into a URL (userinfo, token-like query parameters)."""
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise ValueError(
            "url holds credentials (user:password@host); name them by env variable "
            "in auth: {type: basic, username_env: ..., password_env: ...}"
        )
    for name, param in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_NAME.search(name) and not _ENV_ONLY_VALUE.match(param):
            raise ValueError(
                f"url query parameter {name!r} looks like a credential written inline; "
                f"write it as {name}=${{ENV_VARIABLE}} or use auth:"
            )


class _DestinationModel(StrictModel):
    # a refused value may be a secret: validation errors never repeat the input
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RetryPolicy(_DestinationModel):
    """Exponential backoff with full jitter: sleep ~ U(0, min(max_delay, base * 2**n))."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    base_delay_seconds: float = Field(default=0.5, ge=0)
    max_delay_seconds: float = Field(default=30.0, ge=0)
    # a 429's Retry-After is honoured up to this many seconds; beyond it the batch waits this long
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    # activation runs that may try one change: a change the destination rejected or that was
    # dead-lettered is sent again by the next run, until this many runs failed with it; the
    # last failure is final (activation.dead_letter) and the change is not sent again
    max_runs: int = Field(default=3, ge=1, le=100)


class Auth(_DestinationModel):
    """Credentials come from the environment variable named here, never from the YAML."""

    type: Literal["bearer", "basic", "header"]
    token_env: str | None = None  # bearer / header
    username_env: str | None = None  # basic
    password_env: str | None = None  # basic
    header: str = "X-Api-Key"  # header

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"header name {value!r} is not a valid HTTP header name (CR/LF, spaces, ':')")
        return value

    @model_validator(mode="after")
    def _needs_variables(self) -> Auth:
        if self.type in ("bearer", "header") and not self.token_env:
            raise ValueError(f"auth type {self.type!r} needs token_env")
        if self.type == "basic" and not (self.username_env and self.password_env):
            raise ValueError("auth type 'basic' needs username_env and password_env")
        return self


class WebhookSettings(_DestinationModel):
    # may reference environment variables as ${NAME} (e.g. a port chosen at run time)
    url: str
    method: Literal["POST", "PUT"] = "POST"
    auth: Auth | None = None
    # extra headers; a credential-like one must be an env reference: {X-Api-Key: "${CRM_KEY}"}
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # requests per second; None = unlimited
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    # total deadline of one request (connect, send, whole answer), not a per-read timeout
    timeout_seconds: float = Field(default=10.0, gt=0)
    # the client reads at most this much of an answer; a 2xx answer beyond it is a failure
    max_response_bytes: int = Field(default=1_048_576, ge=1_024)
    # loopback and private addresses (a receiver on this machine or the LAN) only when true
    allow_private_network: bool = False
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    content_type: str = "application/json"
    # Jinja2 (sandboxed) template of the request body; sees ``items``, ``destination``, ``run_id``
    payload_template: str = '{"items": {{ items | tojson }}}'

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "${")):
            scheme = value.split(":", 1)[0] if ":" in value else value[:10]
            raise ValueError(f"url must start with http:// or https:// (or be ${{VAR}}), got scheme {scheme!r}")
        if _has_control(value) or " " in value:
            raise ValueError("url contains spaces or control characters (CR/LF)")
        _check_url_secrets(value)
        return value

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name (CR/LF, spaces, ':')")
            if _has_control(header_value):
                raise ValueError(f"header {name!r}: value contains control characters (CR/LF)")
            if (_SECRET_NAME.search(name) or _INLINE_CREDENTIAL.match(header_value)) and not _ENV_ONLY_VALUE.match(
                header_value
            ):
                raise ValueError(
                    f"header {name!r} holds an inline secret; secrets are named by environment "
                    f'variable only: write {name}: "${{ENV_VARIABLE}}" (or use auth:)'
                )
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if _has_control(value):
            raise ValueError("content_type contains control characters (CR/LF)")
        return value

    @field_validator("payload_template")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        from lakecdp.personalization.sandbox import BudgetedSandbox

        try:
            BudgetedSandbox().parse(value)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error at line {exc.lineno}: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _literal_address(self) -> WebhookSettings:
        """A URL whose host is an IP literal is checked against the address policy now."""
        if "${" in self.url:
            return self  # checked when the client resolves it
        host = urlsplit(self.url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return self
        refusal = address_refusal(host, allow_private_network=self.allow_private_network)
        if refusal:
            raise ValueError(f"url: {refusal}")
        return self


class DestinationBase(_DestinationModel):
    """What every destination type has; a type adds its settings and how it delivers.

    A subclass declares ``type: Literal["<name>"]`` and implements :meth:`deliver`.
    """

    version: Literal[1]
    # the type's name (a Literal in each subclass): picks the model when a file is loaded
    type: str
    # segment ids to deliver; empty = every segment
    segments: list[str] = Field(default_factory=list)
    # change types to deliver
    change_types: list[ChangeType] = Field(default_factory=lambda: list(CHANGE_TYPES))
    enabled: bool = True

    @field_validator("segments")
    @classmethod
    def _segment_ids(cls, value: list[str]) -> list[str]:
        for segment in value:
            if not _SEGMENT_ID.match(segment):
                raise ValueError(f"invalid segment id {segment!r}")
        return value

    def max_runs(self) -> int:
        """How many activation runs may try one change (``retry.max_runs``; 1 for a file)."""
        return 1

    def webhook_settings(self) -> WebhookSettings | None:
        """The HTTP endpoint it sends through, if any (``validate-destinations --resolve``)."""
        return None

    def demo_url(self) -> str | None:
        """The url of a demo destination (``demo_receiver: true``): ``lakecdp demo`` runs the local
        receiver and sets the variable it names; other runs leave the destination out while it is
        unset. None for any other destination."""
        return None

    def check(self, project: Project, name: str) -> None:
        """Checks that need the project (files it names exist); ``validate-destinations`` runs them.

        Raises:
            ConfigError: naming the destination's file and field.
        """

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        """Deliver this run's pending, unsuppressed rows (one per change, with the profile
        fields and ``idempotency_key``), recording each outcome through ``delivery``."""
        raise NotImplementedError(f"destination type {self.type!r} does not say how it delivers")


class _WithFields(DestinationBase):
    # profile columns added to each item (besides the change's own columns)
    fields: list[str] = Field(default_factory=lambda: ["email", "first_name"])

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - PROFILE_FIELDS)
        if unknown:
            raise ValueError(f"unknown profile fields {unknown}; allowed: {sorted(PROFILE_FIELDS)}")
        return value


def _export_subfolder(value: str | None) -> str | None:
    if value is None:
        return value
    if (
        PurePosixPath(value).is_absolute()
        or PureWindowsPath(value).is_absolute()
        or value.startswith("~")
        or PureWindowsPath(value).drive
    ):
        raise ValueError(f"path {value!r} is absolute; give a folder under <warehouse>/exports")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts or not parts or _has_control(value):
        raise ValueError(f"path {value!r} leaves <warehouse>/exports (no '..'); give a folder under it")
    return value


class FileDestination(_WithFields):
    type: Literal["file"]
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    # folder under <warehouse>/exports (relative, no '..'); default: the destination name
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _under_exports(cls, value: str | None) -> str | None:
        return _export_subfolder(value)

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        delivery.write_files(rows, delivery.payload_items(rows, self.fields), path=self.path, file_format=self.format)


class WebhookDestination(_WithFields, WebhookSettings):
    type: Literal["webhook"]
    # demo only: `lakecdp demo` runs a local receiver (lakecdp.demo) and sets the url's variable
    # (DEMO_RECEIVER_ENV); other runs leave the destination out while it is unset, changes wait
    demo_receiver: bool = False

    def max_runs(self) -> int:
        return self.retry.max_runs

    def webhook_settings(self) -> WebhookSettings:
        return self

    def demo_url(self) -> str | None:
        return self.url if self.demo_receiver else None

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        delivery.send(self, delivery.payload_items(rows, self.fields), rows, max_runs=self.max_runs())


class HashedAudienceDestination(DestinationBase):
    type: Literal["hashed_audience"]
    # region used to read phone numbers that are not already E.164
    default_region: str = "GB"
    # Google Customer Match takes "+4477..."; Meta takes digits only ("4477...")
    phone_format: Literal["e164", "digits"] = "e164"
    # deliver to a webhook (an ad platform's API) or, without one, to a CSV file
    webhook: WebhookSettings | None = None
    # without a webhook: folder under <warehouse>/exports (relative, no '..'); default: the name
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _under_exports(cls, value: str | None) -> str | None:
        return _export_subfolder(value)

    def max_runs(self) -> int:
        return self.webhook.retry.max_runs if self.webhook is not None else 1

    def webhook_settings(self) -> WebhookSettings | None:
        return self.webhook

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        """What an ad platform takes: the change and SHA-256 of the normalised email and phone."""
        from lakecdp.activation.hashing import hash_email, hash_phone

        return {
            "idempotency_key": row["idempotency_key"],
            "change_id": row["change_id"],
            "segment_id": row["segment_id"],
            "member_key": row.get("member_key"),
            "change_type": row["change_type"],
            "changed_at": row.get("changed_at"),
            "email_sha256": hash_email(row.get("email")),
            "phone_sha256": hash_phone(
                row.get("phone"), default_region=self.default_region, phone_format=self.phone_format
            ),
        }

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        items = [self.item(r) for r in rows]
        if self.webhook is not None:
            delivery.send(self.webhook, items, rows, max_runs=self.max_runs())
        else:
            delivery.write_files(rows, items, path=self.path, file_format="csv")


# a destination type is one module (importing the bases above) plus its line here
from lakecdp.activation.sms import SmsDestination  # noqa: E402


def type_name(destination_type: type[DestinationBase]) -> str:
    """The ``type:`` value of a destination model (its ``Literal``)."""
    annotation = destination_type.model_fields["type"].annotation
    values: tuple[object, ...] = getattr(annotation, "__args__", ())
    if get_origin(annotation) is not Literal or len(values) != 1:
        raise TypeError(f"{destination_type.__name__}.type must be one Literal string, got {annotation!r}")
    return str(values[0])


#: ``type:`` -> destination model
DESTINATION_TYPES: dict[str, type[DestinationBase]] = {
    type_name(kind): kind for kind in (FileDestination, WebhookDestination, HashedAudienceDestination, SmsDestination)
}

# any destination (annotations); which type it is, DESTINATION_TYPES decides when a file is loaded
AnyDestination = DestinationBase


def register_destination_type(destination_type: type[DestinationBase]) -> type[DestinationBase]:
    """Add a destination type from outside this package (a plugin); usable as a class decorator.

    Raises:
        ValueError: another model already has the ``type`` name.
    """
    name = type_name(destination_type)
    known = DESTINATION_TYPES.get(name)
    if known is not None and known is not destination_type:
        raise ValueError(f"destination type {name!r} is taken by {known.__module__}.{known.__name__}")
    DESTINATION_TYPES[name] = destination_type
    return destination_type


@lru_cache(maxsize=8)
def _union_of(types: tuple[type[DestinationBase], ...]) -> TypeAdapter[DestinationBase]:
    union: Any = Annotated[Union[types], Field(discriminator="type")]  # built from the map at run time
    return TypeAdapter(union)


def max_delivery_runs(destination: DestinationBase) -> int:
    """How many runs may try one change of ``destination`` (``retry.max_runs``; 1 for files)."""
    return destination.max_runs()


class DestinationFile(RootModel[DestinationBase]):
    """One destination YAML file: ``type`` picks the model among :data:`DESTINATION_TYPES`
    (a discriminated union; an error is located under the type: ``webhook.url: ...``)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    @model_validator(mode="wrap")
    @classmethod
    def _by_type(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> DestinationFile:
        if isinstance(data, DestinationBase):
            return handler(data)
        return handler(_union_of(tuple(DESTINATION_TYPES.values())).validate_python(data))


def expand_env(value: str, *, what: str) -> str:
    """Replace ``${NAME}`` with the environment variable; a missing one is a ConfigError."""

    def _sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(_sub, value)


def env_references(value: str) -> list[str]:
    """The environment variable names ``value`` references as ``${NAME}``."""
    return _ENV_REF.findall(value)


def load_destinations(conf_dir: str | os.PathLike[str]) -> dict[str, AnyDestination]:
    """Every ``<conf_dir>/destinations/*.yaml``, keyed by file stem (the destination name).

    A missing folder means no destinations.
    """
    folder = Path(conf_dir) / "destinations"
    if not folder.is_dir():
        return {}
    return {name: model.root for name, model in load_models(folder, DestinationFile).items()}
