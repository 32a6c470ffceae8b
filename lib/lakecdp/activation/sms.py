"""The SMS destination: one text message per segment change, sent to an SMS gateway's HTTP API.

A change becomes a message only when everything below holds; what happens otherwise:

- **suppressed** (ledger status ``suppressed``, never sent): the person is suppressed through
  the identity graph like in every destination (unsubscribe, complaint, erasure, ... see
  :mod:`lakecdp.activation.suppression`), or has no SMS consent: ``sms_consent`` is its own
  consent (``silver.customer_records.sms_consent``, the most recent record of the person that
  says yes or no wins; no record saying yes = no consent), or has no phone that parses as
  E.164 (``default_region`` reads national numbers);
- **deferred** (nothing written): it is quiet hours in the person's time zone; the change
  stays pending and the first activation run after the quiet hours sends it;
- **rejected** (``activation.rejected``, tried again by later runs up to ``retry.max_runs``):
  the rendered text needs more than ``max_segments`` SMS segments.

The time zone comes from the golden record's ``country`` (ISO code or name) through
``time_zones`` (defaults: :data:`DEFAULT_TIME_ZONES`, one zone per country; a country spanning
zones takes its most populous one), else ``default_time_zone``.

The text is the personalisation template ``template`` (a ``.txt`` in ``templates_dir``), so
the segment-conditional blocks (``customer_segment``, ``in_segment('vip')``, recommendations)
that drive the email drive the SMS too. Length: GSM 03.38 7-bit text takes 160 characters in
one segment, 153 per segment when split (the extension table's ``^{}[~]|€\\`` count twice);
anything else is UCS-2: 70, then 67 UTF-16 units per segment.

Delivery goes through :class:`lakecdp.activation.webhook.WebhookClient` with the ``gateway``
settings (same hardening: secrets by env name, address policy, total deadlines, retries);
exactly once per change through the delivery ledger, each item carrying its idempotency key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from lakecdp.activation.config import ChangeType, DestinationBase, WebhookSettings, _DestinationModel
from lakecdp.activation.hashing import normalise_phone

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakecdp.activation.job import Delivery
    from lakecdp.config import Project
    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

# GSM 03.38 basic character set (one septet each) and its extension table (escape + one septet)
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

#: country (ISO 3166 alpha-2) -> IANA time zone; a country over several zones takes its most populous
DEFAULT_TIME_ZONES: dict[str, str] = {
    "GB": "Europe/London",
    "IE": "Europe/Dublin",
    "DE": "Europe/Berlin",
    "FR": "Europe/Paris",
    "ES": "Europe/Madrid",
    "IT": "Europe/Rome",
    "NL": "Europe/Amsterdam",
    "BE": "Europe/Brussels",
    "PT": "Europe/Lisbon",
    "AT": "Europe/Vienna",
    "CH": "Europe/Zurich",
    "SE": "Europe/Stockholm",
    "NO": "Europe/Oslo",
    "DK": "Europe/Copenhagen",
    "FI": "Europe/Helsinki",
    "PL": "Europe/Warsaw",
    "US": "America/New_York",
    "CA": "America/Toronto",
    "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland",
    "IN": "Asia/Kolkata",
    "JP": "Asia/Tokyo",
}
#: country names the sources write (free text in the CRM) -> ISO code
COUNTRY_NAMES: dict[str, str] = {
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "ireland": "IE",
    "deutschland": "DE",
    "germany": "DE",
    "france": "FR",
    "spain": "ES",
    "españa": "ES",
    "italy": "IT",
    "italia": "IT",
    "netherlands": "NL",
    "belgium": "BE",
    "portugal": "PT",
    "united states": "US",
    "usa": "US",
}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class QuietHours(_DestinationModel):
    """No message between ``start`` and ``end`` local time (``"21:00"`` to ``"08:00"`` wraps midnight)."""

    start: str = "21:00"
    end: str = "08:00"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"time must be HH:MM (24 h), got {value!r}")
        return value

    def contains(self, local: time) -> bool:
        start, end = _parse_clock(self.start), _parse_clock(self.end)
        if start == end:
            return False
        if start < end:
            return start <= local < end
        return local >= start or local < end


def _parse_clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _entered_only() -> list[ChangeType]:
    return ["entered"]


class SmsDestination(DestinationBase):
    """``type: sms`` (see the module doc)."""

    type: Literal["sms"]
    # the SMS gateway's HTTP API; items: idempotency_key, change_id, segment_id, customer_id,
    # to (E.164), text, encoding, sms_segments
    gateway: WebhookSettings
    # a .txt personalisation template (relative to templates_dir of conf/personalization.yaml)
    template: str
    # the campaign whose variant the template sees (conf/personalization.yaml campaigns)
    campaign: str | None = None
    # a text needing more segments than this is rejected (not truncated)
    max_segments: int = Field(default=2, ge=1, le=10)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    default_time_zone: str = "Europe/London"
    # country code (upper case) -> IANA zone; merged over DEFAULT_TIME_ZONES
    time_zones: dict[str, str] = Field(default_factory=dict)
    # region that reads national phone numbers (07700 900123) without a country code
    default_region: str = "GB"
    # demo only: `lakecdp demo` runs a local receiver and sets the gateway url's variable; other
    # runs leave the destination out while it is unset (as a webhook destination's demo_receiver)
    demo_receiver: bool = False
    # an SMS means a person joined a segment; exits and updates are not texted by default
    change_types: list[ChangeType] = Field(default_factory=_entered_only)

    @field_validator("template")
    @classmethod
    def _text_template(cls, value: str) -> str:
        if not value.endswith(".txt") or value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"):
            raise ValueError(f"template must be a .txt file under templates_dir (no '..'), got {value!r}")
        return value

    @model_validator(mode="after")
    def _zones_exist(self) -> SmsDestination:
        for where, zone in [
            ("default_time_zone", self.default_time_zone),
            *((f"time_zones.{k}", v) for k, v in self.time_zones.items()),
        ]:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{where}: unknown IANA time zone {zone!r}") from None
        return self

    def zone_for(self, country: str | None) -> ZoneInfo:
        """The customer's time zone from the golden record's ``country`` (code or name)."""
        zones = {**DEFAULT_TIME_ZONES, **{k.upper(): v for k, v in self.time_zones.items()}}
        if country:
            text = country.strip()
            code = text.upper() if len(text) == 2 else COUNTRY_NAMES.get(text.lower())
            if code in zones:
                return ZoneInfo(zones[code])
        return ZoneInfo(self.default_time_zone)

    def in_quiet_hours(self, country: str | None, now: datetime) -> bool:
        local = now.astimezone(self.zone_for(country))
        return self.quiet_hours.contains(local.time().replace(second=0, microsecond=0))

    def max_runs(self) -> int:
        return self.gateway.retry.max_runs

    def webhook_settings(self) -> WebhookSettings:
        return self.gateway

    def demo_url(self) -> str | None:
        return self.gateway.url if self.demo_receiver else None

    def check(self, project: Project, name: str) -> None:
        """The text template must exist in the personalisation templates."""
        from lakecdp.config import ConfigError
        from lakecdp.personalization.config import load_personalization
        from lakecdp.personalization.preview import templates_dir

        folder = templates_dir(project, load_personalization(project.conf_dir))
        if not (folder / self.template).is_file():
            raise ConfigError(
                f"{project.conf_dir / 'destinations' / (name + '.yaml')}: template: "
                f"{self.template!r} is not a file in {folder}"
            )

    def deliver(self, delivery: Delivery, rows: Sequence[dict[str, Any]]) -> None:
        """Consent and phone checks (suppressed), quiet hours (deferred: nothing written),
        length (rejected), then the gateway."""
        from lakecdp.activation.webhook import Finalised

        consent = sms_consents(delivery.ctx, sorted({r["customer_id"] for r in rows}))
        # texts only for the messages the gate lets through now: rendering loads every template
        # context, the step's only Spark work on the embedded engine
        due = {r["customer_id"] for r in rows if gate(self, r, consent=consent, now=delivery.now)[0] is None}
        texts = sms_texts(delivery.ctx, self, sorted(due))
        plan = plan_messages(self, rows, consent=consent, texts=texts, now=delivery.now)
        for kind, skipped in (("no_sms_consent", plan.no_consent), ("no_phone", plan.no_phone)):
            # final, like every suppression: a later consent does not resend an old change
            delivery.record(skipped, status="suppressed", attempts=0)
            delivery.count(kind, len(skipped))
        # quiet hours: nothing is written, the change stays pending for the next run
        delivery.count("deferred", len(plan.deferred))
        if plan.deferred:
            logger.info(
                "%s: %d messages deferred (quiet hours in the customer's time zone)", delivery.name, len(plan.deferred)
            )
        on_result = delivery.on_result(rows, max_runs=self.max_runs())
        if plan.too_long:
            on_result(
                Finalised(
                    rejected=[
                        (
                            {
                                "idempotency_key": r["idempotency_key"],
                                "change_id": r["change_id"],
                                "customer_id": r["customer_id"],
                            },
                            reason,
                            None,
                            0,
                        )
                        for r, reason in plan.too_long
                    ]
                )
            )
        if plan.send:
            delivery.send(self.gateway, plan.send, rows, on_result=on_result)


def sms_inputs(
    ctx: JobContext, destination: SmsDestination, customer_ids: list[str]
) -> tuple[dict[str, bool], dict[str, str]]:
    """SMS consent and rendered text per customer (the personalisation template and context)."""
    consent = sms_consents(ctx, customer_ids)
    return consent, sms_texts(ctx, destination, [c for c in customer_ids if consent.get(c) is True])


def sms_consents(ctx: JobContext, customer_ids: list[str]) -> dict[str, bool]:
    """customer_id -> SMS consent (:func:`sms_consent`; DuckDB over delta-rs on the embedded engine)."""
    from pyspark.sql import functions as F

    from lakecdp import catalog
    from lakecdp.activation.ledger import delta_store, table_exists

    store = delta_store(ctx)
    if store is not None:
        from lakecdp.activation.embedded import sms_consent_embedded

        return sms_consent_embedded(store, customer_ids)

    def optional(name: str) -> DataFrame | None:
        return ctx.tables.read(ctx.spark, name) if table_exists(ctx, name) else None

    records, id_map = optional(catalog.CUSTOMER_RECORDS.name), optional(catalog.ID_MAP.name)
    if records is None or id_map is None:
        return {}
    wanted = id_map.where(F.col("customer_id").isin(customer_ids))
    return {r["customer_id"]: r["sms_consent"] for r in sms_consent(records, wanted).collect()}


def sms_texts(ctx: JobContext, destination: SmsDestination, customer_ids: list[str]) -> dict[str, str]:
    """customer_id -> the message rendered from the destination's template and the customer's context."""
    from lakecdp.personalization.config import load_personalization
    from lakecdp.personalization.engine import TemplateEngine
    from lakecdp.personalization.preview import contexts_for, templates_dir

    if not customer_ids:
        return {}
    config = load_personalization(ctx.project.conf_dir)
    engine = TemplateEngine(
        templates_dir(ctx.project, config), budget=config.render_budget.budget(), feedback_url=config.feedback_url
    )
    contexts = contexts_for(ctx, config, customer_ids=customer_ids, campaign_id=destination.campaign)
    return {str(c["customer_id"]): message_text(engine.render(destination.template, c).text) for c in contexts}


# -- message length ----------------------------------------------------------------------
@dataclass(frozen=True)
class SmsLength:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_length(text: str) -> SmsLength:
    """Encoding and number of segments of ``text``.

    Example:
        >>> sms_length("Hello")
        SmsLength(encoding='GSM-7', units=5, segments=1)
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // multi)
    return SmsLength(encoding, units, segments)  # type: ignore[arg-type]


