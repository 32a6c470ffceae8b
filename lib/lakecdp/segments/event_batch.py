"""Event segments re-evaluated for the customers of new events, on the embedded engine.

The embedded twin of :func:`lakecdp.segments.streaming.process_batch` (the Spark Structured
Streaming micro-batch): it finds the events committed to ``silver.events`` since the last
micro-batch (the table's change data feed, read with delta-rs), resolves them to customers,
re-evaluates the **event** segments for those customers only (over all their events, so windows
and absences see the full history; other segments take part in groups and exclusions with their
current members) on DuckDB, and writes changes and membership as the batch job does
(:mod:`lakecdp.segments.embedded`: the same SQL, diff, reasons and writes).

Progress and exactly once: a micro-batch covers the ``silver.events`` versions after the last
one a micro-batch of the same ``run_prefix`` covered, up to the version it read; its run id is
``<prefix>-v<version>``, recorded in ``segments.runs`` like every run. The next micro-batch
starts after the highest version recorded there. A micro-batch killed after its changes is
recovered by the next run (either engine: pending-run recovery), and one killed before them is
evaluated again under the same run id, so its change ids are the same and nothing is written twice.

Time-based exits (a window passing with no new event) are left to the scheduled batch run, as on
Spark.

Example:
    >>> process_new_events(ctx, load_segments(conf / "segments"))
    {'customers': 3, 'entered': 2, ...}
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from lakecdp import catalog
from lakecdp.delta_store import DeltaStore
from lakecdp.segments.definitions import SegmentDefinition
from lakecdp.segments.embedded import (
    EmbeddedSettings,
    _current_membership,
    _load_merges,
    apply_policies,
    apply_run,
    compute_changes,
    load_views,
    locked_connection,
    raw_matches,
    recover_pending,
    trusted_connection,
    write_new_changes,
)
from lakecdp.segments.plan_guard import SEGMENT_VIEWS
from lakecdp.segments.writes import EmbeddedWrites

if TYPE_CHECKING:
    import duckdb

    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

EVENTS = catalog.EVENTS.name
RUNS = catalog.SEGMENT_RUNS.name


def run_id_for(prefix: str, version: int) -> str:
    """The run id of the micro-batch that covers silver.events up to ``version``."""
    return f"{prefix}-v{version:010d}"


def last_version(store: DeltaStore, prefix: str) -> int | None:
    """The highest silver.events version a micro-batch of ``prefix`` covered (segments.runs)."""
    if not store.exists(RUNS):
        return None
    pattern = re.compile(rf"^{re.escape(prefix)}-v(\d{{10}})$")
    versions = [
        int(m.group(1))
        for run in store.read(RUNS, columns=["run_id"]).column("run_id").to_pylist()
        if run and (m := pattern.match(run))
    ]
    return max(versions) if versions else None


def _new_event_ids(store: DeltaStore, after: int | None, upto: int) -> list[str] | None:
    """Event ids inserted into silver.events in versions ``(after, upto]``; None when the change
    feed cannot say (history vacuumed, an erasure's fresh log): then every customer is in scope."""
    start = 0 if after is None else after + 1
    if start > upto:
        return []
    try:
        feed = store.change_feed(EVENTS, starting_version=start, ending_version=upto)
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several kinds for a feed it cannot read
        logger.warning(
            "silver.events change feed %d..%d unreadable (%s): every customer with events in scope", start, upto, exc
        )
        return None
    inserted = feed.filter(pa.compute.is_in(feed["_change_type"], pa.array(["insert", "update_postimage"])))
    return sorted(set(inserted.column("event_id").to_pylist()))


def process_new_events(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    *,
    run_prefix: str = "events",
    as_of: datetime | None = None,
    settings: EmbeddedSettings | None = None,
) -> dict[str, int]:
    """One micro-batch: the event segments re-evaluated for the customers of new events.

    Args:
        segments: every definition; the event ones are evaluated, the others take part in
            groups and exclusions with their current members.
        run_prefix: names this loop's runs (``<prefix>-v<silver.events version>``) and its progress.
        as_of: the evaluation time (default: the wall clock, as the Spark stream).

    Returns:
        Counts: ``events`` (new), ``customers`` (in scope), entered / exited / updated / rekeyed,
        ``recovered_runs``; empty when silver.events has nothing new.
    """
    event_ids = sorted(sid for sid, d in segments.items() if d.kind == "event")
    if not event_ids:
        raise ValueError("no event-triggered segments to evaluate")
    store = DeltaStore(ctx)
    if not store.exists(EVENTS):
        return {}
    upto = store.version(EVENTS)
    after = last_version(store, run_prefix)
    if after is not None and upto <= after:
        return {}
    new_ids = _new_event_ids(store, after, upto)
    run_id = run_id_for(run_prefix, upto)
    moment = as_of or datetime.now(timezone.utc)
    EmbeddedWrites(store).create_tables()
    con = trusted_connection()
    try:
        recovered, run_seen = recover_pending(con, store, current_run=run_id)
        load_views(con, store, moment)
        if new_ids is None:
            con.execute("CREATE TABLE scope AS SELECT DISTINCT customer_id FROM events")
        else:
            con.register("_new_ids", pa.table({"event_id": pa.array(new_ids, pa.string())}))
            con.execute(
                "CREATE TABLE scope AS SELECT DISTINCT customer_id FROM events "
                "WHERE event_id IN (SELECT event_id FROM _new_ids)"
            )
            con.unregister("_new_ids")
        customers = con.execute("SELECT count(*) FROM scope").fetchall()[0][0]
        counts: dict[str, int] = {
            "events": len(new_ids) if new_ids is not None else -1,
            "customers": int(customers),
            "recovered_runs": len(recovered),
        }
        by_type: dict[str, int] = {}
        changes = None
        if customers:
            # every event of the customers in scope (windows and absences see their whole history)
            con.execute("DELETE FROM events WHERE customer_id NOT IN (SELECT customer_id FROM scope)")
            evaluated = {sid: segments[sid] for sid in event_ids}
            views = {name: con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in sorted(SEGMENT_VIEWS)}
            locked = locked_connection(views, settings or EmbeddedSettings())
            del views
            try:
                raw_matches(con, locked, evaluated, moment, table=True)
            finally:
                locked.close()
            _add_other_members(con, store, segments, event_ids)
            apply_policies(con, _policy_segments(segments, event_ids), moment, table=True)
            con.execute(
                "DELETE FROM candidates WHERE NOT list_contains(?::VARCHAR[], segment_id) "
                "OR customer_id NOT IN (SELECT customer_id FROM scope)",
                [event_ids],
            )
            _current_membership(con, store, event_ids)
            _load_merges(con, store)
            changes = compute_changes(
                con,
                store,
                run_id=run_id,
                as_of=moment,
                update_segments=[sid for sid in event_ids if segments[sid].emit_updates],
                scope="scope",
            )
            by_type = dict(con.execute("SELECT change_type, count(*) FROM run_changes GROUP BY 1").fetchall())
        change_count = sum(by_type.values())
        # a micro-batch without changes still records its run: that moves the loop past its versions
        if changes is not None and change_count:
            write_new_changes(con, store, run_id=run_id, run_seen=run_seen, changes=changes)
        apply_run(
            con,
            store,
            run_id,
            mode="stream",
            segment_ids=event_ids,
            as_of=moment,
            change_count=change_count,
            read_current=False,
            append_opened=not run_seen,
            change_rows=changes,
        )
    finally:
        con.close()
    for change_type in ("entered", "exited", "updated", "rekeyed"):
        counts[change_type] = int(by_type.get(change_type, 0))
    logger.info("event micro-batch %s: %s", run_id, counts)
    return counts


def _add_other_members(
    con: duckdb.DuckDBPyConnection, store: DeltaStore, segments: dict[str, SegmentDefinition], event_ids: list[str]
) -> None:
    """Current members (in scope) of the segments not evaluated now join ``matches``: they take
    part in groups and exclusions (:func:`lakecdp.segments.evaluate.apply_policies`' ``other_members``)."""
    others = sorted(set(segments) - set(event_ids))
    if not others:
        return
    store.load(
        con,
        "_others",
        catalog.MEMBERSHIP.name,
        columns=["segment_id", "customer_id", "member_key", "is_current"],
        where="WHERE is_current AND list_contains(?::VARCHAR[], segment_id)",
        params=[others],
    )
    con.execute(
        "INSERT INTO matches SELECT segment_id, customer_id, member_key, NULL FROM _others "
        "WHERE customer_id IN (SELECT customer_id FROM scope)"
    )
    con.execute("DROP TABLE _others")


def _policy_segments(segments: dict[str, SegmentDefinition], event_ids: list[str]) -> dict[str, SegmentDefinition]:
    """Every definition for groups and exclusions; expiry only for the evaluated ones (as on Spark)."""
    return {
        sid: d if sid in event_ids or not d.expire_after_days else d.model_copy(update={"expire_after_days": None})
        for sid, d in segments.items()
    }
