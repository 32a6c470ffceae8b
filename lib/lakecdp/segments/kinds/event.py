"""The ``event`` segment kind: an event-triggered rule compiled to DataFrame code for Spark and
to one SQL query for the embedded engine (types, minimum count, window, value/product filters,
absence conditions, one membership per product when ``per_product``). Its values become
literals, never pasted text.

Semantics both forms share (``tests/test_segments_event_embedded.py`` holds the edges by hand):
events are the resolved ones up to ``as_of``; a window of ``48h`` holds events with
``as_of - 48h < occurred_at <= as_of`` (UTC; an event exactly 48 h old is out); an absence
without ``since_last_trigger`` drops the customer when any absent event lies in its window
(the rule's own by default); with ``since_last_trigger`` only absent events at or after the
customer's last triggering event (of that product when ``per_product``) drop it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
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

    def matches_sql(self, *, as_of: datetime) -> str:
        """The rule as one Spark SQL query over the ``events`` view (see :meth:`SegmentKind.matches_sql`).

        Example:
            >>> EventRule.model_validate({"event_types": ["purchase"], "within": "7d"}).matches_sql(as_of=AS_OF)
            "SELECT t.customer_id, t.member_key, t.event_count, t.last_event_at FROM (SELECT customer_id, ..."
        """
        trigger = [_in("event_type", self.event_types), f"occurred_at > {_window_start(as_of, self.within)}"]
        if self.min_value is not None:
            trigger.append(f"value >= {_double(self.min_value)}")
        if self.product_ids:
            trigger.append(_in("product_id", self.product_ids))
        if self.categories:
            trigger.append(_in("category", self.categories))
        if self.per_product:
            trigger.append("product_id IS NOT NULL")
        key = "CAST(product_id AS STRING)" if self.per_product else "''"
        values = ["event_count", "last_event_at", *(["max_value"] if self.min_value is not None else [])]
        aggregates = "count(1) AS event_count, max(occurred_at) AS last_event_at" + (
            ", max(value) AS max_value" if self.min_value is not None else ""
        )
        sql = (
            f"SELECT t.customer_id, t.member_key, {', '.join('t.' + v for v in values)} FROM ("
            f"SELECT customer_id, {key} AS member_key, {aggregates} FROM events "
            f"WHERE {' AND '.join(trigger)} GROUP BY customer_id, {key} HAVING count(1) >= {int(self.min_count)}) t"
        )
        kept = []
        for number, absence in enumerate(self.absent, start=1):
            alias = f"a{number}"
            sql += (
                f" LEFT JOIN (SELECT customer_id, max(occurred_at) AS absent_at FROM events WHERE "
                f"{_in('event_type', absence.event_types)} AND "
                f"occurred_at > {_window_start(as_of, absence.within or self.within)} "
                f"GROUP BY customer_id) {alias} ON {alias}.customer_id = t.customer_id"
            )
            if absence.since_last_trigger:
                kept.append(f"({alias}.absent_at IS NULL OR {alias}.absent_at < t.last_event_at)")
            else:
                kept.append(f"{alias}.customer_id IS NULL")
        if kept:
            sql += " WHERE " + " AND ".join(kept)
        return sql


def _string(value: str) -> str:
    """A Spark SQL string literal, quoted and escaped by sqlglot."""
    from sqlglot import exp

    return exp.Literal.string(value).sql(dialect="spark")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(_string(v) for v in values)})"


def _double(value: float) -> str:
    # the shortest text that reads back as the same double (NaN and infinities included)
    return f"CAST({_string(repr(float(value)))} AS DOUBLE)"


def _window_start(as_of: datetime, window: timedelta) -> str:
    """``as_of - window`` in UTC as a timestamp without zone: both engines compare it in UTC."""
    moment = as_of.astimezone(timezone.utc) if as_of.tzinfo else as_of
    start = moment.replace(tzinfo=None) - window
    return f"TIMESTAMP_NTZ '{start.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
