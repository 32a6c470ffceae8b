"""The silver cleaners on Arrow arrays: what :mod:`lakecdp.ingest.standardise` does in Spark, no JVM.

Each cleaner takes and returns a ``pa.Array`` and computes, value for value, what its Spark
namesake computes. Spark's patterns are Java regular expressions (``[\\p{Cc}\\p{Cf}]``,
``[\\s\\p{Z}]+``), its ``lower``/``upper`` Java's case mapping and its ``trim`` removes spaces
(U+0020) only. On ASCII text each of these has an exact RE2 / Arrow counterpart (Java's ``\\s`` and
``\\p{Z}`` in ASCII are ``[\\t\\n\\x0B\\f\\r ]``, ``\\p{Cc}`` is ``[\\x00-\\x1F\\x7F]``, ASCII has no
``\\p{Cf}``), so ASCII values are cleaned vectorised by ``pyarrow.compute``; the other values
(accents, other scripts, zero-width spaces) go through Python once per distinct value -- the
``regex`` package reads Java's classes as Java does (:func:`lakecdp.ingest.javaregex.java_regex`),
``unicodedata`` gives NFC and Python's case mapping is Java's on these texts. DuckDB's
``nfc_normalize`` and ``lower`` are not used: utf8proc's simple case mapping differs from Java's
(``upper('ß')`` is ``ß``, Java's ``SS``).

Example:
    >>> clean_name(pa.array(["  Jose\\u0301  ", "a\\u200bb"])).to_pylist()
    ['José', 'ab']
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from lakecdp.ingest.javaregex import java_regex
from lakecdp.ingest.phones import e164_many
from lakecdp.ingest.validate import EMAIL_LOCAL_PART_MAX_OCTETS, EMAIL_MAX_OCTETS, EMAIL_PATTERN

#: free-text country names and aliases -> ISO 3166-1 alpha-2 (lower-case keys, dots removed)
COUNTRY_ALIASES: dict[str, str] = {
    "united kingdom": "GB",
    "uk": "GB",
    "gb": "GB",
    "gbr": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "united kingdom of great britain and northern ireland": "GB",
    "ireland": "IE",
    "ie": "IE",
    "irl": "IE",
    "eire": "IE",
    "éire": "IE",
    "republic of ireland": "IE",
    "germany": "DE",
    "deutschland": "DE",
    "de": "DE",
    "deu": "DE",
    "france": "FR",
    "fr": "FR",
    "fra": "FR",
    "spain": "ES",
    "españa": "ES",
    "espana": "ES",
    "es": "ES",
    "esp": "ES",
    "italy": "IT",
    "italia": "IT",
    "it": "IT",
    "ita": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "nederland": "NL",
    "nl": "NL",
    "belgium": "BE",
    "belgique": "BE",
    "belgië": "BE",
    "be": "BE",
    "portugal": "PT",
    "pt": "PT",
    "austria": "AT",
    "österreich": "AT",
    "at": "AT",
    "switzerland": "CH",
    "schweiz": "CH",
    "suisse": "CH",
    "ch": "CH",
    "sweden": "SE",
    "sverige": "SE",
    "se": "SE",
    "norway": "NO",
    "norge": "NO",
    "no": "NO",
    "denmark": "DK",
    "danmark": "DK",
    "dk": "DK",
    "poland": "PL",
    "polska": "PL",
    "pl": "PL",
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "us": "US",
    "america": "US",
    "canada": "CA",
    "ca": "CA",
    "australia": "AU",
    "au": "AU",
}


#: control (Cc) and format (Cf: zero-width space/joiners, BOM, bidi marks) characters
INVISIBLE_PATTERN = r"[\p{Cc}\p{Cf}]"
#: runs of whitespace (Java's \s) and separators (spaces of any script, line/paragraph separators)
SPACE_RUN_PATTERN = r"[\s\p{Z}]+"

_INVISIBLE = java_regex(INVISIBLE_PATTERN)
_SPACE_RUN = java_regex(SPACE_RUN_PATTERN)
_EMAIL = java_regex(EMAIL_PATTERN)
# the same classes on ASCII text, in RE2 (pyarrow.compute)
_ASCII_INVISIBLE = r"[\x00-\x1f\x7f]"
_ASCII_SPACE_RUN = r"[\t\n\x0b\x0c\r ]+"
_ASCII_NOT_IN_EMAIL = r"@\x00-\x20\x7f"
_ASCII_EMAIL = rf"^[^{_ASCII_NOT_IN_EMAIL}]+@[^{_ASCII_NOT_IN_EMAIL}.]{{1,63}}(\.[^{_ASCII_NOT_IN_EMAIL}.]{{1,63}})+$"
_DOTS = re.compile(r"[.]")
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

Cleaner = Callable[[str], "str | None"]


def junk_set(junk_values: Iterable[str]) -> frozenset[str]:
    """The source's junk values as Spark compares them (lower-cased)."""
    return frozenset(v.lower() for v in junk_values)


