"""The records as the model compares them: Spark ``Column -> Column`` normalisations and
:func:`prepare_for_matching`, the same for every backend.

Prepared records are a Spark DataFrame, or an Arrow table of the same columns when the
``duckdb`` backend runs without Spark (:mod:`lakecdp.identity.local`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, TypeGuard

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import require_columns
from lakecdp.identity.config import IdentityConfig
from lakecdp.identity.deterministic import (
    canonical_first_name,
    cleaned_identifier,
    first_name_variants,
    normalised_name,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: prepared records: a Spark DataFrame, or an Arrow table of the same columns (lakecdp.identity.local)
Prepared: TypeAlias = "DataFrame | pa.Table"

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


# common street-type words, so "12 High Street" and "12 high st." compare equal
STREET_ABBREVIATIONS = {
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


def normalised_street(street: Column) -> Column:
    """Lower-case street with punctuation dropped and street types abbreviated."""
    cleaned = F.regexp_replace(F.lower(street), r"[^\p{L}\p{N}\s]", " ")
    for word, abbreviation in STREET_ABBREVIATIONS.items():
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


def is_arrow(prepared: Prepared) -> TypeGuard[pa.Table]:
    import pyarrow as pa

    return isinstance(prepared, pa.Table)


def row_count(prepared: Prepared) -> int:
    return int(prepared.num_rows) if is_arrow(prepared) else prepared.count()
