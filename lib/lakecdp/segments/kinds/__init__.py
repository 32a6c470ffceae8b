"""Segment kinds, chosen by the one kind key a definition holds (``condition:``, ``query:``,
``event:`` ...). A new kind is one module with a :class:`SegmentKind` model plus one line in
:data:`SEGMENT_KINDS` (docs/extending.md#adding-a-segment-kind).

Example:
    >>> SEGMENT_KINDS["event"].model_validate({"event_types": ["purchase"], "within": "7d"}).rule()
    'purchase >= 1 within 7d'
"""

from __future__ import annotations

from lakecdp.segments.kinds.base import SegmentKind, reason_json
from lakecdp.segments.kinds.event import Absence, Duration, EventRule, EventType, format_duration, parse_duration
from lakecdp.segments.kinds.sql import ConditionKind, QueryKind

#: kind key -> the model of the value under it; the order is the one error messages list
SEGMENT_KINDS: dict[str, type[SegmentKind]] = {
    ConditionKind.key: ConditionKind,
    QueryKind.key: QueryKind,
    EventRule.key: EventRule,
}


def register_segment_kind(kind: type[SegmentKind]) -> type[SegmentKind]:
    """Add a kind from outside this package (a plugin); usable as a class decorator.

    Raises:
        ValueError: another kind already has the key.
    """
    known = SEGMENT_KINDS.get(kind.key)
    if known is not None and known is not kind:
        raise ValueError(f"segment kind key {kind.key!r} is taken by {known.__module__}.{known.__name__}")
    SEGMENT_KINDS[kind.key] = kind
    return kind


__all__ = [
    "SEGMENT_KINDS",
    "Absence",
    "ConditionKind",
    "Duration",
    "EventRule",
    "EventType",
    "QueryKind",
    "SegmentKind",
    "format_duration",
    "parse_duration",
    "reason_json",
    "register_segment_kind",
]
