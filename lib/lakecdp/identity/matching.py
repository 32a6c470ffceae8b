"""Probabilistic matching with Splink 5 on DuckDB (one machine) or Spark (a cluster).

The model is described in ``conf/identity.yaml`` (``model`` section) and turned into
Splink settings here, per backend: SQL functions and date formats differ between DuckDB
and Spark, so the *settings* are generated for the backend in use while the *trained
parameters* (prior, m and u of every level) come from one versioned JSON file that either
backend can apply.

Evidence design (what the product is judged on): households share surname, address,
phone and sometimes email, so

- street and postcode are one ``address`` comparison and email and phone one ``contact``
  comparison: correlated evidence is counted once;
- first name (with nicknames) and date of birth carry their own weight, so a sibling
  with the same surname, address and phone but another first name and birth date is a
  different customer.

Example:
    >>> matcher = ProbabilisticMatcher(config, spark=spark, model_dir=Path("models/identity"))
    >>> matcher.train(records)            # model_v1.json (+ model_v1.meta.json)
    >>> edges = matcher.predict(records)  # identity.edges rows, edge_type 'probabilistic'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp.identity.blocking import rule_columns, special_rule, special_rule_sql
from lakecdp.identity.config import ComparisonSpec, IdentityConfig
from lakecdp.columns import require_columns
from lakecdp.identity.deterministic import (
    EDGE_SCHEMA,
    canonical_first_name,
    cleaned_identifier,
    first_name_variants,
    normalised_name,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

MATCH_INPUT_COLUMNS = (
    "record_id",
    "source",
    "first_name",
    "last_name",
    "date_of_birth",
    "email",
    "phone",
    "address_line1",
    "postcode",
    "city",
    "country",
)
#: used when present (silver.customer_records has them; older tables and tests may not)
OPTIONAL_INPUT_COLUMNS = ("middle_name", "date_of_birth_text", "address_line2", "region")
PREPARED_COLUMNS = (
    "record_id",
    "source",
    "first_name",
    "first_name_canonical",
    "first_name_variants",
    "first_name_family",
    "first_name_known",
    "first_name_soundex",
    "middle_name",
    "last_name",
    "last_name_soundex",
    "full_name",
    "dob",
    "email",
    "phone",
    "address_line1",
    "street_number",
    "street_name",
    "address_line2",
    "postcode",
    "city",
    "region",
    "country",
)
DATE_FORMATS = {"duckdb": "%Y%m%d", "spark": "yyyyMMdd"}
_MODEL_RE = re.compile(r"^model_v(?P<version>\d+)\.json$")

# common street-type words, so "12 High Street" and "12 high st." compare equal
_STREET_ABBREVIATIONS = {
    "street": "st",
    "road": "rd",
    "avenue": "ave",
    "lane": "ln",
    "drive": "dr",
    "close": "cl",
    "court": "ct",
    "place": "pl",
    "crescent": "cres",
    "gardens": "gdns",
    "terrace": "ter",
    "square": "sq",
    "grove": "gr",
    "park": "pk",
    "strasse": "str",
    "straße": "str",
    "apartment": "apt",
    "flat": "apt",
}


class ModelMismatchError(ValueError):
    """A saved model does not fit the configured comparisons; retrain it."""


# -- Column -> Column / DataFrame -> DataFrame -------------------------------------------
def normalised_street(street: Column) -> Column:
    """Lower-case street with punctuation dropped and street types abbreviated."""
    cleaned = F.regexp_replace(F.lower(street), r"[^\p{L}\p{N}\s]", " ")
    for word, abbreviation in _STREET_ABBREVIATIONS.items():
        cleaned = F.regexp_replace(cleaned, rf"\b{word}\b", abbreviation)
    cleaned = F.trim(F.regexp_replace(cleaned, r"\s+", " "))
    return F.when(cleaned == "", F.lit(None).cast("string")).otherwise(cleaned)


def normalised_postcode(postcode: Column) -> Column:
    cleaned = F.regexp_replace(F.upper(postcode), r"[^A-Z0-9]", "")
    return F.when(cleaned == "", F.lit(None).cast("string")).otherwise(cleaned)


def street_number(street: Column) -> Column:
    """The house number of a normalised street (first token starting with a digit), or null."""
    number = F.regexp_extract(street, r"(^|\s)(\d+[a-z]?)(\s|$)", 2)
    return F.when(number == "", F.lit(None).cast("string")).otherwise(number)


def street_name(street: Column) -> Column:
    """A normalised street without its numbers: "12 high st" -> "high st"."""
    name = F.trim(F.regexp_replace(F.regexp_replace(street, r"\b\d+[a-z]?\b", " "), r"\s+", " "))
    return F.when(name == "", F.lit(None).cast("string")).otherwise(name)


def birth_date_text(date_of_birth: Column, raw_text: Column) -> Column:
    """``yyyyMMdd`` of the parsed birth date, else of the raw text when it reads as one.

    A birth date that failed to parse (``19461302``: a typo in the month) is null in
    ``date_of_birth`` but kept in ``date_of_birth_text``; its digits still sit one typo
    away from the true date, which is exactly what the "one typo" level looks for. Only
    8 digits starting 18/19/20 are taken (year first), so a text in another order is not
    compared digit by digit with the wrong fields.
    """
    digits = F.regexp_replace(raw_text, r"[^0-9]", "")
    usable = (F.length(digits) == 8) & digits.rlike(r"^(18|19|20)")
    return F.coalesce(F.date_format(date_of_birth, "yyyyMMdd"), F.when(usable, digits))


def _soundex(name: Column) -> Column:
    """Soundex of the name's letters (Spark's built-in); null for a null or letterless name."""
    letters = F.regexp_replace(name, r"[^a-z]", "")
    return F.when(letters != "", F.soundex(letters))


def first_name_family(first_name: Column, nicknames: dict[str, list[str]]) -> Column:
    """Sorted array of the name, the names it is a nickname of and all their nicknames:
    ``danny`` and ``daniel`` -> ``[dan, daniel, danny]``; a name the nickname list does not
    know -> ``[name]``. A first name one typo away from a member of the other record's
    family ("dannny" / "daniel", "eimly" / "em") is a nickname mistyped."""
    families: dict[str, set[str]] = {}
    for canonical, variants in nicknames.items():
        members = {canonical.lower(), *(v.lower() for v in variants)}
        for name in members:
            families.setdefault(name, {name}).update(members)
    names = F.array(first_name)
    if families:
        pairs: list[Column] = []
        for name, members in sorted(families.items()):
            pairs.extend([F.lit(name), F.array(*[F.lit(m) for m in sorted(members)])])
        names = F.coalesce(F.element_at(F.create_map(*pairs), first_name), names)
    return F.when(first_name.isNotNull(), names)


def known_first_name(first_name: Column, nicknames: dict[str, list[str]]) -> Column:
    """True when the nickname list knows the name (as a name or a nickname): two different
    known names ("ronald" / "donald", "gabriel" / "gabriele") are two names, not a typo."""
    known = sorted({name.lower() for canonical, variants in nicknames.items() for name in [canonical, *variants]})
    if not known:
        return F.lit(False)
    return F.coalesce(first_name.isin(known), F.lit(False))


def _optional(records: DataFrame, column: str) -> Column:
    return F.col(column) if column in records.columns else F.lit(None).cast("string")


def prepare_for_matching(records: DataFrame, config: IdentityConfig) -> DataFrame:
    """The columns the Splink model compares, normalised the same way for every backend.

    ``dob`` is a ``yyyyMMdd`` string (from the parsed date, else the raw text when it
    reads as one); junk emails and phones are null; the street is split into its number
    and its name (for "same street, other number" and blocking on number + postcode);
    soundex codes of both names serve the phonetic level and blocking.
    """
    require_columns(records, MATCH_INPUT_COLUMNS, what="customer records")
    first = normalised_name(F.col("first_name"))
    last = normalised_name(F.col("last_name"))
    street = normalised_street(F.col("address_line1"))
    middle = normalised_name(_optional(records, "middle_name"))
    return records.select(
        "record_id",
        "source",
        first.alias("first_name"),
        canonical_first_name(first, config.model.nicknames).alias("first_name_canonical"),
        first_name_variants(first, config.model.nicknames).alias("first_name_variants"),
        first_name_family(first, config.model.nicknames).alias("first_name_family"),
        known_first_name(first, config.model.nicknames).alias("first_name_known"),
        _soundex(first).alias("first_name_soundex"),
        middle.alias("middle_name"),
        last.alias("last_name"),
        _soundex(last).alias("last_name_soundex"),
        F.when(first.isNotNull() & last.isNotNull(), F.concat_ws(" ", first, last)).alias("full_name"),
        birth_date_text(F.col("date_of_birth"), _optional(records, "date_of_birth_text")).alias("dob"),
        cleaned_identifier("email", F.col("email"), config.deterministic).alias("email"),
        cleaned_identifier("phone", F.col("phone"), config.deterministic).alias("phone"),
        street.alias("address_line1"),
        street_number(street).alias("street_number"),
        street_name(street).alias("street_name"),
        normalised_street(_optional(records, "address_line2")).alias("address_line2"),
        normalised_postcode(F.col("postcode")).alias("postcode"),
        F.lower(F.trim("city")).alias("city"),
        F.lower(F.trim(_optional(records, "region"))).alias("region"),
        F.upper(F.trim("country")).alias("country"),
    )


# -- Splink settings, per backend --------------------------------------------------------
def _similar(column: str, threshold: float):
    """One typo or transposition (Damerau-Levenshtein <= 1) or Jaro-Winkler >= threshold:
    "wil"/"wli" and "nathas"/"nathan" are the same name mistyped."""
    import splink.comparison_level_library as cll

    return cll.Or(cll.JaroWinklerLevel(column, threshold), cll.DamerauLevenshteinLevel(column, 1))


def _similar_reversed(first: str, last: str):
    """First and last name swapped, each at most one typo away (symmetrical)."""
    import splink.comparison_level_library as cll

    # one typo only: Jaro-Winkler rates a prefix ("dec" / "declan") similar, and a swap
    # that holds only through prefixes is no swap
    def close(a: str, b: str) -> str:
        return f"damerau_levenshtein({a}, {b}) <= 1"

    return cll.CustomLevel(f"{close(first + '_l', last + '_r')} and {close(last + '_l', first + '_r')}")


def _nickname_typo(backend: str):
    """Either first name one typo (or transposition) away from a name of the other's
    nickname family ("dannny" / "daniel" via "danny", "eimly" / "em" via "emily", "tmi" /
    "timothy" via "tim", "moo" / "mohammed" via "mo"). The mistyped name has at least three
    letters and is no name the nickname list knows: "tom" is not "tim" mistyped. Symmetrical."""
    import splink.comparison_level_library as cll

    def one_way(side: str, other: str) -> str:
        name, family, known = f"first_name_{side}", f"first_name_family_{other}", f"first_name_known_{side}"
        test = f"length(x) >= 2 and damerau_levenshtein({name}, x) <= 1"
        if backend == "spark":
            found = f"exists({family}, x -> {test})"
        else:
            found = f"len(list_filter({family}, lambda x: {test})) > 0"
        return f"not {known} and length({name}) >= 3 and {found}"

    return cll.CustomLevel(f"({one_way('l', 'r')}) or ({one_way('r', 'l')})", base_dialect_str=backend)


def _swapped_nickname(backend: str):
    """One record has the names swapped and the given name as a nickname of the other's
    ("oconnor ted" / "theodore oconnor"): its first name is the other's last name and its
    last name is in the other's nickname family. Symmetrical."""
    import splink.comparison_level_library as cll

    contains = "array_contains" if backend == "spark" else "list_contains"

    def one_way(swapped: str, other: str) -> str:
        return (
            f"first_name_{swapped} = last_name_{other} and {contains}(first_name_family_{other}, last_name_{swapped})"
        )

    return cll.CustomLevel(f"({one_way('l', 'r')}) or ({one_way('r', 'l')})", base_dialect_str=backend)


