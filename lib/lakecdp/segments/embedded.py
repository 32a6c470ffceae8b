"""The embedded segment engine: DuckDB over Arrow, Delta read and written with delta-rs, no JVM.

The same job as :mod:`lakecdp.segments.job` on Spark, with the same tables and rows:

1. recover runs whose changes were written but never recorded (as the Spark path does);
2. read inputs with delta-rs (profile, features, events resolved through identifiers,
   current membership, identity merges) into a *trusted* DuckDB connection (large state tables:
   the live Parquet files the Delta log lists, read by DuckDB, when the protocol needs nothing
   beyond reader version 1);
3. copy the four segment views into a *locked* connection (no external access, configuration
   locked, memory and thread limits) and run each condition/query there -- translated from
   Spark SQL by :mod:`lakecdp.sqldialect.translate`, checked by :mod:`lakecdp.segments.duck_guard`,
   under a timer that interrupts it after ``limits.max_seconds``;
4. policies (expiry, exclusive groups, exclusions), rekeys and the diff as SQL in one pass, on
   keys: open stays are read without their reason JSON, and only the reasons a change needs
   (exits, rekeys, ``emit_updates`` segments) are read after the diff;
5. write approvals (held segments), then the changes as an append under a Delta app transaction
   (``txnAppId = lakecdp.segments.changes/<run_id>``, version 1, 2, ... per attempt) that leaves
   out change ids of the run already stored, then membership (stays this run opens appended,
   closed and updated stays MERGEd on the four keys; recovery MERGEs everything) and the run
   record with membership's version.

Every built-in kind runs here: ``condition`` and ``query`` as above, ``event`` rules as the one
SQL query their kind writes (:meth:`lakecdp.segments.kinds.SegmentKind.matches_sql`), translated
and checked the same way. A kind without a SQL form (a plugin with ``spark_matches`` only) makes
:class:`EmbeddedUnsupported` name it, and the job falls back to the Spark path for that run.

Example:
    >>> from lakecdp.segments.embedded import evaluate_and_write_embedded
    >>> evaluate_and_write_embedded(ctx, load_segments("conf/segments"))
    {'segments': 8, 'entered': 340, ...}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import deltalake  # noqa: F401 - loaded with the engine, not inside the first run
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below
import pyarrow.dataset  # noqa: F401

from lakecdp import catalog
from lakecdp.columns import MissingColumnsError
from lakecdp.delta_store import DeltaStore
from lakecdp.delta_store import utc_timestamps as _utc_timestamps
from lakecdp.segments.changes import resolve_merges
from lakecdp.segments.definitions import SegmentDefinition, SegmentLimits, exclusion_order
from lakecdp.sqldialect.translate import (
    condition_to_duckdb,
    jackson_string,
    java_double,
    json_object_sql,
    query_to_duckdb,
    timestamp_literal,
)
from lakecdp.segments.duck_guard import check_duckdb_select
from lakecdp.segments.evaluate import VIEW_ALIASES, SegmentBudgetExceeded, warn_if_every_customer
from lakecdp.sqldialect import SqlRefused
from lakecdp.segments.plan_guard import SEGMENT_VIEWS
from lakecdp.segments.run_state import RunInputs, changed_customers, last_run_inputs
from lakecdp.segments.writes import EmbeddedWrites, run_record_rows

if TYPE_CHECKING:
    import duckdb

    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

FaultHook = Callable[[str], None]

#: app id prefix of the Delta app transaction that marks a run's changes as written


class EmbeddedUnsupported(RuntimeError):
    """The definitions need something the embedded engine does not run (a kind without a SQL
    form, catalog tables)."""


@dataclass(frozen=True)
class EmbeddedSettings:
    """Bounds of the DuckDB connection that runs segment SQL."""

    memory_limit: str = "2GB"
    threads: int = 2


def unsupported(segments: dict[str, SegmentDefinition]) -> list[str]:
    """Segments the embedded engine cannot evaluate: kinds that are neither marketer SQL
    (``condition``, ``query``) nor have a SQL form (:meth:`SegmentKind.matches_sql`)."""
    from lakecdp.segments.kinds import SegmentKind

    def runs_here(definition: SegmentDefinition) -> bool:
        if definition.condition is not None or definition.query is not None:
            return True
        return type(definition.spec).matches_sql is not SegmentKind.matches_sql

    return sorted(sid for sid, d in segments.items() if not runs_here(d))


# -- DuckDB connections ---------------------------------------------------------------


def trusted_connection() -> duckdb.DuckDBPyConnection:
    """A connection for lakecdp's own SQL (policies, diff, reasons); UTC like Spark's session."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.create_function("lakecdp_java_double", java_double, ["DOUBLE"], "VARCHAR", null_handling="special")  # type: ignore[call-overload]  # type names as text work
    return con


def locked_connection(views: dict[str, pa.Table], settings: EmbeddedSettings) -> duckdb.DuckDBPyConnection:
    """A connection holding only the segment views, then locked before any segment SQL runs."""
    import duckdb

    con = duckdb.connect(config={"threads": settings.threads, "memory_limit": settings.memory_limit})
    con.execute("SET TimeZone = 'UTC'")
    for name, data in views.items():
        con.register("_incoming", data)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _incoming')
        con.unregister("_incoming")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def run_within_budget(con: duckdb.DuckDBPyConnection, sql: str, *, segment_id: str, limits: SegmentLimits) -> pa.Table:
    """Run ``sql`` on ``con``; a timer interrupts it after ``limits.max_seconds``; row budget after."""
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        con.interrupt()

    timer = threading.Timer(limits.max_seconds, interrupt)
    timer.start()
    try:
        result = con.sql(sql).to_arrow_table()
    except Exception as exc:
        if timed_out.is_set():
            raise SegmentBudgetExceeded(
                f"segment {segment_id}: ran longer than its time budget of {limits.max_seconds:g} s "
                "(limits.max_seconds); DuckDB interrupted it"
            ) from exc
        raise
    finally:
        timer.cancel()
    if result.num_rows > limits.max_rows:
        raise SegmentBudgetExceeded(
            f"segment {segment_id}: produced {result.num_rows} rows, more than its row budget of "
            f"{limits.max_rows} (limits.max_rows)"
        )
    return result


# -- inputs -----------------------------------------------------------------------------


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f'DESCRIBE "{table}"').fetchall()]


