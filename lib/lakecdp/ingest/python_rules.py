"""Row-level validation of one JSON event with the batch / Kafka ingest's own rules.

The rules have one definition: the source's ``conf/sources/<name>.yaml`` (columns and their
types, ``required``, ``checks``, ``junk_values``) plus the constants of
:mod:`lakecdp.ingest.validate` (reason codes, ``EMAIL_PATTERN``). That module compiles them
into Spark Column expressions for files and Kafka; this one interprets the same config on one
Python object, so the HTTP intake can answer 4xx naming the field *before* it acknowledges an
event, without a Spark session per request. The ingest's patterns are Java regular expressions
(``\\p{Z}``, ``\\p{C}``, which Python's ``re`` lacks); :func:`java_regex` compiles them with the
``regex`` package, adjusting the two constructs whose meaning differs (``\\s``, ``$``).
"Future" timestamps are judged against ``as_of``: the HTTP intake passes the request's receive
time (the Kafka path uses the broker's receive time), plus the source's ``future_tolerance_minutes``.

Two evaluators of one rule set can drift; ``tests/test_api_validation.py`` runs both on the
same messages (the Spark one is the oracle) and compares the reason codes and fields. And the
pickup step runs every accepted event through the Spark validator again: an event this module
let through but Spark rejects lands in ``quarantine.<source>`` with its reasons, never lost.

Example:
    >>> problems = validate_event({"event_id": "w-1", "event_type": "page_view"}, source)
    >>> [(p.code, p.field) for p in problems]
    [('MISSING_REQUIRED', 'ts')]
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from collections.abc import Callable
from typing import Any

from lakecdp.ingest.javaregex import java_regex
from lakecdp.ingest.javatime import UnsupportedPattern, java_time_parser
from lakecdp.ingest.sources import NUMERIC_TYPES, SourceConfig
from lakecdp.sqldialect.translate import java_double
from lakecdp.ingest.validate import (
    FIELD_TOO_LONG,
    FUTURE_TIMESTAMP,
    IMPOSSIBLE_DATE,
    INVALID_DATE,
    INVALID_EMAIL,
    INVALID_KEY,
    INVALID_TIMESTAMP,
    INVALID_TYPE,
    MALFORMED_LINE,
    MISSING_REQUIRED,
    NON_FINITE_NUMBER,
    PLACEHOLDER_TIMESTAMP,
    row_rules,
)

_RULES = row_rules()

_EMAIL_RE = java_regex(_RULES.email_pattern)
_NULL_LIKE_KEY_RE = java_regex(_RULES.null_like_key_pattern)
_INVISIBLE_RE = java_regex(_RULES.invisible_pattern)
# what Spark's string -> timestamp cast accepts (ISO-8601 family, optional zone)
_TIMESTAMP_RE = re.compile(
    r"^(?P<y>[+-]?\d{4,6})(-(?P<m>\d{1,2})(-(?P<d>\d{1,2})"
    r"([ T](?P<H>\d{1,2})(:(?P<M>\d{1,2})(:(?P<S>\d{1,2})(\.(?P<f>\d{0,9}))?)?)?"
    r"\s*(?P<z>Z|UTC|GMT|[+-]\d{1,2}(:?\d{2})?(:?\d{2})?|[A-Za-z]+/[A-Za-z_]+)?)?)?)?T?$"
)
#: RFC 3339 with a zone of at most 18 hours (what Spark accepts): parsed by datetime.fromisoformat
_ISO_ZONED_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-8]):[0-5][0-9])"
)
_DATE_RE = re.compile(r"^(?P<y>[+-]?\d{4,6})(-(?P<m>\d{1,2})(-(?P<d>\d{1,2})([ T].*)?)?)?$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[dDfF]?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_INT_BOUNDS = {"int": 2**31, "bigint": 2**63}


@dataclass(frozen=True)
class Problem:
    """One finding: ``code`` (a reason code of docs/sample-data.md) on ``field``, and why."""

    code: str
    field: str
    message: str
    #: True: the event is refused (quarantine in batch ingest); False: accepted, field nulled
    refuses: bool = True

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


def as_text(value: Any) -> str | None:
    """A JSON value as Spark reads it into a string field: text as is, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        # Spark's JSON parser re-writes a NaN / Infinity token into a text field as a quoted word
        return json.dumps(json.dumps(value))
    if isinstance(value, float):
        # Spark's parser re-writes a number token into a text field as Jackson writes a double
        # (Java's Double.toString): 1e2 -> 100.0, 1e7 -> 1.0E7, 0.0001 -> 1.0E-4
        return str(java_double(value))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _blank(text: str | None) -> bool:
    # Spark's trim removes spaces only
    return text is None or text.strip(" ") == ""