def _name_comparison(spec: ComparisonSpec, backend: str):
    """First + last name as ONE comparison, graded from exact to phonetic.

    A name missing on one side is not "nothing to compare" while the other name is there:
    with a first name on both sides the first names must agree for any level above
    "else", so ``Jan Pinon`` / ``Hillary <no surname>`` counts against a match exactly
    as two different first names do (a household's other member).
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    first_same = cll.ArrayIntersectLevel("first_name_variants", 1)
    last_same = cll.ExactMatchLevel("last_name")
    # full_name is "first last" when both are there (null otherwise), so exact on it is
    # exact on both; Splink's term-frequency adjustment needs a plain exact level
    exact = cll.ExactMatchLevel("full_name", term_frequency_adjustments=spec.term_frequency)
    exact = exact.configure(label_for_charts="first and last name exact")

    def rarer(level):
        """With term frequencies, a name swapped, nicknamed or with one typo in one part
        weighs by how rare it is too: by the more common of the two records' full names (the
        larger frequency ``f``; Splink adds ``log2(u_exact / f)`` to the level's weight, u_exact
        being the exact level's average). A part mistyped is rare by accident, so the other
        record's spelling decides, also with both parts one typo / similar ("doanld patl" /
        "donald patel"). The weaker levels (sound alike, initials) stay as trained: too far
        from one name to borrow its frequency."""
        if not spec.term_frequency:
            return level
        return level.configure(tf_adjustment_column="full_name", tf_adjustment_weight=1.0)

    # two different names the nickname list knows are two people's names, not one mistyped:
    # a household's "ronald" and "donald" at one address must not read as a typo
    not_two_names = cll.Not(cll.CustomLevel("first_name_known_l and first_name_known_r"))
    first_initial = cll.CustomLevel(
        "(length(first_name_l) = 1 or length(first_name_r) = 1) "
        "and substr(first_name_l, 1, 1) = substr(first_name_r, 1, 1)"
    )
    return cl.CustomComparison(
        output_column_name="name",
        comparison_description="first and last name",
        comparison_levels=[
            # nothing to compare: no first name on one side and no last name on one side
            cll.CustomLevel(
                "(first_name_l is null or first_name_r is null) and (last_name_l is null or last_name_r is null)"
            ).configure(is_null_level=True, label_for_charts="no name to compare"),
            exact,
            # symmetrical: Splink's default checks only l.first = r.last, so a pair scored
            # as (a, b) and as (b, a) differed, and incremental runs (new records on the left)
            # disagreed with full runs (smaller record id on the left)
            rarer(
                cll.ColumnsReversedLevel("first_name", "last_name", symmetrical=True).configure(
                    label_for_charts="first and last name swapped"
                )
            ),
            rarer(
                _similar_reversed("first_name", "last_name").configure(
                    label_for_charts="first and last name swapped, one typo / similar"
                )
            ),
            rarer(_swapped_nickname(backend).configure(label_for_charts="first and last name swapped, nickname")),
            rarer(cll.And(first_same, last_same).configure(label_for_charts="nickname, same last name")),
            rarer(
                cll.And(not_two_names, _similar("first_name", t), last_same).configure(
                    label_for_charts="first name one typo / similar, same last name"
                )
            ),
            rarer(
                cll.And(first_same, _similar("last_name", t)).configure(
                    label_for_charts="same first name, last name one typo / similar"
                )
            ),
            rarer(
                cll.And(not_two_names, _similar("first_name", t), _similar("last_name", t)).configure(
                    label_for_charts="similar first and last name"
                )
            ),
            cll.And(
                not_two_names, cll.ExactMatchLevel("first_name_soundex"), cll.ExactMatchLevel("last_name_soundex")
            ).configure(label_for_charts="first and last name sound alike"),
            cll.And(first_initial, last_same).configure(label_for_charts="initial, same last name"),
            # a nickname with a typo on top: without it "Dannny Dunne" / "Daniel Dunne" at one
            # address reads as two members of one household
            cll.And(last_same, not_two_names, _nickname_typo(backend)).configure(
                label_for_charts="nickname one typo, same last name"
            ),
            # one record lacks a last name: the first names alone speak
            cll.And(cll.NullLevel("last_name"), first_same).configure(
                label_for_charts="same first name, last name missing"
            ),
            cll.And(cll.NullLevel("last_name"), _similar("first_name", t)).configure(
                label_for_charts="similar first name, last name missing"
            ),
            cll.And(cll.NullLevel("first_name"), last_same).configure(
                label_for_charts="same last name, first name missing"
            ),
            cll.And(cll.NullLevel("first_name"), _similar("last_name", t)).configure(
                label_for_charts="similar last name, first name missing"
            ),
            # names that disagree in one part: a household's other member (same surname),
            # or one person's first name mistyped beyond recognition / surname changed by
            # marriage. Their own levels, so EM learns from the data how often true matches
            # show them; the birth date and address still decide, and a household member
            # differs there too
            cll.And(last_same, cll.Not(cll.NullLevel("first_name"))).configure(
                label_for_charts="same last name, other first name"
            ),
            cll.And(first_same, cll.Not(cll.NullLevel("last_name"))).configure(
                label_for_charts="same first name, other last name"
            ),
            cll.And(_similar("first_name", t), cll.Not(cll.NullLevel("last_name"))).configure(
                label_for_charts="similar first name, other last name"
            ),
            cll.ElseLevel(),
        ],
    )


def _dob_comparison(spec: ComparisonSpec, backend: str):
    """Birth date as ``yyyyMMdd`` text: exact, one typo, day/month swapped, same month,
    two typos, else. Text levels only, so an unparseable raw date still compares."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    day_month_swapped = cll.CustomLevel(
        "substr(dob_l, 1, 4) = substr(dob_r, 1, 4) "
        "and substr(dob_l, 5, 2) = substr(dob_r, 7, 2) "
        "and substr(dob_l, 7, 2) = substr(dob_r, 5, 2)",
        label_for_charts="day and month swapped",
    )
    return cl.CustomComparison(
        output_column_name="date_of_birth",
        comparison_description="date of birth",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob").configure(label_for_charts="same date of birth"),
            cll.DamerauLevenshteinLevel("dob", 1).configure(label_for_charts="one typo"),
            day_month_swapped,
            cll.CustomLevel("substr(dob_l, 1, 6) = substr(dob_r, 1, 6)").configure(
                label_for_charts="same year and month"
            ),
            cll.DamerauLevenshteinLevel("dob", 2).configure(label_for_charts="two typos"),
            # a raw text that is no calendar date ("19880132") and is not within the typos
            # above says nothing about the true date: neutral, not "different"
            cll.CustomLevel(f"not ({_calendar_date('dob_l')}) or not ({_calendar_date('dob_r')})").configure(
                is_null_level=True, label_for_charts="not a calendar date on one side"
            ),
            cll.ElseLevel(),
        ],
    )


