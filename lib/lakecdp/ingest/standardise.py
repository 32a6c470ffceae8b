"""Standardisation: Column -> Column cleaners and DataFrame -> DataFrame mappers to silver.

The mappers take the output of :func:`lakecdp.ingest.validate.parse_and_validate` (rows that
passed) and produce the unified schemas of docs/tables.md; they do no IO.

Example:
    >>> records = checked.transform(to_customer_records, sources["crm"], run_id=ctx.run_id)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakecdp.ingest.cleaners import COUNTRY_ALIASES, INVISIBLE_PATTERN, SPACE_RUN_PATTERN
from lakecdp.ingest.schemas import SILVER_SCHEMAS
from lakecdp.ingest.sources import DEFAULT_JUNK_VALUES, ExtraTarget, SourceConfig
from lakecdp.ingest.validate import null_like_key, valid_email

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: control (Cc), format (Cf: zero-width space/joiners, BOM, bidi marks) characters
_INVISIBLE = INVISIBLE_PATTERN


def null_if_junk(column: Column, junk_values: Sequence[str] = DEFAULT_JUNK_VALUES) -> Column:
    """Null when the trimmed, lower-cased value is a known placeholder (``n/a``, ``test@test.com``)."""
    junk = F.array(*[F.lit(v.lower()) for v in junk_values])
    return F.when(~F.array_contains(junk, F.lower(F.trim(column))), column)


def normalise_email(column: Column, junk_values: Sequence[str] = DEFAULT_JUNK_VALUES) -> Column:
    """Trim and lower-case; null when junk or not a syntactically valid address (RFC length
    limits; an invisible character -- zero-width space, BOM, bidi control -- makes it invalid)."""
    email = F.lower(F.trim(column))
    return F.when(valid_email(email), null_if_junk(email, junk_values))


@F.arrow_udf(T.StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def _e164(numbers: pa.Array, regions: pa.Array) -> pa.Array:
    # one implementation on both engines (lakecdp.ingest.phones): the common shapes reduced to
    # digits by pyarrow.compute and answered once per distinct reduction, phonenumbers (~67 µs a
    # call) once per distinct (number, region) of the batch for the rest
    from lakecdp.ingest.phones import e164_array

    return e164_array(numbers, regions)


def normalise_phone(
    column: Column,
    country: Column | None = None,
    *,
    default_region: str = "GB",
    junk_values: Sequence[str] = DEFAULT_JUNK_VALUES,
) -> Column:
    """E.164 (``+447700900123``) via ``phonenumbers``; national formats read in the record's
    country (ISO alpha-2), else ``default_region``; null when impossible or junk."""
    region = F.coalesce(country, F.lit(default_region)) if country is not None else F.lit(default_region)
    return _e164(null_if_junk(column, junk_values), region)


@F.arrow_udf(T.StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted form
def _nfc(values: pa.Array) -> pa.Array:
    return pa.array(
        [unicodedata.normalize("NFC", v) if v is not None else None for v in values.to_pylist()], pa.string()
    )


def nfc(column: Column) -> Column:
    """Unicode NFC of a string column. ASCII text (as many characters as UTF-8 bytes) is in NFC
    already: only the other values cross to Python, the rest pass as nulls."""
    non_ascii = F.length(column) != F.octet_length(column)
    return F.coalesce(_nfc(F.when(non_ascii, column)), column)


def _cleaned(column: Column) -> Column:
    """Control and zero-width characters removed, whitespace runs one space, trimmed. Text of
    printable ASCII without two spaces in a row (most values) holds none of them: it is only
    trimmed, after one regular expression over it instead of two replacements."""
    plain = ~column.rlike(_NOT_PLAIN)
    full = F.trim(F.regexp_replace(F.regexp_replace(column, _INVISIBLE, ""), SPACE_RUN_PATTERN, " "))
    return F.when(plain, F.trim(column)).otherwise(full)


#: what :func:`_cleaned` has to work on: a character outside printable ASCII, or two spaces
_NOT_PLAIN = r"[^\x20-\x7e]|  "


def clean_name(column: Column) -> Column:
    """Unicode NFC, control and zero-width characters removed, inner whitespace single, trimmed;
    empty -> null."""
    cleaned = _cleaned(nfc(column))
    return F.when(cleaned != "", cleaned)


def country_code(column: Column) -> Column:
    """Country names and aliases (``United Kingdom``, ``UK``, ``Deutschland``) -> ISO alpha-2; an
    unknown value -> null."""
    import phonenumbers

    key = F.regexp_replace(F.lower(F.trim(column)), r"[.]", "")
    aliases = F.create_map(*[F.lit(x) for pair in COUNTRY_ALIASES.items() for x in pair])
    regions = F.array(*[F.lit(r) for r in sorted(phonenumbers.SUPPORTED_REGIONS)])
    upper = F.upper(key)
    return F.coalesce(
        F.try_element_at(aliases, key),
        F.when((F.length(key) == 2) & F.array_contains(regions, upper), upper),
    )


def normalise_postcode(column: Column) -> Column:
    """Upper-case, single inner spaces, trimmed; empty -> null."""
    cleaned = F.trim(F.regexp_replace(F.upper(column), SPACE_RUN_PATTERN, " "))
    return F.when(cleaned != "", cleaned)


def clean_text(column: Column) -> Column:
    """Invisible characters removed, whitespace collapsed, trimmed; empty -> null."""
    cleaned = _cleaned(column)
    return F.when(cleaned != "", cleaned)


# -- mappers to the unified silver schemas ---------------------------------------------


def _mapped(df: DataFrame, mapping: dict[str, str], target: str) -> list[Column]:
    """One column per silver column of ``target``: the mapping's expression or null, cast."""
    return [
        (F.expr(mapping[field.name]) if field.name in mapping else F.lit(None)).cast(field.dataType).alias(field.name)
        for field in SILVER_SCHEMAS[target].fields
        if field.name in mapping or field.name not in _STAMPS
    ]