def _blank_value(value: Any) -> bool:
    """``_blank(as_text(value))`` without building the text of a string."""
    if value is None:
        return True
    if type(value) is str:
        return value.strip(" ") == ""
    return _blank(as_text(value))


def parse_timestamp(text: str) -> datetime | None:
    """Spark's ``try_cast(trim(x) as timestamp)`` for ISO-8601-like text; None when it fails."""
    if _ISO_ZONED_RE.fullmatch(text):
        # the shape clients send (RFC 3339, ASCII digits, a zone Spark accepts): the C parser,
        # which gives what _parse_timestamp_text does (tests/test_api_validation.py compares them)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return _parse_timestamp_text(text)


def _parse_timestamp_text(text: str) -> datetime | None:
    match = _TIMESTAMP_RE.match(text.strip(" "))
    if not match:
        return None
    parts = match.groupdict()
    try:
        moment = datetime(
            int(parts["y"]),
            int(parts["m"] or 1),
            int(parts["d"] or 1),
            int(parts["H"] or 0),
            int(parts["M"] or 0),
            int(parts["S"] or 0),
            int(((parts["f"] or "") + "000000")[:6]),
        )
    except ValueError:
        return None
    zone = parts["z"]
    if zone and zone not in ("Z", "UTC", "GMT") and zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        hours = int(digits[:-2] if len(digits) > 2 else digits)
        minutes = int(digits[-2:]) if len(digits) > 2 else 0
        if hours > 18 or minutes > 59:
            return None
        sign = -1 if zone[0] == "-" else 1
        return moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return moment.replace(tzinfo=timezone.utc)


def parse_date(text: str) -> date | None:
    match = _DATE_RE.match(text.strip(" "))
    if not match:
        return None
    try:
        return date(int(match["y"]), int(match["m"] or 1), int(match["d"] or 1))
    except ValueError:
        return None


def parses(text: str, type_name: str) -> bool:
    stripped = text.strip(" ")
    if type_name in _INT_BOUNDS:
        return bool(_INT_RE.match(stripped)) and -_INT_BOUNDS[type_name] <= int(stripped) < _INT_BOUNDS[type_name]
    if type_name == "double":
        return text_to_double(stripped) is not None
    if type_name == "boolean":
        return stripped.lower() in ("t", "true", "y", "yes", "1", "f", "false", "n", "no", "0")
    if type_name == "timestamp":
        return parse_timestamp(stripped) is not None
    if type_name == "date":
        return parse_date(stripped) is not None
    return True


def text_to_double(text: str) -> float | None:
    """Spark's ``try_cast(trim(x) as double)``: NaN / Infinity words, and 1e400 as infinity."""
    stripped = text.strip(" ")
    word = stripped.lower()
    if word.lstrip("+-") in ("nan", "infinity", "inf"):
        return float(word.replace("infinity", "inf"))
    if not _NUMBER_RE.match(stripped):
        return None
    return float(stripped.rstrip("dDfF"))


def _non_finite_text(text: str) -> bool:
    """A double field's text that Spark reads as NaN or infinity; also the JSON parser's re-written
    ``NaN`` / ``Infinity`` tokens (:attr:`lakecdp.ingest.validate.RowRules.quoted_non_finite`)."""
    if text.strip(" ") in _RULES.quoted_non_finite:
        return True
    number = text_to_double(text)
    return number is not None and not math.isfinite(number)


def _nested_non_finite(value: Any) -> bool:
    """A NaN / infinite number anywhere in a nested value (JSON's NaN, Infinity or 1e400 tokens)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_nested_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_nested_non_finite(v) for v in value)
    return False


def _holds_double(type_name: str) -> bool:
    return bool(re.search(r"\b(double|float)\b", type_name, re.IGNORECASE))


def valid_email(email: str) -> bool:
    """:func:`lakecdp.ingest.validate.valid_email` on one (trimmed, lower-cased) text: the pattern
    plus RFC 5321's byte limits (254 octets in all, 64 in the local part, UTF-8)."""
    return (
        _EMAIL_RE.search(email) is not None
        and len(email.encode("utf-8")) <= _RULES.email_max_octets
        and len(email.split("@", 1)[0].encode("utf-8")) <= _RULES.email_local_part_max_octets
    )