def _calendar_date(column: str) -> str:
    """SQL (both dialects): ``column`` (yyyyMMdd text) has a month 01-12 and a day that month
    can have (February up to 29)."""
    month, day = f"substr({column}, 5, 2)", f"substr({column}, 7, 2)"
    return (
        f"{month} between '01' and '12' and {day} between '01' and "
        f"(case when {month} = '02' then '29' when {month} in ('04', '06', '09', '11') then '30' else '31' end)"
    )


def _address_comparison(spec: ComparisonSpec):
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    same_street = cll.ExactMatchLevel("address_line1")
    same_postcode = cll.ExactMatchLevel("postcode", term_frequency_adjustments=False)
    both = cll.And(cll.ExactMatchLevel("address_line1"), cll.ExactMatchLevel("postcode"))
    both = both.configure(label_for_charts="same street and postcode")
    if spec.term_frequency:
        both = both.configure(tf_adjustment_column="postcode", tf_adjustment_weight=1.0)
    return cl.CustomComparison(
        output_column_name="address",
        comparison_description="street and postcode, as one piece of evidence",
        comparison_levels=[
            cll.And(cll.NullLevel("address_line1"), cll.NullLevel("postcode")).configure(
                is_null_level=True, label_for_charts="address missing"
            ),
            both,
            cll.And(cll.ExactMatchLevel("postcode"), cll.JaroWinklerLevel("address_line1", t)).configure(
                label_for_charts="same postcode, similar street"
            ),
            same_street.configure(label_for_charts="same street, other postcode"),
            same_postcode.configure(label_for_charts="same postcode, other street"),
            cll.ElseLevel(),
        ],
    )


def _contact_comparison(spec: ComparisonSpec):
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(
        output_column_name="contact",
        comparison_description="email and phone, as one piece of evidence",
        comparison_levels=[
            cll.And(cll.NullLevel("email"), cll.NullLevel("phone")).configure(
                is_null_level=True, label_for_charts="no email or phone to compare"
            ),
            cll.And(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone")).configure(
                label_for_charts="same email and phone"
            ),
            cll.Or(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone")).configure(
                label_for_charts="same email or phone"
            ),
            cll.ElseLevel(),
        ],
    )


