"""The as-of moment in UTC (no engine needed: both engines' definitions start from it)."""

from __future__ import annotations

from datetime import datetime, timezone


def as_of_utc(as_of: datetime) -> datetime:
    """``as_of`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    if not isinstance(as_of, datetime):
        raise TypeError(f"as_of must be a datetime, got {type(as_of).__name__}")
    if as_of.tzinfo is None:
        return as_of.replace(tzinfo=timezone.utc)
    return as_of.astimezone(timezone.utc)
