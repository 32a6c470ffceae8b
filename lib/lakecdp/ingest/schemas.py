"""Schemas of the tables ingest writes, as ingest's code names them (declared once, in
:mod:`lakecdp.catalog`; docs/tables.md describes them)."""

from __future__ import annotations

from pyspark.sql import types as T

from lakecdp import catalog

SILVER_SCHEMAS: dict[str, T.StructType] = {name: t.struct() for name, t in catalog.SILVER.items()}

#: primary keys the silver MERGEs use
SILVER_KEYS: dict[str, list[str]] = {name: list(t.keys) for name, t in catalog.SILVER.items()}

QUARANTINE_SCHEMA = catalog.QUARANTINE.struct()
INGEST_AUDIT_SCHEMA = catalog.INGEST_AUDIT.struct()
DATA_QUALITY_SCHEMA = catalog.DATA_QUALITY.struct()
INGEST_FILES_SCHEMA = catalog.INGEST_FILES.struct()
