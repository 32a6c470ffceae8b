"""The HTTP intake's row checks: :mod:`lakecdp.ingest.python_rules` (the source YAML's rules on one
Python object), which the embedded batch ingest and pickup share; re-exported for the intake."""

from __future__ import annotations

from lakecdp.ingest.python_rules import (
    Problem,
    event_id,
    java_regex,
    parse_timestamp,
    valid_email,
    validate_event,
    validate_events,
)

__all__ = ["Problem", "event_id", "java_regex", "parse_timestamp", "valid_email", "validate_event", "validate_events"]