# -- per value (Python), for the text that is not ASCII ------------------------------------------


def _clean_text_one(value: str) -> str | None:
    cleaned = _SPACE_RUN.sub(" ", _INVISIBLE.sub("", value)).strip(" ")
    return cleaned or None


def _clean_name_one(value: str) -> str | None:
    return _clean_text_one(unicodedata.normalize("NFC", value))


def _postcode_one(value: str) -> str | None:
    cleaned = _SPACE_RUN.sub(" ", value.upper()).strip(" ")
    return cleaned or None


def _valid_email_one(email: str) -> bool:
    return (
        _EMAIL.search(email) is not None
        and len(email.encode("utf-8")) <= EMAIL_MAX_OCTETS
        and len(email.split("@", 1)[0].encode("utf-8")) <= EMAIL_LOCAL_PART_MAX_OCTETS
    )


def country_code_one(value: str) -> str | None:
    """:func:`lakecdp.ingest.standardise.country_code` of one text."""
    key = _DOTS.sub("", value.strip(" ").lower())
    if key in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[key]
    upper = key.upper()
    return upper if len(key) == 2 and upper in _REGIONS else None


# -- on arrays ----------------------------------------------------------------------------------


def _strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == pa.string() else values.cast(pa.string())


def per_distinct(values: pa.Array, fn: Cleaner) -> pa.Array:
    """``fn`` of each non-null value, worked out once per distinct value."""
    values = _strings(values)
    if len(values) == 0:
        return values
    encoded = pc.dictionary_encode(values)
    answers = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(answers, encoded.indices)


def _ascii_or_python(values: pa.Array, vectorised: Callable[[pa.Array], pa.Array], fn: Cleaner) -> pa.Array:
    """``vectorised`` on every value, replaced by ``fn`` (per distinct value) where not ASCII."""
    values = _strings(values)
    out = vectorised(values)
    other = pc.invert(pc.fill_null(pc.string_is_ascii(values), True))
    if not pc.any(other).as_py():
        return out
    return pc.replace_with_mask(out, other, per_distinct(pc.filter(values, other), fn))


