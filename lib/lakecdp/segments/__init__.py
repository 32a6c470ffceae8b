"""Segments: definitions, SQL guard, batch and streaming evaluation, membership and changes.

Public entry points (re-exported from the modules that implement them):

- :func:`load_segments` / :class:`SegmentDefinition` — ``conf/segments/*.yaml``
- :func:`check_condition` / :func:`check_query` / :class:`SqlRefused` — the SQL guard
- :func:`evaluate_segments` — candidates with status (DataFrame, no IO)
- ``lakecdp.segments.job:run`` — the pipeline step
- ``lakecdp.segments.streaming:start_stream`` — continuous evaluation of event segments
"""

from __future__ import annotations

from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.guard import SqlRefused, check_condition, check_query

__all__ = ["SegmentDefinition", "SqlRefused", "check_condition", "check_query", "load_segments"]
