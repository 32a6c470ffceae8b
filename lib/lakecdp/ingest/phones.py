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
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import NumberParseException, PhoneNumberFormat

#: the fast path cannot tell; ask phonenumbers
DEFER: Final = object()

# ASCII digits with the separators people type (space, hyphen, parentheses), an optional leading
# plus: nothing phonenumbers could read as letters, an extension, a second number or a tel: URI
_SIMPLE = re.compile(r"[ (]*(\+?)[0-9][0-9 ()\-]*")
# the same shape in RE2 (pyarrow.compute), and its leading plus
_SIMPLE_RE2 = r"^[ (]*\+?[0-9][0-9 ()\-]*$"
_PLUS_RE2 = r"^[ (]*\+"
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
    #: the lengths is_possible_number accepts (lengths and local-only lengths)
    possible: frozenset[int]


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
        possible=frozenset(general.possible_length if general is not None else ())
        | frozenset(general.possible_length_local_only if general is not None else ()),
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
    # phonenumbers keeps leading zeros (Italian style) in E.164 but not in national_number
    significant = national.lstrip("0") or "0"
    if len(national) not in country.possible or significant.count(significant[0]) == len(significant):
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
    return e164_digits(_NOT_DIGIT.sub("", number), bool(shape.group(1)), region)


def e164_digits(digits: str, plus: bool, region: str | None) -> str | None | object:
    """:func:`e164_fast` of a number of the simple shape, from its digits and whether it starts
    with ``+``: all the fast path reads of it (so answers can be shared by every way of writing
    one number)."""
    if len(digits) < 3:
        return DEFER
    if plus:
        return _international(digits)
    if region is None or region not in phonenumbers.SUPPORTED_REGIONS:
        return DEFER
    return _national(digits, region)


# -- the fast path over Arrow arrays ----------------------------------------------------------------


def _re2_prefix(values: pa.Array, pattern: re.Pattern[str]) -> pa.Array:
    """``pattern.match(v) is not None`` per value (RE2: leftmost-first like Python's ``re`` on
    these metadata patterns; one RE2 cannot compile raises ``pa.ArrowInvalid``)."""
    return pc.match_substring_regex(values, f"^(?:{pattern.pattern})")


def _answers_of(country: _Country, national: pa.Array) -> tuple[pa.Array, pa.Array]:
    """:func:`_answer` per national number: (the E.164 text or null, whether DEFER)."""
    length = pc.utf8_length(national)
    deferred = pc.or_(pc.less(length, _MIN_NSN), pc.greater(length, _MAX_NSN))
    significant = pc.utf8_ltrim(national, characters="0")
    significant = pc.if_else(pc.equal(significant, ""), "0", significant)
    one_digit = pc.equal(
        pc.binary_repeat(pc.utf8_slice_codeunits(significant, 0, 1), pc.utf8_length(significant)), significant
    )
    possible = pc.is_in(length, value_set=pa.array(sorted(country.possible), length.type))
    refused = pc.or_(deferred, pc.or_(pc.invert(possible), one_digit))
    text = pc.binary_join_element_wise(pa.scalar(f"+{country.code}"), national, "")
    return pc.if_else(refused, pa.scalar(None, pa.string()), text), deferred