def _empty_to_null(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _ascii_clean_text(values: pa.Array) -> pa.Array:
    visible = pc.replace_substring_regex(values, pattern=_ASCII_INVISIBLE, replacement="")
    single = pc.replace_substring_regex(visible, pattern=_ASCII_SPACE_RUN, replacement=" ")
    return _empty_to_null(pc.utf8_trim(single, characters=" "))


def clean_text(values: pa.Array) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.clean_text`: invisible characters removed, whitespace
    collapsed, trimmed; empty -> null."""
    return _ascii_or_python(values, _ascii_clean_text, _clean_text_one)


def clean_name(values: pa.Array) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.clean_name`: NFC, then as :func:`clean_text` (ASCII is NFC)."""
    return _ascii_or_python(values, _ascii_clean_text, _clean_name_one)


def normalise_postcode(values: pa.Array) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.normalise_postcode`: upper-case, single spaces, trimmed."""

    def ascii_postcode(text: pa.Array) -> pa.Array:
        single = pc.replace_substring_regex(pc.ascii_upper(text), pattern=_ASCII_SPACE_RUN, replacement=" ")
        return _empty_to_null(pc.utf8_trim(single, characters=" "))

    return _ascii_or_python(values, ascii_postcode, _postcode_one)


def _junk_mask(values: pa.Array, junk: frozenset[str]) -> pa.Array:
    """True where ``lower(trim(value))`` is a junk value (null for null)."""
    values = _strings(values)

    def ascii_key(text: pa.Array) -> pa.Array:
        return pc.ascii_lower(pc.utf8_trim(text, characters=" "))

    keys = _ascii_or_python(values, ascii_key, lambda v: v.strip(" ").lower())
    return pc.is_in(keys, value_set=pa.array(sorted(junk), pa.string()))


def null_if_junk(values: pa.Array, junk: frozenset[str]) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.null_if_junk`: null when the trimmed, lower-cased text is junk."""
    values = _strings(values)
    return pc.if_else(pc.fill_null(_junk_mask(values, junk), False), pa.scalar(None, pa.string()), values)


def trimmed_id(values: pa.Array, junk: frozenset[str]) -> pa.Array:
    """``null_if_junk(trim(x))``: the ingest's customer numbers, CRM and device ids."""
    return null_if_junk(pc.utf8_trim(_strings(values), characters=" "), junk)


def upper_trimmed(values: pa.Array) -> pa.Array:
    """``upper(trim(x))`` (an order's currency)."""
    return _ascii_or_python(
        values, lambda text: pc.ascii_upper(pc.utf8_trim(text, characters=" ")), lambda v: v.strip(" ").upper()
    )


def normalise_email(values: pa.Array, junk: frozenset[str]) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.normalise_email`: trimmed, lower-cased; null when not a
    valid address (:data:`~lakecdp.ingest.validate.EMAIL_PATTERN`, RFC 5321 lengths) or junk."""

    def ascii_email(text: pa.Array) -> pa.Array:
        email = pc.ascii_lower(pc.utf8_trim(text, characters=" "))
        local = pc.find_substring(email, "@")
        valid = pc.and_(
            pc.match_substring_regex(email, _ASCII_EMAIL),
            pc.and_(
                pc.less_equal(pc.binary_length(email), EMAIL_MAX_OCTETS),
                pc.less_equal(local, EMAIL_LOCAL_PART_MAX_OCTETS),
            ),
        )
        return pc.if_else(valid, email, pa.scalar(None, pa.string()))

    def unicode_email(value: str) -> str | None:
        email = value.strip(" ").lower()
        return email if _valid_email_one(email) else None

    return null_if_junk(_ascii_or_python(values, ascii_email, unicode_email), junk)


def country_code(values: pa.Array) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.country_code`: names and aliases -> ISO alpha-2, else null."""
    return per_distinct(values, country_code_one)


def normalise_phone(values: pa.Array, countries: pa.Array, *, default_region: str, junk: frozenset[str]) -> pa.Array:
    """:func:`lakecdp.ingest.standardise.normalise_phone`: E.164 read in the record's country
    (``countries``: ISO alpha-2, from :func:`country_code`) else ``default_region``; null when
    junk or impossible (:func:`lakecdp.ingest.phones.e164_many`: fast path, one parse per
    distinct pair)."""
    numbers = null_if_junk(values, junk)
    regions = pc.fill_null(_strings(countries), default_region)
    return pa.array(e164_many(numbers.to_pylist(), regions.to_pylist()), pa.string())


def without_junk_elements(lists: pa.Array, junk: frozenset[str]) -> pa.Array:
    """``filter(coalesce(xs, array()), x -> null_if_junk(x) IS NOT NULL)`` on a list<string> array."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lists = pc.fill_null(lists, pa.scalar([], lists.type))
    flat = _strings(pc.list_flatten(lists))
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    keep = pc.fill_null(null_if_junk(flat, junk).is_valid(), False)
    kept = pc.filter(flat, keep)
    counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), kept)
