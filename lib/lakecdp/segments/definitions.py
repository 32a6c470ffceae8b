"""Segment definitions: ``conf/segments/<segment_id>.yaml``, one segment per file.

Three kinds, exactly one per file:

- ``condition``: a Spark SQL boolean over the ``customers`` view (profile joined with
  features, plus the run's ``as_of`` as a column), e.g.
  ``last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500``
  (``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()`` are the run's ``as_of``);
- ``query``: a SELECT over ``customers``/``profile``/``features``/``events`` returning
  ``customer_id`` (and optionally ``member_key``);
- ``event``: an event-triggered rule compiled to DataFrame code (types, minimum count,
  window, value/product filters, absence conditions, one membership per product when
  ``per_product``).

Every definition is checked when loaded: unknown keys, bad durations, SQL the sqlglot guard
refuses (with line/column), exclusions naming unknown segments, exclusion cycles. Before
any segment SQL runs, the plan check (:mod:`lakecdp.segments.plan_guard`) checks it again
on Spark's own plan; ``limits`` bound each segment's time and rows.

Example:
    >>> segments = load_segments("conf/segments")
    >>> segments["vip"].kind
    'event'
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from lakecdp.config import ConfigError, StrictModel, load_models
from lakecdp.segments.guard import GuardedSql, SqlRefused, check_condition, check_query

SEGMENT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(m|h|d)\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

EventType = Literal[
    "page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout", "purchase",
    "login", "email_send", "email_open", "email_click", "email_bounce", "email_unsubscribe",
    "email_complaint",
]


def parse_duration(value: object) -> timedelta:
    """``"30m"``, ``"48h"``, ``"7d"`` (or a timedelta) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION_RE.match(str(value))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"duration must look like '30m', '48h' or '7d' (> 0), got {value!r}")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_CRON_FIELD_RE = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