def _national_answers(digits: pa.Array, region: str) -> tuple[pa.Array, pa.Array]:
    """:func:`_national` of each of ``digits`` (3 digits or more) read in ``region``."""
    country = _country(region)
    main = _main_country(int(country.code)) if country is not None else None
    if country is None or main is None or main.code != country.code:
        return pa.nulls(len(digits), pa.string()), pa.repeat(pa.scalar(True), len(digits))
    deferred = pc.or_(pc.less(pc.utf8_length(digits), _MIN_NSN), pc.starts_with(digits, country.code))
    if country.idd is not None:
        deferred = pc.or_(deferred, _re2_prefix(digits, country.idd))
    national = digits
    if country.trunk is not None:
        found = _re2_prefix(digits, country.trunk)
        if country.has_transform or country.trunk.groups:
            deferred = pc.or_(deferred, found)
        else:
            if country.general is not None:
                valid = pc.match_substring_regex(digits, f"^(?:{country.general.pattern})$")
                deferred = pc.or_(deferred, pc.and_(found, valid))
            stripped = pc.replace_substring_regex(digits, f"^(?:{country.trunk.pattern})", "", max_replacements=1)
            size = pc.utf8_length(stripped)
            unusable = pc.or_(
                pc.invert(pc.is_in(size, value_set=pa.array(sorted(country.lengths), size.type))),
                pc.is_in(size, value_set=pa.array(sorted(country.local_lengths), size.type)),
            )
            deferred = pc.or_(deferred, pc.and_(found, unusable))
            national = pc.if_else(found, stripped, digits)
    answers, answer_deferred = _answers_of(main, national)
    return pc.if_else(deferred, pa.scalar(None, pa.string()), answers), pc.or_(deferred, answer_deferred)


def _international_answers(digits: pa.Array) -> tuple[pa.Array, pa.Array]:
    """:func:`_international` of each of ``digits`` (3 digits or more)."""
    known = pa.array(sorted(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE), pa.string())
    prefixes = [pc.utf8_slice_codeunits(digits, 0, size) for size in (1, 2, 3)]
    # the first 1-3 digit prefix phonenumbers knows (a leading 0 never is one: int("0...") is)
    calling = pc.if_else(
        pc.is_in(prefixes[0], value_set=known),
        prefixes[0],
        pc.if_else(
            pc.is_in(prefixes[1], value_set=known),
            prefixes[1],
            pc.if_else(pc.is_in(prefixes[2], value_set=known), prefixes[2], pa.scalar(None, pa.string())),
        ),
    )
    calling = pc.if_else(pc.starts_with(digits, "0"), pa.scalar(None, pa.string()), calling)
    parts = [_all_deferred(pc.indices_nonzero(pc.is_null(calling)))]
    for code in pc.unique(pc.drop_null(calling)).to_pylist():
        positions = pc.indices_nonzero(pc.fill_null(pc.equal(calling, code), False))
        country = _main_country(int(code))
        if country is None:
            parts.append(_all_deferred(positions))
            continue
        national = pc.utf8_slice_codeunits(pc.take(digits, positions), len(code))
        deferred = pc.less(pc.utf8_length(national), _MIN_NSN)
        if country.trunk is not None:
            deferred = pc.or_(deferred, _re2_prefix(national, country.trunk))
        answers, answer_deferred = _answers_of(country, national)
        answers = pc.if_else(deferred, pa.scalar(None, pa.string()), answers)
        parts.append((positions, answers, pc.or_(deferred, answer_deferred)))
    return _in_order(parts, len(digits))


