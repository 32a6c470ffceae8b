"""``activation.suppressions`` on the embedded engine: the rules of :mod:`lakecdp.activation.suppression`
as one DuckDB query over the inputs read with delta-rs (no JVM).

Same rows as the Spark build (tests/test_activation_job.py runs both engines against hand-written
expectations): emails trimmed (spaces only, as Spark's ``trim``) and lower-cased, erasure requests
matched on the salted hash :func:`lakecdp.erasure.salted_hash_column` computes (SHA-256 of salt,
type and the normalised value, byte for byte), a trigger nobody owns kept with a null customer.
The job writes the result (:func:`lakecdp.activation.job.refresh_suppressions`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from lakecdp import catalog
from lakecdp.activation.suppression import EVENT_REASONS

if TYPE_CHECKING:
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore

#: identifier types an erasure request can name (lakecdp.activation.job.IDENTIFIER_TYPES)
ERASABLE_TYPES = ("email", "phone", "device_id", "crm_id", "customer_number")

_COLUMNS = {
    catalog.EVENTS.name: ["event_type", "occurred_at", "email", "bounce_type"],
    catalog.CUSTOMER_RECORDS.name: ["record_id", "email", "phone", "email_consent", "updated_at"],
    catalog.ID_MAP.name: ["record_id", "customer_id"],
    catalog.IDENTIFIERS.name: ["customer_id", "identifier_type", "identifier_value"],
    catalog.CUSTOMER_PROFILE.name: ["customer_id", "email", "phone", "emails", "phones", "email_consent", "updated_at"],
    catalog.ERASURES.name: ["salted_hash", "identifier_type", "requested_at"],
}
_VIEWS = {
    catalog.EVENTS.name: "events",
    catalog.CUSTOMER_RECORDS.name: "records",
    catalog.ID_MAP.name: "id_map",
    catalog.IDENTIFIERS.name: "identifiers",
    catalog.CUSTOMER_PROFILE.name: "profile",
    catalog.ERASURES.name: "erasures",
}


def _email(expression: str) -> str:
    """:func:`lakecdp.activation.suppression.normalised_email` in DuckDB."""
    return f"nullif(lower(trim({expression})), '')"


def identifiers_sql(present: set[str]) -> str:
    """Every (customer_id, identifier_type, identifier_value) known (``customer_identifiers``)."""
    parts = []
    if "identifiers" in present:
        parts.append("SELECT customer_id, identifier_type, identifier_value FROM identifiers")
    if {"records", "id_map"} <= present:
        linked = "records r JOIN id_map m ON r.record_id = m.record_id"
        parts.append(f"SELECT m.customer_id, 'email', r.email FROM {linked}")
        parts.append(f"SELECT m.customer_id, 'phone', r.phone FROM {linked}")
    if "profile" in present:
        parts.append("SELECT customer_id, 'email', email FROM profile")
        parts.append("SELECT customer_id, 'phone', phone FROM profile")
        parts.append("SELECT customer_id, 'email', unnest(coalesce(emails, []::VARCHAR[])) FROM profile")
        parts.append("SELECT customer_id, 'phone', unnest(coalesce(phones, []::VARCHAR[])) FROM profile")
    if not parts:
        return "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS identifier_type, NULL::VARCHAR AS identifier_value WHERE false"
    union = " UNION ALL ".join(parts)
    value = f"CASE WHEN identifier_type = 'email' THEN {_email('identifier_value')} ELSE identifier_value END"
    return (
        f"SELECT customer_id, identifier_type, {value} AS identifier_value "
        f"FROM ({union}) AS u(customer_id, identifier_type, identifier_value) "
        f"WHERE customer_id IS NOT NULL AND ({value}) IS NOT NULL AND ({value}) <> ''"
    )


def identifier_triggers_sql(present: set[str]) -> str:
    """Unsubscribes, hard bounces, complaints up to as_of (``$as_of``) and erasures (``$salt``)."""
    parts = []
    if "events" in present:
        reason = " ".join(f"WHEN '{event}' THEN '{why}'" for event, why in EVENT_REASONS.items())
        kinds = ", ".join(f"'{event}'" for event in EVENT_REASONS)
        parts.append(
            "SELECT identifier_type, identifier_value, reason, min(since) AS since FROM ("
            f"  SELECT 'email' AS identifier_type, {_email('email')} AS identifier_value,"
            f"         CASE event_type {reason} END AS reason, occurred_at AS since FROM events"
            f"  WHERE event_type IN ({kinds})"
            "    AND (event_type <> 'email_bounce' OR lower(bounce_type) = 'hard')"
            "    AND occurred_at <= $as_of"
            ") WHERE identifier_value IS NOT NULL GROUP BY identifier_type, identifier_value, reason"
        )
    if "erasures" in present:
        types = ", ".join(f"'{kind}'" for kind in ERASABLE_TYPES)
        hashed = (
            "sha256($salt || '\\x00'::BLOB || encode(identifier_type) || '\\x00'::BLOB"
            " || encode(lower(trim(identifier_value))))"
        )
        parts.append(
            "SELECT h.identifier_type, h.identifier_value, 'erased' AS reason, min(e.requested_at) AS since FROM ("
            f"  SELECT DISTINCT identifier_type, identifier_value, {hashed} AS salted_hash FROM ids"
            f"  WHERE identifier_type IN ({types})"
            ") h JOIN erasures e ON h.salted_hash = e.salted_hash AND h.identifier_type = e.identifier_type"
            " GROUP BY h.identifier_type, h.identifier_value"
        )
    if not parts:
        return (
            "SELECT NULL::VARCHAR AS identifier_type, NULL::VARCHAR AS identifier_value, NULL::VARCHAR AS reason,"
            " NULL::TIMESTAMPTZ AS since WHERE false"
        )
    return " UNION ALL ".join(parts)


def customer_triggers_sql(present: set[str]) -> str:
    """``email_consent = false`` in the profile, or without one in any linked record."""
    if "profile" in present:
        return "SELECT customer_id, 'no_consent' AS reason, updated_at AS since FROM profile WHERE email_consent = false"
    if {"records", "id_map"} <= present:
        return (
            "SELECT m.customer_id, 'no_consent' AS reason, min(r.updated_at) AS since"
            " FROM records r JOIN id_map m ON r.record_id = m.record_id"
            " WHERE r.email_consent = false GROUP BY m.customer_id"
        )
    return "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS reason, NULL::TIMESTAMPTZ AS since WHERE false"


def suppressions_sql(present: set[str]) -> str:
    """Triggers resolved to customers and expanded to all their identifiers (``build_suppressions``)."""
    return f"""
