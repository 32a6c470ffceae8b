"""``activation.suppressions`` on the embedded engine: the rules of :mod:`lakecdp.activation.suppression`
as one DuckDB query over the inputs read with delta-rs (no JVM).

Same rows as the Spark build (tests/test_activation_job.py runs both engines against hand-written
expectations): emails trimmed (spaces only, as Spark's ``trim``) and lower-cased, erasure requests
matched on the salted hash :func:`lakecdp.erasure.salted_hash_column` computes (SHA-256 of salt,
type and the normalised value, byte for byte), a trigger nobody owns kept with a null customer.
The job writes the result (:func:`lakecdp.activation.job.refresh_suppressions`).
"""

from __future__ import annotations

from datetime import datetime, timezone
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
        return (
            "SELECT customer_id, 'no_consent' AS reason, updated_at AS since FROM profile WHERE email_consent = false"
        )
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
            from lakecdp.erasure import erasure_salt, load_privacy_config

            params["salt"] = erasure_salt(ctx, load_privacy_config(ctx.project.conf_dir).erasure)
        sql = suppressions_sql(present)
        # DuckDB refuses parameters the query does not use (no events: no $as_of)
        used = {key: value for key, value in params.items() if f"${key}" in sql}
        return con.sql(sql, params=used).to_arrow_table()
    finally:
        con.close()


# -- pending changes ------------------------------------------------------------------------
def pending_sql(*, approvals: bool, profile: bool, failures: bool, profile_fields: list[str]) -> str:
    """Changes per destination not yet handled, with profile columns and ``suppression_reason``:
    :func:`lakecdp.activation.job.without_held_back`, ``with_profile``,
    :func:`lakecdp.activation.suppression.mark_suppressed` and ``pending_for_destinations`` in
    one DuckDB query, ordered as the Spark job orders them (destination, changed_at, change_id)."""
    held = (
        "AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.status = 'held'"
        " AND a.run_id = c.run_id AND a.segment_id = c.segment_id)"
        if approvals
        else ""
    )
    if profile:
        fields = ", ".join(f"p.{f}" for f in profile_fields)
        with_profile = f"SELECT i.*, {fields}, p.emails, p.phones FROM items i LEFT JOIN profile p ON i.customer_id = p.customer_id"
    else:
        fields = ", ".join(f"NULL::{'DATE' if f == 'date_of_birth' else 'VARCHAR'} AS {f}" for f in profile_fields)
        with_profile = f"SELECT i.*, {fields}, NULL::VARCHAR[] AS emails, NULL::VARCHAR[] AS phones FROM items i"
    failed = (
        "SELECT idempotency_key, count(DISTINCT run_id)::INTEGER AS failed_runs FROM failures"
        " GROUP BY idempotency_key, destination"
        if failures
        else "SELECT NULL::VARCHAR AS idempotency_key, NULL::INTEGER AS failed_runs WHERE false"
    )
    return f"""
WITH items AS (
    SELECT c.change_id, c.run_id AS segment_run_id, c.segment_id, c.customer_id, c.member_key, c.change_type,
           c.previous_customer_id, c.changed_at
    FROM changes c WHERE true {held}
),
profiled AS ({with_profile}),
keys AS (
    SELECT change_id, kind, CASE WHEN kind = 'email' THEN {_email("value")} ELSE value END AS value
    FROM (
        SELECT change_id, 'customer' AS kind, customer_id AS value FROM profiled
        UNION ALL SELECT change_id, 'customer', previous_customer_id FROM profiled
        UNION ALL SELECT change_id, 'email', email FROM profiled
        UNION ALL SELECT change_id, 'phone', phone FROM profiled
        UNION ALL SELECT change_id, 'email', unnest(coalesce(emails, []::VARCHAR[])) FROM profiled
        UNION ALL SELECT change_id, 'phone', unnest(coalesce(phones, []::VARCHAR[])) FROM profiled
    )
),
suppressed_keys AS (
    SELECT DISTINCT 'customer' AS kind, customer_id AS value, reason FROM suppressions WHERE customer_id IS NOT NULL
    UNION
    SELECT identifier_type, identifier_value, reason FROM suppressions WHERE identifier_value IS NOT NULL
),
reasons AS (
    SELECT k.change_id, string_agg(DISTINCT s.reason, ',' ORDER BY s.reason) AS suppression_reason
    FROM keys k JOIN suppressed_keys s ON k.kind = s.kind AND k.value = s.value
    GROUP BY k.change_id
),
marked AS (
    SELECT p.*, r.suppression_reason FROM profiled p LEFT JOIN reasons r ON p.change_id = r.change_id
),
matched AS (
    SELECT m.*, d.destination, d.max_runs,
           sha256(d.destination || chr(31) || m.change_id) AS idempotency_key
    FROM marked m CROSS JOIN destinations d
    WHERE (len(d.d_segments) = 0 OR list_contains(d.d_segments, m.segment_id))
      AND list_contains(d.d_change_types, m.change_type)
),
failed AS ({failed})
SELECT m.* EXCLUDE (max_runs), coalesce(f.failed_runs, 0) AS failed_runs
FROM matched m
LEFT JOIN failed f ON m.idempotency_key = f.idempotency_key
WHERE NOT EXISTS (SELECT 1 FROM handled h WHERE h.idempotency_key = m.idempotency_key)
  AND coalesce(f.failed_runs, 0) < m.max_runs
ORDER BY m.destination NULLS FIRST, m.changed_at NULLS FIRST, m.change_id NULLS FIRST
"""


