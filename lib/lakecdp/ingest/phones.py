"""Phone numbers to E.164, one implementation for both engines.

:func:`e164` is the rule (``phonenumbers`` parses the text in the record's region; an impossible
length or an all-same-digit placeholder such as ``0000000000`` is null). ``phonenumbers.parse``
costs ~40-70 µs a call, so :func:`e164_many` answers a batch (a) once per distinct
(number, region) and (b) through :func:`e164_fast` for the shapes most numbers come in -- already
E.164 or international (``+44 20 7946 0958``) and national with a trunk prefix
(``07700 900123``, ``(020) 7946 0958``) -- with the same metadata, without parsing. The fast path
follows ``phonenumbers.parse`` step by step for those shapes and answers :data:`DEFER` wherever a
step could go another way (an IDD prefix, a carrier code, a number whose trunk prefix phonenumbers
might keep...), so it never guesses: tests/test_phones.py checks with hypothesis that it returns
exactly what phonenumbers returns, or defers.

Example:
    >>> e164("07700 900123", "GB")
    '+447700900123'
    >>> e164_many(["+44 20 7946 0958", "n/a"], ["GB", "GB"])
    ['+442079460958', None]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

#: the fast path cannot tell; ask phonenumbers
DEFER: Final = object()

# ASCII digits with the separators people type (space, hyphen, parentheses), an optional leading
# plus: nothing phonenumbers could read as letters, an extension, a second number or a tel: URI
_SIMPLE = re.compile(r"[ (]*(\+?)[0-9][0-9 ()\-]*")
_NOT_DIGIT = re.compile(r"[^0-9]")
# phonenumbers: at most 250 characters of input; national numbers of 2..17 digits
_MAX_INPUT = 250
_MIN_NSN = 2
_MAX_NSN = 17


def e164(number: object, region: object) -> str | None:
    """E.164 text of ``number`` read in ``region`` (ISO alpha-2), or None: not a string, blank, not
    parseable, not a possible length for its country, or all one digit (a placeholder)."""
    if not isinstance(number, str) or not number.strip():
        return None
    try:
        parsed = phonenumbers.parse(number, region if isinstance(region, str) else None)
    except NumberParseException:
        return None
    national = str(parsed.national_number)
    # a possible length, and not a placeholder such as 0000000000 / 1111111111
    if not phonenumbers.is_possible_number(parsed) or len(set(national)) <= 1:
        return None
    return str(phonenumbers.format_number(parsed, PhoneNumberFormat.E164))


@dataclass(frozen=True)
class _Country:
    """What parse and is_possible_number read of one region's metadata."""

    code: str
    #: IDD (international call prefix) pattern, None when the region has none
    idd: re.Pattern[str] | None
    #: national (trunk) prefix pattern for parsing, None when the region has none
    trunk: re.Pattern[str] | None
    has_transform: bool
    #: the general national number pattern (None: matches nothing)
    general: re.Pattern[str] | None
    lengths: frozenset[int]
    local_lengths: frozenset[int]


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


@functools.cache
def _country(region: str) -> _Country | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return None
    general = metadata.general_desc
    return _Country(
        code=str(metadata.country_code),
        idd=_compile(metadata.international_prefix),
        trunk=_compile(metadata.national_prefix_for_parsing),
        has_transform=bool(metadata.national_prefix_transform_rule),
        general=_compile(general.national_number_pattern if general is not None else None),
        lengths=frozenset(general.possible_length if general is not None else ()),
        local_lengths=frozenset(general.possible_length_local_only if general is not None else ()),
    )


@functools.cache
def _main_country(calling_code: int) -> _Country | None:
    """The metadata parse and is_possible_number use for a calling code: its main region's."""
    region = phonenumbers.region_code_for_country_code(calling_code)
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return None  # a non-geographic code (+800) or an unknown one
    return _country(region)


def _full(pattern: re.Pattern[str] | None, digits: str) -> bool:
    return pattern is not None and pattern.fullmatch(digits) is not None


def _answer(country: _Country, national: str) -> str | None | object:
    """E.164 of a national number that phonenumbers keeps as it is; DEFER outside the safe lengths."""
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return DEFER
    size = len(national)
    possible = size in country.lengths or size in country.local_lengths
    # phonenumbers keeps leading zeros (Italian style) in E.164 but not in national_number
    if not possible or len(set(national.lstrip("0") or "0")) <= 1:
        return None
    return f"+{country.code}{national}"


def _international(digits: str) -> str | None | object:
    """``+<country code><national number>``: phonenumbers' country code is the first 1-3 digit
    prefix it knows; it then strips a trunk prefix with the main region's metadata (defer then)."""
    if not digits or digits[0] == "0":
        return DEFER
    for size in (1, 2, 3):
        calling_code = int(digits[:size])
        if calling_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            country = _main_country(calling_code)
            national = digits[size:]
            if country is None or len(national) < _MIN_NSN:
                return DEFER
            if country.trunk is not None and country.trunk.match(national):
                return DEFER
            return _answer(country, national)
    return DEFER


def _national(digits: str, region: str) -> str | None | object:
    """A number without ``+`` read in ``region``: the trunk prefix stripped when phonenumbers would."""
    country = _country(region)
    if country is None or len(digits) < _MIN_NSN:
        return DEFER
    if country.idd is not None and country.idd.match(digits):
        return DEFER  # maybe an international number dialled with the IDD (00 44 ...)
    if digits.startswith(country.code):
        return DEFER  # maybe the country code without '+'
    main = _main_country(int(country.code))
    if main is None or main.code != country.code:
        return DEFER
    national = digits
    if country.trunk is not None:
        found = country.trunk.match(national)
        if found is not None:
            if country.has_transform or found.groups() or _full(country.general, national):
                return DEFER  # a carrier code, a rewrite, or a number valid with its prefix
            stripped = national[found.end() :]
            size = len(stripped)
            # parse keeps the stripped number only when its length is possible (or too long)
            if size not in country.lengths or size in country.local_lengths:
                return DEFER
            national = stripped
    # is_possible_number reads the main region's lengths
    return _answer(main, national)


def e164_fast(number: str, region: str | None) -> str | None | object:
    """:func:`e164` for the common shapes without parsing, or :data:`DEFER`."""
    if len(number) > _MAX_INPUT:
        return DEFER
    shape = _SIMPLE.fullmatch(number)
    if shape is None:
        return DEFER
    digits = _NOT_DIGIT.sub("", number)
    if len(digits) < 3:
        return DEFER
    if shape.group(1):
        return _international(digits)
    if region is None or region not in phonenumbers.SUPPORTED_REGIONS:
        return DEFER
    return _national(digits, region)


def e164_one(number: object, region: object) -> str | None:
    """:func:`e164` through the fast path where it answers."""
    if not isinstance(number, str) or not number.strip():
        return None
    fast = e164_fast(number, region if isinstance(region, str) else None)
    if fast is DEFER:
        return e164(number, region)
    return fast  # type: ignore[return-value]


def e164_many(numbers: Iterable[object], regions: Iterable[object]) -> list[str | None]:
    """:func:`e164` of each (number, region) pair, each distinct pair worked out once."""
    seen: dict[tuple[object, object], str | None] = {}
    out: list[str | None] = []
    for number, region in zip(numbers, regions):
        key = (number, region)
        found = seen.get(key, DEFER)
        if found is DEFER:
            found = seen[key] = e164_one(number, region)
        out.append(found)  # type: ignore[arg-type]
    return out
