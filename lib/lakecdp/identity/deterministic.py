"""Deterministic evidence: records that share a normalised strong identifier.

A shared email or phone is only safe evidence when it is used by one person: households
share phones and sometimes emails, so a value used by more distinct people than
``max_people_per_identifier`` allows is *reported* (``over_shared``), never linked, and
the probabilistic model weighs it together with names and birth dates instead.
"People" are approximated by distinct (date of birth, canonical first name) among the
records holding the value — conservative: a typo makes two "people", so doubtful values
fall through to the model rather than into a hard link. A record without birth date counts
as a person of its own only when no dated record of the value has its first name. Records
with neither (web logins) count as no one: their email or device links them to the one
person who holds it.

Example:
    >>> edges, over_shared = deterministic_edges(records, config, run_id="r1")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.columns import require_columns
from lakecdp.identity.config import DeterministicSettings, IdentityConfig

logger = logging.getLogger(__name__)

EDGE_SCHEMA = catalog.EDGES.ddl
OVER_SHARED_SCHEMA = "identifier_type string, value string, record_count bigint, people_count bigint"

REQUIRED_COLUMNS = (
    "record_id",
    "first_name",
    "date_of_birth",
    "email",
    "phone",
    "device_ids",
    "crm_id",
    "customer_number",
)


# accents folded so "Seán" and "Sean" compare equal (one character each side)
_ACCENTED = "áàâäãåāéèêëēíìîïīóòôöõøōúùûüūñçćčšśžźżýÿ"
_PLAIN = "aaaaaaaeeeeeiiiiiooooooouuuuuncccsszzzyy"


# -- Column -> Column -------------------------------------------------------------------
def normalised_name(name: Column) -> Column:
    """Lower-case letters, spaces and hyphens only, single spaces; empty -> null.

    ``ß`` is written ``ss`` (``Weiß`` / ``Weiss``: one name, two spellings)."""
    folded = F.translate(F.replace(F.lower(name), F.lit("ß"), F.lit("ss")), _ACCENTED, _PLAIN)
    cleaned = F.trim(F.regexp_replace(folded, r"[^\p{L}\s-]", ""))
    cleaned = F.regexp_replace(cleaned, r"\s+", " ")
    return F.when(cleaned == "", F.lit(None).cast("string")).otherwise(cleaned)


def nickname_lookup(nicknames: Mapping[str, list[str]]) -> dict[str, str]:
    """nickname -> canonical name; a nickname of several names ("pat") is left as is."""
    canonicals: dict[str, set[str]] = {}
    for canonical, variants in nicknames.items():
        for variant in variants:
            if variant.lower() != canonical.lower():
                canonicals.setdefault(variant.lower(), set()).add(canonical.lower())
    return {v: next(iter(c)) for v, c in canonicals.items() if len(c) == 1}


def canonical_first_name(first_name: Column, nicknames: Mapping[str, list[str]]) -> Column:
    """The canonical form of a (normalised) first name: ``bill`` -> ``william``.

    Args:
        first_name: an already normalised first name.
        nicknames: canonical name -> its nicknames (from ``model.nicknames``).
    """
    lookup_table = nickname_lookup(nicknames)
    pairs: list[Column] = []
    for variant, canonical in sorted(lookup_table.items()):
        pairs.extend([F.lit(variant), F.lit(canonical)])
    if not pairs:
        return first_name
    lookup = F.create_map(*pairs)
    return F.coalesce(F.element_at(lookup, first_name), first_name)


def first_name_variants(first_name: Column, nicknames: Mapping[str, list[str]]) -> Column:
    """Sorted array of the name and every name it is a nickname of: ``kate`` ->
    ``[catherine, kate, katherine]``; two first names agree when the arrays intersect."""
    canonicals: dict[str, set[str]] = {}
    for canonical, variants in nicknames.items():
        for variant in variants:
            if variant.lower() != canonical.lower():
                canonicals.setdefault(variant.lower(), set()).add(canonical.lower())
    names = F.array(first_name)
    if canonicals:
        pairs: list[Column] = []
        for variant, options in sorted(canonicals.items()):
            pairs.extend([F.lit(variant), F.array(*[F.lit(o) for o in sorted(options)])])
        extra = F.element_at(F.create_map(*pairs), first_name)
        names = F.concat(names, F.coalesce(extra, F.array().cast("array<string>")))
    return F.when(first_name.isNotNull(), F.array_sort(F.array_distinct(names)))


def normalised_identifier(identifier_type: str, value: Column) -> Column:
    """Trim every identifier; emails lower-case; phones without spaces, dots and dashes."""
    trimmed = F.trim(value)
    if identifier_type == "email":
        trimmed = F.lower(trimmed)
    elif identifier_type == "phone":
        trimmed = F.regexp_replace(trimmed, r"[\s().-]", "")
    return F.when(trimmed == "", F.lit(None).cast("string")).otherwise(trimmed)


def is_junk(value: Column, junk_values: list[str], junk_patterns: list[str]) -> Column:
    """True where ``value`` is a configured junk value or matches a junk pattern."""
    condition = F.lit(False)
    if junk_values:
        condition = condition | F.lower(value).isin([v.lower() for v in junk_values])
    for pattern in junk_patterns:
        condition = condition | value.rlike(pattern)
    return F.coalesce(condition, F.lit(False))


def cleaned_identifier(identifier_type: str, value: Column, settings: DeterministicSettings) -> Column:
    """Normalised identifier, null when it is junk (also used by the probabilistic model)."""
    normalised = normalised_identifier(identifier_type, value)
    rule = settings.rule(identifier_type)
    if rule is None:
        return normalised
    return F.when(~is_junk(normalised, rule.junk_values, rule.junk_patterns), normalised)


# -- DataFrame -> DataFrame ---------------------------------------------------------------
def identifier_values(records: DataFrame, config: IdentityConfig) -> DataFrame:
    """One row per (record, identifier): ``record_id, person_key, identifier_type, value``.

    Junk values are dropped here; over-sharing is decided later, per value.
    """
    nicknames = config.model.nicknames
    first = canonical_first_name(normalised_name(F.col("first_name")), nicknames)
    # a record with neither birth date nor first name (a web login: email and device only)
    # says nothing about *who* holds the value, so it adds no "person" to the count
    person_key = F.when(
        F.col("date_of_birth").isNotNull() | first.isNotNull(),
        F.concat_ws(
            "|",
            F.coalesce(F.date_format("date_of_birth", "yyyy-MM-dd"), F.lit("")),
            F.coalesce(first, F.lit("")),
        ),
    )
    base = records.select("record_id", person_key.alias("person_key"), *REQUIRED_COLUMNS[3:])
    sources = {
        "email": F.col("email"),
        "phone": F.col("phone"),
        "device_id": F.explode_outer("device_ids"),
        "crm_id": F.col("crm_id"),
        "customer_number": F.col("customer_number"),
    }
    parts = []
    for rule in config.deterministic.identifiers:
        raw = base.select("record_id", "person_key", sources[rule.type].alias("raw"))
        value = normalised_identifier(rule.type, F.col("raw"))
        parts.append(
            raw.select(
                "record_id",
                "person_key",
                F.lit(rule.type).alias("identifier_type"),
                value.alias("value"),
            )
            .where(F.col("value").isNotNull())
            .where(~is_junk(F.col("value"), rule.junk_values, rule.junk_patterns))
        )
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result.distinct()


def _max_people(settings: DeterministicSettings) -> Column:
    limit = F.lit(None).cast("bigint")
    for rule in settings.identifiers:
        limit = F.when(F.col("identifier_type") == rule.type, F.lit(rule.max_people_per_identifier)).otherwise(limit)
    return limit


def deterministic_edges(
    records: DataFrame,
    config: IdentityConfig,
    *,
    run_id: str | None = None,
    values: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame]:
    """Edges between records sharing a strong identifier, and the over-shared values.

    Args:
        records: ``silver.customer_records`` rows (at least ``record_id, first_name,
            date_of_birth, email, phone, device_ids, crm_id, customer_number``).
        config: the identity config (``deterministic`` section; nicknames for "people").
        run_id: stamped on every edge.
        values: ``identifier_values(records, config)`` when the caller has it already.

    Returns:
        ``(edges, over_shared)``: edges in the ``identity.edges`` schema (``edge_type``
        'deterministic', ``rule`` the identifier types shared, e.g. 'email,phone',
        ``match_probability`` 1.0, ``record_id_l < record_id_r``; each value's records are
        linked as a star to its smallest record id), and ``identifier_type, value,
        record_count, people_count`` for values used by too many people (not linked).

    Example:
        >>> edges, over_shared = deterministic_edges(records, config, run_id="r1")
    """
    require_columns(records, REQUIRED_COLUMNS, what="customer records")
    spark = records.sparkSession
    if not config.deterministic.enabled or not config.deterministic.identifiers:
        return spark.createDataFrame([], EDGE_SCHEMA), spark.createDataFrame([], OVER_SHARED_SCHEMA)

    if values is None:
        values = identifier_values(records, config)
    # a record without birth date ("|bel") is not one more person when a dated record of the
    # value has its first name ("1961-01-01|bel"): a source that never asks for a birth date
    # would otherwise make every email it shares with another source look over-shared
    born = F.substring_index("person_key", "|", 1) != ""
    first = F.substring_index("person_key", "|", -1)
    per_value = (
        values.groupBy("identifier_type", "value")
        .agg(
            F.countDistinct("record_id").alias("record_count"),
            (
                F.size(F.collect_set(F.when(born, F.col("person_key"))))
                + F.size(F.array_except(F.collect_set(F.when(~born, first)), F.collect_set(F.when(born, first))))
            ).alias("people_count"),
            F.min("record_id").alias("hub_record_id"),
        )
        .withColumn("max_people", _max_people(config.deterministic))
    )

    over_shared = per_value.where(F.col("people_count") > F.col("max_people")).select(
        "identifier_type", "value", "record_count", "people_count"
    )
    linkable = per_value.where((F.col("people_count") <= F.col("max_people")) & (F.col("record_count") > 1)).select(
        "identifier_type", "value", "hub_record_id"
    )
    pairs = (
        values.join(linkable, ["identifier_type", "value"])
        .where(F.col("record_id") != F.col("hub_record_id"))
        .select(
            F.col("hub_record_id").alias("record_id_l"),
            F.col("record_id").alias("record_id_r"),
            "identifier_type",
        )
    )
    edges = (
        pairs.groupBy("record_id_l", "record_id_r")
        .agg(F.array_join(F.sort_array(F.collect_set("identifier_type")), ",").alias("rule"))
        .select(
            "record_id_l",
            "record_id_r",
            F.lit("deterministic").alias("edge_type"),
            "rule",
            F.lit(1.0).alias("match_probability"),
            F.lit(None).cast("double").alias("match_weight"),
            F.lit(run_id).cast("string").alias("run_id"),
        )
    )
    return edges, over_shared
