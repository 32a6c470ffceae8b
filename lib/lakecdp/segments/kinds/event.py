"""The ``event`` segment kind: an event-triggered rule compiled to DataFrame code (types,
minimum count, window, value/product filters, absence conditions, one membership per product
when ``per_product``). Its values become literals, never SQL text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field

from lakecdp.config import StrictModel
from lakecdp.segments.kinds.base import SegmentKind

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.segments.definitions import SegmentDefinition

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(m|h|d)\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

EventType = Literal[
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "login",
    "email_send",
    "email_open",
    "email_click",
    "email_bounce",
    "email_unsubscribe",
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


class Absence(StrictModel):
    """ "...and made no <event_types>": within a window or since the last triggering event."""

    event_types: list[EventType] = Field(min_length=1)
    # default: the rule's own window
    within: Duration | None = None
    # only events after the customer's last triggering event count (cart abandonment)
    since_last_trigger: bool = False


class EventRule(StrictModel, SegmentKind):
    """At least ``min_count`` events of ``event_types`` within ``within`` before as_of."""

    key: ClassVar[str] = "event"

    event_types: list[EventType] = Field(min_length=1)
    min_count: int = Field(default=1, ge=1)
    within: Duration
    min_value: float | None = None
    product_ids: list[str] | None = None
    categories: list[str] | None = None
    # parameterised segment: one membership per customer and product (member_key = product_id)
    per_product: bool = False
    absent: list[Absence] = Field(default_factory=list)

    def rule(self) -> str:
        text = f"{'|'.join(self.event_types)} >= {self.min_count} within {format_duration(self.within)}"
        if self.min_value is not None:
            text += f" with value >= {self.min_value:g}"
        if self.product_ids:
            text += f" on products {','.join(self.product_ids)}"
        if self.categories:
            text += f" in categories {','.join(self.categories)}"
        if self.per_product:
            text += " per product"
        for absence in self.absent:
            when = (
                "since last trigger"
                if absence.since_last_trigger
                else f"within {format_duration(absence.within or self.within)}"
            )
            text += f"; no {'|'.join(absence.event_types)} {when}"
        return text

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        from lakecdp.segments.evaluate import event_segment_matches

        return event_segment_matches(events, definition, as_of)
