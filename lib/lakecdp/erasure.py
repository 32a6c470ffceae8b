"""Right to erasure: remove one person from every table and keep only a salted hash.

Given an email or a customer_id, the job
1. resolves the person through the identity graph: every record of their customer_id and every
   email, phone, device id, CRM id and customer number those records carry;
2. deletes, from every Delta table in the warehouse (bronze, quarantine, silver, identity,
   gold, segments, activation, ops), each row that holds any of those values in any column,
   nested field or raw text (the row is serialised to JSON and matched on whole values), then
   purges deletion vectors so the current version's files no longer hold the data;
3. vacuums with the configured retention, so older files go too;
4. appends salted SHA-256 hashes of the identifiers to ``ops.erasures`` — never the values —
   so ingest and activation can refuse the person later (:func:`erased_hashes`).

Example:
    >>> erase_person(ctx, email="ada@example.com")
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp.config import StrictModel, load_model
from lakecdp.context import JobContext
from lakecdp.tables import LAYERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

ERASURES_TABLE = "ops.erasures"
ERASURES_SCHEMA = "salted_hash string, identifier_type string, requested_at timestamp, run_id string"
# identifier columns of silver.customer_records gathered for the person
_RECORD_IDENTIFIERS = ("email", "phone", "crm_id", "customer_number", "source_record_id")


class ErasureSettings(StrictModel):
    salt_env: str = "LAKECDP_ERASURE_SALT"
    vacuum_retention_hours: int = 0


class PrivacyConfig(StrictModel):
    version: int
    erasure: ErasureSettings = ErasureSettings()


class PersonNotFoundError(LookupError):
    """No record in the warehouse carries the given identifier."""


@dataclass(frozen=True)
class ErasureResult:
    customer_ids: tuple[str, ...]
    identifiers: dict[str, tuple[str, ...]]
    rows_deleted: dict[str, int]


def load_privacy_config(conf_dir: str | os.PathLike[str]) -> PrivacyConfig:
    return load_model(Path(conf_dir) / "privacy.yaml", PrivacyConfig)


def _salt(ctx: JobContext, settings: ErasureSettings) -> bytes:
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
                f"{layer}.{child.name}" for child in sorted(folder.iterdir())
                if (child / "_delta_log").is_dir()
            )
    return names


def resolve_person(ctx: JobContext, *, email: str | None, customer_id: str | None) -> tuple[list[str], dict[str, set[str]]]:
    """Customer ids and every identifier value linked to the person."""
    from pyspark.sql import functions as F

    spark, tables = ctx.spark, ctx.tables
    records = tables.read(spark, "silver.customer_records")
    customer_ids: set[str] = set()
    if customer_id:
        customer_ids.add(customer_id)
    if email:
        wanted = email.strip().lower()
        if tables.exists(spark, "identity.identifiers"):
            rows = (tables.read(spark, "identity.identifiers")
                    .where((F.col("identifier_type") == "email") & (F.col("identifier_value") == wanted))
                    .select("customer_id").collect())
            customer_ids.update(r[0] for r in rows)
        if tables.exists(spark, "identity.id_map"):
            rows = (records.where(F.col("email") == wanted).select("record_id")
                    .join(tables.read(spark, "identity.id_map"), "record_id")
                    .select("customer_id").distinct().collect())
            customer_ids.update(r[0] for r in rows)
    record_ids: set[str] = set()
    if customer_ids and tables.exists(spark, "identity.id_map"):
        rows = (tables.read(spark, "identity.id_map")
                .where(F.col("customer_id").isin(sorted(customer_ids))).select("record_id").collect())
        record_ids.update(r[0] for r in rows)
    person_records = records.where(
        F.col("record_id").isin(sorted(record_ids)) | (F.col("email") == (email or "").strip().lower())
    )
    identifiers: dict[str, set[str]] = {"customer_id": set(customer_ids), "record_id": set(record_ids),
                                        "device_id": set()}
    for row in person_records.select(*_RECORD_IDENTIFIERS, "record_id", "device_ids").collect():
        identifiers["record_id"].add(row["record_id"])
        for column in _RECORD_IDENTIFIERS:
            if row[column]:
                identifiers.setdefault(column, set()).add(row[column])
        identifiers["device_id"].update(row["device_ids"] or [])
    if email:
        identifiers.setdefault("email", set()).add(email.strip().lower())
    if not identifiers["record_id"] and not customer_ids:
        raise PersonNotFoundError(f"no record carries {'email ' + email if email else 'customer_id ' + str(customer_id)}")
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


def erase_person(ctx: JobContext, *, email: str | None = None, customer_id: str | None = None) -> ErasureResult:
    """Remove the person from every table, purge, vacuum, and record salted hashes.

    Args:
        email: any email of the person (all their linked identifiers are erased).
        customer_id: or their customer id.

    Returns:
        The customer ids, identifier values erased (for the caller only; never stored) and
        rows deleted per table.
    """
    if not email and not customer_id:
        raise ValueError("erase_person needs an email or a customer_id")
    from pyspark.sql import functions as F

    settings = load_privacy_config(ctx.project.conf_dir).erasure
    spark, tables = ctx.spark, ctx.tables
    customer_ids, identifiers = resolve_person(ctx, email=email, customer_id=customer_id)
    values = set().union(*identifiers.values())
    salt = _salt(ctx, settings)
    logger.info("erasing %d identifier values of customer(s) %s", len(values), ", ".join(customer_ids))

    deleted: dict[str, int] = {}
    pattern = _values_pattern(values)
    for name in _warehouse_tables(ctx):
        if name == ERASURES_TABLE:
            continue
        delta = tables.delta(spark, name)
        df = delta.toDF()
        serialised = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
        condition = serialised.rlike(pattern)
        before = delta.history(1).select("version").first()[0]
        # one pass: DELETE scans the table once and reports how many rows it removed
        # (a DELETE that matches nothing commits no new version)
        delta.delete(condition)
        last = delta.history(1).select("version", "operation", "operationMetrics").first()
        if last["version"] == before or last["operation"] != "DELETE":
            continue
        matches = int((last["operationMetrics"] or {}).get("numDeletedRows", "0"))
        if not matches:
            continue
        # with deletion vectors the old files stay in the current version: rewrite them
        properties = delta.detail().select("properties").first()[0] or {}
        if properties.get("delta.enableDeletionVectors", "false").lower() == "true":
            spark.sql(f"REORG TABLE {tables.identifier(name)} APPLY (PURGE)")
        deleted[name] = matches
        logger.info("%s: %d rows erased", name, matches)

    retention = settings.vacuum_retention_hours
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check, "true")
    spark.conf.set(check, "false" if retention < 168 else previous)
    try:
        for name in deleted:
            tables.delta(spark, name).vacuum(retention)
    finally:
        spark.conf.set(check, previous)

    hashes = [
        (salted_hash(salt, identifier_type, value), identifier_type, ctx.as_of, ctx.run_id)
        for identifier_type, type_values in sorted(identifiers.items())
        for value in sorted(type_values)
    ]
    erasures = spark.createDataFrame(hashes, ERASURES_SCHEMA)
    tables.merge(spark, erasures, ERASURES_TABLE, keys=["salted_hash"])
    return ErasureResult(
        customer_ids=tuple(customer_ids),
        identifiers={k: tuple(sorted(v)) for k, v in identifiers.items()},
        rows_deleted=deleted,
    )


def erased_hashes(ctx: JobContext) -> DataFrame | None:
    """``ops.erasures`` (salted_hash, identifier_type), or None before any erasure."""
    if not ctx.tables.exists(ctx.spark, ERASURES_TABLE):
        return None
    return ctx.tables.read(ctx.spark, ERASURES_TABLE).select("salted_hash", "identifier_type")


def salted_hash_column(ctx: JobContext, identifier_type: str, column):
    """Column expression: the salted hash of ``column`` as :func:`salted_hash` computes it."""
    from pyspark.sql import functions as F

    salt = _salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
    prefix = salt + b"\x00" + identifier_type.encode() + b"\x00"
    # sha2 over bytes: the salt may be any text, so concatenate as binary
    return F.sha2(F.concat(F.lit(bytearray(prefix)), F.encode(F.lower(F.trim(column)), "UTF-8")), 256)


def _cli(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name="lakecdp-erase")
    result = erase_person(JobContext.create(project, spark), email=args.email, customer_id=args.customer_id)
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
