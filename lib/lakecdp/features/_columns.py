"""Point-in-time helpers shared by the feature transforms (input checks: :mod:`lakecdp.columns`)."""

from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def as_of_utc(as_of: datetime) -> datetime:
    """``as_of`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    if not isinstance(as_of, datetime):
        raise TypeError(f"as_of must be a datetime, got {type(as_of).__name__}")
    if as_of.tzinfo is None:
        return as_of.replace(tzinfo=timezone.utc)
    return as_of.astimezone(timezone.utc)


def as_of_lit(as_of: datetime) -> Column:
    """The as-of moment as a timestamp literal."""
    return F.lit(as_of_utc(as_of)).cast("timestamp")


def up_to(df: DataFrame, column: str, as_of: datetime) -> DataFrame:
    """Rows whose ``column`` is at or before ``as_of``: the point-in-time cut every transform makes.

    Rows with a null time are dropped too: they cannot be placed in time.
    """
    return df.where(F.col(column).isNotNull() & (F.col(column) <= as_of_lit(as_of)))


def age_days(column: str | Column, as_of: datetime) -> Column:
    """Fractional days between ``column`` and ``as_of`` (0 at as_of, positive in the past)."""
    ts = F.col(column) if isinstance(column, str) else column
    return (F.unix_micros(as_of_lit(as_of)) - F.unix_micros(ts)) / F.lit(86_400_000_000.0)


def within_days(column: str, as_of: datetime, days: int) -> Column:
    """True when ``column`` lies in the ``days`` days ending at ``as_of`` (as_of - days, as_of]."""
    moment = as_of_lit(as_of)
    return (F.col(column) > moment - F.make_interval(days=F.lit(days))) & (F.col(column) <= moment)
