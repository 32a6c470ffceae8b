"""Segments: definitions, SQL guard, batch and streaming evaluation, membership and changes.

Public entry points (re-exported from the modules that implement them):

- :func:`load_segments` / :class:`SegmentDefinition` — ``conf/segments/*.yaml``
- :func:`check_condition` / :func:`check_query` / :class:`SqlRefused` — the quick sqlglot
  guard (no Spark) applied when definitions load
- :func:`guarded_condition` / :func:`guarded_query` — the plan check on Spark's own plan,
  which decides before any segment SQL runs (``lakecdp.segments.plan_guard``)
- :func:`evaluate_segments` — candidates with status (DataFrame, no IO)
- ``lakecdp.segments.job:run`` — the pipeline step
- ``lakecdp.segments.streaming:start_stream`` — continuous evaluation of event segments
"""

from __future__ import annotations

from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.guard import SqlRefused, check_condition, check_query
from lakecdp.segments.plan_guard import guarded_condition, guarded_query

__all__ = [
    "SegmentDefinition",
    "SqlRefused",
    "check_condition",
    "check_query",
    "guarded_condition",
    "guarded_query",
    "load_segments",
]
