"""Schemas of the tables ingest writes (docs/tables.md is the contract; keep them in step)."""

from __future__ import annotations

from pyspark.sql import types as T


_SCALARS: dict[str, T.DataType] = {
    "string": T.StringType(), "int": T.IntegerType(), "bigint": T.LongType(),
    "double": T.DoubleType(), "boolean": T.BooleanType(), "date": T.DateType(),
    "timestamp": T.TimestampType(),
}


def _type(name: str) -> T.DataType:
    if name.startswith("array<") and name.endswith(">"):
        return T.ArrayType(_type(name[len("array<"):-1]))
    return _SCALARS[name]


def _ddl(ddl: str) -> T.StructType:
    """``"a string, b array<string>"`` -> StructType, without a SparkSession (import time)."""
    fields = []
    for part in ddl.split(","):
        name, type_name = part.split()
        fields.append(T.StructField(name, _type(type_name), True))
    return T.StructType(fields)


SILVER_SCHEMAS: dict[str, T.StructType] = {
    "customer_records": _ddl(
        "record_id string, source string, source_record_id string, first_name string, "
        "last_name string, email string, phone string, date_of_birth date, address_line1 string, "
        "postcode string, city string, country string, device_ids array<string>, crm_id string, "
        "customer_number string, email_consent boolean, updated_at timestamp, "
        "warnings array<string>, run_id string, ingested_at timestamp, "
        # additive (identity evidence): appended last so older tables evolve by adding columns
        "middle_name string, date_of_birth_text string, address_line2 string, region string, "
        # additive: SMS marketing consent, its own consent (lakecdp.activation.sms)
        "sms_consent boolean"
    ),
    "events": _ddl(
        "event_id string, source string, event_type string, occurred_at timestamp, email string, "
        "device_id string, customer_number string, session_id string, product_id string, "
        "category string, value double, order_id string, campaign_id string, channel string, "
        "bounce_type string, url string, run_id string, ingested_at timestamp"
    ),
    "orders": _ddl(
        "order_id string, source string, customer_number string, email string, "
        "ordered_at timestamp, status string, currency string, total double, run_id string, "
        "ingested_at timestamp"
    ),
    "order_items": _ddl(
        "order_id string, line_number int, product_id string, category string, quantity int, "
        "unit_price double"
    ),
    "products": _ddl("product_id string, name string, category string, price double"),
}

#: primary keys the silver MERGEs use
SILVER_KEYS: dict[str, list[str]] = {
    "customer_records": ["record_id"],
    "events": ["event_id"],
    "orders": ["order_id"],
    "order_items": ["order_id", "line_number"],
    "products": ["product_id"],
}

QUARANTINE_SCHEMA = _ddl(
    "raw string, source_file string, line bigint, kafka_topic string, kafka_partition int, "
    "kafka_offset bigint, reasons array<string>, detail string, run_id string, "
    "quarantined_at timestamp"
)

INGEST_AUDIT_SCHEMA = _ddl(
    "run_id string, source string, source_file string, rows_read bigint, rows_loaded bigint, "
    "rows_quarantined bigint, duplicates_removed bigint, at timestamp, rows_erased bigint, "
    # Kafka micro-batches only: "<query name>:<batch id>" (null for a landing file)
    "stream_batch string"
)

DATA_QUALITY_SCHEMA = _ddl(
    "run_id string, source string, source_file string, reason string, rows bigint, at timestamp"
)

INGEST_FILES_SCHEMA = _ddl(
    "source string, path string, size bigint, content_hash string, run_id string, loaded_at timestamp, "
    # loaded | quarantined (refused as a whole: SYMLINK, UNREADABLE_FILE), reason (or NO_ROWS)
    "status string, reason string"
)
