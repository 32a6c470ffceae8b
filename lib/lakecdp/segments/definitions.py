"""Segment definitions: ``conf/segments/<segment_id>.yaml``, one segment per file.

A definition holds its common settings (schedule, exclusions, group, limits ...) and exactly
one *kind key*; the kind's model (:mod:`lakecdp.segments.kinds`) validates the value under it.
The built-in kinds:

- ``condition``: a Spark SQL boolean over the ``customers`` view (profile joined with
  features, plus the run's ``as_of`` as a column), e.g.
  ``last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500``
  (``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` / ``now()`` are the run's ``as_of``);
- ``query``: a SELECT over ``customers``/``profile``/``features``/``events`` returning
  ``customer_id`` (and optionally ``member_key``);
- ``event``: an event-triggered rule compiled to DataFrame code on Spark and to one SQL
  query on the embedded engine (types, minimum count, window, value/product filters, absence
  conditions, one membership per product when ``per_product``).

A new kind is one module and one line in ``SEGMENT_KINDS`` (docs/extending.md).

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
from typing import Any, Literal

from pydantic import Field, InstanceOf, ValidationError, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic_core import InitErrorDetails

from lakecdp.config import ConfigError, StrictModel, load_models
from lakecdp.segments.guard import GuardedSql
from lakecdp.segments.kinds import (  # noqa: F401 - re-exported: definitions are where people look
    SEGMENT_KINDS,
    Absence,
    Duration,
    EventRule,
    EventType,
    SegmentKind,
    format_duration,
    parse_duration,
)

SEGMENT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
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


def _choices(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} or {keys[-1]}"


def _error(error: dict[str, Any], loc: tuple[str | int, ...]) -> InitErrorDetails:
    """One pydantic error moved to ``loc``, kept as it was (type, message, input)."""
    moved = InitErrorDetails(type=error["type"], loc=loc, input=error["input"])
    if error.get("ctx"):
        moved["ctx"] = error["ctx"]
    return moved


class SegmentDefinition(StrictModel):
    """One ``conf/segments/<id>.yaml``: common settings plus one kind (``spec``).

    ``spec`` is never written in YAML: the one kind key the file holds (``condition:``,
    ``event:`` ...) is validated by that kind's model and becomes ``spec``.
    """

    version: Literal[1]
    id: str
    description: str = ""
    # the kind: the model of the value under the file's one kind key (SEGMENT_KINDS)
    spec: InstanceOf[SegmentKind]
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

    @model_validator(mode="wrap")
    @classmethod
    def _one_kind(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> SegmentDefinition:
        """Exactly one kind key; its value validated by its kind, errors located under the key."""
        if not isinstance(data, dict) or isinstance(data.get("spec"), SegmentKind):
            validated: SegmentDefinition = handler(data)
            return validated
        given = [key for key in SEGMENT_KINDS if key in data]
        common = {key: value for key, value in data.items() if key not in SEGMENT_KINDS and key != "spec"}
        # "spec" is what a kind key becomes, never a YAML key
        errors = [InitErrorDetails(type="extra_forbidden", loc=("spec",), input=data["spec"])] if "spec" in data else []
        if len(given) != 1:
            message = f"give exactly one of {_choices(list(SEGMENT_KINDS))} (got {given or 'none'})"
            errors.append(InitErrorDetails(type="value_error", loc=(), input=data, ctx={"error": ValueError(message)}))
        else:
            key = given[0]
            try:
                common["spec"] = SEGMENT_KINDS[key].model_validate(data[key])  # type: ignore[attr-defined]
            except ValidationError as exc:
                errors.extend(_error(dict(e), (key, *e["loc"])) for e in exc.errors())
        try:
            definition: SegmentDefinition = handler(common)
        except ValidationError as exc:
            errors.extend(_error(dict(e), e["loc"]) for e in exc.errors() if e["loc"] != ("spec",))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return definition

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not SEGMENT_ID_RE.match(value):
            raise ValueError(f"segment id must match {SEGMENT_ID_RE.pattern}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _not_self(self) -> SegmentDefinition:
        if self.id in self.exclude:
            raise ValueError(f"segment {self.id!r} cannot exclude itself")
        return self

    @property
    def kind(self) -> str:
        """The kind key: ``condition``, ``query``, ``event`` or a plugin's."""
        return self.spec.key

    @property
    def guarded(self) -> GuardedSql | None:
        return self.spec.guarded()

    @property
    def rule(self) -> str:
        """Human-readable rule, stored in every reason JSON."""
        return self.spec.rule()

    # the built-in kinds' values by their YAML key (None for any other kind)
    @property
    def condition(self) -> str | None:
        return self.spec.rule() if self.kind == "condition" else None

    @property
    def query(self) -> str | None:
        return self.spec.rule() if self.kind == "query" else None

    @property
    def event(self) -> EventRule | None:
        return self.spec if isinstance(self.spec, EventRule) else None


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
                raise ConfigError(f"{source}/{name}.yaml: exclude[{index}]: unknown segment {other!r}")
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
