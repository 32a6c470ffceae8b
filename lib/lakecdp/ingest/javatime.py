"""Java ``DateTimeFormatter`` patterns read as Spark's ``try_to_date`` / ``try_to_timestamp`` read them.

A source column's ``format`` (``dd/MM/yyyy``, ``yyyy-MM-dd HH:mm:ss``) is parsed on Spark by a
``DateTimeFormatter`` built from the pattern (Spark 4's CORRECTED parser policy, this project's
default): case-insensitive, ``ResolverStyle.STRICT``, ``y`` read as ``u`` (proleptic year), the
whole text consumed (no trimming), ASCII digits only. :func:`java_time_parser` translates the
letters sources use into one regular expression with those rules:

- ``yyyy``: four digits (Java's EXCEEDS_PAD sign style: more digits only after a ``+``);
- ``MM``, ``dd``, ``HH``, ``mm``, ``ss``: exactly two digits; ``M``, ``d``, ``H``, ``m``, ``s``: one
  or more (greedy, as Java's variable-width value parser);
- literals: anything not a letter, and quoted text (``'T'``, matched case-insensitively).

Every other letter (``yy``, ``MMM``, ``S``, ``a``, zones, optional sections ``[...]``) raises
:class:`UnsupportedPattern`: such a source stays on Spark. A value is then checked as STRICT
does (31/02 and 24:00:00 do not parse). Time zone: the session's, UTC. The one difference kept:
years outside 1..9999 (``-2020`` or ``0000``, which Spark reads as proleptic years) do not fit
Python's ``date`` and read as not parsing (tests/test_javatime.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date, datetime

_TOKEN = re.compile(r"([A-Za-z])\1*|'[^']*'|[^A-Za-z']+")
#: letter -> (group name, Python field); two letters: exactly two digits, one: one or more
_FIELDS = {"y": "year", "M": "month", "d": "day", "H": "hour", "m": "minute", "s": "second"}
_DATE_FIELDS = frozenset({"year", "month", "day"})
#: Java's optional sections, padding and reserved characters: not translated
_RESERVED = frozenset("[]{}#")


class UnsupportedPattern(ValueError):
    """A pattern holding a letter (or section) this module does not translate."""


def _regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    seen: set[str] = set()
    previous_number = False
    for found in _TOKEN.finditer(pattern):
        token = found.group(0)
        if token[0].isalpha():
            letter, count = token[0], len(token)
            field = _FIELDS.get(letter)
            if field is None or field in seen or (count != 4 if letter == "y" else count > 2):
                raise UnsupportedPattern(f"date/time pattern {pattern!r}: {token!r} is not translated")
            variable = letter != "y" and count == 1
            if variable and previous_number:
                # Java gives no digits back to an earlier number for a variable-width one
                raise UnsupportedPattern(f"date/time pattern {pattern!r}: {token!r} right after a number")
            seen.add(field)
            digits = "[0-9]{4}" if letter == "y" else "[0-9]{1,19}" if variable else "[0-9]{2}"
            parts.append(f"(?P<{field}>{digits})")
            previous_number = True
            continue
        if token.startswith("'"):
            parts.append(re.escape(token[1:-1] or "'"))
        elif _RESERVED.intersection(token):
            raise UnsupportedPattern(f"date/time pattern {pattern!r}: {token!r} is not translated")
        else:
            parts.append(re.escape(token))
        previous_number = False
    return re.compile("".join(parts), re.IGNORECASE | re.ASCII)


@functools.cache
def java_time_parser(pattern: str, type_name: str) -> Callable[[str], date | datetime | None]:
    """The value Spark's ``try_to_date(text, pattern)`` (``type_name`` date) or
    ``try_to_timestamp(text, pattern)`` (timestamp, naive UTC) gives a text, None where it is null.

    Raises:
        UnsupportedPattern: the pattern holds a letter not translated (the source stays on Spark),
            or a date pattern lacks year, month or day.

    Example:
        >>> java_time_parser("dd/MM/yyyy", "date")("29/02/2020")
        datetime.date(2020, 2, 29)
    """
    reader = _regex(pattern)
    fields = set(reader.groupindex)
    if not _DATE_FIELDS <= fields:
        raise UnsupportedPattern(f"date/time pattern {pattern!r} does not give year, month and day")
    if type_name not in ("date", "timestamp"):
        raise UnsupportedPattern(f"a date/time pattern on a {type_name} column")

    def parse(text: str) -> date | datetime | None:
        found = reader.fullmatch(text)
        if found is None:
            return None
        value = {k: int(v) for k, v in found.groupdict().items()}
        try:
            moment = datetime(
                value["year"],
                value["month"],
                value["day"],
                value.get("hour", 0),
                value.get("minute", 0),
                value.get("second", 0),
            )
        except ValueError:  # STRICT: 31/02, 24:00:00, a 60th second; or a year before 1
            return None
        return moment.date() if type_name == "date" else moment

    # a column's values repeat (birth dates: ~37k days a century) and are read twice (checked,
    # then typed): the values are immutable, a text's value is worked out once
    return functools.lru_cache(maxsize=1 << 16)(parse)
