"""Right to erasure: remove one person from every table and file and keep only salted hashes.

Given an email or a customer_id, the job
1. resolves the person through the identity graph: every record of their customer_id and every
   email, phone, device id, CRM id and customer number those records carry;
2. deletes, from every Delta table in the warehouse (bronze, quarantine, silver, identity,
   gold, segments, activation, ops), each row that holds any of those values in any column,
   nested field or raw text (the row is serialised to JSON and matched on whole values). The
   rows are found by a read and deleted by a MERGE against their content hashes, so no commit
   carries an identifier (a DELETE's condition is written into the commit); then purges
   deletion vectors so the current version's files no longer hold the data;
3. vacuums every table with the configured retention, so older files and change-data files go
   too (a table whose folder holds only its current files is skipped: nothing to delete), and with retention 0 drops each table's log before a fresh checkpoint (old commits keep
   column min/max statistics);
4. rewrites or deletes the files outside Delta (landing, exports, previews, the demo receiver
   log; :func:`erase_from_files`), and writes a report without identifiers
   (``<warehouse>/erasure_reports/<run id>.json``) listing what it kept and why;
5. appends salted SHA-256 hashes of the identifiers and of each record's name + birth date +
   postcode (:func:`person_key`) to ``ops.erasures`` — never the values — so ingest and
   activation can refuse the person later (:func:`erased_hashes`).

Example:
    >>> erase_person(ctx, email="ada@example.com")
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lakecdp import catalog
from lakecdp.config import StrictModel, load_model
from lakecdp.context import JobContext
from lakecdp.tables import LAYERS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

logger = logging.getLogger(__name__)

ERASURES_TABLE = catalog.ERASURES.name
ERASURES_SCHEMA = catalog.ERASURES.schema
# identifier columns of silver.customer_records gathered for the person
_RECORD_IDENTIFIERS = ("email", "phone", "crm_id", "customer_number", "source_record_id")
#: identifier type of the salted hash of a record's name + birth date + postcode (:func:`person_key`)
PERSON_KEY = "person_key"
#: ``userMetadata`` of every Delta commit an erasure makes (followed by its run id)
ERASURE_COMMIT_MARK = "lakecdp-erasure"
REPORTS_FOLDER = "erasure_reports"
_ERASE_KEY = "_lakecdp_erase_key"
# _delta_log entries of one version: commits, checksums, checkpoints (classic, multi-part, v2)
_LOG_ENTRY = re.compile(r"^(\d{20})\.(json|crc|checkpoint\b.*|compacted\b.*)$")


class ErasureSettings(StrictModel):
    salt_env: str = "LAKECDP_ERASURE_SALT"
    vacuum_retention_hours: int = 0


class PrivacyConfig(StrictModel):
    version: int
    erasure: ErasureSettings = ErasureSettings()


class PersonNotFoundError(LookupError):
    """No record in the warehouse carries the given identifier."""


class ErasureError(RuntimeError):
    """The erasure could not remove the person from somewhere it must."""


@dataclass
class FilesReport:
    """Files outside Delta tables: what the erasure did to those that held the person.

    Paths are relative to the warehouse (``landing/...`` for the landing folder,
    ``checkpoints/...`` for streaming checkpoints). A file whose own name holds an identifier
    (previews are named by customer id) is counted, never named.
    """

    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deleted_unnamed: int = 0
    retained: dict[str, str] = field(default_factory=dict)  # path -> reason

    def as_dict(self) -> dict[str, object]:
        return {
            "rewritten": sorted(self.rewritten),
            "deleted": sorted(self.deleted),
            "deleted_unnamed": self.deleted_unnamed,
            "retained": [{"path": k, "reason": v} for k, v in sorted(self.retained.items())],
        }


@dataclass(frozen=True)
class ErasureResult:
    customer_ids: tuple[str, ...]
    identifiers: dict[str, tuple[str, ...]]
    rows_deleted: dict[str, int]
    files: FilesReport = field(default_factory=FilesReport)


def load_privacy_config(conf_dir: str | os.PathLike[str]) -> PrivacyConfig:
    return load_model(Path(conf_dir) / "privacy.yaml", PrivacyConfig)


def erasure_salt(ctx: JobContext, settings: ErasureSettings) -> bytes:
    value = os.environ.get(settings.salt_env)
    if value:
        return value.encode()
    if ctx.project.environment.spark.mode != "local":
        raise RuntimeError(f"set the erasure salt in ${settings.salt_env} (required outside local mode)")
    salt_file = ctx.project.warehouse / "ops" / "_erasure_salt"
    if not salt_file.exists():
        salt_file.parent.mkdir(parents=True, exist_ok=True)
        salt_file.write_text(secrets.token_hex(32))
        salt_file.chmod(0o600)
    return salt_file.read_text().strip().encode()


def salted_hash(salt: bytes, identifier_type: str, value: str) -> str:
    """SHA-256 of salt, type and the normalised value (trimmed, lower-cased)."""
    normalised = value.strip().lower()
    return hashlib.sha256(salt + b"\x00" + identifier_type.encode() + b"\x00" + normalised.encode()).hexdigest()


def _warehouse_tables(ctx: JobContext) -> list[str]:
    """Logical names of every Delta table in the warehouse (path mode) or catalog schemas."""
    names: list[str] = []
    tables = ctx.tables
    if tables.uses_catalog:
        for layer in sorted(LAYERS):
            schema = tables.identifier(f"{layer}.x").split(".")[1].strip("`")
            catalog = tables.storage.catalog
            try:
                rows = ctx.spark.sql(f"SHOW TABLES IN `{catalog}`.`{schema}`").collect()
            except Exception:  # noqa: BLE001 - a layer without a schema holds no data
                continue
            names.extend(f"{layer}.{row['tableName']}" for row in rows)
        return names
    for layer in sorted(LAYERS):
        folder = ctx.project.warehouse / layer
        if folder.is_dir():
            names.extend(
                f"{layer}.{child.name}" for child in sorted(folder.iterdir()) if (child / "_delta_log").is_dir()
            )
    return names


def resolve_person(
    ctx: JobContext, *, email: str | None, customer_id: str | None
) -> tuple[list[str], dict[str, set[str]]]:
    """Customer ids and every identifier value linked to the person."""
    from pyspark.sql import functions as F

    spark, tables = ctx.spark, ctx.tables
    records = tables.read(spark, catalog.CUSTOMER_RECORDS.name)
    customer_ids: set[str] = set()
    if customer_id:
        customer_ids.add(customer_id)
    if email:
        wanted = email.strip().lower()
        if tables.exists(spark, catalog.IDENTIFIERS.name):
            rows = (
                tables.read(spark, catalog.IDENTIFIERS.name)
                .where((F.col("identifier_type") == "email") & (F.col("identifier_value") == wanted))
                .select("customer_id")
                .collect()
            )
            customer_ids.update(r[0] for r in rows)
        if tables.exists(spark, catalog.ID_MAP.name):
            rows = (
                records.where(F.col("email") == wanted)
                .select("record_id")
                .join(tables.read(spark, catalog.ID_MAP.name), "record_id")
                .select("customer_id")
                .distinct()
                .collect()
            )
            customer_ids.update(r[0] for r in rows)
    record_ids: set[str] = set()
    if customer_ids and tables.exists(spark, catalog.ID_MAP.name):
        rows = (
            tables.read(spark, catalog.ID_MAP.name)
            .where(F.col("customer_id").isin(sorted(customer_ids)))
            .select("record_id")
            .collect()
        )
        record_ids.update(r[0] for r in rows)
    person_records = records.where(
        F.col("record_id").isin(sorted(record_ids)) | (F.col("email") == (email or "").strip().lower())
    )
    identifiers: dict[str, set[str]] = {
        "customer_id": set(customer_ids),
        "record_id": set(record_ids),
        "device_id": set(),
    }
    for row in person_records.select(*_RECORD_IDENTIFIERS, "record_id", "device_ids").collect():
        identifiers["record_id"].add(row["record_id"])
        for column in _RECORD_IDENTIFIERS:
            if row[column]:
                identifiers.setdefault(column, set()).add(row[column])
        identifiers["device_id"].update(row["device_ids"] or [])
    if email:
        identifiers.setdefault("email", set()).add(email.strip().lower())
    if not identifiers["record_id"] and not customer_ids:
        raise PersonNotFoundError(
            f"no record carries {'email ' + email if email else 'customer_id ' + str(customer_id)}"
        )
    return sorted(customer_ids), {k: v for k, v in identifiers.items() if v}


def _values_pattern(values: set[str]) -> str:
    """A regex matching any value as a whole JSON string value or array element (case-insensitive)."""
    escaped = sorted((re.escape(v) for v in values), key=len, reverse=True)
    # the value stands between JSON quotes, or as a whole token in raw CSV / JSON text
    return r"(?i)(^|[^A-Za-z0-9_.@+\-])(" + "|".join(escaped) + r")($|[^A-Za-z0-9_.@\-])"


def rows_mentioning(df: DataFrame, values: set[str]) -> DataFrame:
    """Rows of ``df`` whose serialised content holds any of ``values`` as a whole value."""
    from pyspark.sql import functions as F

    serialised = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
    return df.where(serialised.rlike(_values_pattern(values)))


def _row_hash_sql(columns: list[str], alias: str) -> str:
    """SQL: SHA-256 of a row's whole content, the key a row is deleted by."""
    fields = ", ".join(f"{alias}.`{c}`" for c in columns)
    return f"sha2(to_json(struct({fields})), 256)"