def load_views(con: duckdb.DuckDBPyConnection, store: DeltaStore, as_of: datetime, *, scope: str | None = None) -> None:
    """customers, profile, features, events (resolved, up to as_of) as tables of ``con``.

    ``scope``: a table of ``con`` (customer_id); profile and features keep only its customers."""
    for name, source in (
        ("_profile_raw", store.require(catalog.CUSTOMER_PROFILE.name)),
        ("_features_raw", store.require(catalog.CUSTOMER_FEATURES.name)),
        # no events table yet: empty, with its columns (event rules name value, product_id, category)
        ("_events_raw", store.read_or_empty(catalog.EVENTS.name, catalog.EVENTS.ddl)),
        (
            "_identifiers",
            store.read_or_empty(
                catalog.IDENTIFIERS.name,
                "identifier_type string, identifier_value string, customer_id string, run_id string",
            ),
        ),
    ):
        keyed = name in ("_profile_raw", "_features_raw")
        if keyed and "customer_id" not in source.schema.names:
            raise MissingColumnsError(f"{name.strip('_').replace('_raw', '')} is missing column customer_id")
        # a scoped run keeps its customers as the rows are read (a DELETE of the others afterwards
        # took longer than reading every row)
        kept = f' WHERE customer_id IN (SELECT customer_id FROM "{scope}")' if keyed and scope is not None else ""
        con.register(f"{name}_arrow", source)
        con.execute(
            f'CREATE TABLE "{name}" AS SELECT {_utc_timestamps(con, name + "_arrow")} FROM "{name}_arrow"{kept}'
        )
        con.unregister(f"{name}_arrow")
    con.execute('CREATE TABLE profile AS SELECT * FROM "_profile_raw"')
    con.execute('CREATE TABLE features AS SELECT * FROM "_features_raw"')

    profile_cols = [c for c in _columns(con, "profile") if c not in ("run_id", "as_of")]
    feature_cols = [c for c in _columns(con, "features") if c not in ("run_id", "as_of") and c not in profile_cols]
    select = [f'p."{c}"' for c in profile_cols] + [f'f."{c}"' for c in feature_cols]
    known = set(profile_cols) | set(feature_cols)
    for alias, (source, data_type) in VIEW_ALIASES.items():
        if source in known and alias not in known:
            select.append(f'CAST("{source}" AS {data_type.upper()}) AS "{alias}"')
    select.append(f"{timestamp_literal(as_of)} AS as_of")
    con.execute(
        f"CREATE TABLE customers AS SELECT {', '.join(select)} FROM profile p LEFT JOIN features f USING (customer_id)"
    )

    events_cols = _columns(con, "_events_raw")
    resolved = ['e."customer_id"'] if "customer_id" in events_cols else []
    joins = []
    for identifier_type in ("customer_number", "email", "device_id"):
        if identifier_type in events_cols:
            alias = f"_i_{identifier_type}"
            joins.append(
                f'LEFT JOIN (SELECT identifier_value, any_value(customer_id) AS customer_id FROM "_identifiers" '
                f"WHERE identifier_type = '{identifier_type}' GROUP BY identifier_value) {alias} "
                f'ON e."{identifier_type}" = {alias}.identifier_value'
            )
            resolved.append(f"{alias}.customer_id")
    customer = f"coalesce({', '.join(resolved)})" if resolved else "CAST(NULL AS VARCHAR)"
    others = ", ".join(f'e."{c}"' for c in events_cols if c != "customer_id")
    con.execute(
        f'CREATE TABLE events AS SELECT {others}, {customer} AS customer_id FROM "_events_raw" e '
        + " ".join(joins)
        + f" WHERE {customer} IS NOT NULL AND e.occurred_at <= {timestamp_literal(as_of)}"
    )


# -- evaluation ---------------------------------------------------------------------------


def _segment_sql(definition: SegmentDefinition, as_of: datetime) -> str:
    if definition.condition is not None:
        return f"SELECT * FROM customers WHERE {condition_to_duckdb(definition.condition, as_of=as_of)}"
    if definition.query is not None:
        return query_to_duckdb(definition.query, as_of=as_of)
    # a kind with a SQL form (event rules): its Spark SQL through the same dialect layer and guard
    text = definition.spec.matches_sql(as_of=as_of)
    if text is None:
        raise EmbeddedUnsupported(f"segment {definition.id}: kind {definition.kind!r} has no SQL form")
    return query_to_duckdb(text, as_of=as_of)


def _check_condition_shape(tree: dict[str, Any], text: str) -> None:
    """A condition's statement is exactly ``SELECT * FROM customers WHERE <expr>``: nothing escaped."""
    node = tree["statements"][0]["node"]
    source = node.get("from_table") or {}
    star = node.get("select_list") or []
    if (
        node.get("type") != "SELECT_NODE"
        or node.get("modifiers")
        or (node.get("cte_map") or {}).get("map")
        or node.get("group_expressions")
        or node.get("having") is not None
        or node.get("qualify") is not None
        or source.get("type") != "BASE_TABLE"
        or source.get("table_name") != "customers"
        or len(star) != 1
        or star[0].get("class") != "STAR"
        or node.get("where_clause") is None
    ):
        raise SqlRefused("the condition must be one boolean expression (DuckDB engine)", line=None, column=None)


def check_segment(
    con: duckdb.DuckDBPyConnection, definition: SegmentDefinition, as_of: datetime
) -> tuple[str, dict[str, Any]]:
    """The DuckDB text of a segment and its parse tree, after both guard passes."""
    text = _segment_sql(definition, as_of)
    return text, check_duckdb_select(con, text, views=SEGMENT_VIEWS)


def segment_matches(
    con: duckdb.DuckDBPyConnection,
    definition: SegmentDefinition,
    as_of: datetime,
    *,
    checked: tuple[str, dict[str, Any]] | None = None,
) -> tuple[pa.Table, list[str]]:
    """Run one segment's SQL on the locked connection; returns its rows and the reason columns.

    A condition's reason shows the columns its text names; a query's (and a kind's SQL form,
    event rules) every column but ``customer_id`` and ``member_key``, in order.

    Raises:
        SqlRefused: naming the segment (translation or either guard pass).
        SegmentBudgetExceeded: time or row budget.
    """
    try:
        text, tree = checked if checked is not None else check_segment(con, definition, as_of)
        if definition.condition is not None:
            _check_condition_shape(tree, text)
    except SqlRefused as exc:
        raise exc.for_segment(definition.id) from None
    result_columns = [d[0] for d in con.execute(f"SELECT * FROM ({text}) AS segment_result LIMIT 0").description]
    if definition.condition is not None:
        guarded = definition.guarded
        assert guarded is not None
        deciding = [c for c in guarded.columns if c in result_columns and c != "customer_id"]
        wanted = ["customer_id", *deciding]
        outer = ", ".join(f'"{c}"' for c in wanted)
        statement = f"SELECT {outer}, '' AS member_key FROM ({text}) AS segment_result"
    else:
        if "customer_id" not in result_columns:
            raise MissingColumnsError(
                f"segment {definition.id}: query must return a customer_id column, returns {result_columns}"
            )
        deciding = [c for c in result_columns if c not in ("customer_id", "member_key")]
        key = "coalesce(CAST(member_key AS VARCHAR), '')" if "member_key" in result_columns else "''"
        extra = "".join(f', "{c}"' for c in deciding)
        statement = (
            f"SELECT CAST(customer_id AS VARCHAR) AS customer_id{extra}, {key} AS member_key "
            f"FROM ({text}) AS segment_result WHERE customer_id IS NOT NULL"
        )
    rows = run_within_budget(con, statement, segment_id=definition.id, limits=definition.limits)
    return rows, deciding