def _all_deferred(positions: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    return positions, pa.nulls(len(positions), pa.string()), pa.repeat(pa.scalar(True), len(positions))


def _in_order(parts: list[tuple[pa.Array, pa.Array, pa.Array]], size: int) -> tuple[pa.Array, pa.Array]:
    """The answers and DEFER flags of ``parts`` (positions, answers, deferred; the positions of all
    of them every position below ``size`` once) in position order."""
    positions = pa.concat_arrays([p.cast(pa.int64()) for p, _, _ in parts])
    order = pc.sort_indices(positions)
    answers = pc.take(pa.concat_arrays([a.cast(pa.string()) for _, a, _ in parts]), order)
    deferred = pc.take(pa.concat_arrays([d.cast(pa.bool_()) for _, _, d in parts]), order)
    assert len(answers) == size
    return answers, deferred


def e164_digits_array(digits: pa.Array, plus: pa.Array, regions: pa.Array) -> tuple[pa.Array, pa.Array]:
    """:func:`e164_digits` of each (digits, plus, region) by ``pyarrow.compute``: (the answers,
    null for None and DEFER; whether DEFER). A region (or the international rows) whose metadata
    patterns RE2 does not compile is answered number by number in Python."""
    long_enough = pc.greater_equal(pc.utf8_length(digits), 3)
    parts = [_all_deferred(pc.indices_nonzero(pc.invert(long_enough)))]
    groups: list[tuple[str | None, pa.Array]] = [(None, pc.indices_nonzero(pc.and_(long_enough, plus)))]
    national = pc.and_(long_enough, pc.invert(plus))
    for region in pc.unique(pc.filter(regions, national)).to_pylist():
        if region is None or region not in phonenumbers.SUPPORTED_REGIONS:
            selected = pc.is_null(regions) if region is None else pc.fill_null(pc.equal(regions, region), False)
            parts.append(_all_deferred(pc.indices_nonzero(pc.and_(national, selected))))
        else:
            groups.append(
                (region, pc.indices_nonzero(pc.and_(national, pc.fill_null(pc.equal(regions, region), False))))
            )
    for region, positions in groups:
        some = pc.take(digits, positions)
        try:
            answers, deferred = _international_answers(some) if region is None else _national_answers(some, region)
        except pa.ArrowInvalid:
            found = [e164_digits(d, region is None, region) for d in some.to_pylist()]
            answers = pa.array([None if a is DEFER else a for a in found], pa.string())
            deferred = pa.array([a is DEFER for a in found], pa.bool_())
        parts.append((positions, answers, deferred))
    return _in_order(parts, len(digits))


def e164_one(number: object, region: object) -> str | None:
    """:func:`e164` through the fast path where it answers."""
    if not isinstance(number, str) or not number.strip():
        return None
    fast = e164_fast(number, region if isinstance(region, str) else None)
    if fast is DEFER:
        return e164(number, region)
    return fast  # type: ignore[return-value]


def e164_array(numbers: pa.Array, regions: pa.Array) -> pa.Array:
    """:func:`e164_many` on Arrow arrays: numbers of the simple shape are reduced to (digits, plus,
    region) by ``pyarrow.compute`` and answered once per distinct reduction (``07700 900123`` and
    ``07700900123`` share one); the others, and those the fast path defers, once per distinct
    (number, region) through :func:`e164_many`."""
    if isinstance(numbers, pa.ChunkedArray):
        numbers = numbers.combine_chunks()
    if isinstance(regions, pa.ChunkedArray):
        regions = regions.combine_chunks()
    numbers = numbers.cast(pa.string())
    regions = regions.cast(pa.string())
    simple = pc.fill_null(
        pc.and_(
            pc.match_substring_regex(numbers, _SIMPLE_RE2),
            pc.less_equal(pc.utf8_length(numbers), _MAX_INPUT),
        ),
        False,
    )
    plus = pc.match_substring_regex(numbers, _PLUS_RE2)
    digits = pc.replace_substring_regex(numbers, "[^0-9]", "")
    # a key per (region, plus, digits); a null region stays apart from every region ("\x00")
    keys = pc.binary_join_element_wise(pc.fill_null(regions, "\x00"), pc.if_else(plus, "+", ""), digits, pa.scalar("|"))
    keys = pc.if_else(simple, keys, pa.scalar(None, pa.string()))
    encoded = pc.dictionary_encode(keys)
    # the distinct keys taken apart again (from the right: a region could hold a "|")
    parts = pc.split_pattern(encoded.dictionary, "|", max_splits=2, reverse=True)
    region_of = pc.list_element(parts, 0)
    fast, deferred = e164_digits_array(
        pc.list_element(parts, 2),
        pc.equal(pc.list_element(parts, 1), "+"),
        pc.if_else(pc.equal(region_of, "\x00"), pa.scalar(None, pa.string()), region_of),
    )
    out = pc.take(fast, encoded.indices)
    # rows to parse: not of the simple shape (and not null), or deferred
    parse = pc.or_(
        pc.and_(pc.invert(simple), numbers.is_valid()),
        pc.fill_null(pc.take(deferred, encoded.indices), False),
    )
    if not pc.any(parse).as_py():
        return out
    slow = e164_many(pc.filter(numbers, parse).to_pylist(), pc.filter(regions, parse).to_pylist())
    return pc.replace_with_mask(out, parse, pa.array(slow, pa.string()))


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