_STAMPS = frozenset({"record_id", "source", "warnings", "run_id", "ingested_at"})


def _stamps(run_id: str | None, ingested_at: datetime | None) -> tuple[Column, Column]:
    return (
        F.lit(run_id).cast("string").alias("run_id"),
        (F.lit(ingested_at) if ingested_at is not None else F.current_timestamp())
        .cast("timestamp")
        .alias("ingested_at"),
    )


def _warnings_column(df: DataFrame) -> Column:
    return F.col("_warnings") if "_warnings" in df.columns else F.array().cast("array<string>")


def _unparsed_birth_date(df: DataFrame, mapping: dict[str, str], source: SourceConfig) -> Column:
    """The birth date as the source wrote it, when it could not be read as a date.

    Only when ``date_of_birth`` maps a declared date column directly and the row's text for
    it does not parse with the column's format (``19461302``): a typo the identity model's
    "one typo" level can still use. A date that parsed but failed a check (a placeholder,
    a future date) is not kept: it is not evidence.
    """
    column = mapping.get("date_of_birth", "").strip().strip("`")
    if "_as_read" not in df.columns or column not in source.column_names:
        return F.lit(None).cast("string")
    spec = source.column(column)
    if spec.type != "date":
        return F.lit(None).cast("string")
    text = F.trim(F.col(f"_as_read.`{column}`").cast("string"))
    parsed = F.try_to_date(text, spec.format) if spec.format else text.try_cast("date")
    return F.when((text != "") & parsed.isNull(), text)


def record_label(source: SourceConfig, extra: ExtraTarget | None = None) -> str:
    """silver.customer_records' ``source`` of ``source``'s records (or of its ``extra`` target)."""
    return (extra.record_source if extra is not None else None) or source.name


def record_id_column(label: str, source_record_id: Column) -> Column:
    """silver.customer_records' ``record_id``: ``<label>:<source record id>``."""
    return F.concat(F.lit(label + ":"), source_record_id)