def _delete_rows_mentioning(ctx: JobContext, name: str, pattern: str) -> int:
    """Delete the rows of ``name`` that mention the person; returns how many went.

    The rows are found with ``pattern`` by one read (no commit) that brings the content hashes
    of those rows to the driver (one person's rows: a few hashes, never an identifier), then
    deleted by a MERGE against those hashes. A Delta DELETE would write its condition (the
    person's identifiers) into the commit's ``operationParameters``; the MERGE's condition names
    columns only. A table without the person costs one Spark job.
    """
    from pyspark.sql import functions as F

    spark, tables = ctx.spark, ctx.tables
    delta = tables.delta(spark, name)
    df = delta.toDF()
    columns = df.columns
    serialised = F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns]))
    keys = sorted(
        row[0]
        for row in df.alias("t")
        .where(serialised.rlike(pattern))
        .select(F.expr(_row_hash_sql(columns, "t")))
        .distinct()
        .collect()
    )
    if not keys:
        return 0
    source = spark.createDataFrame([(key,) for key in keys], f"`{_ERASE_KEY}` string")
    # MERGE returns its metrics as a one-row DataFrame (no read of the table's history)
    (metrics,) = (
        delta.alias("t")
        .merge(source.alias("s"), f"{_row_hash_sql(columns, 't')} = s.`{_ERASE_KEY}`")
        .whenMatchedDelete()
        .execute()
        .collect()
    )
    return int(metrics["num_deleted_rows"])