def message_text(rendered: str) -> str:
    """Template output as an SMS: lines stripped, blank lines dropped (templates keep
    their blocks on separate lines; an SMS has no room for empty ones)."""
    return "\n".join(line.strip() for line in rendered.splitlines() if line.strip())


# -- consent ------------------------------------------------------------------------------
def sms_consent(records: DataFrame, id_map: DataFrame) -> DataFrame:
    """``customer_id, sms_consent``: the most recent record of each person that says yes or no.

    Through ``identity.id_map``, so a consent given under any linked record counts (and a
    later "no" under any of them withdraws it).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if "sms_consent" not in records.columns:
        return id_map.sparkSession.createDataFrame([], "customer_id string, sms_consent boolean")
    latest = Window.partitionBy("customer_id").orderBy(F.col("updated_at").desc_nulls_last(), "record_id")
    return (
        records.where(F.col("sms_consent").isNotNull())
        .select("record_id", "sms_consent", "updated_at")
        .join(id_map.select("record_id", "customer_id"), "record_id")
        .withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
        .select("customer_id", "sms_consent")
    )


# -- planning -----------------------------------------------------------------------------
#: why a change is not texted now: suppressed (no consent, no phone) or deferred (quiet hours)
Held = Literal["no_consent", "no_phone", "deferred"]


def gate(
    destination: SmsDestination, row: Mapping[str, Any], *, consent: Mapping[str, bool], now: datetime
) -> tuple[Held | None, str | None]:
    """The send gate of one change, before its text: SMS consent, then a phone that parses as
    E.164, then the hour in the customer's time zone. No IO.

    Returns:
        ``(why not, None)`` when the change is not texted now, else ``(None, the E.164 phone)``.

    Example:
        >>> gate(destination, {"customer_id": "c1", "phone": "07700 900123", "country": "GB"},
        ...      consent={"c1": True}, now=datetime(2026, 11, 1, 12, tzinfo=timezone.utc))
        (None, '+447700900123')
    """
    if consent.get(row["customer_id"]) is not True:
        return "no_consent", None
    phone = normalise_phone(row.get("phone"), default_region=destination.default_region)
    if phone is None:
        return "no_phone", None
    if destination.in_quiet_hours(row.get("country"), now):
        return "deferred", None
    return None, phone


@dataclass
class SmsPlan:
    """What one run does with a destination's pending, unsuppressed changes."""

    send: list[dict[str, Any]]  # gateway items
    no_consent: list[Mapping[str, Any]]  # rows: suppressed, no SMS consent
    no_phone: list[Mapping[str, Any]]  # rows: suppressed, no E.164 phone
    deferred: list[Mapping[str, Any]]  # rows: quiet hours, stay pending
    too_long: list[tuple[Mapping[str, Any], str]]  # rows + reason: rejected