class Schedule(StrictModel):
    """How often the segment is refreshed (used by the job bundle): minutes or a cron string."""

    every_minutes: int | None = Field(default=None, ge=1)
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
            raise ValueError(f"cron must have 5 fields (min hour day month weekday), got {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.every_minutes is None) == (self.cron is None):
            raise ValueError("give exactly one of every_minutes or cron")
        return self


def _cron_field_matches(field: str, value: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            low, high = 0, 10**6
        elif "-" in base:
            low, high = (int(x) for x in base.split("-"))
        else:
            low = high = int(base)
            if step:
                high = 10**6
        if low <= value <= high and (value - low) % int(step or 1) == 0:
            return True
    return False


def cron_matches(cron: str, moment: datetime) -> bool:
    """Whether a 5-field cron string fires at ``moment`` (minute precision; weekday 0 = Sunday)."""
    minute, hour, day, month, weekday = cron.split()
    return (
        _cron_field_matches(minute, moment.minute)
        and _cron_field_matches(hour, moment.hour)
        and _cron_field_matches(day, moment.day)
        and _cron_field_matches(month, moment.month)
        and _cron_field_matches(weekday, (moment.weekday() + 1) % 7)
    )


def is_due(schedule: Schedule, *, last_run_at: datetime | None, now: datetime) -> bool:
    """Whether a segment with ``schedule`` should be refreshed at ``now`` (for the job bundle).

    Never run -> due. ``every_minutes`` -> that long since the last run. ``cron`` -> a
    firing time lies in (last_run_at, now]; gaps over 31 days count as due.
    """
    if last_run_at is None:
        return True
    if schedule.every_minutes is not None:
        return now - last_run_at >= timedelta(minutes=schedule.every_minutes)
    if now - last_run_at > timedelta(days=31):
        return True
    assert schedule.cron is not None
    moment = last_run_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment <= now:
        if cron_matches(schedule.cron, moment):
            return True
        moment += timedelta(minutes=1)
    return False


class Absence(StrictModel):
    """"...and made no <event_types>": within a window or since the last triggering event."""

    event_types: list[EventType] = Field(min_length=1)
    # default: the rule's own window
    within: Duration | None = None
    # only events after the customer's last triggering event count (cart abandonment)
    since_last_trigger: bool = False


class EventRule(StrictModel):
    """At least ``min_count`` events of ``event_types`` within ``within`` before as_of."""

    event_types: list[EventType] = Field(min_length=1)
    min_count: int = Field(default=1, ge=1)
    within: Duration
    min_value: float | None = None
    product_ids: list[str] | None = None
    categories: list[str] | None = None
    # parameterised segment: one membership per customer and product (member_key = product_id)
    per_product: bool = False
    absent: list[Absence] = Field(default_factory=list)


# Per-segment budgets: defaults, and the most a definition may ask for (segment authors are
# not trusted with unbounded work; an engineer changes these here, in reviewed code).
DEFAULT_MAX_SECONDS = 300
DEFAULT_MAX_ROWS = 10_000_000
CEILING_MAX_SECONDS = 3600
CEILING_MAX_ROWS = 100_000_000


class SegmentLimits(StrictModel):
    """How long one segment's evaluation may run and how many rows it may produce."""

    max_seconds: float = Field(default=DEFAULT_MAX_SECONDS, gt=0, le=CEILING_MAX_SECONDS)
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1, le=CEILING_MAX_ROWS)


class SegmentDefinition(StrictModel):
    """One ``conf/segments/<id>.yaml``."""

    version: Literal[1]
    id: str
    description: str = ""
    condition: str | None = None
    query: str | None = None
    event: EventRule | None = None
    # leave after this many days without any activity (events or features.last_activity_at)
    expire_after_days: int | None = Field(default=None, ge=1)
    # not in these segments (evaluated after them)
    exclude: list[str] = Field(default_factory=list)
    # exclusive group: a customer stays only in the group's highest-priority segment
    group: str | None = None
    priority: int = 0
    schedule: Schedule
    # hold activation of this run's changes when the size moves by more than this share
    hold_if_change_exceeds: float | None = Field(default=None, gt=0)
    # emit 'updated' changes when a member's deciding values change
    emit_updates: bool = False
    # time and row budget of this segment's evaluation (defaults above)
    limits: SegmentLimits = Field(default_factory=SegmentLimits)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not SEGMENT_ID_RE.match(value):
            raise ValueError(f"segment id must match {SEGMENT_ID_RE.pattern}, got {value!r}")
        return value

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_condition(value)
            except SqlRefused as exc:
                raise ValueError(f"SQL refused at {exc}") from None
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_query(value)
            except SqlRefused as exc:
                raise ValueError(f"SQL refused at {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SegmentDefinition:
        given = [k for k in ("condition", "query", "event") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of condition, query or event (got {given or 'none'})")
        if self.id in self.exclude:
            raise ValueError(f"segment {self.id!r} cannot exclude itself")
        return self

    @property
    def kind(self) -> str:
        return "event" if self.event is not None else "query" if self.query is not None else "condition"

    @property
    def guarded(self) -> GuardedSql | None:
        if self.condition is not None:
            return check_condition(self.condition)
        if self.query is not None:
            return check_query(self.query)
        return None

    @property
    def rule(self) -> str:
        """Human-readable rule, stored in every reason JSON."""
        if self.condition is not None:
            return self.condition
        if self.query is not None:
            return self.query
        rule = self.event
        assert rule is not None
        text = f"{'|'.join(rule.event_types)} >= {rule.min_count} within {format_duration(rule.within)}"
        if rule.min_value is not None:
            text += f" with value >= {rule.min_value:g}"
        if rule.product_ids:
            text += f" on products {','.join(rule.product_ids)}"
        if rule.categories:
            text += f" in categories {','.join(rule.categories)}"
        if rule.per_product:
            text += " per product"
        for absence in rule.absent:
            when = (
                "since last trigger" if absence.since_last_trigger
                else f"within {format_duration(absence.within or rule.within)}"
            )
            text += f"; no {'|'.join(absence.event_types)} {when}"
        return text


def exclusion_order(segments: dict[str, SegmentDefinition]) -> list[list[str]]:
    """Segment ids in levels: each level depends (by ``exclude``) only on earlier levels.

    Raises:
        ConfigError: an exclusion cycle.
    """
    remaining = {sid: set(d.exclude) for sid, d in segments.items()}
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        level = sorted(sid for sid, deps in remaining.items() if deps <= done)
        if not level:
            raise ConfigError(f"exclusion cycle between segments {sorted(remaining)}")
        levels.append(level)
        done.update(level)
        for sid in level:
            del remaining[sid]
    return levels


def validate_segments(segments: dict[str, SegmentDefinition], *, source: str) -> None:
    """Checks across definitions: unique ids, known exclusions, no cycles."""
    seen: dict[str, str] = {}
    for name, definition in segments.items():
        if definition.id in seen:
            raise ConfigError(f"{source}/{name}.yaml: id: {definition.id!r} also used in {seen[definition.id]}.yaml")
        seen[definition.id] = name
    by_id = {d.id: d for d in segments.values()}
    for name, definition in segments.items():
        for index, other in enumerate(definition.exclude):
            if other not in by_id:
                raise ConfigError(
                    f"{source}/{name}.yaml: exclude[{index}]: unknown segment {other!r}"
                )
    try:
        exclusion_order(by_id)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_segments(folder: str | os.PathLike[str]) -> dict[str, SegmentDefinition]:
    """Load and validate every segment in ``folder``, keyed by segment id (sorted).

    Raises:
        ConfigError: naming the file and field (SQL errors with line and column).
    """
    loaded = load_models(folder, SegmentDefinition)
    for stem, definition in loaded.items():
        if definition.id != stem:
            raise ConfigError(
                f"{Path(folder) / (stem + '.yaml')}: id: {definition.id!r} must equal the file name {stem!r}"
            )
    validate_segments(loaded, source=str(folder))
    return {d.id: d for d in sorted(loaded.values(), key=lambda d: d.id)}