def pending_rows(
    store: DeltaStore,
    *,
    destinations: list[tuple[str, list[str], list[str], int]],
    suppressions: pa.Table,
    profile_fields: list[str],
) -> list[dict]:
    """The pending rows (dicts, timestamps aware UTC) the Spark job collects, read with delta-rs.

    Args:
        destinations: ``(name, segments, change_types, max_runs)`` of each enabled destination.
        suppressions: ``activation.suppressions`` as built for this run.
    """
    import duckdb

    changes_columns = [
        "change_id", "run_id", "segment_id", "customer_id", "member_key", "change_type",
        "previous_customer_id", "changed_at",
    ]  # fmt: skip
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("changes", store.read(catalog.CHANGES.name, columns=changes_columns))
        approvals = store.exists(catalog.APPROVALS.name)
        if approvals:
            con.register("approvals", store.read(catalog.APPROVALS.name, columns=["run_id", "segment_id", "status"]))
        profile = store.exists(catalog.CUSTOMER_PROFILE.name)
        if profile:
            columns = ["customer_id", *profile_fields, "emails", "phones"]
            con.register("profile", store.read(catalog.CUSTOMER_PROFILE.name, columns=columns))
        con.register("suppressions", suppressions)
        con.register("handled", store.read(catalog.DELIVERIES.name, columns=["idempotency_key"]))
        failures = [
            store.read(name, columns=["idempotency_key", "destination", "run_id"])
            for name in (catalog.REJECTED.name, catalog.DEAD_LETTER.name)
            if store.exists(name)
        ]
        if failures:
            con.register("failures", pa.concat_tables(failures))
        con.register(
            "destinations",
            pa.table(
                {
                    "destination": [d[0] for d in destinations],
                    "d_segments": [list(d[1]) for d in destinations],
                    "d_change_types": [list(d[2]) for d in destinations],
                    "max_runs": pa.array([d[3] for d in destinations], pa.int32()),
                },
                schema=pa.schema(
                    [
                        ("destination", pa.string()),
                        ("d_segments", pa.list_(pa.string())),
                        ("d_change_types", pa.list_(pa.string())),
                        ("max_runs", pa.int32()),
                    ]
                ),
            ),
        )
        sql = pending_sql(approvals=approvals, profile=profile, failures=bool(failures), profile_fields=profile_fields)
        result = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return [_utc(row) for row in result.to_pylist()]


def _utc(row: dict) -> dict:
    return {k: v.astimezone(timezone.utc) if isinstance(v, datetime) else v for k, v in row.items()}


def sms_consent_embedded(store: DeltaStore, customer_ids: list[str]) -> dict[str, bool]:
    """:func:`lakecdp.activation.sms.sms_consent` for ``customer_ids``: the most recent record of
    each person that says yes or no (``updated_at`` newest first, nulls last, then record_id)."""
    import duckdb

    records, id_map = catalog.CUSTOMER_RECORDS.name, catalog.ID_MAP.name
    if not (store.exists(records) and store.exists(id_map)) or not customer_ids:
        return {}
    if "sms_consent" not in [field.name for field in store.table(records).schema().fields]:
        return {}
    data = store.read(records, columns=["record_id", "sms_consent", "updated_at"])
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("records", data)
        con.register("id_map", store.read(id_map, columns=["record_id", "customer_id"]))
        con.register("wanted", pa.table({"customer_id": pa.array(customer_ids, pa.string())}))
        rows = con.sql(
            """
            SELECT customer_id, sms_consent FROM (
                SELECT m.customer_id, r.sms_consent, row_number() OVER (
                    PARTITION BY m.customer_id ORDER BY r.updated_at DESC NULLS LAST, r.record_id NULLS FIRST
                ) AS rank
                FROM records r
                JOIN id_map m ON r.record_id = m.record_id
                JOIN wanted w ON m.customer_id = w.customer_id
                WHERE r.sms_consent IS NOT NULL
            ) WHERE rank = 1
            """
        ).fetchall()
    finally:
        con.close()
    return {customer_id: consent for customer_id, consent in rows}