def _forget_log_history(ctx: JobContext, name: str) -> int:
    """Checkpoint the table and remove every log entry before that checkpoint.

    The commit files of earlier versions keep each written file's column statistics (min and
    max values: an erased email can be one) and its removed files; after VACUUM nothing can
    read those versions anyway. Delta's own log clean-up does the same, but only for entries
    older than ``delta.logRetentionDuration`` (30 days). Returns the number of log files
    removed. Path-based and catalog tables alike (the table's location from ``DESCRIBE DETAIL``).
    """
    spark, tables = ctx.spark, ctx.tables
    location = tables.delta(spark, name).detail().select("location").collect()[0][0]
    jvm = spark._jvm  # noqa: SLF001 - Delta's Python API has no checkpoint call
    assert jvm is not None, "a classic (JVM) Spark session is needed to checkpoint a Delta log"
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, location)  # noqa: SLF001
    snapshot = delta_log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())
    delta_log.checkpoint(snapshot, jvm.scala.Option.empty())
    checkpoint_version = int(snapshot.version())
    folder = Path(_local_path(location)) / "_delta_log"
    removed = 0
    for entry in folder.iterdir():
        match = _LOG_ENTRY.match(entry.name)
        if match and int(match.group(1)) < checkpoint_version and entry.is_file():
            entry.unlink()
            removed += 1
    # Hadoop's local file system keeps a .crc beside every file it writes
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".crc"):
            if not (folder / entry.name[1:-4]).exists():
                entry.unlink()
    return removed