#: columns of ``matches`` (:func:`raw_matches`)
_MATCHES_SCHEMA = pa.schema([(name, pa.string()) for name in ("segment_id", "customer_id", "member_key", "reason")])


def raw_matches(
    trusted: duckdb.DuckDBPyConnection,
    locked: duckdb.DuckDBPyConnection,
    segments: dict[str, SegmentDefinition],
    as_of: datetime,
    *,
    every_customer_check: bool = True,
    table: bool = False,
) -> pa.Table:
    """``matches`` (segment_id, customer_id, member_key, reason) in ``trusted``: an Arrow table
    registered there, and returned (a first run's changes and stays share its reason buffers,
    :func:`compute_changes`); a DuckDB table when ``table`` (the caller adds rows to it).

    ``every_customer_check``: warn when a segment matches every customer (off when the views
    hold only some customers: an incremental run)."""
    parts = []
    # every segment is checked before any runs: one refusal stops the run before work is done
    checked = {}
    for segment_id, definition in segments.items():
        try:
            checked[segment_id] = check_segment(locked, definition, as_of)
        except SqlRefused as exc:
            raise exc.for_segment(definition.id) from None
    customers_total, distinct_customers = locked.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM customers"
    ).fetchall()[0]
    # a condition's rows are rows of customers: with one row per customer they are already one per
    # (customer, key), and the window that keeps one (most of this phase at 1M customers) is skipped
    one_row_per_customer = customers_total == distinct_customers
    for segment_id, definition in segments.items():
        rows, deciding = segment_matches(locked, definition, as_of, checked=checked[segment_id])
        trusted.register("_rows", rows)
        types = dict(zip(trusted.sql("SELECT * FROM _rows").columns, trusted.sql("SELECT * FROM _rows").dtypes))
        values = json_object_sql(None, [(c, types[c]) for c in deciding])
        rule = jackson_string(definition.rule)
        # one row per (customer, key); which duplicate's values the reason shows is not defined (as on Spark)
        unique = definition.condition is not None and one_row_per_customer
        part = trusted.sql(
            "SELECT CAST(? AS VARCHAR) AS segment_id, customer_id, member_key, "
            f"'{{\"rule\":' || ? || ',\"values\":' || {values} || '}}' AS reason FROM _rows"
            + ("" if unique else " QUALIFY row_number() OVER (PARTITION BY customer_id, member_key) = 1"),
            params=[segment_id, rule],
        ).to_arrow_table()
        trusted.unregister("_rows")
        parts.append(part.cast(_MATCHES_SCHEMA))
        if every_customer_check and customers_total and rows.num_rows >= customers_total:
            matched = pa.compute.count_distinct(part["customer_id"]).as_py()
            warn_if_every_customer(logger, segment_id, matched, customers_total)
    matches = pa.concat_tables(parts) if parts else _MATCHES_SCHEMA.empty_table()
    if table:
        trusted.register("_matches", matches)
        trusted.execute("CREATE OR REPLACE TABLE matches AS SELECT * FROM _matches")
        trusted.unregister("_matches")
    else:
        trusted.register("matches", matches)
    return matches