def _address_contact_comparison(spec: ComparisonSpec):
    """Where a person lives and how to reach them, as ONE piece of evidence: a household
    shares all of it, so it may count once, never three times.

    Graded: street + number + postcode, one typo in the postcode or the street, same
    street and number without a postcode, same street other number (a neighbour or a
    typo), same postcode, same city, else.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    same_street = cll.ExactMatchLevel("address_line1")
    same_postcode = cll.ExactMatchLevel("postcode")
    same_place = cll.And(same_street, same_postcode)
    same_contact = cll.Or(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone"))
    same_number = cll.ExactMatchLevel("street_number")
    postcode_typo = cll.DamerauLevenshteinLevel("postcode", 1)
    street_similar = cll.And(same_number, _similar("street_name", t))
    return cl.CustomComparison(
        output_column_name="address_contact",
        comparison_description="address and contact points, as one piece of evidence",
        comparison_levels=[
            cll.And(
                cll.NullLevel("address_line1"),
                cll.NullLevel("postcode"),
                cll.NullLevel("email"),
                cll.NullLevel("phone"),
            ).configure(is_null_level=True, label_for_charts="nothing to compare"),
            cll.And(same_place, same_contact).configure(label_for_charts="same address and contact"),
            same_contact.configure(label_for_charts="same email or phone"),
            same_place.configure(label_for_charts="same address"),
            cll.Or(
                cll.And(same_street, postcode_typo),
                cll.And(same_postcode, street_similar),
            ).configure(label_for_charts="same address but one typo"),
            cll.And(street_similar, cll.Or(postcode_typo, cll.ExactMatchLevel("city"))).configure(
                label_for_charts="same street and number, postcode or city close"
            ),
            cll.Or(same_street, street_similar).configure(
                label_for_charts="same street and number, other or no postcode"
            ),
            cll.And(same_postcode, cll.ExactMatchLevel("street_name")).configure(
                label_for_charts="same street, other number"
            ),
            # a typo in the number and in the street name or postcode at once ("511 bywaters
            # pilace 5014" / "15 bywaters pl 5041"): the street still reads alike and the place
            # is near
            cll.And(
                _similar("street_name", t),
                cll.Or(same_postcode, postcode_typo, cll.ExactMatchLevel("city")),
            ).configure(label_for_charts="similar street, postcode or city close"),
            # another street but a postcode one typo away in a town of the same name
            cll.And(postcode_typo, _similar("city", t)).configure(label_for_charts="postcode one typo, same town"),
            same_postcode.configure(label_for_charts="same postcode only"),
            cll.ExactMatchLevel("city").configure(label_for_charts="same city only"),
            cll.ElseLevel(),
        ],
    )


def splink_comparison(spec: ComparisonSpec, backend: str):
    """The Splink comparison for one configured piece of evidence."""
    if spec.kind == "name":
        return _name_comparison(spec, backend)
    if spec.kind == "date_of_birth":
        return _dob_comparison(spec, backend)
    if spec.kind == "address":
        return _address_comparison(spec)
    if spec.kind == "contact":
        return _contact_comparison(spec)
    if spec.kind == "address_contact":
        return _address_contact_comparison(spec)
    raise ValueError(f"unknown comparison kind {spec.kind!r}")


def blocking_rule_sql(columns: list[str]) -> str:
    """A blocking rule as SQL over ``l``/``r``; columns come from validated config only."""
    if special_rule(columns):
        return special_rule_sql(columns)
    return " and ".join(f"l.{c} = r.{c}" for c in columns)


def blocking_rules_sql(config: IdentityConfig) -> list[str]:
    """The configured prediction blocking rules as SQL over ``l`` and ``r``."""
    return [blocking_rule_sql(rule) for rule in config.model.blocking_rules]


def rule_label(columns: list[str]) -> str:
    return "+".join(columns)


def populated_rules(config: IdentityConfig, prepared: DataFrame) -> list[list[str]]:
    """The configured blocking rules whose columns all hold a value somewhere in ``prepared``.

    A rule over a column no record fills (a benchmark without email, a source set without
    birth dates) can pair nothing; skipping it saves a join per rule. One aggregate job.
    """
    needed = sorted({c for rule in config.model.blocking_rules for c in _rule_columns(rule)})
    if _is_arrow(prepared):
        empty = {c for c in needed if prepared.num_rows == prepared.column(c).null_count}
    else:
        counts = prepared.select(*[F.count(c).alias(c) for c in needed]).first()
        empty = {c for c in needed if counts[c] == 0}
    if empty:
        logger.info("blocking rules over columns no record fills are skipped: %s", sorted(empty))
    return [rule for rule in config.model.blocking_rules if not set(_rule_columns(rule)) & empty]


def _rule_columns(rule: list[str]) -> list[str]:
    return rule_columns(rule)


def settings_creator(config: IdentityConfig, backend: str, *, rules: list[list[str]] | None = None):
    """Splink ``SettingsCreator`` for ``backend`` built from the validated config.

    ``rules``: the prediction blocking rules to use (default: all configured ones).
    """
    from splink import SettingsCreator, block_on

    model = config.model
    rules = [
        blocking_rule_sql(r) if special_rule(r) else block_on(*r)
        for r in (model.blocking_rules if rules is None else rules)
    ]
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[splink_comparison(spec, backend) for spec in model.comparisons],
        blocking_rules_to_generate_predictions=rules,
        additional_columns_to_retain=["source"],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=True,
        max_iterations=model.training.em_max_iterations,
    )


def model_fingerprint(config: IdentityConfig) -> str:
    """Hash of what decides a model's parameters; a saved model fits only the same hash."""
    payload = config.model.model_dump(mode="json", exclude={"match_threshold"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _apply_parameters(settings: dict[str, Any], model: dict[str, Any], source: Path) -> dict[str, Any]:
    """Copy the trained prior, m and u of ``model`` (any backend) onto ``settings``."""
    trained = {c["output_column_name"]: c for c in model.get("comparisons", [])}
    settings["probability_two_random_records_match"] = model["probability_two_random_records_match"]
    for comparison in settings["comparisons"]:
        name = comparison["output_column_name"]
        if name not in trained:
            raise ModelMismatchError(
                f"{source}: has no comparison {name!r}; train a new version with `lakecdp identity --retrain`"
            )
        saved_levels = trained[name]["comparison_levels"]
        levels = comparison["comparison_levels"]
        if len(saved_levels) != len(levels):
            raise ModelMismatchError(
                f"{source}: comparison {name!r} has {len(saved_levels)} levels, config has "
                f"{len(levels)}; train a new version with `lakecdp identity --retrain`"
            )
        for level, saved in zip(levels, saved_levels):
            for key in ("m_probability", "u_probability"):
                if key in saved:
                    level[key] = saved[key]
    return settings


def names_path(model_path: Path) -> Path:
    """``model_v<N>.names.json`` beside ``model_v<N>.json``: the name shares of training."""
    return model_path.with_name(model_path.name.replace(".json", ".names.json"))


@dataclass(frozen=True)
class SavedModel:
    version: int
    path: Path
    metadata: dict[str, Any]


# -- backends ----------------------------------------------------------------------------
class _Backend:
    """Registers prepared records with one Splink database API and returns results to Spark."""

    name: str

    def __init__(self, spark: SparkSession, break_lineage: str | None = None) -> None:
        self.spark = spark
        self.break_lineage = break_lineage
        self.db_api = self._make_api()
        # Spark temp views are per session, not per backend: a second identity run in the
        # same SparkSession must not reuse the first run's table names
        self._token = uuid.uuid4().hex[:12]
        self._counter = 0

    def _make_api(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _table_name(self, label: str) -> str:
        self._counter += 1
        return f"lakecdp_{label}_{self._token}_{self._counter}"

    def register(self, prepared: DataFrame, label: str):
        raise NotImplementedError

    def to_spark(self, splink_df, columns: list[str], schema: str) -> DataFrame:
        raise NotImplementedError

    def register_split(self, prepared: DataFrame, new_ids: DataFrame):
        """``(all, new, existing)`` registered tables: ``prepared`` and its rows whose
        ``record_id`` is / is not in ``new_ids``."""
        new = prepared.join(new_ids, "record_id", "left_semi")
        existing = prepared.join(new_ids, "record_id", "left_anti")
        return (self.register(prepared, "records"), self.register(new, "new"), self.register(existing, "existing"))


class _DuckDBBackend(_Backend):
    name = "duckdb"

    def _make_api(self):
        from splink import DuckDBAPI

        return DuckDBAPI()

    def register(self, prepared, label: str):
        # Spark -> Arrow -> DuckDB, no pandas copy; columns in a fixed order (an Arrow
        # table, prepared by lakecdp.identity.local, is registered as it is)
        if _is_arrow(prepared):
            table = prepared.select(list(PREPARED_COLUMNS))
        else:
            table = prepared.select(*PREPARED_COLUMNS).toArrow()
        return self.db_api.register(table, table_name=self._table_name(label))

    def register_split(self, prepared: DataFrame, new_ids: DataFrame):
        # one Spark job for the records; the split is an Arrow filter on this machine
        import pyarrow.compute as pc

        table = prepared.select(*PREPARED_COLUMNS).toArrow()
        is_new = pc.is_in(
            table.column("record_id"), value_set=new_ids.select("record_id").toArrow().column("record_id")
        )
        return tuple(
            self.db_api.register(part, table_name=self._table_name(label))
            for part, label in (
                (table, "records"),
                (table.filter(is_new), "new"),
                (table.filter(pc.invert(is_new)), "existing"),
            )
        )

    def to_spark(self, splink_df, columns: list[str], schema: str) -> DataFrame:
        # DuckDB -> Arrow -> Spark: no pandas copy in between
        table = splink_df.as_duckdbpyrelation().select(*columns).to_arrow_table()
        if table.num_rows == 0:
            return self.spark.createDataFrame([], schema)
        return self.spark.createDataFrame(table.cast(_arrow_schema(schema, columns)), schema)


class _SparkBackend(_Backend):
    name = "spark"

    def _make_api(self):
        from splink import SparkAPI

        # the session already carries Splink's similarity UDF jar and a checkpoint dir
        return SparkAPI(spark_session=self.spark, break_lineage_method=self.break_lineage)

    def register(self, prepared: DataFrame, label: str):
        return self.db_api.register(prepared.select(*PREPARED_COLUMNS), table_name=self._table_name(label))

    def to_spark(self, splink_df, columns: list[str], schema: str) -> DataFrame:
        frame = splink_df.as_spark_dataframe()
        return frame.select(*[F.col(c).cast(t).alias(c) for c, t in _schema_pairs(schema, columns)])


def _arrow_schema(schema: str, columns: list[str]):
    """The Arrow schema of ``columns`` of a Spark DDL schema of strings and doubles."""
    import pyarrow as pa

    types = {"string": pa.string(), "double": pa.float64(), "bigint": pa.int64(), "int": pa.int32()}
    return pa.schema([(c, types[t]) for c, t in _schema_pairs(schema, columns)])


def _schema_pairs(schema: str, columns: list[str]) -> list[tuple[str, str]]:
    types = dict(part.strip().split(" ", 1) for part in schema.split(","))
    return [(c, types[c]) for c in columns]


def _backend(config: IdentityConfig, spark: SparkSession) -> _Backend:
    if config.backend == "duckdb":
        return _DuckDBBackend(spark)
    return _SparkBackend(spark, config.spark_break_lineage)


_PREDICTION_SCHEMA = (
    "record_id_l string, record_id_r string, match_key string, match_probability double, match_weight double"
)


class ProbabilisticMatcher:
    """Trains, versions and applies the Splink model.

    Args:
        config: the identity config (``backend`` and ``model`` sections).
        spark: the session (input and output are Spark DataFrames for both backends).
        model_dir: folder of ``model_v<N>.json`` files and their ``.meta.json``.

    Example:
        >>> matcher = ProbabilisticMatcher(config, spark=spark, model_dir=path)
        >>> edges = matcher.predict(records)  # trains model_v1 first if none exists
    """

    def __init__(self, config: IdentityConfig, *, spark: SparkSession, model_dir: Path | str) -> None:
        self.config = config
        self.spark = spark
        self.model_dir = Path(model_dir)
        self.backend_name = config.backend
        self.run_id: str | None = None
        self._model: SavedModel | None = None
        # seconds the last train() took (0.0 when this matcher trained nothing)
        self.train_seconds = 0.0

    # -- model files ------------------------------------------------------------------
    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        found = (_MODEL_RE.match(p.name) for p in self.model_dir.iterdir())
        return sorted(int(m.group("version")) for m in found if m)

    def model_path(self, version: int) -> Path:
        return self.model_dir / f"model_v{version}.json"

    def load(self, version: int | None = None) -> SavedModel:
        """The saved model ``version`` (default: the newest); error when none exists."""
        versions = self.versions()
        if not versions:
            raise FileNotFoundError(f"{self.model_dir}: no model_v<N>.json; train one first")
        chosen = versions[-1] if version is None else version
        path = self.model_path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model version {chosen} not found; have {versions}")
        meta_path = path.with_name(f"model_v{chosen}.meta.json")
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        expected = model_fingerprint(self.config)
        if metadata.get("fingerprint") not in (None, expected):
            raise ModelMismatchError(
                f"{path}: trained for another model configuration "
                f"({metadata.get('fingerprint')} != {expected}); train a new version with "
                f"`lakecdp identity --retrain`"
            )
        self._model = SavedModel(version=chosen, path=path, metadata=metadata)
        return self._model

    def model(
        self, records: DataFrame | None = None, *, retrain: bool = False, prepared: DataFrame | None = None
    ) -> SavedModel:
        """The model to apply: the newest saved one, or a new one trained on ``records``
        (``prepared``: ``prepare_for_matching(records)`` when the caller has it already)."""
        if retrain or not self.versions():
            if records is None:
                raise ValueError("no trained model yet and no records to train on")
            self.train(records, prepared=prepared)
        return self._model if self._model is not None else self.load()

    # -- training ---------------------------------------------------------------------
    def train(self, records: DataFrame, *, prepared: DataFrame | None = None) -> Path:
        """Train on ``records`` and save the next version.

        Prior from deterministic rules, u by random sampling, m by EM over each configured
        training blocking rule. Writes ``model_v<N>.json`` (Splink's own model JSON) and
        ``model_v<N>.meta.json`` (version, backend, fingerprint, record count, time).

        Returns:
            The path of the new model JSON.
        """
        from splink import Linker, block_on

        started = time.perf_counter()
        training = self.config.model.training
        backend = _backend(self.config, self.spark)
        if prepared is None:
            prepared = prepare_for_matching(records, self.config)
        registered = backend.register(prepared, "train")
        linker = Linker(registered, settings_creator(self.config, backend.name), log_level=logging.WARNING)
        shares = name_shares(linker, registered) if "full_name" in _tf_columns(self.config) else None

        prior_rules = [block_on(*r) for r in training.prior_rules]
        linker.training.estimate_probability_two_random_records_match(prior_rules, recall=training.prior_recall)
        linker.training.estimate_u_using_random_sampling(
            max_pairs=u_sample_size(training, _row_count(prepared)), seed=training.seed
        )
        sessions = 0
        unseen = _UnseenLevels()
        em_logger = logging.getLogger("splink.internals.expectation_maximisation")
        em_logger.addFilter(unseen)
        try:
            sessions = self._expectation_maximisation(linker, training)
        finally:
            em_logger.removeFilter(unseen)
        unseen.report()
        if sessions == 0:
            raise RuntimeError("no EM training session succeeded; too few records to train on?")
        if training.prior_recall_from_model:
            recall = prior_rule_recall(linker.misc.save_model_to_json(), training.prior_rules)
            if recall is not None:
                # m is measured where both sides hold a value: a rule over a column one source
                # lacks (a shop without birth dates) finds only the share of matches that have it
                share = 1.0
                if training.prior_recall_populated_share:
                    share = populated_share(prepared, training.prior_rules[0])
                    recall = max(recall * share, 0.01)
                logger.info(
                    "prior re-estimated with the trained recall %.3f of %s (%.3f of "
                    "same-name pairs have its columns on both sides)",
                    recall,
                    [rule_label(r) for r in training.prior_rules],
                    share,
                )
                linker.training.estimate_probability_two_random_records_match(prior_rules, recall=recall)
        path = self._save(linker, backend, training, sessions, shares)
        self.train_seconds = time.perf_counter() - started
        return path

    def _expectation_maximisation(self, linker, training) -> int:
        from splink import block_on

        sessions = 0
        for rule in training.em_blocking_rules:
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*rule), estimate_without_term_frequencies=True
                )
                sessions += 1
            except Exception as exc:  # Splink raises plain exceptions for empty blocks
                logger.warning("EM on %s skipped: %s", rule_label(rule), exc)
        return sessions

    def _save(self, linker, backend: _Backend, training, sessions: int, shares: dict[str, Any] | None) -> Path:
        version = (self.versions() or [0])[-1] + 1
        self.model_dir.mkdir(parents=True, exist_ok=True)
        path = self.model_path(version)
        model_json = _floor_m_probabilities(linker.misc.save_model_to_json(), training.min_m_probability)
        path.write_text(json.dumps(model_json, indent=2))
        metadata = {
            "version": version,
            "backend": backend.name,
            "fingerprint": model_fingerprint(self.config),
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "run_id": self.run_id,
            "em_sessions": sessions,
            "splink_version": _splink_version(),
        }
        path.with_name(f"model_v{version}.meta.json").write_text(json.dumps(metadata, indent=2))
        if shares is not None:
            # the name frequencies are part of the model: every prediction with it uses these
            names_path(path).write_text(json.dumps(shares, ensure_ascii=False))
        logger.info("trained identity model v%d (%s) -> %s", version, backend.name, path)
        self._model = SavedModel(version=version, path=path, metadata=metadata)
        return path

    # -- applying ---------------------------------------------------------------------
    def _settings_for(self, backend: str, model: SavedModel, rules: list[list[str]] | None = None) -> dict[str, Any]:
        settings = settings_creator(self.config, backend, rules=rules).create_settings_dict(backend)
        return _apply_parameters(settings, json.loads(model.path.read_text()), model.path)

    def linker(self, prepared: DataFrame, *, model: SavedModel | None = None, rules: list[list[str]] | None = None):
        """A Splink linker over ``prepared`` records with the trained parameters applied."""
        chosen = model or self.model()
        backend = _backend(self.config, self.spark)
        registered = backend.register(prepared, "records")
        return self._linker_over(registered, backend, chosen, rules), backend, registered

    def _linker_over(self, registered, backend: _Backend, model: SavedModel, rules: list[list[str]] | None = None):
        from splink import Linker

        settings = self._settings_for(backend.name, model, rules)
        linker = Linker(registered, settings, log_level=logging.WARNING)
        saved = names_path(model.path)
        shares = json.loads(saved.read_text()) if saved.is_file() else None
        register_term_frequencies(linker, registered, self.config, shares)
        return linker

    def predict(self, records: DataFrame, *, retrain: bool = False) -> DataFrame:
        """Scored pairs at or above ``match_threshold`` (or the lower
        ``clustering.exclusive_link_probability``) as ``identity.edges`` rows.

        Trains a first model when none is saved (or when ``retrain``).
        """
        # cached: training, the populated-columns check and prediction each read it, and
        # its plan (regexes, the nickname map) is the costly part of moving it to Splink.
        # Spark backend: it stays cached while the (lazy) edges returned still read it
        prepared = prepare_for_matching(records, self.config).cache()
        chosen = self.model(records, retrain=retrain, prepared=prepared)
        rules = populated_rules(self.config, prepared)
        linker, backend, _ = self.linker(prepared, model=chosen, rules=rules)
        predictions = linker.inference.predict(
            threshold_match_probability=self.config.edge_floor,
            warning_mode="never",
        )
        edges = self._edges(backend, predictions, rules)
        if backend.name == "duckdb":  # the edges are already in local rows, not a plan over it
            prepared.unpersist()
        return edges

    def predict_incremental(self, new_records: DataFrame, existing_records: DataFrame) -> DataFrame:
        """Pairs new-vs-existing and new-vs-new only (never existing-vs-existing).

        Uses the saved model and term frequencies over existing + new records, through
        Splink 5's ``predict_between`` and ``predict_within``.
        """
        records = existing_records.unionByName(new_records)
        chosen = self.model(records)
        backend = _backend(self.config, self.spark)
        prepared = prepare_for_matching(records, self.config)
        # the rules a full run over the same records would use (same populated columns)
        rules = populated_rules(self.config, prepared)
        registered, new_sdf, existing_sdf = backend.register_split(prepared, new_records.select("record_id"))
        linker = self._linker_over(registered, backend, chosen, rules)
        threshold = self.config.edge_floor
        between = linker.inference.predict_between(
            new_sdf, existing_sdf, threshold_match_probability=threshold, warning_mode="never"
        )
        within = linker.inference.predict_within(new_sdf, threshold_match_probability=threshold, warning_mode="never")
        return self._edges(backend, between, rules).unionByName(self._edges(backend, within, rules))

    # -- the duckdb backend over Arrow (lakecdp.identity.local), no Spark ----------------
    def predict_local(self, prepared, *, retrain: bool = False):
        """:meth:`predict` over records already prepared as an Arrow table (duckdb
        backend): the edges as an Arrow table."""
        if self.config.backend != "duckdb":
            raise ValueError("predict_local runs on the duckdb backend only")
        chosen = self.model(prepared, retrain=retrain, prepared=prepared)
        rules = populated_rules(self.config, prepared)
        linker, _, _ = self.linker(prepared, model=chosen, rules=rules)
        predictions = linker.inference.predict(
            threshold_match_probability=self.config.edge_floor,
            warning_mode="never",
        )
        return self._edges_local(predictions, rules)

    def predict_incremental_local(self, prepared, new_ids):
        """:meth:`predict_incremental` over the prepared Arrow table of all records and
        the ``record_id`` values (an Arrow array) of the new ones."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.config.backend != "duckdb":
            raise ValueError("predict_incremental_local runs on the duckdb backend only")
        chosen = self.model(prepared)
        backend = _backend(self.config, self.spark)
        rules = populated_rules(self.config, prepared)
        is_new = pc.is_in(prepared.column("record_id"), value_set=new_ids)
        registered, new_sdf, existing_sdf = (
            backend.db_api.register(part, table_name=backend._table_name(label))
            for part, label in (
                (prepared, "records"),
                (prepared.filter(is_new), "new"),
                (prepared.filter(pc.invert(is_new)), "existing"),
            )
        )
        linker = self._linker_over(registered, backend, chosen, rules)
        threshold = self.config.edge_floor
        between = linker.inference.predict_between(
            new_sdf, existing_sdf, threshold_match_probability=threshold, warning_mode="never"
        )
        within = linker.inference.predict_within(new_sdf, threshold_match_probability=threshold, warning_mode="never")
        return pa.concat_tables([self._edges_local(between, rules), self._edges_local(within, rules)])

    def _edges_local(self, predictions, rules: list[list[str]]):
        """:meth:`_edges` in DuckDB: ``identity.edges`` rows as an Arrow table."""
        import pyarrow as pa

        # labels come from validated config (column names and '+'), never from data
        labels = " ".join(f"when '{i}' then '{rule_label(r)}'" for i, r in enumerate(rules))
        label = f"case cast(match_key as varchar) {labels} end" if labels else "null"
        relation = predictions.as_duckdbpyrelation()
        table = relation.query(
            "predictions",
            f"""
            select least(record_id_l, record_id_r)::varchar as record_id_l,
                   greatest(record_id_l, record_id_r)::varchar as record_id_r,
                   'probabilistic' as edge_type,
                   coalesce({label}, cast(match_key as varchar)) as rule,
                   match_probability::double as match_probability,
                   match_weight::double as match_weight
            from predictions
        """,
        ).to_arrow_table()
        return table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.string()))

    def _edges(self, backend: _Backend, predictions, rules: list[list[str]]) -> DataFrame:
        columns = ["record_id_l", "record_id_r", "match_key", "match_probability", "match_weight"]
        pairs = backend.to_spark(predictions, columns, _PREDICTION_SCHEMA)
        labels = [rule_label(r) for r in rules]
        label_map = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(str(i)), F.lit(lab))])
        left, right = F.col("record_id_l"), F.col("record_id_r")
        return pairs.select(
            F.least(left, right).alias("record_id_l"),
            F.greatest(left, right).alias("record_id_r"),
            F.lit("probabilistic").alias("edge_type"),
            F.coalesce(F.element_at(label_map, F.col("match_key").cast("string")), F.col("match_key")).alias("rule"),
            "match_probability",
            "match_weight",
            F.lit(self.run_id).cast("string").alias("run_id"),
        )


class _UnseenLevels(logging.Filter):
    """Collects Splink's "level ... not observed in dataset, unable to train m value"
    warnings (one per level and EM session) and says it once, in plain words.

    On data without email or phone, or where no two records of one person show a given
    kind of typo, EM never sees those levels among matches; that is expected, not a fault:
    their m is floored at ``min_m_probability`` so they can neither veto nor carry a link.
    """

    _PATTERN = re.compile(r"Level (?P<level>.+?) on comparison (?P<comparison>\S+) not observed")

    def __init__(self) -> None:
        super().__init__()
        self.levels: dict[str, set[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._PATTERN.search(record.getMessage())
        if found is None:
            return True
        self.levels.setdefault(found["comparison"], set()).add(found["level"])
        return False

    def report(self) -> None:
        if not self.levels:
            return
        listed = "; ".join(f"{c}: {', '.join(sorted(v))}" for c, v in sorted(self.levels.items()))
        logger.info(
            "training saw no matching pairs at some comparison levels (expected when the data "
            "lacks those fields or those kinds of typo; they get the floor m value and carry "
            "little weight): %s",
            listed,
        )


def u_sample_size(training, records: int) -> int:
    """Record pairs to sample for u: ``u_pairs_per_record`` per record, between
    ``min_pairs_for_u`` and ``max_pairs_for_u``.

    Example: at 40 per record, floor 200,000 and cap 2,000,000: 5,000 records -> 200,000
    pairs (the floor), 20,000 -> 800,000, 100,000 -> the cap.
    """
    wanted = max(training.min_pairs_for_u, training.u_pairs_per_record * records)
    return min(training.max_pairs_for_u, wanted)


#: rule columns -> (comparison, level label) whose m is the share of true matches agreeing on them
_EXACT_LEVELS = {
    ("first_name", "last_name"): ("name", "first and last name exact"),
    ("dob",): ("date_of_birth", "same date of birth"),
}


def prior_rule_recall(model: dict[str, Any], prior_rules: list[list[str]]) -> float | None:
    """Share of true matches one prior rule finds, by the trained model: the product of
    the m of each exact level the rule's columns make up (name and birth date are taken
    as independent among matches). ``None`` when the rule is not made of such levels (or
    there is more than one rule): the configured recall stays.

    Example: m("first and last name exact") 0.46 and m("same date of birth") 0.95 give
    0.44 for ``[first_name, last_name, dob]``.
    """
    if len(prior_rules) != 1:
        return None
    columns = set(prior_rules[0])
    levels = {
        (c["output_column_name"], lv.get("label_for_charts")): lv.get("m_probability")
        for c in model["comparisons"]
        for lv in c["comparison_levels"]
    }
    recall = 1.0
    for parts, level in _EXACT_LEVELS.items():
        if set(parts) <= columns:
            columns -= set(parts)
            m = levels.get(level)
            if not m:
                return None
            recall *= m
    if columns:
        return None
    return min(1.0, max(recall, 0.05))


def populated_share(prepared: DataFrame, rule: list[str]) -> float:
    """Share of same-full-name record pairs (mostly true matches) in which every column of
    ``rule`` other than the names holds a value on both sides; 1.0 when no two records
    share a full name. One aggregate over full-name groups, no self-join.

    Example: a CRM with birth dates and a shop without: most same-name pairs are CRM-shop
    pairs, so the share for ``[first_name, last_name, dob]`` is low (0.25 on the generated
    world with such a shop, 0.93 on FEBRL) and the prior rule's recall is that much smaller.
    """
    others = [c for c in rule if c not in ("first_name", "last_name")]
    if not others:
        return 1.0
    if _is_arrow(prepared):
        return _populated_share_arrow(prepared, others)
    present = F.lit(1)
    for column in others:
        present = present * F.col(column).isNotNull().cast("int")
    groups = (
        prepared.where(F.col("full_name").isNotNull())
        .groupBy("full_name")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(present).alias("k"))
        .where(F.col("n") > 1)
        .agg(
            F.sum(F.col("n") * (F.col("n") - 1) / 2).alias("pairs"),
            F.sum(F.col("k") * (F.col("k") - 1) / 2).alias("present"),
        )
        .first()
    )
    if groups is None or not groups["pairs"]:
        return 1.0
    return float(groups["present"]) / float(groups["pairs"])


def _is_arrow(prepared) -> bool:
    import pyarrow as pa

    return isinstance(prepared, pa.Table)


def _row_count(prepared) -> int:
    return prepared.num_rows if _is_arrow(prepared) else prepared.count()


def _populated_share_arrow(prepared, others: list[str]) -> float:
    """:func:`populated_share` over an Arrow table, in DuckDB (the same aggregate)."""
    import duckdb

    con = duckdb.connect()
    con.register("prepared", prepared.select(["full_name", *others]))
    present = " * ".join(f"cast({c} is not null as integer)" for c in others)
    pairs, both = con.sql(f"""
        select sum(n * (n - 1) / 2), sum(k * (k - 1) / 2) from (
            select count(*) as n, sum({present}) as k from prepared
            where full_name is not null group by full_name
        ) where n > 1
    """).fetchall()[0]
    con.close()
    if not pairs:
        return 1.0
    return float(both) / float(pairs)


def _tf_columns(config: IdentityConfig) -> list[str]:
    """Columns whose exact level is weighted by term frequency (Splink computes the
    frequencies itself; ``full_name`` has its own, :func:`name_frequencies`)."""
    return [spec_column for spec in config.model.comparisons for spec_column in _tf_column(spec)]


def _tf_column(spec: ComparisonSpec) -> list[str]:
    if not spec.term_frequency:
        return []
    return {"name": ["full_name"], "address": ["postcode"]}.get(spec.kind, [])


def name_shares_sql(table: str) -> str:
    """Per first name and per last name, its share of the records that have one
    (``part``, ``name``, ``share``). ``table``: a registered table name (from Splink, never
    from data). Plain SQL for DuckDB and Spark."""
    return f"""
        select 'first' as part, first_name as name,
               cast(count(*) as double) / (select count(first_name) from {table}) as share
        from {table} where first_name is not null group by first_name
        union all
        select 'last' as part, last_name as name,
               cast(count(*) as double) / (select count(last_name) from {table}) as share
        from {table} where last_name is not null group by last_name
    """


def name_shares(linker, registered) -> dict[str, Any]:
    """The first- and last-name shares of the records ``registered`` (a Splink table), and
    for a name never seen the share of a name seen once (``first_floor``, ``last_floor``).

    Saved with a trained model (``model_v<N>.names.json``) and used by every prediction with
    it: a pair's score then depends on the pair and the model only, so an incremental run
    (which keeps the scores of pairs it does not rescore) equals a full run."""
    rows = linker.misc.query_sql(name_shares_sql(registered.physical_name), output_type="pandas")
    shares: dict[str, Any] = {"first": {}, "last": {}}
    for part, name, share in rows[["part", "name", "share"]].itertuples(index=False):
        shares[part][name] = float(share)
    for part in ("first", "last"):
        seen = shares[part]
        shares[f"{part}_floor"] = min(seen.values()) if seen else 1.0
    return shares


def name_frequencies(full_names, shares: dict[str, Any]) -> dict[str, list]:
    """Per full name, how often a record of ANOTHER person bears it (``tf_full_name``): the
    share of records with its first name times the share with its last name, read in either
    order, the larger (a record "scholz catherine" is as common as "catherine scholz").

    Splink's own term frequency of a value is its share of the records; on a full name that
    is mostly one person's own duplicates: a name held by one person with two records looks
    as common as a name two people share, and a rare exact name never outweighs the prior.
    First and last names are each shared by many people, so their shares measure how common
    a name is among people; their product is the chance a stranger bears the whole name if
    first and last names are chosen independently, which is what textbook Splink assumes
    with one term-frequency comparison per name. A name the shares never saw counts as seen
    once.

    Args:
        full_names: ``(full_name, first_name, last_name)`` rows.
        shares: from :func:`name_shares`.

    Example: 1,935 records, "gill" on 4 and "öztürk" on 2: 4/1935 x 2/1935 = 2.1e-6
    (a name seen on 2 records by Splink's own measure: 1.0e-3).
    """
    frequency: dict[str, float] = {}
    for full_name, first_name, last_name in full_names:
        value = _either_order(first_name, last_name, shares)
        frequency[full_name] = max(frequency.get(full_name, 0.0), value)
    return {"full_name": list(frequency), "tf_full_name": list(frequency.values())}


def _either_order(first_name: str, last_name: str, shares: dict[str, Any]) -> float:
    """How often a stranger bears the name in either order: a record with the name swapped
    ("scholz catherine") is as common as "catherine scholz", not as rare as a first name
    "scholz" makes it, and the swapped levels weigh by the larger of the two records'
    frequencies."""
    first, last = shares["first"], shares["last"]
    first_floor, last_floor = shares["first_floor"], shares["last_floor"]
    as_written = first.get(first_name, first_floor) * last.get(last_name, last_floor)
    swapped = first.get(last_name, first_floor) * last.get(first_name, last_floor)
    return max(as_written, swapped)


def register_term_frequencies(linker, registered, config: IdentityConfig, shares: dict[str, Any] | None = None) -> None:
    """Term frequencies over all the records ``registered`` (a Splink table), before any
    prediction. The full name gets :func:`name_frequencies` from ``shares`` (those saved
    with the model); a model without them (written by hand) weighs names as trained, by an
    empty lookup: no frequency, no adjustment. Other columns get Splink's own."""
    import pyarrow as pa

    for column in _tf_columns(config):
        if column != "full_name":
            linker.table_management.compute_tf_table(column)
            continue
        if shares is None:
            logger.info("the model has no saved name shares: names weigh as trained, whatever their rarity")
            table = pa.table({"full_name": pa.array([], pa.string()), "tf_full_name": pa.array([], pa.float64())})
        else:
            names = linker.misc.query_sql(
                f"select distinct full_name, first_name, last_name from {registered.physical_name} "
                "where full_name is not null",
                output_type="pandas",
            )
            table = pa.table(name_frequencies(names.itertuples(index=False), shares))
        lookup = linker.table_management.register_table(table, "lakecdp_name_frequencies", overwrite=True)
        linker.table_management.register_term_frequency_lookup(lookup, "full_name")


def _floor_m_probabilities(model: dict[str, Any], floor: float) -> dict[str, Any]:
    """No evidence level may be impossible for a true match.

    EM leaves m at 0 (or unset) for a level it never saw among matches, which would make
    that level veto a link for ever (weight minus infinity), e.g. a birth-date typo in a
    small training set. Null levels carry no m.
    """
    for comparison in model["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        # a level random sampling never met is taken as rare as the rarest level it met:
        # an unobserved u must not turn into an infinite weight
        observed_u = [lv["u_probability"] for lv in levels if (lv.get("u_probability") or 0) > 0]
        rarest_u = min(observed_u) if observed_u else floor
        for level in levels:
            m = level.get("m_probability")
            if m is None or m < floor:
                level["m_probability"] = floor
            if not (level.get("u_probability") or 0) > 0:
                level["u_probability"] = rarest_u
    return model


def _splink_version() -> str:
    import splink

    return splink.__version__


__all__ = [
    "EDGE_SCHEMA",
    "ModelMismatchError",
    "ProbabilisticMatcher",
    "prepare_for_matching",
    "settings_creator",
]