def _nothing_to_vacuum(ctx: JobContext, name: str) -> bool:
    """True when every file in a path-based table's folder (its ``_delta_log`` aside) belongs to
    the current version: VACUUM, whatever its retention, would delete nothing. A VACUUM costs
    some twenty Spark jobs even on a ten-row table; this check costs one (the current version's
    file list). Catalog tables, change-data files (``_change_data``), deletion vector files and
    any file the current version does not name leave the answer False: the table is vacuumed.
    Hidden files (Hadoop's ``.crc`` checksums) are left out, as VACUUM leaves them out.
    """
    tables = ctx.tables
    if tables.uses_catalog:
        return False
    folder = os.path.realpath(tables.location(name))
    current = {os.path.realpath(unquote(_local_path(uri))) for uri in tables.delta(ctx.spark, name).toDF().inputFiles()}
    for root, dirs, files in os.walk(folder):
        if root == folder:
            dirs[:] = [d for d in dirs if d != "_delta_log"]
        for file in files:
            if not file.startswith(".") and os.path.join(root, file) not in current:
                return False
    return True


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        return location[len("file:") :].replace("///", "/", 1) if location.startswith("file:///") else location[5:]
    if "://" in location:
        raise ErasureError(f"cannot clean the Delta log of {location}: only local tables are supported")
    return location