WITH ids AS ({identifiers_sql(present)}),
id_triggers AS ({identifier_triggers_sql(present)}),
customer_triggers AS ({customer_triggers_sql(present)}),
resolved AS (
    SELECT t.identifier_type, t.identifier_value, t.reason, t.since, i.customer_id
    FROM id_triggers t
    LEFT JOIN ids i ON t.identifier_type = i.identifier_type AND t.identifier_value = i.identifier_value
),
per_customer AS (
    SELECT customer_id, reason, since FROM resolved WHERE customer_id IS NOT NULL
    UNION ALL
    SELECT customer_id, reason, since FROM customer_triggers
),
every AS (
    SELECT p.customer_id, p.reason, i.identifier_type, i.identifier_value, p.since
    FROM per_customer p LEFT JOIN ids i ON p.customer_id = i.customer_id
    UNION ALL
    SELECT NULL, reason, identifier_type, identifier_value, since FROM resolved WHERE customer_id IS NULL
)
SELECT customer_id, reason, identifier_type, identifier_value, min(since) AS since, $run_id AS run_id
FROM every
GROUP BY customer_id, reason, identifier_type, identifier_value
"""


def build_suppressions(
    ctx: JobContext, store: DeltaStore, versions: dict[str, int | None], *, as_of: datetime
) -> pa.Table:
    """``activation.suppressions`` rows from the inputs at ``versions`` (None: the table does not
    exist), as of ``as_of``."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        present: set[str] = set()
        for name, version in versions.items():
            if version is None:
                continue
            data = store.read(name, columns=_COLUMNS[name], version=version)
            con.register(_VIEWS[name], data)
            present.add(_VIEWS[name])
        params: dict[str, object] = {"as_of": as_of, "run_id": ctx.run_id}
        if "erasures" in present:
            from lakecdp.erasure import _salt, load_privacy_config

            params["salt"] = _salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
        sql = suppressions_sql(present)
        # DuckDB refuses parameters the query does not use (no events: no $as_of)
        used = {key: value for key, value in params.items() if f"${key}" in sql}
        return con.sql(sql, params=used).to_arrow_table()
    finally:
        con.close()