def plan_messages(
    destination: SmsDestination,
    rows: Sequence[Mapping[str, Any]],
    *,
    consent: Mapping[str, bool],
    texts: Mapping[str, str],
    now: datetime,
) -> SmsPlan:
    """Decide each change's fate (see the module doc). No IO.

    Args:
        rows: pending changes with the profile's ``phone`` and ``country``.
        consent: customer_id -> sms_consent (missing = no consent).
        texts: customer_id -> rendered message text.
        now: the send time (aware).
    """
    plan = SmsPlan([], [], [], [], [])
    held_rows = {"no_consent": plan.no_consent, "no_phone": plan.no_phone, "deferred": plan.deferred}
    for row in rows:
        customer_id = row["customer_id"]
        held, phone = gate(destination, row, consent=consent, now=now)
        if held is not None:
            held_rows[held].append(row)
            continue
        assert phone is not None  # the gate gives a phone exactly when nothing holds the change
        text = texts[customer_id]
        length = sms_length(text)
        if length.segments > destination.max_segments:
            plan.too_long.append(
                (
                    row,
                    f"message needs {length.segments} {length.encoding} segments "
                    f"({length.units} units), max_segments is {destination.max_segments}",
                )
            )
            continue
        plan.send.append(
            {
                "idempotency_key": row["idempotency_key"],
                "change_id": row["change_id"],
                "segment_id": row["segment_id"],
                "customer_id": customer_id,
                "to": phone,
                "text": text,
                "encoding": length.encoding,
                "sms_segments": length.segments,
            }
        )
    return plan


__all__ = [
    "DEFAULT_TIME_ZONES",
    "QuietHours",
    "SmsDestination",
    "SmsLength",
    "SmsPlan",
    "gate",
    "message_text",
    "plan_messages",
    "sms_consent",
    "sms_consents",
    "sms_inputs",
    "sms_texts",
    "sms_length",
]