def null_like_key(text: str | None) -> bool:
    """:func:`lakecdp.ingest.validate.null_like_key` on one key's text (blank: False)."""
    if _blank(text):
        return False
    trimmed = text.strip(" ")  # type: ignore[union-attr]
    if _NULL_LIKE_KEY_RE.search(trimmed.lower()) is not None:
        return True
    # printable ASCII holds no control (Cc) or format (Cf) character: no need for the regex
    return not (trimmed.isascii() and trimmed.isprintable()) and _INVISIBLE_RE.search(trimmed) is not None


def _latest(source: SourceConfig, as_of: date | datetime | None) -> datetime:
    """The latest plausible time (as :func:`lakecdp.ingest.validate._timestamp_bound`): as-of (a day:
    all of it; default now) plus the source's tolerance."""
    if isinstance(as_of, datetime):
        now = as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
    elif as_of is not None:
        now = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=timezone.utc)
    else:
        now = datetime.now(timezone.utc)
    return now + timedelta(minutes=int(source.future_tolerance_minutes))


def _read(event: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path (split); a missing or non-object step reads as null (as in Spark)."""
    if len(parts) == 1:
        return event.get(parts[0])
    value: Any = event
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


@dataclass(frozen=True)
class _Plan:
    """A source's rules laid out once for checking (the config itself is not copied)."""

    #: (name, type, check, required) of scalar columns with a parse check
    typed: tuple[tuple[str, str, Any, bool], ...]
    #: (name, type) of nested columns
    nested: tuple[tuple[str, str], ...]
    #: names of the nested columns that hold doubles (NaN / Infinity checked inside)
    nested_doubles: tuple[str, ...]
    #: (path, its parts)
    required: tuple[tuple[str, tuple[str, ...]], ...]
    #: (path, its parts, required) of the primary key's fields
    key: tuple[tuple[str, tuple[str, ...], bool], ...]
    checks: tuple[tuple[str, tuple[str, ...], Any, bool], ...]
    junk: frozenset[str]
    #: column -> its Java pattern's parser (:func:`formatted_parser`), for the columns with one
    formats: dict[str, Any]


_PLANS: dict[int, tuple[SourceConfig, _Plan]] = {}


def formatted_parser(source: SourceConfig, name: str) -> Callable[[str], date | datetime | None] | None:
    """The parser of column ``name``'s Java pattern (``format``) as Spark's ``try_to_date`` /
    ``try_to_timestamp`` reads it (:mod:`lakecdp.ingest.javatime`); None when the column has no
    pattern or one that is not translated (then left to the Spark validator)."""
    column = source.column(name)
    if not column.format or column.type not in ("date", "timestamp"):
        return None
    try:
        return java_time_parser(column.format, column.type)
    except UnsupportedPattern:
        return None


def _plan(source: SourceConfig) -> _Plan:
    cached = _PLANS.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    formats = {c.name: formatted_parser(source, c.name) for c in source.columns if c.is_scalar and c.format}
    typed = tuple(
        (c.name, c.type, source.checks.get(c.name), source.is_required(c.name))
        for c in source.columns
        if c.is_scalar
        and (
            c.type in NUMERIC_TYPES
            or c.type == "boolean"
            or (c.type in ("date", "timestamp") and (c.format is None or formats[c.name] is not None))
        )
    )
    plan = _Plan(
        typed=typed,
        nested=tuple((c.name, c.type) for c in source.columns if not c.is_scalar),
        nested_doubles=tuple(c.name for c in source.columns if not c.is_scalar and _holds_double(c.type)),
        required=tuple((path, _split(path)) for path in source.required),
        key=tuple((path, _split(path), source.is_required(path)) for path in source.primary_key),
        checks=tuple((path, _split(path), check, source.is_required(path)) for path, check in source.checks.items()),
        junk=frozenset(v.strip(" ").lower() for v in source.junk_values),
        formats={k: v for k, v in formats.items() if v is not None},
    )
    _PLANS[id(source)] = (source, plan)
    return plan


def validate_event(event: Any, source: SourceConfig, *, as_of: date | datetime | None = None) -> list[Problem]:
    """Check one event (a parsed JSON object) against ``source``'s rules.

    Args:
        event: the decoded JSON value of one event.
        source: the source's config (``conf/sources/<name>.yaml``); a CSV source is checked as
            the Kafka stream checks it: a JSON object with the CSV's fields. Dates and timestamps
            with a Java pattern (``format``) are read as Spark reads them
            (:mod:`lakecdp.ingest.javatime`); a pattern not translated is left to the Spark
            validator at pickup.
        as_of: the time timestamps may not exceed by more than
            ``source.future_tolerance_minutes`` (FUTURE_TIMESTAMP; a day: all of it; default:
            now) and whose day ``not_future`` dates may not exceed. The HTTP intake passes the
            request's receive time, as the Kafka stream judges by the broker's receive time.

    Returns:
        Every finding, refusing ones (``refuses=True``) and warnings. An empty list: accepted.
    """
    return validate_events([event], source, as_of=as_of)[0]


def validate_events(
    events: list[Any], source: SourceConfig, *, as_of: date | datetime | None = None
) -> list[list[Problem]]:
    """:func:`validate_event` on a batch, column by column: the findings of each event, in order.

    One pass per rule over the batch (the rule's constants, the as-of bound and the column's
    path are looked up once, not once per event); the findings of one event and their order are
    those :func:`validate_event` gives it alone (an event with a malformed nested field gets
    only that finding, as a malformed line in a file).

    Example:
        >>> [[p.code for p in found] for found in validate_events([good, {"event_id": ""}], source)]
        [[], ['MISSING_REQUIRED', 'MISSING_REQUIRED', 'MISSING_REQUIRED']]
    """
    plan = _plan(source)
    found: list[list[Problem]] = [[] for _ in events]
    objects: list[tuple[int, dict[str, Any]]] = []
    for i, event in enumerate(events):
        if isinstance(event, dict):
            objects.append((i, event))
        else:
            found[i].append(Problem(MALFORMED_LINE, "event", f"must be a JSON object, got {type(event).__name__}"))
    for name, type_name in plan.nested:
        for i, event in objects:
            value = event.get(name)
            if value is not None and not _nested_shape_ok(value, type_name):
                found[i].append(
                    Problem(
                        MALFORMED_LINE,
                        name,
                        f"must be {type_name.split('<')[0]} ({type_name}), got {type(value).__name__}",
                    )
                )
    # like a malformed line in a file: the field checks mean nothing for those
    rows = [(i, event) for i, event in objects if not found[i]]
    for name in plan.nested_doubles:
        # NaN / Infinity inside nested values (an order line's price) cannot be nulled alone
        for i, event in rows:
            if _nested_non_finite(event.get(name)):
                found[i].append(Problem(NON_FINITE_NUMBER, name, "holds NaN or an infinite number"))
    latest = _latest(source, as_of)
    for name, type_name, check, required in plan.typed:
        if type_name == "timestamp":
            _check_timestamps(
                rows,
                found,
                name,
                source,
                latest,
                required or bool(check and check.on_invalid == "quarantine"),
                plan.formats.get(name),
            )
            continue
        pattern_parser = plan.formats.get(name)
        for i, event in rows:
            text = as_text(event.get(name))
            if _blank(text):
                continue
            if type_name in NUMERIC_TYPES or type_name == "boolean":
                refuses = required or ((check.on_invalid != "warn") if check and check.on_invalid else True)
                if type_name == "double" and _non_finite_text(text):  # type: ignore[arg-type]
                    found[i].append(Problem(NON_FINITE_NUMBER, name, f"{text!r} is not a finite number", refuses))
                elif not parses(text, type_name):  # type: ignore[arg-type]
                    found[i].append(Problem(INVALID_TYPE, name, f"{text!r} is not a {type_name}", refuses))
            elif pattern_parser is not None:
                if pattern_parser(text) is None:
                    refuses = required or bool(check and check.on_invalid == "quarantine")
                    message = f"{text!r} is not a {type_name} of pattern {source.column(name).format}"
                    found[i].append(Problem(INVALID_DATE, name, message, refuses))
            elif not parses(text, type_name):  # type: ignore[arg-type]
                refuses = required or bool(check and check.on_invalid == "quarantine")
                found[i].append(Problem(INVALID_DATE, name, f"{text!r} is not an ISO-8601 {type_name}", refuses))

    for path, parts in plan.required:
        for i, event in rows:
            if _blank_value(_read(event, parts)):
                found[i].append(Problem(MISSING_REQUIRED, path, "is required and was missing or empty"))
    for path, parts, key_required in plan.key:
        for i, event in rows:
            key = as_text(_read(event, parts))
            if not key_required and _blank(key):
                found[i].append(Problem(MISSING_REQUIRED, path, "is part of the primary key and was missing or empty"))
            if null_like_key(key):
                found[i].append(Problem(INVALID_KEY, path, f"{key!r} is a placeholder or holds invisible characters"))
    today = (as_of.date() if isinstance(as_of, datetime) else as_of) or datetime.now(timezone.utc).date()
    for path, parts, check, required in plan.checks:
        refuses = required if check.on_invalid is None else check.on_invalid == "quarantine"
        for i, event in rows:
            text = as_text(_read(event, parts))
            if text is None:
                continue
            if check.email and not _blank(text):
                email = text.strip(" ").lower()
                if email not in plan.junk and not valid_email(email):
                    found[i].append(Problem(INVALID_EMAIL, path, f"{text!r} is not an email address", refuses))
            if check.max_length is not None and len(text) > check.max_length:
                found[i].append(
                    Problem(
                        FIELD_TOO_LONG,
                        path,
                        f"is {len(text)} characters, at most {check.max_length} allowed",
                        check.on_invalid != "warn",
                    )
                )
            if (check.min_date is not None or check.not_future) and not _blank(text):
                day = _checked_date(text, plan.formats.get(path))
                if day is not None and (
                    (check.min_date is not None and day < check.min_date) or (check.not_future and day > today)
                ):
                    found[i].append(Problem(IMPOSSIBLE_DATE, path, f"{text!r} is not a possible date", refuses))
    return found


def _check_timestamps(
    rows: list[tuple[int, dict[str, Any]]],
    found: list[list[Problem]],
    name: str,
    source: SourceConfig,
    latest: datetime,
    refuses: bool,
    pattern_parser: Callable[[str], date | datetime | None] | None = None,
) -> None:
    """INVALID_TIMESTAMP, FUTURE_TIMESTAMP and PLACEHOLDER_TIMESTAMP of one timestamp column
    (read with ``pattern_parser`` when the column has a Java pattern, else as an ISO-8601 cast)."""
    # the event time orders versions: a wrong one is refused even when optional
    ordering = refuses or name == source.event_time
    for i, event in rows:
        text = as_text(event.get(name))
        if _blank(text):
            continue
        if pattern_parser is None:
            moment = parse_timestamp(text)  # type: ignore[arg-type]
            shape = "an ISO-8601 timestamp"
        else:
            parsed = pattern_parser(text)  # type: ignore[arg-type]
            # a pattern without a zone reads in the session's zone, UTC
            moment = parsed.replace(tzinfo=timezone.utc) if isinstance(parsed, datetime) else None
            shape = f"a timestamp of pattern {source.column(name).format}"
        if moment is None:
            found[i].append(Problem(INVALID_TIMESTAMP, name, f"{text!r} is not {shape}", refuses))
            continue
        if moment > latest:
            found[i].append(
                Problem(
                    FUTURE_TIMESTAMP,
                    name,
                    f"{text!r} is later than {latest.isoformat()} (now + "
                    f"{source.future_tolerance_minutes} minutes' tolerance)",
                    ordering,
                )
            )
        if _RULES.placeholder_timestamp(moment):
            found[i].append(
                Problem(
                    PLACEHOLDER_TIMESTAMP,
                    name,
                    f"{text!r} is a default (the Unix epoch or before 1900), not a time",
                    ordering,
                )
            )


def _checked_date(text: str, pattern_parser: Callable[[str], date | datetime | None] | None) -> date | None:
    """The date the min_date / not_future checks compare: the column's typed value (its Java
    pattern's, else the ISO cast's of the text)."""
    if pattern_parser is None:
        return parse_date(text)
    parsed = pattern_parser(text)
    return parsed.date() if isinstance(parsed, datetime) else parsed


def _nested_shape_ok(value: Any, type_name: str) -> bool:
    kind = type_name.split("<", 1)[0].strip().lower()
    if kind in ("struct", "map"):
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return True


def event_id(event: dict[str, Any], source: SourceConfig) -> str | None:
    """The event's primary key value as text (what silver.events de-duplicates on)."""
    keys = [as_text(event.get(k)) for k in source.primary_key]
    if any(_blank(k) for k in keys):
        return None
    return "\u001f".join(k.strip(" ") for k in keys)  # type: ignore[union-attr]
