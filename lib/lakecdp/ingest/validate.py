"""Parse raw lines / messages of a source and decide, row by row, what is wrong with them.

:func:`parse_and_validate` is a pure ``DataFrame -> DataFrame`` transform (no IO, no
actions), so the batch job and the Kafka stream (inside ``foreachBatch``) share it.

Reason codes (docs/sample-data.md): structural problems of the whole line
(``MALFORMED_LINE``, ``WRONG_FIELD_COUNT``, ``BAD_ENCODING``) make the field checks
meaningless, so a line with one of those carries only the structural reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakecdp.columns import MissingColumnsError
from lakecdp.ingest.sources import NULL_LIKE_KEY_PATTERN, NUMERIC_TYPES, SourceConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MALFORMED_LINE = "MALFORMED_LINE"
WRONG_FIELD_COUNT = "WRONG_FIELD_COUNT"
MISSING_REQUIRED = "MISSING_REQUIRED"
INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
INVALID_TYPE = "INVALID_TYPE"
INVALID_EMAIL = "INVALID_EMAIL"
INVALID_DATE = "INVALID_DATE"
IMPOSSIBLE_DATE = "IMPOSSIBLE_DATE"
FIELD_TOO_LONG = "FIELD_TOO_LONG"
BAD_ENCODING = "BAD_ENCODING"
DUPLICATE = "DUPLICATE"
#: a timestamp later than as-of + the source's tolerance (a LastModified of 2099)
FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
#: a timestamp that is a default, not a time: the Unix epoch (1970-01-01 +- a day) or before 1900-01-02
PLACEHOLDER_TIMESTAMP = "PLACEHOLDER_TIMESTAMP"
#: a primary key that is a placeholder (``N/A``, ``NULL``, ``0``) or holds invisible characters
INVALID_KEY = "INVALID_KEY"
#: ``NaN``, ``Infinity`` or a number beyond the type's range (``1e400``) in a numeric field
NON_FINITE_NUMBER = "NON_FINITE_NUMBER"
# whole-file reasons (the ingest job; one quarantine row with ``line`` null, or every line)
#: the landing path (or a folder on the way to it) is a symbolic link: never followed
SYMLINK = "SYMLINK"
#: the file cannot be read: not a regular file (a folder, a pipe), gone, no permission, not Parquet
UNREADABLE_FILE = "UNREADABLE_FILE"
#: the CSV header names a column twice (case-insensitively): every line of the file is refused
DUPLICATE_HEADER = "DUPLICATE_HEADER"
#: a non-empty file that holds no row (header only, blank lines only): loaded, reported
NO_ROWS = "NO_ROWS"

REASON_CODES = (
    MALFORMED_LINE,
    WRONG_FIELD_COUNT,
    MISSING_REQUIRED,
    INVALID_TIMESTAMP,
    INVALID_TYPE,
    INVALID_EMAIL,
    INVALID_DATE,
    IMPOSSIBLE_DATE,
    FIELD_TOO_LONG,
    BAD_ENCODING,
    DUPLICATE,
    FUTURE_TIMESTAMP,
    PLACEHOLDER_TIMESTAMP,
    INVALID_KEY,
    NON_FINITE_NUMBER,
    SYMLINK,
    UNREADABLE_FILE,
    DUPLICATE_HEADER,
    NO_ROWS,
)

#: what Spark's text reader puts where the bytes were not valid UTF-8
REPLACEMENT_CHARACTER = "\ufffd"
#: characters no address holds: whitespace (any script), control, format (zero-width space and
#: joiners U+200B-D, BOM U+FEFF, soft hyphen U+00AD, bidi controls), private-use, unassigned
_NOT_IN_EMAIL = r"@\s\p{Z}\p{C}"
#: one '@', no spaces or invisible characters, a dot in the domain, domain labels of 1-63
#: characters; deliberately simple (RFC 5322 allows more, but none of that is a real
#: marketing address). Java regex (Spark's ``rlike``); lengths in bytes: :func:`valid_email`
EMAIL_PATTERN = rf"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}.]{{1,63}}(\.[^{_NOT_IN_EMAIL}.]{{1,63}})+$"
#: RFC 5321 4.5.3.1: a local part of at most 64 octets, a path of at most 256 (254 for the address)
EMAIL_MAX_OCTETS = 254
EMAIL_LOCAL_PART_MAX_OCTETS = 64
#: control (Cc) and format (Cf) characters: never part of a key
_INVISIBLE = r"[\p{Cc}\p{Cf}]"
#: a timestamp within a day of the Unix epoch is the epoch in some time zone: a default
_EPOCH_SLACK_SECONDS = 86_400
_EARLIEST_TIMESTAMP = datetime(1900, 1, 2)
_EARLIEST_UTC = _EARLIEST_TIMESTAMP.replace(tzinfo=timezone.utc)
#: how Spark's JSON parser writes a NaN / infinite number token into a text field
_QUOTED_NON_FINITE = ('"NaN"', '"Infinity"', '"-Infinity"')

_CORRUPT = "_corrupt_record"
_AS_READ = "_as_read"
_RESCUED = "_rescued"


@dataclass(frozen=True)
class RowRules:
    """The row rules' patterns and limits as plain values, for a validator that runs outside Spark
    (the HTTP intake's :mod:`lakecdp.api.validation`, which checks an event before it answers):
    one definition, read through :func:`row_rules`."""

    #: Java regular expressions (Spark's ``rlike``): :data:`EMAIL_PATTERN`, placeholder keys, invisible characters
    email_pattern: str
    null_like_key_pattern: str
    invisible_pattern: str
    email_max_octets: int
    email_local_part_max_octets: int
    #: how Spark's JSON parser writes a NaN / infinite number token into a text field
    quoted_non_finite: tuple[str, ...]

    def placeholder_timestamp(self, moment: datetime) -> bool:
        """PLACEHOLDER_TIMESTAMP on one value (naive: UTC, the session's zone): within a day of the
        Unix epoch, or before 1900-01-02.

        Example:
            >>> row_rules().placeholder_timestamp(datetime(1970, 1, 1, 5, tzinfo=timezone.utc))
            True
        """
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return aware < _EARLIEST_UTC or abs(aware.timestamp()) <= _EPOCH_SLACK_SECONDS


def row_rules() -> RowRules:
    """The rules :func:`parse_and_validate` compiles for Spark, as values for other evaluators.

    Returns:
        The patterns, byte limits and the placeholder-timestamp check of this module.
    """
    return RowRules(
        email_pattern=EMAIL_PATTERN,
        null_like_key_pattern=NULL_LIKE_KEY_PATTERN,
        invisible_pattern=_INVISIBLE,
        email_max_octets=EMAIL_MAX_OCTETS,
        email_local_part_max_octets=EMAIL_LOCAL_PART_MAX_OCTETS,
        quoted_non_finite=_QUOTED_NON_FINITE,
    )


def valid_email(email: Column) -> Column:
    """True when ``email`` (trimmed, lower-cased) is a syntactically valid address.

    :data:`EMAIL_PATTERN` plus RFC 5321's limits: at most 254 bytes (UTF-8) in all, 64 in the
    local part. Shared by validation (INVALID_EMAIL) and :func:`lakecdp.ingest.standardise.normalise_email`.
    """
    return (
        email.rlike(EMAIL_PATTERN)
        & (F.octet_length(email) <= EMAIL_MAX_OCTETS)
        & (F.octet_length(F.substring_index(email, "@", 1)) <= EMAIL_LOCAL_PART_MAX_OCTETS)
    )


def null_like_key(value: Column) -> Column:
    """True when a key's text is a placeholder (:data:`~lakecdp.ingest.sources.NULL_LIKE_KEY_PATTERN`)
    or holds a control / zero-width / bidi character; false for blank (that is MISSING_REQUIRED)."""
    text = F.trim(value.cast("string"))
    return (text != "") & (F.lower(text).rlike(NULL_LIKE_KEY_PATTERN) | text.rlike(_INVISIBLE))


def _holds_double(data_type: T.DataType) -> bool:
    if isinstance(data_type, (T.DoubleType, T.FloatType)):
        return True
    if isinstance(data_type, T.StructType):
        return any(_holds_double(f.dataType) for f in data_type.fields)
    if isinstance(data_type, T.ArrayType):
        return _holds_double(data_type.elementType)
    if isinstance(data_type, T.MapType):
        return _holds_double(data_type.valueType)
    return False


def _non_finite(value: Column, data_type: T.DataType) -> Column:
    """True when a double (at any depth of structs, arrays and maps) is NaN or infinite; null-safe."""
    if isinstance(data_type, (T.DoubleType, T.FloatType)):
        return F.coalesce(F.isnan(value) | (F.abs(value) == F.lit(float("inf"))), F.lit(False))
    if isinstance(data_type, T.StructType):
        result = F.lit(False)
        for field in data_type.fields:
            if _holds_double(field.dataType):
                result = result | _non_finite(value[field.name], field.dataType)
        return result
    if isinstance(data_type, T.ArrayType):
        element_type = data_type.elementType
        return F.coalesce(F.exists(value, lambda element: _non_finite(element, element_type)), F.lit(False))
    if isinstance(data_type, T.MapType):
        value_type = data_type.valueType
        return F.coalesce(F.exists(F.map_values(value), lambda element: _non_finite(element, value_type)), F.lit(False))
    return F.lit(False)


def _timestamp_bound(source: SourceConfig, as_of: date | datetime | None, received_at: str | None) -> Column:
    """The latest plausible time: as-of (or, per row, when the row was received) + the source's tolerance."""
    if isinstance(as_of, datetime):
        now = F.lit(as_of)
    elif as_of is not None:
        # a day: all of it
        now = F.lit(datetime.combine(as_of + timedelta(days=1), time(0)))
    else:
        now = F.current_timestamp()
    if received_at is not None:
        now = F.greatest(now.cast("timestamp"), F.col(received_at).cast("timestamp"))
    return now.cast("timestamp") + F.expr(f"INTERVAL {int(source.future_tolerance_minutes)} MINUTES")


@dataclass(frozen=True)
class _Finding:
    """One possible problem of a row: when ``condition`` holds, ``code`` applies to ``field``."""

    condition: Column
    code: str
    field: str
    quarantine: bool


def _scalar_string_schema(source: SourceConfig) -> str:
    """The JSON parse schema: scalars as text (so a bad number is seen, not nulled), nested as declared."""
    parts = [f"`{c.name}` {'string' if c.is_scalar else c.type}" for c in source.columns]
    return ", ".join([*parts, f"`{_CORRUPT}` string"])


def _as_read_csv(raw: Column, source: SourceConfig, header: list[str]) -> tuple[Column, list[Column], Column, Column]:
    sep = source.options.get("sep", source.options.get("delimiter", ","))
    quote = source.options.get("quote", '"')
    escape = source.options.get("escape", quote)
    schema = ", ".join(f"`_f{i}` string" for i in range(len(header)))
    parsed = F.from_csv(raw, schema, {"sep": sep, "quote": quote, "escape": escape, "mode": "PERMISSIVE"})
    position = {name: i for i, name in enumerate(header)}
    as_read = F.struct(
        *[
            (parsed[f"_f{position[c.name]}"] if c.name in position else F.lit(None).cast("string")).alias(c.name)
            for c in source.columns
        ]
    )
    extra = [name for name in header if name not in set(source.column_names)]
    extra_values = F.struct(*[parsed[f"_f{position[name]}"].alias(name) for name in extra]) if extra else None
    rescued = (
        F.when(F.to_json(extra_values) != "{}", F.to_json(extra_values))
        if extra_values is not None
        else F.lit(None).cast("string")
    )
    # an odd number of quote characters: a quoted field never closes. A line without any (most
    # lines) has none of either: no regular expression over it
    quoted = raw.contains(quote)
    quotes = F.when(quoted, F.size(F.split(raw, f"\\Q{quote}\\E", -1)) - 1).otherwise(0)
    unbalanced = (quotes % 2) == 1
    # fields = separators outside quoted sections + 1 (Spark's parser pads or drops silently)
    q = f"\\Q{quote}\\E"
    unquoted = F.when(quoted, F.regexp_replace(raw, f"{q}([^{quote}]|{q}{q})*{q}", "")).otherwise(raw)
    fields = F.size(F.split(unquoted, _literal_pattern(sep), -1))
    structural = [
        _Finding(unbalanced, MALFORMED_LINE, "line", True),
        _Finding(~unbalanced & (fields != len(header)), WRONG_FIELD_COUNT, "line", True),
    ]
    detail = F.when(
        ~unbalanced & (fields != len(header)),
        F.format_string(f"expected {len(header)} fields, got %d", fields),
    )
    return as_read, _structural_columns(structural), detail, rescued


def _literal_pattern(text: str) -> str:
    """A regular expression matching ``text`` literally; one character as Java's ``String.split``
    splits without the regex engine (the character, or a backslash and it when it is special)."""
    if len(text) == 1 and not text.isalnum():
        return text if text not in ".$|()[]{}^?*+\\" else "\\" + text
    return f"\\Q{text}\\E"


def _structural_columns(findings: list[_Finding]) -> list[Column]:
    return [
        F.struct(f.condition.alias("c"), F.lit(f.code).alias("code"), F.lit(f.field).alias("field")) for f in findings
    ]


#: a finding that holds, as :func:`_holding` lists it: ``detail`` is ``CODE(field)``
_HIT_TYPE = "array<struct<code:string,field:string,detail:string>>"


def _holding(findings: list[tuple[Column, Column, Column]]) -> Column:
    """The findings (condition, code, field) whose condition holds, in their order, as
    ``array<struct<code, field, detail>>``.

    Made of ``concat`` over one-element arrays rather than ``filter`` / ``array_compact``: those
    are higher-order functions, which Spark evaluates row by row with its interpreter -- every
    condition under them too -- and which keep their whole projection out of whole-stage code
    generation (bench/RESULTS.md, "Spark ingest: the executor's work per row").
    """
    if not findings:
        return F.array().cast(_HIT_TYPE)
    hits = [
        F.struct(
            code.alias("code"), field.alias("field"), F.concat(code, F.lit("("), field, F.lit(")")).alias("detail")
        )
        for _condition, code, field in findings
    ]
    # an empty array of exactly the hits' type (fields not null), folded to a literal by Spark
    none = F.slice(F.array(hits[0]), 1, 0)
    return F.concat(
        *[F.when(condition, F.array(hit)).otherwise(none) for (condition, _c, _f), hit in zip(findings, hits)]
    )


def _as_read_json(
    raw: Column, source: SourceConfig, keys: list[str] | None = None
) -> tuple[Column, list[Column], Column, Column]:
    """``keys``: every key an object of ``raw`` can have, when the file says (a Parquet file's
    columns); none outside the source's columns means nothing to rescue on any row."""
    # from_json throws (NullPointerException) on an empty or blank text: such a line or Kafka
    # message is simply malformed, so the parser is handed null instead (it gives null). The
    # condition is on the parser's input, not around the parser: Spark moves each ``parsed[field]``
    # into the branches of a ``when(..., from_json(raw))``, where the fields share no parse -- every
    # line was parsed once per column (bench/RESULTS.md, "Spark ingest: the executor's work per row")
    parsed = F.from_json(
        F.when(F.trim(raw) != "", raw),
        _scalar_string_schema(source),
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT},
    )
    malformed = parsed.isNull() | parsed[_CORRUPT].isNotNull() | ~F.ltrim(raw).startswith("{")
    as_read = F.struct(*[parsed[c.name].alias(c.name) for c in source.columns])
    structural = _structural_columns([_Finding(malformed, MALFORMED_LINE, "line", True)])
    if keys is not None and set(keys) <= set(source.column_names):
        # no row can name an unknown key: no second parse of every row for its keys
        return as_read, structural, F.lit(None).cast("string"), F.lit(None).cast("string")
    return as_read, structural, F.lit(None).cast("string"), _rescued_json(raw, source)


def _rescued_json(raw: Column, source: SourceConfig) -> Column:
    known = F.array(*[F.lit(name) for name in source.column_names])
    json_object = F.when(F.ltrim(raw).startswith("{"), raw)
    everything = F.from_json(json_object, "map<string,string>")
    unknown = F.map_filter(everything, lambda key, _value: ~F.array_contains(known, key))
    # most lines name known keys only, which their top-level keys alone show (json_object_keys, a
    # light parse): the map of every field as text and map_filter (a higher-order function, run
    # by Spark's interpreter row by row) only for the others -- and for lines json_object_keys
    # cannot read (malformed, or a NaN token, which from_json reads), where the map decides
    keys = F.json_object_keys(json_object)
    maybe = keys.isNull() | (F.size(F.array_except(keys, known)) > 0)
    return F.when(maybe, F.when(F.size(unknown) > 0, F.to_json(unknown)))


def _blank(value: Column) -> Column:
    return value.isNull() | (F.trim(value.cast("string")) == "")


def _typed_scalar(value: Column, type_name: str, pattern: str | None) -> Column:
    if type_name == "string":
        return value
    if type_name == "date":
        return F.try_to_date(value, pattern) if pattern else F.trim(value).try_cast("date")
    if type_name == "timestamp":
        return F.try_to_timestamp(value, F.lit(pattern)) if pattern else F.trim(value).try_cast("timestamp")
    return F.trim(value).try_cast(type_name)


def parse_and_validate(
    raw: DataFrame,
    source: SourceConfig,
    *,
    header: list[str] | None = None,
    as_of: date | datetime | None = None,
    received_at: str | None = None,
) -> DataFrame:
    """Parse ``raw`` (one line / message per row) into the source's typed columns and give reasons.

    Args:
        raw: a ``raw string`` column plus provenance columns (``source_file, line`` or
            ``kafka_topic, kafka_partition, kafka_offset``); they are kept as they are.
        source: the source's config.
        header: CSV only: the file's header columns in file order (default: the configured
            columns); columns not configured are rescued, configured ones absent are null.
            Parquet rows arrive as JSON text (``to_json`` of the row).
        as_of: the day birth dates may not exceed and the time timestamps may not exceed by
            more than ``source.future_tolerance_minutes`` (default: now).
        received_at: a timestamp column of ``raw`` saying when each row arrived (Kafka: the
            broker's timestamp); a long-running stream then judges "future" by it, not by the
            query's start.

    Returns:
        ``raw`` + provenance + typed source columns (declared types; an optional field that
        failed its check is null) + ``_as_read`` (struct of the columns as read: text for
        scalars) + ``_rescued`` (JSON of unknown columns or null) + ``_reasons
        array<string>`` (non-empty = quarantine) + ``_warnings array<string>`` (optional
        fields nulled) + ``_detail`` (which field failed which check).

    Example:
        >>> checked = parse_and_validate(lines, sources["crm"], header=header_of_file)
        >>> quarantined = checked.where(F.size("_reasons") > 0)
    """
    if "raw" not in raw.columns:
        raise MissingColumnsError(f"parse_and_validate needs a 'raw' column, got {raw.columns}")
    raw_col = F.col("raw")
    # the format reads raw into the columns as read (lakecdp.ingest.formats)
    as_read, structural, structural_detail, rescued = source.file_format.parse(raw_col, source, header)
    bad_encoding = raw_col.contains(REPLACEMENT_CHARACTER)
    structural = [*structural, *_structural_columns([_Finding(bad_encoding, BAD_ENCODING, "line", True)])]

    staged = (
        raw.withColumn(_AS_READ, as_read)
        .withColumn(_RESCUED, rescued)
        .withColumn("_structural", _holding([(s["c"], s["code"], s["field"]) for s in structural]))
        .withColumn("_structural_detail", structural_detail)
    )

    today = F.lit(as_of.date() if isinstance(as_of, datetime) else as_of) if as_of else F.current_date()
    latest = _timestamp_bound(source, as_of, received_at)
    as_read_types = staged.schema[_AS_READ].dataType
    if not isinstance(as_read_types, T.StructType):  # the formats' parse builds a struct; said for the type checker
        raise TypeError(f"{source.name}: {_AS_READ} is {as_read_types.simpleString()}, not a struct")
    findings: list[_Finding] = []
    typed: dict[str, Column] = {}
    for spec in source.columns:
        read = F.col(f"{_AS_READ}.`{spec.name}`")
        check = source.checks.get(spec.name)
        required = source.is_required(spec.name)
        if not spec.is_scalar:
            typed[spec.name] = read
            # NaN / Infinity inside nested values (an order line's price) cannot be nulled alone
            nested_type = as_read_types[spec.name].dataType
            if _holds_double(nested_type):
                findings.append(_Finding(_non_finite(read, nested_type), NON_FINITE_NUMBER, spec.name, True))
            continue
        value = _typed_scalar(read, spec.type, spec.format)
        typed[spec.name] = value
        unparsed = ~_blank(read) & value.isNull()
        if spec.type in NUMERIC_TYPES or spec.type == "boolean":
            quarantine = required or ((check.on_invalid != "warn") if check and check.on_invalid else True)
            non_finite = F.lit(False)
            if spec.type == "double":
                # Spark reads "NaN", "Infinity" and 1e400 (overflow) as doubles: none is an amount.
                # An unquoted JSON NaN / Infinity / 1e400 token reaches a text field re-written
                # by Spark's parser as a quoted word
                spelled = F.coalesce(F.trim(read).isin(*_QUOTED_NON_FINITE), F.lit(False))
                non_finite = _non_finite(value, T.DoubleType()) | spelled
                unparsed = unparsed & ~spelled
            findings.append(_Finding(unparsed, INVALID_TYPE, spec.name, quarantine))
            findings.append(_Finding(non_finite, NON_FINITE_NUMBER, spec.name, quarantine))
        elif spec.type in ("date", "timestamp"):
            code = INVALID_DATE if spec.type == "date" else INVALID_TIMESTAMP
            quarantine = required or bool(check and check.on_invalid == "quarantine")
            findings.append(_Finding(unparsed, code, spec.name, quarantine))
        if spec.type == "timestamp":
            # the event time orders versions (later wins) and places events: a wrong one is
            # quarantined even when optional; any other timestamp is nulled with a warning
            ordering = quarantine or spec.name == source.event_time
            epoch = F.abs(F.unix_seconds(value)) <= _EPOCH_SLACK_SECONDS
            placeholder = (value < F.lit(_EARLIEST_TIMESTAMP)) | epoch
            findings.append(_Finding(F.coalesce(value > latest, F.lit(False)), FUTURE_TIMESTAMP, spec.name, ordering))
            findings.append(_Finding(F.coalesce(placeholder, F.lit(False)), PLACEHOLDER_TIMESTAMP, spec.name, ordering))

    junk = F.array(*[F.lit(v) for v in source.junk_values])
    for path in source.required:
        findings.append(_Finding(_blank(F.col(f"{_AS_READ}.{path}")), MISSING_REQUIRED, path, True))
    for path in source.primary_key:
        key = F.col(f"{_AS_READ}.{path}")
        if not source.is_required(path):
            findings.append(_Finding(_blank(key), MISSING_REQUIRED, path, True))
        findings.append(_Finding(F.coalesce(null_like_key(key), F.lit(False)), INVALID_KEY, path, True))
    for path, check in source.checks.items():
        top = path.split(".")[0]
        read = F.col(f"{_AS_READ}.{path}")
        value = typed[top] if "." not in path else F.col(f"{_AS_READ}.{path}")
        required = source.is_required(path)
        quarantine = required if check.on_invalid is None else check.on_invalid == "quarantine"
        if check.email:
            email = F.lower(F.trim(read.cast("string")))
            invalid = ~_blank(read) & ~F.array_contains(junk, email) & ~valid_email(email)
            findings.append(_Finding(invalid, INVALID_EMAIL, path, quarantine))
        if check.max_length is not None:
            too_long = F.length(read.cast("string")) > check.max_length
            findings.append(_Finding(too_long, FIELD_TOO_LONG, path, check.on_invalid != "warn"))
        if check.min_date is not None or check.not_future:
            as_date = value if "." not in path else value.try_cast("date")
            impossible = F.lit(False)
            if check.min_date is not None:
                impossible = impossible | (as_date < F.lit(check.min_date))
            if check.not_future:
                impossible = impossible | (as_date > today)
            findings.append(_Finding(F.coalesce(impossible, F.lit(False)), IMPOSSIBLE_DATE, path, quarantine))

    def hits(wanted: bool) -> Column:
        return _holding([(f.condition, F.lit(f.code), F.lit(f.field)) for f in findings if f.quarantine == wanted])

    staged = staged.withColumn("_q_hits", hits(True)).withColumn("_w_hits", hits(False))
    is_structural = F.size("_structural") > 0
    reasons = F.when(is_structural, F.col("_structural.code")).otherwise(F.col("_q_hits.code"))
    warnings = F.when(is_structural, F.array().cast("array<string>")).otherwise(F.col("_w_hits.code"))
    field_detail = F.array_join(F.concat("_q_hits.detail", "_w_hits.detail"), "; ")
    structural_codes = F.array_join(F.col("_structural.code"), "; ")
    detail = F.when(is_structural, F.concat_ws(": ", structural_codes, F.col("_structural_detail"))).otherwise(
        F.when(F.length(field_detail) > 0, field_detail)
    )

    # null the optional fields that failed a warn-level check
    nulled: dict[str, Column] = {}
    for spec in source.columns:
        column = typed[spec.name]
        for f in findings:
            if f.quarantine:
                continue
            if f.field == spec.name:
                column = F.when(F.coalesce(f.condition, F.lit(False)), F.lit(None).cast(spec.type)).otherwise(column)
            elif f.field.startswith(spec.name + "."):
                inner = f.field.split(".", 1)[1]
                if "." not in inner:
                    column = column.withField(
                        inner,
                        F.when(F.coalesce(f.condition, F.lit(False)), F.lit(None)).otherwise(
                            F.col(f"{_AS_READ}.{f.field}")
                        ),
                    )
        nulled[spec.name] = column

    return staged.select(
        *raw.columns,
        *[nulled[spec.name].alias(spec.name) for spec in source.columns],
        F.col(_AS_READ),
        F.col(_RESCUED),
        F.array_distinct(reasons).alias("_reasons"),
        F.array_distinct(warnings).alias("_warnings"),
        detail.alias("_detail"),
    )


def as_read_schema(source: SourceConfig) -> T.StructType:
    """Schema of ``_as_read`` (what bronze stores): scalars as text, nested as declared."""
    schema = T.StructType.fromDDL(
        ", ".join(f"`{c.name}` {'string' if c.is_scalar else c.type}" for c in source.columns)
    )
    if not isinstance(schema, T.StructType):  # a list of fields always parses to one; said for the type checker
        raise TypeError(f"{source.name}: the columns' DDL parsed to {schema.simpleString()}, not a struct")
    return schema