COMMIT_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str | None]) -> Iterator[None]:
    """Spark settings for the block only; afterwards each is what it was (unset if it was unset).

    Delta takes two things the erasure needs only from the session, not per call: the commit
    message of a DELETE / REORG (``userMetadata``; a write takes it as an option,
    :meth:`lakecdp.tables.Tables.overwrite`) and leave to VACUUM below 7 days. A value None
    leaves the setting as it is.
    """
    previous = {key: spark.conf.get(key, None) for key in settings}
    try:
        for key, value in settings.items():
            if value is not None:
                spark.conf.set(key, value)
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def erase_person(ctx: JobContext, *, email: str | None = None, customer_id: str | None = None) -> ErasureResult:
    """Remove the person from every table and file, purge, vacuum, and record salted hashes.

    Args:
        email: any email of the person (all their linked identifiers are erased).
        customer_id: or their customer id.

    Returns:
        The customer ids, identifier values erased (for the caller only; never stored), rows
        deleted per table and the report of files outside Delta (also written, without any
        identifier, to ``<warehouse>/erasure_reports/<run id>.json``).
    """
    if not email and not customer_id:
        raise ValueError("erase_person needs an email or a customer_id")

    settings = load_privacy_config(ctx.project.conf_dir).erasure
    spark, tables = ctx.spark, ctx.tables
    customer_ids, identifiers = resolve_person(ctx, email=email, customer_id=customer_id)
    values = set().union(*identifiers.values())
    salt = erasure_salt(ctx, settings)
    # computed before the records go: the name + birth date + postcode of each record
    records = _person_records(ctx, identifiers.get("record_id", set()))
    key_hashes = {str(r["key_hash"]) for r in records if r["key_hash"]}
    logger.info("erasing %d identifier values of %d customer(s)", len(values), len(customer_ids))

    deleted: dict[str, int] = {}
    pattern = _values_pattern(values)
    # every commit of the erasure says what it was (never who): readers of the change feed
    # and of the history can tell
    with session_settings(spark, {COMMIT_METADATA: f"{ERASURE_COMMIT_MARK} {ctx.run_id}"}):
        names = [n for n in _warehouse_tables(ctx) if n != ERASURES_TABLE]
        for name in names:
            matches = _delete_rows_mentioning(ctx, name, pattern)
            if not matches:
                continue
            # with deletion vectors the old files stay in the current version: rewrite them
            properties = tables.delta(spark, name).detail().select("properties").collect()[0][0] or {}
            if properties.get("delta.enableDeletionVectors", "false").lower() == "true":
                spark.sql(f"REORG TABLE {tables.identifier(name)} APPLY (PURGE)")
            deleted[name] = matches
            logger.info("%s: %d rows erased", name, matches)

        retention = settings.vacuum_retention_hours
        # Delta refuses a VACUUM below 7 days unless the check is off
        with session_settings(spark, {RETENTION_CHECK: "false" if retention < 168 else None}):
            # every table, not only those with rows deleted now: files an earlier overwrite
            # left behind (identity.edges, segments) can still hold the person
            for name in names:
                if not _nothing_to_vacuum(ctx, name):
                    tables.delta(spark, name).vacuum(retention)
        if retention == 0 and not tables.uses_catalog:
            for name in names:
                _forget_log_history(ctx, name)

    files = erase_from_files(ctx, identifiers, records)

    hashes = [
        (salted_hash(salt, identifier_type, value), identifier_type, ctx.as_of, ctx.run_id)
        for identifier_type, type_values in sorted(identifiers.items())
        for value in sorted(type_values)
    ] + [(key_hash, PERSON_KEY, ctx.as_of, ctx.run_id) for key_hash in sorted(key_hashes)]
    erasures = spark.createDataFrame(hashes, ERASURES_SCHEMA)
    tables.merge(spark, erasures, ERASURES_TABLE, keys=["salted_hash"])
    result = ErasureResult(
        customer_ids=tuple(customer_ids),
        identifiers={k: tuple(sorted(v)) for k, v in identifiers.items()},
        rows_deleted=deleted,
        files=files,
    )
    write_report(ctx, result)
    return result


# -- re-identification key ----------------------------------------------------------------


def person_key(first_name: Column, last_name: Column, date_of_birth: Column, postcode: Column) -> Column:
    """Name, birth date and postcode as one normalised string; null when a part is missing.

    ``ada|lovelace|1815-12-10|SW1A1AA``: names cleaned as silver cleans them and lower-cased,
    the date as ISO, the postcode upper-cased without spaces. A later record carrying only these
    (no email, phone or id) still names the erased person: the salted hash of the key is kept in
    ``ops.erasures`` (type :data:`PERSON_KEY`) and ingest refuses such rows.
    """
    from pyspark.sql import functions as F

    from lakecdp.ingest.standardise import clean_name, normalise_postcode

    parts = [
        F.lower(clean_name(first_name)),
        F.lower(clean_name(last_name)),
        F.date_format(date_of_birth.cast("date"), "yyyy-MM-dd"),
        F.regexp_replace(normalise_postcode(postcode), r"\s", ""),
    ]
    present = parts[0].isNotNull()
    for part in parts[1:]:
        present = present & part.isNotNull() & (part != "")
    return F.when(present, F.concat_ws("|", *parts))