def apply_policies(
    con: duckdb.DuckDBPyConnection, segments: dict[str, SegmentDefinition], as_of: datetime, *, table: bool = False
) -> bool:
    """``candidates`` (CANDIDATE_COLUMNS) from ``matches``: expiry, groups, exclusions.

    Returns:
        True when no policy applies: ``candidates`` is then a view over ``matches``, every match
        a member (unless ``table``: the caller deletes rows from it; then False)."""
    now = timestamp_literal(as_of)
    expiring = {sid: d.expire_after_days for sid, d in segments.items() if d.expire_after_days}
    grouped = {sid: (d.group, d.priority) for sid, d in segments.items() if d.group}
    excluding = any(d.exclude for d in segments.values())
    # without any policy every match is a member: a view, not a copy of every reason (7 s at 1M
    # customers x 30 segments on a busy box)
    plain = not (table or expiring or grouped or excluding)
    con.execute(
        f"CREATE OR REPLACE {'VIEW' if plain else 'TABLE'} candidates AS "
        "SELECT segment_id, customer_id, member_key, reason, 'member' AS status, "
        "CAST(NULL AS VARCHAR) AS status_detail FROM matches"
    )
    if expiring:
        days = (
            "CASE "
            + " ".join(f"WHEN segment_id = '{sid}' THEN {int(n)}" for sid, n in sorted(expiring.items()))
            + " END"
        )
        feature_activity = (
            "SELECT customer_id, last_activity_at AS _at FROM features"
            if "last_activity_at" in _columns(con, "features")
            else "SELECT customer_id, CAST(NULL AS TIMESTAMP) AS _at FROM features WHERE false"
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE activity AS
            SELECT coalesce(e.customer_id, f.customer_id) AS customer_id, greatest(e._at, f._at) AS last_activity_at
            FROM (SELECT customer_id, max(occurred_at) AS _at FROM events GROUP BY customer_id) e
            FULL JOIN ({feature_activity}) f ON e.customer_id = f.customer_id
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE candidates AS
            WITH marked AS (
                SELECT c.*, a.last_activity_at, {days} AS _days FROM candidates c
                LEFT JOIN activity a ON c.customer_id = a.customer_id
            )
            SELECT segment_id, customer_id, member_key, reason,
                   CASE WHEN _expired THEN 'expired' ELSE status END AS status,
                   CASE WHEN _expired THEN 'no activity for ' || CAST(_days AS VARCHAR) || ' days; last at '
                        || coalesce(CAST(last_activity_at AS VARCHAR), 'never') ELSE status_detail END AS status_detail
            FROM (SELECT *, _days IS NOT NULL AND (last_activity_at IS NULL
                         OR last_activity_at < {now} - to_days(_days)) AS _expired FROM marked)
            """
        )

    if grouped:
        con.register(
            "_groups",
            pa.table(
                {
                    "segment_id": [sid for sid in sorted(grouped)],
                    "_group": [grouped[sid][0] for sid in sorted(grouped)],
                    "_priority": [grouped[sid][1] for sid in sorted(grouped)],
                }
            ),
        )
        con.execute(
            """
            CREATE OR REPLACE TABLE candidates AS
            WITH ranked AS (
                SELECT c.*, g._group, g._priority,
                       CASE WHEN g._group IS NOT NULL AND c.status = 'member' THEN
                           first(CASE WHEN c.status = 'member' THEN c.segment_id END IGNORE NULLS) OVER (
                               PARTITION BY g._group, c.customer_id ORDER BY g._priority DESC, c.segment_id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                       END AS _winner
                FROM candidates c LEFT JOIN _groups g USING (segment_id)
            )
            SELECT segment_id, customer_id, member_key, reason,
                   CASE WHEN _winner IS NOT NULL AND _winner <> segment_id THEN 'outranked' ELSE status END AS status,
                   CASE WHEN _winner IS NOT NULL AND _winner <> segment_id
                        THEN 'group ' || _group || ': higher-priority segment ' || _winner ELSE status_detail END
                        AS status_detail
            FROM ranked
            """
        )
        con.unregister("_groups")

    for level in exclusion_order(segments):
        pairs = [(sid, other) for sid in level for other in segments[sid].exclude]
        if not pairs:
            continue
        con.register("_rules", pa.table({"_segment": [p[0] for p in pairs], "_excluded_by": [p[1] for p in pairs]}))
        con.execute(
            """
            CREATE OR REPLACE TABLE candidates AS
            WITH blockers AS (
                SELECT DISTINCT customer_id AS _b_customer, segment_id AS _b_segment FROM candidates
                WHERE status = 'member' AND segment_id IN (SELECT _excluded_by FROM _rules)
            ), blocked AS (
                SELECT r._segment, b._b_customer, array_to_string(list_sort(list_distinct(list(b._b_segment))), ',') AS _by
                FROM blockers b JOIN _rules r ON b._b_segment = r._excluded_by
                GROUP BY r._segment, b._b_customer
            )
            SELECT c.segment_id, c.customer_id, c.member_key, c.reason,
                   CASE WHEN x._by IS NOT NULL AND c.status = 'member' THEN 'excluded' ELSE c.status END AS status,
                   CASE WHEN x._by IS NOT NULL AND c.status = 'member' THEN 'excluded by ' || x._by
                        ELSE c.status_detail END AS status_detail
            FROM candidates c LEFT JOIN blocked x ON c.segment_id = x._segment AND c.customer_id = x._b_customer
            """
        )
        con.unregister("_rules")
    return plain


_CHANGE_ID = (
    "sha256(concat_ws(chr(31), run_id, segment_id, customer_id, member_key, change_type, "
    "coalesce(previous_customer_id, '')))"
)


def compute_changes(
    con: duckdb.DuckDBPyConnection,
    store: DeltaStore,
    *,
    run_id: str,
    as_of: datetime,
    update_segments: list[str],
    scope: str | None = None,
    member_rows: pa.Table | None = None,
) -> pa.Table:
    """Table ``run_changes`` (CHANGE_COLUMNS) from ``current``, ``merges`` and ``candidates``.

    ``run_changes`` is an Arrow table registered in ``con``, and returned: the writers hand its
    buffers to the Parquet writer as they are (:func:`write_new_changes`, :func:`apply_run`), so
    the reasons are copied once, out of DuckDB, instead of into a DuckDB table and then out of it
    again for each of the two files (segments.changes and the stays a first run opens).

    ``member_rows``: the Arrow rows of ``matches`` when ``candidates`` is a view over them (every
    match a member, :func:`apply_policies`). With no open stay and no merge (a first run) every
    member enters: the changes are then these columns and their change ids, the reasons not
    copied at all (:func:`_entries`).

    ``scope``: a table of ``con`` with a ``customer_id`` column; only these customers can enter,
    exit or be updated (an event micro-batch re-evaluates the customers of its events only);
    rekeys are not scoped (as :func:`lakecdp.segments.changes.compute_changes`).

    ``current`` holds the open stays without their reasons (:func:`_current_membership`). The
    diff runs on keys first; then only the stays whose old reason a change needs -- exits (the
    rule they name), rekeys (the reason they carry), stays of ``emit_updates`` segments (to
    compare) -- have their reason read from segments.membership (table ``current_reasons``,
    also what :func:`membership_upserts` closes stays with). The rows are the same as a diff
    over every reason.
    """
    now = timestamp_literal(as_of)
    con.register("_updates", pa.table({"segment_id": pa.array(sorted(update_segments), pa.string())}))
    in_scope = f"WHERE customer_id IN (SELECT customer_id FROM {scope})" if scope is not None else ""
    # open stays are unique on their keys (a stay opens only where none is open), so only merged
    # stays can meet another: the DISTINCT (9 s over 6.3M stays) is needed only when there are merges
    merged = con.execute("SELECT count(*) FROM merges").fetchall()[0][0] > 0
    effective = (
        "SELECT DISTINCT c.segment_id, coalesce(m.new_customer_id, c.customer_id) AS customer_id, c.member_key "
        "FROM current c LEFT JOIN merges m ON c.customer_id = m.old_customer_id"
        if merged
        else "SELECT segment_id, customer_id, member_key FROM current"
    )
    # open stays that can change: exited, or present on both sides of an emit_updates segment
    # (entries are found in the last statement, so their reasons are copied once, into run_changes)
    members = "SELECT segment_id, customer_id, member_key, reason AS new_reason FROM candidates WHERE status = 'member'"
    effective_scoped = f"SELECT * FROM ({effective}) {in_scope}"
    # no open stay (a first run): nothing can exit or be updated; the anti join below would still
    # hash every member (5 s at 6.3M)
    no_stays = "WHERE false" if con.execute("SELECT count(*) FROM current").fetchall()[0][0] == 0 else ""
    if no_stays and not merged and member_rows is not None:
        changes = _entries(con, member_rows, run_id=run_id, as_of=as_of)
        con.register("run_changes", changes)
        con.unregister("_updates")
        return changes
    con.execute(
        f"""
        CREATE OR REPLACE TABLE _diff AS
        WITH effective AS ({effective_scoped}), members AS ({members} {no_stays.replace("WHERE", "AND")})
        -- a FULL JOIN carrying the reasons took 30 s at 1M customers x 30 segments; anti joins
        -- on the keys, and an inner join for emit_updates segments only, give the same rows
        SELECT o.segment_id, o.customer_id, o.member_key, CAST(NULL AS VARCHAR) AS new_reason, true AS _in_old
        FROM effective o ANTI JOIN members n USING (segment_id, customer_id, member_key)
        UNION ALL
        SELECT o.segment_id, o.customer_id, o.member_key, n.new_reason, true
        FROM (SELECT * FROM effective SEMI JOIN _updates USING (segment_id)) o
        JOIN members n USING (segment_id, customer_id, member_key)
        """
    )
    # the open stays whose reason is needed: rekeyed ones, and those behind an old key of _diff
    con.execute(
        """
        CREATE OR REPLACE TABLE _wanted AS
        SELECT c.segment_id, c.customer_id, c.member_key FROM current c
        JOIN merges m ON c.customer_id = m.old_customer_id
        UNION
        SELECT c.segment_id, c.customer_id, c.member_key FROM current c
        LEFT JOIN merges m ON c.customer_id = m.old_customer_id
        JOIN _diff d ON d._in_old AND d.segment_id = c.segment_id
                    AND d.customer_id = coalesce(m.new_customer_id, c.customer_id) AND d.member_key = c.member_key
        """
    )
    _current_reasons(con, store)
    changes = con.sql(
        f"""
        WITH rekeyed AS (
            SELECT c.segment_id, m.new_customer_id AS customer_id, c.member_key, 'rekeyed' AS change_type,
                   m.old_customer_id AS previous_customer_id, any_value(r.reason) AS reason
            FROM current c JOIN merges m ON c.customer_id = m.old_customer_id
            LEFT JOIN current_reasons r
              ON r.segment_id = c.segment_id AND r.customer_id = c.customer_id AND r.member_key = c.member_key
            GROUP BY c.segment_id, m.new_customer_id, c.member_key, m.old_customer_id
        ), old_reasons AS (
            SELECT r.segment_id, coalesce(m.new_customer_id, r.customer_id) AS customer_id, r.member_key,
                   any_value(r.reason) AS old_reason
            FROM current_reasons r LEFT JOIN merges m ON r.customer_id = m.old_customer_id
            GROUP BY ALL
        ), why_not AS (
            SELECT segment_id, customer_id, member_key, any_value(status) AS _status,
                   any_value(status_detail) AS _detail
            FROM candidates WHERE status <> 'member' GROUP BY ALL
        ), typed AS (
            SELECT d.segment_id, d.customer_id, d.member_key, d.new_reason, o.old_reason, w._status, w._detail,
                   CASE WHEN d._in_old AND d.new_reason IS NULL THEN 'exited'
                        WHEN d._in_old AND d.segment_id IN (SELECT segment_id FROM _updates)
                             AND o.old_reason IS DISTINCT FROM d.new_reason THEN 'updated'
                   END AS change_type
            FROM _diff d
            LEFT JOIN old_reasons o
              ON d.segment_id = o.segment_id AND d.customer_id = o.customer_id AND d.member_key = o.member_key
            LEFT JOIN why_not w
              ON d.segment_id = w.segment_id AND d.customer_id = w.customer_id AND d.member_key = w.member_key
        ), diff AS (
            SELECT segment_id, customer_id, member_key, change_type, CAST(NULL AS VARCHAR) AS previous_customer_id,
                   CASE WHEN change_type = 'exited' THEN
                       '{{' || concat_ws(',',
                           CASE WHEN json_extract_string(old_reason, '$.rule') IS NOT NULL
                                THEN '"rule":' || CAST(to_json(json_extract_string(old_reason, '$.rule')) AS VARCHAR) END,
                           '"exit":' || CAST(to_json(coalesce(_status, 'no_longer_matches')) AS VARCHAR),
                           CASE WHEN _detail IS NOT NULL THEN '"detail":' || CAST(to_json(_detail) AS VARCHAR) END
                       ) || '}}'
                   ELSE new_reason END AS reason
            FROM typed WHERE change_type IS NOT NULL
        ), entered AS (
            SELECT n.segment_id, n.customer_id, n.member_key, 'entered' AS change_type,
                   CAST(NULL AS VARCHAR) AS previous_customer_id, n.new_reason AS reason
            FROM ({members}) n ANTI JOIN ({effective_scoped}) o USING (segment_id, customer_id, member_key)
        ), all_changes AS (
            SELECT * FROM rekeyed UNION ALL SELECT * FROM diff UNION ALL SELECT * FROM entered
        )
        SELECT {_CHANGE_ID} AS change_id, run_id, segment_id, customer_id, member_key, change_type,
               previous_customer_id, changed_at, reason
        FROM (SELECT *, ? AS run_id, {now} AS changed_at FROM all_changes)
        """,
        params=[run_id],
    ).to_arrow_table()
    con.register("run_changes", changes)
    con.unregister("_updates")
    con.execute("DROP TABLE _diff")
    return changes


def _entries(con: duckdb.DuckDBPyConnection, members: pa.Table, *, run_id: str, as_of: datetime) -> pa.Table:
    """Every member as an ``entered`` change (CHANGE_COLUMNS), the same rows as the query of
    :func:`compute_changes` with no open stay: DuckDB computes the change ids over the key
    columns (a projection of one scan keeps the rows' order), the other columns are the members'
    own arrays or constants."""
    con.register("_members", members)
    ids = con.sql(
        f"SELECT {_CHANGE_ID} AS change_id FROM (SELECT ? AS run_id, segment_id, customer_id, member_key, "
        "'entered' AS change_type, CAST(NULL AS VARCHAR) AS previous_customer_id FROM _members)",
        params=[run_id],
    ).to_arrow_table()
    con.unregister("_members")
    rows = members.num_rows
    # naive UTC, as the query's TIMESTAMP literal gives
    moment = as_of.astimezone(timezone.utc).replace(tzinfo=None)
    return pa.table(
        {
            "change_id": ids["change_id"],
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), rows),
            "segment_id": members["segment_id"],
            "customer_id": members["customer_id"],
            "member_key": members["member_key"],
            "change_type": pa.repeat(pa.scalar("entered", pa.string()), rows),
            "previous_customer_id": pa.nulls(rows, pa.string()),
            "changed_at": pa.repeat(pa.scalar(moment, pa.timestamp("us")), rows),
            "reason": members["reason"],
        }
    )


def membership_upserts(con: duckdb.DuckDBPyConnection, changes: str = "run_changes") -> pa.Table:
    """Membership rows one run's changes produce (see :func:`lakecdp.segments.changes.membership_upserts`).

    Reads tables ``current`` (open stays, no reasons) and ``current_reasons`` (the reasons of
    at least the stays the changes close).
    """
    return con.sql(membership_upserts_sql(changes)).to_arrow_table()


def membership_upserts_sql(changes: str = "run_changes") -> str:
    """The query of :func:`membership_upserts` over table ``changes``."""
    return f"""
        WITH closing AS (
            SELECT segment_id,
                   CASE WHEN change_type = 'rekeyed' THEN previous_customer_id ELSE customer_id END AS customer_id,
                   member_key, any_value(run_id) AS _run, any_value(changed_at) AS _at
            FROM {changes} WHERE change_type IN ('exited', 'rekeyed') GROUP BY ALL
        ), closed AS (
            SELECT c.segment_id, c.customer_id, c.member_key, c.entered_at, x._at AS exited_at, c.entered_run_id,
                   x._run AS exited_run_id, r.reason, false AS is_current
            FROM current c JOIN closing x USING (segment_id, customer_id, member_key)
            LEFT JOIN current_reasons r USING (segment_id, customer_id, member_key)
        ), updated AS (
            SELECT c.segment_id, c.customer_id, c.member_key, c.entered_at, CAST(NULL AS TIMESTAMP) AS exited_at,
                   c.entered_run_id, CAST(NULL AS VARCHAR) AS exited_run_id, u.reason, true AS is_current
            FROM current c JOIN (SELECT segment_id, customer_id, member_key, reason FROM {changes}
                                 WHERE change_type = 'updated') u USING (segment_id, customer_id, member_key)
        ), entered AS (
            SELECT segment_id, customer_id, member_key, changed_at AS entered_at, CAST(NULL AS TIMESTAMP) AS exited_at,
                   run_id AS entered_run_id, CAST(NULL AS VARCHAR) AS exited_run_id, reason, true AS is_current
            FROM {changes} WHERE change_type = 'entered'
        ), exits AS (
            SELECT segment_id, customer_id, member_key, changed_at AS _exited_at, run_id AS _exited_run
            FROM {changes} WHERE change_type = 'exited'
        ), moved AS (
            SELECT r.segment_id, r.customer_id, r.member_key, min(f.entered_at) AS entered_at,
                   first(r.run_id) AS entered_run_id, min(r.reason) AS reason
            FROM {changes} r
            JOIN current f ON r.segment_id = f.segment_id AND r.previous_customer_id = f.customer_id
                          AND r.member_key = f.member_key
            WHERE r.change_type = 'rekeyed'
              AND NOT EXISTS (SELECT 1 FROM current k WHERE k.segment_id = r.segment_id
                              AND k.customer_id = r.customer_id AND k.member_key = r.member_key)
            GROUP BY r.segment_id, r.customer_id, r.member_key
        )
        SELECT * FROM closed UNION ALL SELECT * FROM updated UNION ALL SELECT * FROM entered
        UNION ALL
        SELECT m.segment_id, m.customer_id, m.member_key, m.entered_at, e._exited_at AS exited_at, m.entered_run_id,
               e._exited_run AS exited_run_id, m.reason, e._exited_run IS NULL AS is_current
        FROM moved m LEFT JOIN exits e USING (segment_id, customer_id, member_key)
        """


# -- the run ----------------------------------------------------------------------------------

MEMBERSHIP, CHANGES = catalog.MEMBERSHIP.name, catalog.CHANGES.name
RUNS, APPROVALS = catalog.SEGMENT_RUNS.name, catalog.APPROVALS.name


#: columns of an open stay the diff and the membership upserts read (reasons apart, see _current_reasons)
_STAY_COLUMNS = ["segment_id", "customer_id", "member_key", "entered_at", "entered_run_id"]


def _current_membership(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, segment_ids: list[str] | None, *, scope: str | None = None
) -> None:
    """Table ``current``: open stays (of ``segment_ids`` when given) without their reasons; closed
    stays are skipped in the scan. ``scope``: only stays of its customers and of the old ids of
    table ``merges`` (what a scoped diff and its rekeys read)."""
    columns = [*_STAY_COLUMNS, "is_current"]
    where, params = "WHERE is_current", []
    if segment_ids is not None:
        where, params = where + " AND list_contains(?::VARCHAR[], segment_id)", [segment_ids]
    if scope is not None:
        where += (
            f' AND (customer_id IN (SELECT customer_id FROM "{scope}") '
            "OR customer_id IN (SELECT old_customer_id FROM merges))"
        )
    store.load(con, "current", MEMBERSHIP, columns=columns, where=where, params=params)


def _current_reasons(con: duckdb.DuckDBPyConnection, store: DeltaStore) -> None:
    """Table ``current_reasons``: the reasons of the open stays listed in table ``_wanted``
    (segment_id, customer_id, member_key), read from segments.membership; nothing is read when
    none is wanted (a run that only enters)."""
    wanted = con.execute("SELECT count(*) FROM _wanted").fetchall()[0][0]
    if not wanted:
        con.execute(
            "CREATE OR REPLACE TABLE current_reasons "
            "(segment_id VARCHAR, customer_id VARCHAR, member_key VARCHAR, reason VARCHAR)"
        )
    else:
        # DeltaStore.load appends ``where`` to its FROM: a semi join keeps the read to the wanted rows
        store.load(
            con,
            "current_reasons",
            MEMBERSHIP,
            columns=["segment_id", "customer_id", "member_key", "reason", "is_current"],
            where="SEMI JOIN _wanted USING (segment_id, customer_id, member_key) WHERE is_current",
        )
    con.execute("DROP TABLE _wanted")


def apply_run(
    con: duckdb.DuckDBPyConnection,
    store: DeltaStore,
    run_id: str,
    *,
    mode: str,
    segment_ids: list[str],
    as_of: datetime,
    change_count: int,
    changes: str = "run_changes",
    read_current: bool = True,
    append_opened: bool = False,
    inputs: RunInputs | None = None,
    change_rows: pa.Table | None = None,
) -> None:
    """Apply one run's changes (table ``changes`` of ``con``) to membership, then record the run.

    ``read_current=False``: tables ``current`` and ``current_reasons`` already hold every open stay
    the changes can touch and the reasons of those they close (the run's own diff read them). ``append_opened``: the run id had no stored change before this
    attempt, so no membership row carries it yet and the stays it opens are appended.
    ``inputs``: what the run read, kept with the record (:mod:`lakecdp.segments.run_state`) for
    the next run's no-op and incremental checks. ``change_rows``: the Arrow rows of table
    ``changes`` (:func:`compute_changes`); the stays its entries open are written from their
    buffers (:func:`opened_stays`) when the run rekeys nothing.
    """
    writes = EmbeddedWrites(store)
    if change_count:
        if read_current:
            _current_membership(con, store, None)
            # the stays these changes close: their reasons go into the closed rows
            con.execute(
                f"""
                CREATE OR REPLACE TABLE _wanted AS
                SELECT DISTINCT segment_id,
                       CASE WHEN change_type = 'rekeyed' THEN previous_customer_id ELSE customer_id END AS customer_id,
                       member_key
                FROM {changes} WHERE change_type IN ('exited', 'rekeyed')
                """
            )
            _current_reasons(con, store)
        if not append_opened:
            writes.membership(membership_upserts(con, changes), run_id=run_id)
        else:
            # stays this run opens are keyed on its run id, and no change of this run id was stored
            # before it: nobody wrote them yet, so they are appended; closed and updated stays are
            # MERGEd (update only)
            upserts = membership_upserts_sql(changes)
            kinds = {row[0] for row in con.execute(f"SELECT DISTINCT change_type FROM {changes}").fetchall()}
            if kinds - {"entered"}:
                touched = con.sql(f"SELECT * FROM ({upserts}) WHERE entered_run_id <> ?", params=[run_id])
                writes.membership(touched.to_arrow_table(), run_id=run_id, insert=False)
            # the opened stays (every member, on a first run): one Parquet file, from the changes'
            # own Arrow buffers when only entries open stays (no rekeys)
            if change_rows is not None and "rekeyed" not in kinds:
                writes.opened_stays(opened_stays(change_rows).to_reader(), run_id=run_id)
            else:
                opened = con.sql(f"SELECT * FROM ({upserts}) WHERE entered_run_id = ?", params=[run_id])
                writes.opened_stays(opened, run_id=run_id)
    record = run_record_rows(
        run_id,
        mode=mode,
        as_of=as_of,
        segment_ids=segment_ids,
        change_count=change_count,
        membership_version=store.version(MEMBERSHIP),
    )
    writes.run_record(record, run_id=run_id, user_metadata=None if inputs is None else inputs.stamp(store))


def opened_stays(changes: pa.Table) -> pa.Table:
    """The stays the entries among ``changes`` (CHANGE_COLUMNS, one run's) open, in membership's
    columns: the ``entered`` part of :func:`membership_upserts_sql` (a run without rekeys opens
    no other stay), built from the same Arrow buffers (no copy of the reasons when every change
    is an entry, as on a first run)."""
    import pyarrow.compute as pc

    entered = pc.equal(changes["change_type"], "entered")
    if pc.all(entered).as_py() is not True:
        changes = changes.filter(entered)
    rows = changes.num_rows
    return pa.table(
        {
            "segment_id": changes["segment_id"],
            "customer_id": changes["customer_id"],
            "member_key": changes["member_key"],
            "entered_at": changes["changed_at"],
            "exited_at": pa.nulls(rows, changes.schema.field("changed_at").type),
            "entered_run_id": changes["run_id"],
            "exited_run_id": pa.nulls(rows, pa.string()),
            "reason": changes["reason"],
            "is_current": pa.repeat(True, rows),
        }
    )


def write_new_changes(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, *, run_id: str, run_seen: bool, changes: pa.Table
) -> None:
    """Append the rows of ``changes`` (table ``run_changes``, :func:`compute_changes`) not stored
    yet: change ids of this run already in segments.changes (a re-run, or the Spark engine wrote
    some) are left out. ``run_seen``: the run id has rows in segments.changes
    (:func:`recover_pending`); when False none is read and every row is new."""
    writes = EmbeddedWrites(store)
    if not run_seen:
        # one Parquet file from the Arrow buffers as they are, committed as one add action
        writes.changes(changes.to_reader(), run_id=run_id)
        return
    store.load(con, "_stored", CHANGES, columns=["change_id", "run_id"], where="WHERE run_id = ?", params=[run_id])
    fresh = con.sql("SELECT * FROM run_changes WHERE change_id NOT IN (SELECT change_id FROM _stored)")
    if writes.changes(fresh, run_id=run_id) is None:
        logger.info("run %s: every change is already stored; nothing appended", run_id)
    con.execute("DROP TABLE _stored")


def recover_pending(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, *, current_run: str | None = None
) -> tuple[list[str], bool]:
    """Apply changes of runs written but never recorded as applied (killed runs), oldest first.

    Returns:
        The recovered run ids, and whether ``current_run`` has any rows in segments.changes.
    """
    # the run ids alone find pending runs (one dictionary-encoded column: 6M changes read in well
    # under a second); a pending run's rows are read in full only then
    store.load(con, "_all_changes", CHANGES, columns=["run_id"], where="GROUP BY run_id")
    applied = (
        store.read(RUNS, columns=["run_id"]) if store.exists(RUNS) else pa.table({"run_id": pa.array([], pa.string())})
    )
    con.register("_applied", applied)
    pending_ids = [
        row[0]
        for row in con.execute(
            "SELECT run_id FROM _all_changes WHERE run_id NOT IN (SELECT run_id FROM _applied) ORDER BY run_id"
        ).fetchall()
    ]
    pending = []
    if pending_ids:
        store.load(
            con,
            "_pending_changes",
            CHANGES,
            columns=["run_id", "segment_id", "changed_at"],
            where="WHERE list_contains(?::VARCHAR[], run_id)",
            params=[pending_ids],
        )
        pending = con.execute(
            "SELECT run_id, min(changed_at) AS as_of, list_sort(list_distinct(list(segment_id))) "
            "FROM _pending_changes GROUP BY run_id ORDER BY run_id"
        ).fetchall()
        con.execute("DROP TABLE _pending_changes")
    for run_id, as_of, segment_ids in pending:
        logger.warning("run %s wrote changes but did not finish; applying them now", run_id)
        store.load(con, "stored_changes", CHANGES, where="WHERE run_id = ?", params=[run_id])
        count = con.execute("SELECT count(*) FROM stored_changes").fetchall()[0][0]
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
        apply_run(
            con,
            store,
            run_id,
            mode="recovered",
            segment_ids=list(segment_ids),
            as_of=moment,
            change_count=int(count),
            changes="stored_changes",
        )
    seen = (
        bool(current_run)
        and con.execute("SELECT count(*) FROM _all_changes WHERE run_id = ?", [current_run]).fetchall()[0][0] > 0
    )
    con.execute("DROP TABLE _all_changes")
    con.unregister("_applied")
    return [row[0] for row in pending], seen


def _load_merges(con: duckdb.DuckDBPyConnection, store: DeltaStore) -> None:
    pairs: list[tuple[str, str]] = []
    if store.exists(catalog.ID_CHANGES.name):
        rows = store.read(catalog.ID_CHANGES.name, columns=["change_type", "old_customer_id", "new_customer_id"])
        con.register("_id_changes", rows)
        pairs = con.execute(
            "SELECT DISTINCT old_customer_id, new_customer_id FROM _id_changes "
            "WHERE change_type = 'merge' AND old_customer_id <> new_customer_id"
        ).fetchall()
        con.unregister("_id_changes")
    final = resolve_merges(pairs)
    con.register(
        "_merges",
        pa.table(
            {
                "old_customer_id": pa.array(sorted(final), pa.string()),
                "new_customer_id": pa.array([final[k] for k in sorted(final)], pa.string()),
            }
        ),
    )
    con.execute("CREATE OR REPLACE TABLE merges AS SELECT * FROM _merges")
    con.unregister("_merges")


def _row_wise(con: duckdb.DuckDBPyConnection, segments: dict[str, SegmentDefinition], as_of: datetime) -> bool:
    """Every segment is a condition without a subquery: a customer's membership depends on its own
    customers row only (policies -- expiry, groups, exclusions -- are per customer too)."""
    from lakecdp.segments.duck_guard import serialize

    for definition in segments.values():
        if definition.condition is None:
            return False
        try:
            tree = serialize(con, _segment_sql(definition, as_of))
        except SqlRefused:
            return False  # the full run refuses it, naming the segment
        if '"SUBQUERY"' in json.dumps(tree):
            return False
    return True


def _sizes(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, segment_ids: list[str], scope: str | None
) -> dict[str, tuple[int, int]]:
    """Open stays per segment before the run and members after it (the held-segment check).

    Scoped (``current`` and ``candidates`` hold the customers of ``scope`` only): before = every
    open stay, after = before - the stays of the customers in scope + their members now."""
    if scope is None:
        rows = con.execute(
            "SELECT segment_id, sum(b), sum(a) FROM ("
            "SELECT segment_id, 1 AS b, 0 AS a FROM current UNION ALL "
            "SELECT segment_id, 0, 1 FROM candidates WHERE status = 'member') GROUP BY 1"
        ).fetchall()
        return {sid: (int(before), int(after)) for sid, before, after in rows}
    store.load(
        con,
        "_open_stays",
        MEMBERSHIP,
        columns=["segment_id", "is_current"],
        where="WHERE is_current AND list_contains(?::VARCHAR[], segment_id)",
        params=[segment_ids],
    )
    rows = con.execute(
        f"""
        SELECT segment_id, sum(total), sum(total) - sum(in_scope) + sum(now) FROM (
            SELECT segment_id, 1 AS total, 0 AS in_scope, 0 AS now FROM _open_stays
            UNION ALL
            SELECT segment_id, 0, 1, 0 FROM current WHERE customer_id IN (SELECT customer_id FROM "{scope}")
            UNION ALL
            SELECT segment_id, 0, 0, 1 FROM candidates WHERE status = 'member'
        ) GROUP BY 1
        """
    ).fetchall()
    con.execute("DROP TABLE _open_stays")
    return {sid: (int(before), int(after)) for sid, before, after in rows}


def evaluate_and_write_embedded(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    *,
    mode: str = "batch",
    fault_hook: FaultHook | None = None,
    settings: EmbeddedSettings | None = None,
    incremental: bool = True,
) -> dict[str, int]:
    """Evaluate every segment on DuckDB and write approvals, changes, membership and the run.

    Args:
        segments: every definition (condition, query and event kinds; see :func:`unsupported`).
        fault_hook: called with ``"after_approvals"`` / ``"after_changes"`` between writes.
        incremental: allow a run that evaluates only the customers whose profile or features
            changed since the last run (False: always every customer; the rows are the same).

    What the last run read decides how much this one does (:mod:`lakecdp.segments.run_state`):
    the same inputs' Delta versions, ``as_of`` and definitions, and nobody wrote membership or
    changes since -- nothing is evaluated, the run is recorded (0 changes, the same membership
    version) and ``skipped`` is 1; only profile and/or features moved and every segment is a
    row-wise condition -- only the customers whose row differs are evaluated and diffed.

    Returns:
        Counts: segments, members, entered, exited, updated, rekeyed, held, recovered_runs (the
        Spark job's keys); a skipped run adds ``skipped`` = 1 and has ``members`` -1 (not counted).

    Raises:
        EmbeddedUnsupported: a segment of a kind without a SQL form is among ``segments``.
    """
    not_here = unsupported(segments)
    if not_here:
        raise EmbeddedUnsupported(f"these segments' kinds have no SQL form, so they run on Spark only: {not_here}")
    started = time.perf_counter()
    last = [started, time.process_time()]

    def phase(label: str) -> None:
        # CPU time (every thread of the process) beside wall time: on a shared box the wall
        # seconds of a phase say little about its own cost
        now, cpu = time.perf_counter(), time.process_time()
        logger.info("segments run %s: %s in %.2f s (%.2f s CPU)", ctx.run_id, label, now - last[0], cpu - last[1])
        last[0], last[1] = now, cpu

    store = DeltaStore(ctx)
    writes = EmbeddedWrites(store)
    writes.create_tables()
    run_id, as_of = ctx.run_id, ctx.as_of
    segment_ids = sorted(segments)
    inputs = RunInputs.read(store, segments, as_of)
    previous = last_run_inputs(store)
    if inputs.unchanged_since(previous, store):
        logger.info(
            "segments run %s: inputs, as_of and definitions unchanged since the last run; not evaluated", run_id
        )
        con = trusted_connection()
        apply_run(con, store, run_id, mode=mode, segment_ids=segment_ids, as_of=as_of, change_count=0, inputs=inputs)
        con.close()
        skipped = dict.fromkeys(("entered", "exited", "updated", "rekeyed", "held", "recovered_runs"), 0)
        return {"segments": len(segment_ids), "members": -1, **skipped, "skipped": 1}
    con = trusted_connection()
    recovered, run_seen = recover_pending(con, store, current_run=run_id)
    phase("pending-run check")
    moved = inputs.changed_tables_since(previous, store) if incremental and _row_wise(con, segments, as_of) else None
    scope = None
    if moved is not None and not recovered:
        scope = "scope"
        changed = changed_customers(con, store, moved, target=scope)
        phase(f"changed customers found ({changed} in {', '.join(moved)})")

    load_views(con, store, as_of, scope=scope)
    views = {name: con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in sorted(SEGMENT_VIEWS)}
    locked = locked_connection(views, settings or EmbeddedSettings())
    del views
    phase("inputs read")
    try:
        matches = raw_matches(con, locked, segments, as_of, every_customer_check=scope is None)
    finally:
        locked.close()
    phase("segment SQL checked and run")
    plain = apply_policies(con, segments, as_of)
    _load_merges(con, store)
    _current_membership(con, store, segment_ids, scope=scope)
    changes = compute_changes(
        con,
        store,
        run_id=run_id,
        as_of=as_of,
        update_segments=[sid for sid, d in segments.items() if d.emit_updates],
        scope=scope,
        member_rows=matches if plain else None,
    )
    del matches
    phase("policies and diff")

    by_type = dict(con.execute("SELECT change_type, count(*) FROM run_changes GROUP BY 1").fetchall())
    changed_segments = {r[0] for r in con.execute("SELECT DISTINCT segment_id FROM run_changes").fetchall()}
    sizes = _sizes(con, store, segment_ids, scope)
    counts: dict[str, int] = {"segments": len(segment_ids), "recovered_runs": len(recovered)}
    counts["members"] = sum(after for _, after in sizes.values())
    held = []
    for sid, definition in segments.items():
        before, after = sizes.get(sid, (0, 0))
        threshold = definition.hold_if_change_exceeds
        if threshold is None or before == 0 or sid not in changed_segments:
            continue
        share = abs(after - before) / before
        if share > threshold:
            held.append((sid, before, after, share, threshold))
            logger.warning(
                "segment %s moved %d -> %d (%.0f%% > %.0f%%): changes held until approved",
                sid,
                before,
                after,
                share * 100,
                threshold * 100,
            )
    if held:
        approvals = pa.table(
            {
                "run_id": [run_id] * len(held),
                "segment_id": [h[0] for h in held],
                "previous_size": pa.array([h[1] for h in held], pa.int64()),
                "new_size": pa.array([h[2] for h in held], pa.int64()),
                "change_share": [float(h[3]) for h in held],
                "threshold": [float(h[4]) for h in held],
                "status": ["held"] * len(held),
                "decided_by": pa.array([None] * len(held), pa.string()),
                "decided_at": pa.array([None] * len(held), pa.timestamp("us", tz="UTC")),
            }
        )
        writes.held(approvals, run_id=run_id)
    if fault_hook is not None:
        fault_hook("after_approvals")

    change_count = sum(by_type.values())
    if change_count:
        write_new_changes(con, store, run_id=run_id, run_seen=run_seen, changes=changes)
    phase("approvals and changes written")
    if fault_hook is not None:
        fault_hook("after_changes")
    apply_run(
        con,
        store,
        run_id,
        mode=mode,
        segment_ids=segment_ids,
        as_of=as_of,
        change_count=change_count,
        read_current=False,
        append_opened=not run_seen,
        inputs=inputs,
        change_rows=changes,
    )
    phase("membership and run record")
    con.close()

    for change_type in ("entered", "exited", "updated", "rekeyed"):
        counts[change_type] = int(by_type.get(change_type, 0))
    counts["held"] = len(held)
    logger.info("segments run %s (embedded engine): %s", run_id, counts)
    return counts