def to_customer_records(
    df: DataFrame,
    source: SourceConfig,
    *,
    run_id: str | None = None,
    ingested_at: datetime | None = None,
    extra: ExtraTarget | None = None,
) -> DataFrame:
    """Map validated rows to ``silver.customer_records`` (docs/tables.md) and standardise them.

    Args:
        df: output of ``parse_and_validate`` (passing rows), typed source columns.
        source: the source; its ``mapping`` (or ``extra``'s for a second target) gives the columns.
        extra: an ``also`` entry of the source (web ``login`` events -> records): rows are
            filtered by its predicate and ``source`` is its ``record_source``.

    Returns:
        One row per input row, in silver.customer_records' column order.
    """
    mapping = extra.mapping if extra is not None else source.mapping
    label = record_label(source, extra)
    if extra is not None:
        # a blank or placeholder id (a login whose anonymous_id is "n/a") would make one record
        # of many people: such a row is an event only, like one without the id
        record_id = F.expr(mapping["source_record_id"]) if "source_record_id" in mapping else F.lit(None)
        usable = (F.trim(record_id.cast("string")) != "") & ~null_like_key(record_id)
        df = df.where(F.expr(extra.filter) & F.coalesce(usable, F.lit(False)))
    junk = source.junk_values
    unified = df.select(
        *_mapped(df, mapping, "customer_records"),
        _warnings_column(df).alias("warnings"),
        *([F.col("_as_read")] if "_as_read" in df.columns else []),
    )
    country = country_code(F.col("country"))
    run_col, ingested_col = _stamps(run_id, ingested_at)
    columns = {
        "record_id": record_id_column(label, F.col("source_record_id")),
        "source": F.lit(label),
        "source_record_id": F.col("source_record_id"),
        "first_name": clean_name(F.col("first_name")),
        "last_name": clean_name(F.col("last_name")),
        "email": normalise_email(F.col("email"), junk),
        "phone": normalise_phone(F.col("phone"), country, default_region=source.default_region, junk_values=junk),
        "date_of_birth": F.col("date_of_birth"),
        "address_line1": clean_text(F.col("address_line1")),
        "postcode": normalise_postcode(F.col("postcode")),
        "city": clean_text(F.col("city")),
        "country": country,
        "device_ids": F.filter(
            F.coalesce(F.col("device_ids"), F.array().cast("array<string>")),
            lambda d: null_if_junk(d, junk).isNotNull(),
        ),
        "crm_id": null_if_junk(F.trim(F.col("crm_id")), junk),
        "customer_number": null_if_junk(F.trim(F.col("customer_number")), junk),
        "email_consent": F.col("email_consent"),
        "updated_at": F.col("updated_at"),
        "warnings": F.coalesce(F.col("warnings"), F.array().cast("array<string>")),
        "run_id": run_col,
        "ingested_at": ingested_col,
        "middle_name": clean_name(F.col("middle_name")),
        "date_of_birth_text": F.coalesce(F.col("date_of_birth_text"), _unparsed_birth_date(df, mapping, source)),
        "address_line2": clean_text(F.col("address_line2")),
        "region": clean_text(F.col("region")),
        "sms_consent": F.col("sms_consent"),
    }
    return unified.select(
        *[columns[f.name].cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["customer_records"].fields]
    )


def to_events(
    df: DataFrame, source: SourceConfig, *, run_id: str | None = None, ingested_at: datetime | None = None
) -> DataFrame:
    """Map validated rows to ``silver.events``: identifiers standardised, junk -> null."""
    junk = source.junk_values
    unified = df.select(*_mapped(df, source.mapping, "events"))
    run_col, ingested_col = _stamps(run_id, ingested_at)
    overrides = {
        "source": F.lit(source.name),
        "email": normalise_email(F.col("email"), junk),
        "device_id": null_if_junk(F.trim(F.col("device_id")), junk),
        "customer_number": null_if_junk(F.trim(F.col("customer_number")), junk),
        "run_id": run_col,
        "ingested_at": ingested_col,
    }
    return unified.select(
        *[overrides.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["events"].fields]
    )


def to_orders(
    df: DataFrame, source: SourceConfig, *, run_id: str | None = None, ingested_at: datetime | None = None
) -> DataFrame:
    """Map validated order rows to ``silver.orders``."""
    junk = source.junk_values
    unified = df.select(*_mapped(df, source.mapping, "orders"))
    run_col, ingested_col = _stamps(run_id, ingested_at)
    overrides = {
        "source": F.lit(source.name),
        "email": normalise_email(F.col("email"), junk),
        "customer_number": null_if_junk(F.trim(F.col("customer_number")), junk),
        "currency": F.upper(F.trim(F.col("currency"))),
        "run_id": run_col,
        "ingested_at": ingested_col,
    }
    return unified.select(
        *[overrides.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["orders"].fields]
    )


def to_order_items(df: DataFrame, source: SourceConfig) -> DataFrame:
    """One row per element of the source's items array; ``line_number`` counts from 1."""
    if source.items is None:
        raise ValueError(f"source {source.name!r} has no items; it does not feed order_items")
    order_id = F.expr(source.mapping["order_id"])
    exploded = df.select(
        "*",
        order_id.alias("_order_id"),
        F.posexplode_outer(F.col(source.items.column)).alias("_position", "item"),
    ).where(F.col("item").isNotNull())
    columns = {
        "order_id": F.col("_order_id"),
        "line_number": F.col("_position") + 1,
    }
    for name, sql in source.items.mapping.items():
        columns[name] = F.expr(sql)
    return exploded.select(
        *[columns.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMAS["order_items"].fields]
    )


def to_products(df: DataFrame, source: SourceConfig) -> DataFrame:
    """Map validated catalog rows to ``silver.products``."""
    unified = df.select(*_mapped(df, source.mapping, "products"))
    overrides = {"name": clean_text(F.col("name")), "category": clean_text(F.col("category"))}
    return unified.select(
        *[
            overrides.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in SILVER_SCHEMAS["products"].fields
        ]
    )


MAPPERS = {
    "customer_records": to_customer_records,
    "events": to_events,
    "orders": to_orders,
    "products": to_products,
}