def _person_records(ctx: JobContext, record_ids: set[str]) -> list[dict[str, object]]:
    """The person's records: salted hash of their :func:`person_key` and name + birth date."""
    from pyspark.sql import functions as F

    if not record_ids:
        return []
    records = ctx.tables.read(ctx.spark, catalog.CUSTOMER_RECORDS.name).where(
        F.col("record_id").isin(sorted(record_ids))
    )
    key = person_key(F.col("first_name"), F.col("last_name"), F.col("date_of_birth"), F.col("postcode"))
    rows = records.select(
        F.when(key.isNotNull(), salted_hash_column(ctx, PERSON_KEY, key)).alias("key_hash"),
        "first_name",
        "last_name",
        "date_of_birth",
    ).collect()
    return [row.asDict() for row in rows]


# -- files outside Delta ---------------------------------------------------------------------

_LINE_SUFFIXES = {".csv", ".tsv", ".txt", ".log"}
_JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
_DOCUMENT_SUFFIXES = {".html", ".htm", ".xml", ".md", ".eml"}
_SEPARATORS = r"[\s\-.()/]*"


def _phone_pattern(e164: str) -> str | None:
    """A phone number written any usual way: +44 7700 900123, 0044..., 07700-900123, (0)7700..."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    digits = _SEPARATORS.join(str(parsed.national_number))
    country = _SEPARATORS.join(str(parsed.country_code))
    return (
        rf"(?<![0-9])(?:(?:\+|00)?{_SEPARATORS}{country}{_SEPARATORS}(?:\(?0\)?{_SEPARATORS})?|0{_SEPARATORS})"
        rf"{digits}(?![0-9])"
    )


class PersonMatcher:
    """Does a text mention the person? Any identifier value as a whole token (any case), a
    phone number in any usual spelling, the SHA-256 of their email or phone (hashed audiences),
    or a record's last name together with its birth date."""

    def __init__(self, identifiers: dict[str, set[str]], records: Sequence[Mapping[str, Any]] = ()) -> None:
        from lakecdp.activation.hashing import sha256_hex

        tokens = {v for values in identifiers.values() for v in values if v}
        spellings = [v.strip().lower() for v in identifiers.get("email", ())]
        spellings += [form for phone in identifiers.get("phone", ()) for form in (phone, phone.lstrip("+"))]
        hashed = {h for h in map(sha256_hex, spellings) if h}
        alternatives = [re.escape(v) for v in sorted(tokens | hashed, key=len, reverse=True)]
        alternatives += [p for p in (_phone_pattern(v) for v in sorted(identifiers.get("phone", ()))) if p]
        self._pattern = (
            re.compile(
                r"(?<![A-Za-z0-9_.@+\-])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9_@\-])(?!\.[A-Za-z0-9])",
                re.IGNORECASE,
            )
            if alternatives
            else None
        )
        self._described: list[tuple[str, list[str]]] = []
        for record in records:
            last, born = record.get("last_name"), record.get("date_of_birth")
            if last and born is not None:
                spellings = [born.strftime(f) for f in ("%Y-%m-%d", "%d/%m/%Y", "%Y%m%d", "%m/%d/%Y", "%d.%m.%Y")]
                self._described.append((str(last).lower(), spellings))

    def __call__(self, text: str) -> bool:
        if self._pattern is not None and self._pattern.search(text):
            return True
        if self._described:
            lowered = text.lower()
            return any(last in lowered and any(s in text for s in born) for last, born in self._described)
        return False


def _prune_json(value: object, mentions: PersonMatcher) -> tuple[object, bool]:
    """``value`` without the list items (records) that mention the person; the flag says whether
    what is left still mentions them outside any list item (then the caller drops it whole)."""
    if isinstance(value, list):
        kept = []
        for item in value:
            pruned, still = _prune_json(item, mentions)
            if not still:
                kept.append(pruned)
        return kept, False
    if isinstance(value, dict):
        result, still = {}, False
        for key, item in value.items():
            pruned, item_still = _prune_json(item, mentions)
            result[key] = pruned
            still = still or item_still or mentions(str(key))
        return result, still
    if isinstance(value, str):
        return value, mentions(value)
    return value, mentions(json.dumps(value))


def _rewrite_lines(path: Path, mentions: PersonMatcher, *, keep_header: bool, as_json: bool) -> bool:
    """Rewrite a line-based text file without the lines (or JSON list items) that mention the
    person; returns whether it changed."""
    data = path.read_bytes()
    text = data.decode("utf-8", "surrogateescape")
    if not mentions(text) and not mentions(json.dumps(text)):
        return False
    lines = text.splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines):
        if keep_header and number == 0 and not mentions(line):
            kept.append(line)
            continue
        if not (mentions(line) or mentions(json.dumps(line))):
            kept.append(line)
            continue
        if as_json:
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            pruned, still = _prune_json(parsed, mentions)
            if not still:
                ending = line[len(line.rstrip("\r\n")) :]
                kept.append(json.dumps(pruned, ensure_ascii=False) + ending)
    new = "".join(kept).encode("utf-8", "surrogateescape")
    if new == data:
        return False
    _replace(path, new)
    return True


def _rewrite_parquet(path: Path, mentions: PersonMatcher) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    keep = [not mentions(json.dumps(row, default=str, ensure_ascii=False)) for row in table.to_pylist()]
    if all(keep):
        return False
    kept = table.filter(pa.array(keep, type=pa.bool_()))
    temporary = path.with_name(f".{path.name}.erasing")
    pq.write_table(kept, temporary)
    os.replace(temporary, path)
    return True


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.erasing")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _non_delta_files(root: Path, *, skip: set[Path]) -> list[Path]:
    """Every file under ``root`` outside Delta table folders and ``skip``."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if "_delta_log" in dirs or here in skip:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if here / d not in skip]
        found.extend(here / f for f in files if here / f not in skip)
    return sorted(found)


def erase_from_files(
    ctx: JobContext, identifiers: dict[str, set[str]], records: Sequence[Mapping[str, Any]] = ()
) -> FilesReport:
    """Remove the person from the files the project writes or reads outside Delta tables.

    - **landing** (the sources' deliveries, CSV / JSON lines / Parquet): rewritten without the
      person's rows; the ingest ledger's content hash follows, so the file is not loaded again.
    - **exports** and other CSV / JSON lines / Parquet files under the warehouse (the demo
      receiver's request log, labels): rewritten without the person's rows (JSON: without the
      list items that name them, e.g. one item of a webhook batch).
    - **previews** and other rendered documents (HTML, ...) that mention the person, and any
      file whose name holds an identifier: deleted.
    - **streaming checkpoints** and files of unknown format: never edited (a query's state
      must stay consistent); listed as retained with the reason.
    """
    report = FilesReport()
    mentions = PersonMatcher(identifiers, list(records))
    warehouse, landing, checkpoints = ctx.project.warehouse, ctx.project.landing, ctx.project.checkpoints
    skip = {warehouse / REPORTS_FOLDER, warehouse / "ops" / "_erasure_salt", landing, checkpoints}
    roots = [(warehouse, warehouse, "")]
    if not _inside(landing, warehouse):
        roots.append((landing, landing, "landing/"))
    if not _inside(checkpoints, warehouse) and not _inside(checkpoints, landing):
        roots.append((checkpoints, checkpoints, "checkpoints/"))
    landed: dict[str, tuple[str, str, int]] = {}  # landing-relative path -> old hash, new hash, size
    for root, base, prefix in roots:
        own_skip = {s for s in skip if s != root}
        for path in _non_delta_files(root, skip=own_skip):
            shown = prefix + path.relative_to(base).as_posix()
            # previews are named <customer id>.html: the name without its suffixes counts too
            if mentions(path.name) or mentions(path.name.split(".")[0]):
                path.unlink()
                report.deleted_unnamed += 1
                continue
            in_landing = _inside(path, landing)
            if _inside(path, checkpoints):
                if mentions(path.read_bytes().decode("latin-1")):
                    report.retained[shown] = (
                        "streaming checkpoint: a query's offsets and state are "
                        "never edited; delete the checkpoint folder to drop it"
                    )
                continue
            old_hash = _sha256_file(path) if in_landing else None
            suffix = path.suffix.lower()
            try:
                if suffix == ".parquet":
                    changed = _rewrite_parquet(path, mentions)
                elif suffix in _LINE_SUFFIXES or suffix in _JSON_SUFFIXES:
                    changed = _rewrite_lines(
                        path, mentions, keep_header=suffix in {".csv", ".tsv"}, as_json=suffix in _JSON_SUFFIXES
                    )
                elif mentions(path.read_bytes().decode("utf-8", "replace")):
                    if suffix in _DOCUMENT_SUFFIXES:
                        path.unlink()
                        report.deleted.append(shown)
                    else:
                        report.retained[shown] = (
                            f"format {suffix or '(none)'} is not one the erasure can "
                            "rewrite; remove the person from it by hand"
                        )
                    continue
                else:
                    changed = False
            except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the erasure
                if mentions(path.read_bytes().decode("latin-1")):
                    report.retained[shown] = f"could not be rewritten ({type(exc).__name__}); remove by hand"
                continue
            if not changed:
                continue
            if "previews" in path.relative_to(base).parts:
                path.unlink()  # a rendering for the person: nothing of it is someone else's
                report.deleted.append(shown)
                continue
            report.rewritten.append(shown)
            if in_landing:
                landed[path.relative_to(landing).as_posix()] = (old_hash or "", _sha256_file(path), path.stat().st_size)
    from lakecdp.ingest.writes import rehash_ledger_files

    rehash_ledger_files(ctx, landed)
    return report


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def write_report(ctx: JobContext, result: ErasureResult) -> Path:
    """``<warehouse>/erasure_reports/<run id>.json``: what was erased where, and which files were
    kept and why. Counts and paths only: no identifier of the person."""
    folder = ctx.project.warehouse / REPORTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "run_id": ctx.run_id,
        "requested_at": ctx.as_of.isoformat(),
        "customers": len(result.customer_ids),
        "identifier_values": {k: len(v) for k, v in sorted(result.identifiers.items())},
        "rows_deleted": dict(sorted(result.rows_deleted.items())),
        "files": result.files.as_dict(),
    }
    path = folder / f"{ctx.run_id}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def erased_hashes(ctx: JobContext) -> DataFrame | None:
    """``ops.erasures`` (salted_hash, identifier_type), or None before any erasure."""
    if not ctx.tables.exists(ctx.spark, ERASURES_TABLE):
        return None
    return ctx.tables.read(ctx.spark, ERASURES_TABLE).select("salted_hash", "identifier_type")


def salted_hash_column(ctx: JobContext, identifier_type: str, column):
    """Column expression: the salted hash of ``column`` as :func:`salted_hash` computes it."""
    from pyspark.sql import functions as F

    salt = erasure_salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
    prefix = salt + b"\x00" + identifier_type.encode() + b"\x00"
    # sha2 over bytes: the salt may be any text, so concatenate as binary
    return F.sha2(F.concat(F.lit(bytearray(prefix)), F.encode(F.lower(F.trim(column)), "UTF-8")), 256)


def _cli(args: argparse.Namespace) -> int:
    from lakecdp.context import start_job

    result = erase_person(
        start_job(args.conf, args.env, app_name="lakecdp-erase"), email=args.email, customer_id=args.customer_id
    )
    for name, rows in sorted(result.rows_deleted.items()):
        logger.info("%-40s %6d rows erased", name, rows)
    logger.info("erased customer(s) %s; salted hashes kept in %s", ", ".join(result.customer_ids), ERASURES_TABLE)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("erase", help="right to erasure: remove a person from every table")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--email")
    who.add_argument("--customer-id")
    parser.set_defaults(handler=_cli)
