"""The segments step: evaluate every definition, write changes then membership, exactly once.

A batch run (:func:`run_batch`) first compares what it would read with the last run's record
(:mod:`lakecdp.segments.run_state`, shared with the embedded engine): unchanged inputs -- the run
is recorded without evaluating; only profile/features moved and every segment is row-wise --
only the customers whose row changed are evaluated (``scope``). Evaluation plan-checks every
segment, then runs the row-wise conditions in one pass (:func:`lakecdp.segments.evaluate.raw_matches`);
the diff runs on keys and joins only the reasons a change needs.

Write order and why:

1. ``segments.approvals``: segments whose size moved more than their
   ``hold_if_change_exceeds`` share are ``held`` *before* their changes become visible,
   so activation never sees a change it should have waited for.
2. ``segments.changes``: appended under the Delta app transaction
   ``lakecdp.segments.changes/<run_id>`` (change ids of the run already stored left out), so a
   re-run of the same run adds nothing.
3. ``segments.membership``: the stays the run opens appended (keyed on its run id), the stays it
   closes or updates MERGEd on (segment_id, customer_id, member_key, entered_run_id); in recovery
   or a re-run of a seen run id everything is MERGEd.
4. ``segments.runs``: the run is recorded as applied, with membership's Delta version
   (membership as of any run = time travel to that version) and, for a batch run, what it read
   as the commit's ``userMetadata``. Membership is changed only with the changes this run
   computed (or, in recovery, a killed run's stored changes), never by re-applying an old run's
   changes over later ones.

A run killed between 2 and 4 leaves changes not recorded in ``segments.runs``; the next
run (same run id or not) applies them to membership first (``recover_pending``), then
evaluates: the membership it diffs against already holds them, so nothing is emitted twice.

Example:
    >>> from lakecdp.segments.job import run
    >>> run(ctx)
    {'segments': 12, 'entered': 340, 'exited': 12, ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.segments.changes import (
    KEYS,
    change_rows,
    diff_changes,
    effective_current,
    marked_keys,
    membership_upserts,
    opened_stays,
    rekey_changes,
    resolve_merges,
)
from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.evaluate import SegmentInputs, changed_customers, evaluate_segments, resolve_events
from lakecdp.segments.guard import SqlRefused
from lakecdp.segments.run_state import RunInputs, RunStore, last_run_inputs, nothing_pending_since, nothing_written
from lakecdp.segments.writes import CHANGES_APP_ID, EmbeddedWrites, SparkWrites, run_record_rows

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from lakecdp.context import JobContext
    from lakecdp.tables import Tables

logger = logging.getLogger(__name__)

MEMBERSHIP = catalog.MEMBERSHIP.name
CHANGES = catalog.CHANGES.name
RUNS = catalog.SEGMENT_RUNS.name
APPROVALS = catalog.APPROVALS.name

RUNS_SCHEMA = catalog.SEGMENT_RUNS.ddl
APPROVALS_SCHEMA = catalog.APPROVALS.ddl
EVENTS_SCHEMA = catalog.EVENTS.ddl
IDENTIFIERS_SCHEMA = catalog.IDENTIFIERS.ddl
MERGES_SCHEMA = "old_customer_id string, new_customer_id string"

# Called with a stage name between writes; tests use it to kill a run half way.
FaultHook = Callable[[str], None]


class SegmentInputError(RuntimeError):
    """A table the segments step needs does not exist."""


def ensure_tables(ctx: JobContext) -> None:
    """Membership and changes exist from the first run on, so readers never meet a missing
    table; runs and approvals are created by their first write (readers treat absent as empty)."""
    SparkWrites(ctx.spark, ctx.tables).create_tables()


def read_or_empty(ctx: JobContext, name: str, schema: str | StructType) -> DataFrame:
    """The table, or an empty frame of ``schema`` when it does not exist yet."""
    if ctx.tables.exists(ctx.spark, name):
        return ctx.tables.read(ctx.spark, name)
    logger.info("%s does not exist yet; treated as empty", name)
    return ctx.spark.createDataFrame([], schema)


def require_input(ctx: JobContext, name: str) -> DataFrame:
    """The table; a :class:`SegmentInputError` naming the step to run when it does not exist."""
    if not ctx.tables.exists(ctx.spark, name):
        raise SegmentInputError(
            f"{name} does not exist at {ctx.tables.identifier(name)}; run the step that writes it first"
        )
    return ctx.tables.read(ctx.spark, name)


def load_inputs(ctx: JobContext, *, scope: DataFrame | None = None) -> SegmentInputs:
    """Profile, features and resolved events, as of the run's ``as_of``.

    ``scope``: ``customer_id`` rows; profile and features keep only these customers (an
    incremental run evaluates the customers whose row changed)."""
    identifiers = read_or_empty(ctx, catalog.IDENTIFIERS.name, IDENTIFIERS_SCHEMA)
    events = read_or_empty(ctx, catalog.EVENTS.name, EVENTS_SCHEMA)
    profile = require_input(ctx, catalog.CUSTOMER_PROFILE.name)
    features = require_input(ctx, catalog.CUSTOMER_FEATURES.name)
    if scope is not None:
        profile = profile.join(scope, "customer_id", "left_semi")
        features = features.join(scope, "customer_id", "left_semi")
    return SegmentInputs(
        profile=profile,
        features=features,
        events=resolve_events(events, identifiers),
        as_of=ctx.as_of,
    )


def validation_inputs(ctx: JobContext) -> SegmentInputs:
    """The inputs ``segments validate`` checks SQL against: the tables when they exist, else
    empty frames with their documented schemas (validation works on a fresh checkout)."""
    identifiers = read_or_empty(ctx, catalog.IDENTIFIERS.name, IDENTIFIERS_SCHEMA)
    events = read_or_empty(ctx, catalog.EVENTS.name, EVENTS_SCHEMA)
    return SegmentInputs(
        profile=read_or_empty(ctx, catalog.CUSTOMER_PROFILE.name, catalog.CUSTOMER_PROFILE.ddl),
        features=read_or_empty(ctx, catalog.CUSTOMER_FEATURES.name, catalog.CUSTOMER_FEATURES.struct()),
        events=resolve_events(events, identifiers),
        as_of=ctx.as_of,
    )


def load_merges(ctx: JobContext) -> DataFrame:
    """identity.id_changes merge rows resolved to the surviving id (chains followed)."""
    return ctx.spark.createDataFrame(sorted(merge_pairs(ctx).items()), MERGES_SCHEMA)


def merge_pairs(ctx: JobContext) -> dict[str, str]:
    """identity.id_changes merges: old id -> surviving id (chains followed)."""
    if not ctx.tables.exists(ctx.spark, catalog.ID_CHANGES.name):
        return {}
    rows = (
        ctx.tables.read(ctx.spark, catalog.ID_CHANGES.name)
        .filter((F.col("change_type") == "merge") & (F.col("old_customer_id") != F.col("new_customer_id")))
        .select("old_customer_id", "new_customer_id")
        .distinct()
        .collect()
    )
    return resolve_merges((r["old_customer_id"], r["new_customer_id"]) for r in rows)


def run_store(ctx: JobContext) -> RunStore:
    """Where the run record's stamp and the tables' versions are read: delta-rs on path-based
    tables (the Delta log only, no Spark job), Spark's table history on catalog tables."""
    if ctx.tables.uses_catalog:
        from lakecdp.tables import SparkStore

        return SparkStore(ctx.tables, lambda: ctx.spark)
    from lakecdp.delta_store import DeltaStore

    return DeltaStore(ctx)


# -- applying changes ---------------------------------------------------------------


#: at most this many change rows (or marked keys) are broadcast to joins with the open stays
BROADCAST_ROWS = 2_000_000


def apply_run(
    ctx: JobContext,
    run_id: str,
    changes: DataFrame | None,
    *,
    mode: str,
    segment_ids: list[str],
    as_of: datetime,
    change_count: int,
    append_opened: bool = False,
    kinds: set[str] | None = None,
    stamp: Callable[[], str] | None = None,
) -> None:
    """Apply one run's changes to membership, then record the run with membership's version.

    Applying the same changes again is a no-op (closing/updating match current rows only,
    opened rows are keyed on the run id), so a crash between the two writes is harmless.
    ``append_opened``: the run id had no stored change before this attempt, so no membership row
    carries it yet: the stays it opens are appended, closed and updated stays MERGEd (update
    only); otherwise (recovery, a re-run) everything is MERGEd. ``kinds``: the change types
    among ``changes`` (read when not given). ``stamp``: gives the run record commit's
    ``userMetadata`` once membership is written (:meth:`RunInputs.stamp`).
    """
    spark, tables = ctx.spark, ctx.tables
    writes = SparkWrites(spark, tables)
    if change_count and changes is not None:
        small = change_count <= BROADCAST_ROWS
        if kinds is None:
            kinds = {r["change_type"] for r in changes.select("change_type").distinct().collect()}
        if not append_opened:
            upserts = membership_upserts(tables.read(spark, MEMBERSHIP), changes, small=small).localCheckpoint()
            writes.membership(upserts)
        else:
            opened = opened_stays(changes)
            if kinds - {"entered"}:
                # read once, before the MERGE closes the stays rekeys move from
                upserts = membership_upserts(tables.read(spark, MEMBERSHIP), changes, small=small).localCheckpoint()
                writes.membership(upserts.filter(F.col("entered_run_id") != run_id), insert=False)
                if "rekeyed" in kinds:
                    opened = upserts.filter(F.col("entered_run_id") == run_id)
            if "entered" in kinds or ("rekeyed" in kinds and not opened.isEmpty()):
                writes.opened_stays(opened)
    record_run(
        ctx,
        run_id,
        mode=mode,
        segment_ids=segment_ids,
        as_of=as_of,
        change_count=change_count,
        user_metadata=None if stamp is None else stamp(),
    )


def record_run(
    ctx: JobContext,
    run_id: str,
    *,
    mode: str,
    segment_ids: list[str],
    as_of: datetime,
    change_count: int,
    user_metadata: str | None,
) -> None:
    """Record the run in segments.runs with membership's current version.

    Path-based tables: through delta-rs, as the embedded engine records its runs (one small MERGE
    on the Delta log and one file, no Spark job: a Spark MERGE of the one row took 1-2 s of
    every run, and all of a no-op run); catalog tables: through Spark's MERGE."""
    if ctx.tables.uses_catalog:
        spark = ctx.spark
        version = ctx.tables.version(spark, MEMBERSHIP)
        record = spark.createDataFrame(
            [(run_id, mode, as_of, segment_ids, change_count, version, datetime.now(timezone.utc))], RUNS_SCHEMA
        )
        SparkWrites(spark, ctx.tables).run_record(record, user_metadata=user_metadata)
        return
    from lakecdp.delta_store import DeltaStore

    store = DeltaStore(ctx)
    rows = run_record_rows(
        run_id,
        mode=mode,
        # a naive time is local, as Spark reads it (a recovered run's as_of comes from collect())
        as_of=as_of if as_of.tzinfo else as_of.astimezone(timezone.utc),
        segment_ids=segment_ids,
        change_count=change_count,
        membership_version=store.version(MEMBERSHIP),
    )
    EmbeddedWrites(store).run_record(rows, run_id=run_id, user_metadata=user_metadata)


def recover_pending(ctx: JobContext) -> tuple[list[str], bool]:
    """Apply changes of runs that were written but never recorded as applied (killed runs).

    Returns:
        The recovered run ids, and whether the run of ``ctx`` has any rows in segments.changes.
    """
    spark, tables = ctx.spark, ctx.tables
    if not tables.exists(spark, RUNS):
        # no run finished yet: every run id in changes is pending
        applied = spark.createDataFrame([], "run_id string")
    else:
        applied = tables.read(spark, RUNS).select("run_id")
    # the run ids alone find pending runs (one column read); a pending run's rows are read in full only then
    stored = tables.read(spark, CHANGES).select("run_id").distinct()
    marked = (
        stored.join(applied.withColumn("_applied", F.lit(True)), "run_id", "left")
        .filter(F.col("_applied").isNull() | (F.col("run_id") == ctx.run_id))
        .select("run_id", F.col("_applied").isNotNull().alias("_applied"))
        .collect()
    )
    seen = any(row["run_id"] == ctx.run_id for row in marked)
    pending_ids = sorted(row["run_id"] for row in marked if not row["_applied"])
    pending = []
    if pending_ids:
        pending = (
            tables.read(spark, CHANGES)
            .filter(F.col("run_id").isin(pending_ids))
            .groupBy("run_id")
            .agg(F.min("changed_at").alias("as_of"), F.sort_array(F.collect_set("segment_id")).alias("segments"))
            .orderBy("run_id")
            .collect()
        )
    for row in pending:
        logger.warning("run %s wrote changes but did not finish; applying them now", row["run_id"])
        changes = tables.read(spark, CHANGES).filter(F.col("run_id") == row["run_id"]).localCheckpoint()
        apply_run(
            ctx,
            row["run_id"],
            changes,
            mode="recovered",
            segment_ids=list(row["segments"]),
            as_of=row["as_of"],
            change_count=changes.count(),
        )
    return [row["run_id"] for row in pending], seen


def run_seen(ctx: JobContext) -> bool:
    """The run of ``ctx`` has rows in segments.changes (a re-run of the same id).

    Both engines append a run's changes as the Delta app transaction ``<CHANGES_APP_ID><run_id>``
    and commit nothing when there is no row, so the table's snapshot answers: through delta-rs on
    path-based tables (the Delta log only, no Spark job), through Spark's Delta log on catalog tables."""
    app_id = CHANGES_APP_ID + ctx.run_id
    if ctx.tables.uses_catalog:
        return ctx.tables.app_transaction_version(ctx.spark, CHANGES, app_id) is not None
    from lakecdp.delta_store import DeltaStore

    return DeltaStore(ctx).table(CHANGES).transaction_version(app_id) is not None


# -- approvals ----------------------------------------------------------------------


@dataclass(frozen=True)
class SizeChange:
    segment_id: str
    previous_size: int
    new_size: int

    @property
    def share(self) -> float:
        if self.previous_size == 0:
            return 0.0 if self.new_size == 0 else float("inf")
        return abs(self.new_size - self.previous_size) / self.previous_size


def size_changes(current: DataFrame, candidates: DataFrame, segment_ids: list[str]) -> dict[str, SizeChange]:
    """Members per segment before and after the run (one small aggregate)."""
    before = current.select("segment_id", F.lit(1).alias("_before"), F.lit(0).alias("_after"))
    after = candidates.filter(F.col("status") == "member").select(
        "segment_id", F.lit(0).alias("_before"), F.lit(1).alias("_after")
    )
    counted = {
        r["segment_id"]: (int(r["before"]), int(r["after"]))
        for r in before.unionByName(after)
        .groupBy("segment_id")
        .agg(F.sum("_before").alias("before"), F.sum("_after").alias("after"))
        .collect()
    }
    return {sid: SizeChange(sid, *counted.get(sid, (0, 0))) for sid in segment_ids}


def held_segments(
    segments: dict[str, SegmentDefinition], sizes: dict[str, SizeChange]
) -> list[tuple[SizeChange, float]]:
    """Segments whose size moved more than their threshold (a first fill is never held)."""
    held = []
    for sid, definition in segments.items():
        threshold = definition.hold_if_change_exceeds
        size = sizes.get(sid)
        if threshold is None or size is None or size.previous_size == 0:
            continue
        if size.share > threshold:
            held.append((size, threshold))
    return held


def releasable_changes(changes: DataFrame, approvals: DataFrame) -> DataFrame:
    """Changes activation may deliver: those of (run, segment) pairs not held for approval."""
    held = approvals.filter(F.col("status") == "held").select("run_id", "segment_id")
    return changes.join(held, ["run_id", "segment_id"], "left_anti")


def approve(
    spark: SparkSession, tables: Tables, *, segment_id: str, run_id: str | None = None, approved_by: str = "cli"
) -> list[str]:
    """Release held changes of ``segment_id`` (one run, or every held run). Returns run ids."""
    approvals = tables.read(spark, APPROVALS).filter((F.col("segment_id") == segment_id) & (F.col("status") == "held"))
    if run_id is not None:
        approvals = approvals.filter(F.col("run_id") == run_id)
    runs = sorted(r["run_id"] for r in approvals.select("run_id").collect())
    if not runs:
        return []
    decided = (
        approvals.withColumn("status", F.lit("approved"))
        .withColumn("decided_by", F.lit(approved_by))
        .withColumn("decided_at", F.lit(datetime.now(timezone.utc)).cast("timestamp"))
    )
    SparkWrites(spark, tables).decided(decided)
    return runs


# -- the run ------------------------------------------------------------------------


def scoped_size_changes(
    membership: DataFrame, scope: DataFrame, candidates: DataFrame, segment_ids: list[str]
) -> dict[str, SizeChange]:
    """:func:`size_changes` of a run that evaluated the customers of ``scope`` only: before = every
    open stay, after = before - the open stays of the customers in scope + their members now."""
    current = membership.filter(F.col("is_current") & F.col("segment_id").isin(segment_ids))
    parts = (
        current.select("segment_id", F.lit(1).alias("_total"), F.lit(0).alias("_in_scope"), F.lit(0).alias("_now"))
        .unionByName(
            current.join(scope, "customer_id", "left_semi").select(
                "segment_id", F.lit(0).alias("_total"), F.lit(1).alias("_in_scope"), F.lit(0).alias("_now")
            )
        )
        .unionByName(_members_now(candidates))
    )
    return _counted_sizes(parts, segment_ids)[0]


def _members_now(candidates: DataFrame) -> DataFrame:
    return candidates.filter(F.col("status") == "member").select(
        "segment_id", F.lit(0).alias("_total"), F.lit(0).alias("_in_scope"), F.lit(1).alias("_now")
    )


def _counted_sizes(parts: DataFrame, segment_ids: list[str]) -> tuple[dict[str, SizeChange], int]:
    """Sizes from rows of ``segment_id, _total, _in_scope, _now`` (summed per segment), and the
    open stays in scope (all segments)."""
    summed = {
        r["segment_id"]: (int(r["total"]), int(r["in_scope"]), int(r["now"]))
        for r in parts.groupBy("segment_id")
        .agg(F.sum("_total").alias("total"), F.sum("_in_scope").alias("in_scope"), F.sum("_now").alias("now"))
        .collect()
    }
    sizes = {}
    for sid in segment_ids:
        total, in_scope, now = summed.get(sid, (0, 0, 0))
        sizes[sid] = SizeChange(sid, total, total - in_scope + now)
    return sizes, sum(in_scope for _, in_scope, _ in summed.values())


def scoped_stays_and_sizes(
    current: DataFrame, scope: DataFrame, candidates: DataFrame, segment_ids: list[str], *, small: bool
) -> tuple[DataFrame, dict[str, SizeChange], int]:
    """The open stays of the customers in ``scope`` (``KEYS`` and ``reason``, as
    :func:`effective_current` without merges, then limited to the scope) and
    :func:`scoped_size_changes`, from one scan of the open stays (they were read twice: the
    scoped stays, then every stay again to count it).

    The scan keeps the scope's stays whole and folds every other stay into a count per segment
    (the aggregate's map side: the rows out of scope never leave their task).

    Args:
        current: the open stays of the segments evaluated (no customer merged away this run).
        scope: ``customer_id`` rows, one per customer.
        small: ``scope`` is few enough rows to broadcast to the scan.

    Returns:
        The scope's open stays (materialised), the sizes, and how many stays the scope has."""
    flags = scope.select("customer_id", F.lit(True).alias("_in_scope"))
    flagged = current.join(F.broadcast(flags) if small else flags, "customer_id", "left")
    kept = [F.when(F.col("_in_scope"), F.col(c)).alias(c) for c in ("customer_id", "member_key", "reason")]
    # a kept stay has a customer_id; the rows without one are every other stay, counted
    folded = flagged.groupBy("segment_id", *kept).agg(F.count(F.lit(1)).alias("_stays")).localCheckpoint()
    in_scope = F.col("customer_id").isNotNull()
    parts = folded.select(
        "segment_id",
        F.col("_stays").alias("_total"),
        F.when(in_scope, F.col("_stays")).otherwise(F.lit(0)).alias("_in_scope"),
        F.lit(0).alias("_now"),
    ).unionByName(_members_now(candidates))
    sizes, in_scope_count = _counted_sizes(parts, segment_ids)
    # a key open twice (never written so, but read as stored) stays twice, as the plain read gives it
    stays = folded.filter(in_scope).select(
        *KEYS, "reason", F.explode(F.array_repeat(F.lit(True), F.col("_stays").cast("int"))).alias("_stay")
    )
    return stays.drop("_stay"), sizes, in_scope_count


def evaluate_and_write(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    inputs: SegmentInputs,
    *,
    mode: str = "batch",
    scope: DataFrame | None = None,
    all_segments: dict[str, SegmentDefinition] | None = None,
    fault_hook: FaultHook | None = None,
    run_inputs: RunInputs | None = None,
    previous: dict[str, Any] | None = None,
    incremental: bool = False,
    scope_size: int | None = None,
) -> dict[str, int]:
    """Evaluate ``segments`` and write approvals, changes, membership and the run record.

    Args:
        segments: the definitions to evaluate now.
        inputs: profile, features, resolved events, as_of.
        mode: recorded in segments.runs (``batch`` / ``stream``).
        scope: only these ``customer_id`` rows may enter or exit (streaming, incremental runs).
        all_segments: every definition, for groups and exclusions naming segments not
            evaluated now (their current members take part).
        fault_hook: called with ``"after_approvals"`` / ``"after_changes"`` between writes.
        run_inputs: what the run read (:mod:`lakecdp.segments.run_state`), kept with the run
            record for the next run's no-op and incremental checks (batch runs, :func:`run_batch`).
        previous: the last run record's stamp; when segments.changes has not moved since, the
            pending-run scan is skipped.
        incremental: ``scope`` holds the customers whose inputs changed (a batch run), one row
            per customer, and ``inputs`` were read for them only (:func:`load_inputs` with
            ``scope``, every segment row-wise): sizes for held segments count every open stay.
        scope_size: rows of ``scope`` when known (few enough are broadcast to the open stays).

    Returns:
        Counts: segments, members, entered, exited, updated, rekeyed, held, recovered_runs.
    """
    spark, tables = ctx.spark, ctx.tables
    ensure_tables(ctx)
    started = time.perf_counter()
    last = [started]

    def phase(label: str) -> None:
        now = time.perf_counter()
        logger.info("segments run %s: %s in %.2f s", ctx.run_id, label, now - last[0])
        last[0] = now

    recovered: list[str] = []
    store = run_store(ctx)
    if nothing_written(store):
        seen = False  # a first run: no run recorded, no change stored (nothing to scan)
    elif run_inputs is not None and nothing_pending_since(previous, store):
        seen = run_seen(ctx)
    else:
        recovered, seen = recover_pending(ctx)
    phase("pending-run check")
    segment_ids = sorted(segments)

    membership = tables.read(spark, MEMBERSHIP)
    current = membership.filter(F.col("is_current") & F.col("segment_id").isin(segment_ids))
    other_ids = sorted(set(all_segments or {}) - set(segment_ids))
    scope_ids = None
    if scope is not None:
        # an incremental run's scope is one row per customer already (changed_customers)
        scope_ids = scope.select("customer_id") if incremental else scope.select("customer_id").distinct()
    other_members = None
    if other_ids:
        other_members = membership.filter(F.col("is_current") & F.col("segment_id").isin(other_ids))
        if scope_ids is not None:
            other_members = other_members.join(scope_ids, "customer_id", "left_semi")
    candidates = evaluate_segments(spark, segments, inputs, other_members=other_members, all_segments=all_segments)
    if scope_ids is not None and not incremental:
        # an incremental run read its scope's customers only (load_inputs): its candidates are theirs
        candidates = candidates.join(scope_ids, "customer_id", "left_semi")
    # materialised once: sizes, approvals and the diff all read the same evaluation
    candidates = candidates.localCheckpoint()
    phase("segments evaluated")

    merges = merge_pairs(ctx)
    merges_frame = spark.createDataFrame(sorted(merges.items()), MERGES_SCHEMA) if merges else None
    sizes: dict[str, SizeChange] | None = None
    no_stays: bool | None = None
    if merges_frame is None and scope_ids is not None and incremental:
        # the scope's open stays and every segment's size from one scan of the open stays
        small = scope_size is not None and scope_size <= BROADCAST_ROWS
        effective, sizes, in_scope = scoped_stays_and_sizes(current, scope_ids, candidates, segment_ids, small=small)
        no_stays = in_scope == 0
    else:
        effective = effective_current(current, merges_frame)
        if scope_ids is not None:
            # the scoped open stays read once: the emptiness check, the key diff and the reasons read them
            effective = effective.join(scope_ids, "customer_id", "left_semi").localCheckpoint()
    if merges_frame is None and (effective.isEmpty() if no_stays is None else no_stays):
        # no open stay (a first run): every member enters, no key is compared
        diff = diff_changes(None, effective, candidates)
    else:
        # on keys first (no reasons): the one shuffle of every open stay and every member
        marked = marked_keys(
            effective, candidates, update_segments=[sid for sid, d in segments.items() if d.emit_updates]
        ).localCheckpoint()
        diff = diff_changes(marked, effective, candidates, small=marked.count() <= BROADCAST_ROWS)
    if merges_frame is not None:
        diff = rekey_changes(current, merges_frame).unionByName(diff)
    changes = change_rows(diff, run_id=ctx.run_id, as_of=inputs.as_of).localCheckpoint()
    per_segment = changes.groupBy("segment_id", "change_type").count().collect()
    phase("diff and changes")
    by_type: dict[str, int] = {}
    for row in per_segment:
        by_type[row["change_type"]] = by_type.get(row["change_type"], 0) + int(row["count"])
    changed_segments = {row["segment_id"] for row in per_segment}

    counts: dict[str, int] = {"segments": len(segment_ids), "recovered_runs": len(recovered)}
    held: list[tuple[SizeChange, float]] = []
    if scope is None or incremental:
        if scope_ids is None:
            sizes = size_changes(current, candidates, segment_ids)
        elif sizes is None:
            sizes = scoped_size_changes(membership, scope_ids, candidates, segment_ids)
        counts["members"] = sum(s.new_size for s in sizes.values())
        held = held_segments(segments, sizes)
    held = [(size, threshold) for size, threshold in held if size.segment_id in changed_segments]
    if held:
        rows = [
            (
                ctx.run_id,
                size.segment_id,
                size.previous_size,
                size.new_size,
                float(size.share),
                threshold,
                "held",
                None,
                None,
            )
            for size, threshold in held
        ]
        for size, threshold in held:
            logger.warning(
                "segment %s moved %d -> %d (%.0f%% > %.0f%%): changes held until approved",
                size.segment_id,
                size.previous_size,
                size.new_size,
                size.share * 100,
                threshold * 100,
            )
        SparkWrites(spark, tables).held(spark.createDataFrame(rows, APPROVALS_SCHEMA))
    if fault_hook is not None:
        fault_hook("after_approvals")

    change_count = sum(by_type.values())
    if change_count:
        fresh = changes
        if seen:
            # a re-run of a run id: change ids already stored (by either engine) are left out
            stored = tables.read(spark, CHANGES).filter(F.col("run_id") == ctx.run_id).select("change_id")
            fresh = changes.join(stored, "change_id", "left_anti")
        if seen and fresh.isEmpty():
            logger.info("run %s: every change is already stored; nothing appended", ctx.run_id)
        else:
            # a run id not seen has no app transaction yet: its first is version 1 (no log lookup)
            SparkWrites(spark, tables).changes(fresh, run_id=ctx.run_id, version=None if seen else 1)
    if fault_hook is not None:
        fault_hook("after_changes")
    phase("approvals and changes written")
    apply_run(
        ctx,
        ctx.run_id,
        changes,
        mode=mode,
        segment_ids=segment_ids,
        as_of=inputs.as_of,
        change_count=change_count,
        append_opened=not seen,
        kinds=set(by_type),
        stamp=None if run_inputs is None else lambda: run_inputs.stamp(run_store(ctx)),
    )

    phase("membership and run record")
    for change_type in ("entered", "exited", "updated", "rekeyed"):
        counts[change_type] = by_type.get(change_type, 0)
    counts["held"] = len(held)
    logger.info("segments run %s: %s", ctx.run_id, counts)
    return counts


def row_wise(segments: dict[str, SegmentDefinition]) -> bool:
    """Every segment is a condition without a subquery: a customer's membership depends on its own
    customers row only (policies -- expiry, groups, exclusions -- are per customer too)."""
    for definition in segments.values():
        if definition.condition is None:
            return False
        try:
            guarded = definition.guarded
        except SqlRefused:
            return False  # the full run refuses it, naming the segment
        if guarded is None or guarded.subquery:
            return False
    return True


def run_batch(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    *,
    fault_hook: FaultHook | None = None,
    incremental: bool = True,
) -> dict[str, int]:
    """A batch run on Spark: the embedded engine's run state (:mod:`lakecdp.segments.run_state`).

    The same inputs' Delta versions, ``as_of`` and definitions as the last batch run (either
    engine), and nobody wrote membership or changes since: nothing is evaluated, the run is
    recorded (0 changes) and ``skipped`` is 1. Only profile and/or features moved and every
    segment is a row-wise condition: only the customers whose row differs are evaluated and
    diffed (``incremental=False``: always every customer; the rows are the same).

    Returns:
        As :func:`evaluate_and_write`; a skipped run adds ``skipped`` = 1 and has ``members`` -1.
    """
    ensure_tables(ctx)
    store = run_store(ctx)
    run_inputs = RunInputs.read(store, segments, ctx.as_of)
    previous = last_run_inputs(store)
    segment_ids = sorted(segments)
    if run_inputs.unchanged_since(previous, store):
        logger.info(
            "segments run %s: inputs, as_of and definitions unchanged since the last run; not evaluated", ctx.run_id
        )
        apply_run(
            ctx,
            ctx.run_id,
            None,
            mode="batch",
            segment_ids=segment_ids,
            as_of=ctx.as_of,
            change_count=0,
            stamp=lambda: run_inputs.stamp(store),
        )
        skipped = dict.fromkeys(("entered", "exited", "updated", "rekeyed", "held", "recovered_runs"), 0)
        return {"segments": len(segment_ids), "members": -1, **skipped, "skipped": 1}
    moved = run_inputs.changed_tables_since(previous, store) if incremental and row_wise(segments) else None
    scope, scope_size = None, None
    if moved is not None:
        scope = changed_customers(
            {name: (require_input(ctx, name), ctx.tables.read(ctx.spark, name, version=v)) for name, v in moved.items()}
        ).localCheckpoint()
        scope_size = scope.count()
        logger.info("segments run %s: %d changed customers in %s", ctx.run_id, scope_size, ", ".join(moved))
    return evaluate_and_write(
        ctx,
        segments,
        load_inputs(ctx, scope=scope),
        mode="batch",
        scope=scope,
        fault_hook=fault_hook,
        run_inputs=run_inputs,
        previous=previous,
        incremental=scope is not None,
        scope_size=scope_size,
    )


def membership_as_of_run(spark: SparkSession, tables: Tables, run_id: str) -> DataFrame:
    """segments.membership exactly as it stood after ``run_id`` (Delta time travel)."""
    row = tables.read(spark, RUNS).filter(F.col("run_id") == run_id).select("membership_version").first()
    if row is None:
        raise KeyError(f"run {run_id!r} is not recorded in {RUNS}")
    return tables.read(spark, MEMBERSHIP, version=int(row[0]))


def run(ctx: JobContext, *, fault_hook: FaultHook | None = None) -> dict[str, int]:
    """Pipeline step ``segments``: every definition in ``conf/segments``, batch mode."""
    segments = load_segments(ctx.project.conf_dir / "segments")
    if ctx.project.environment.engine == "embedded":
        from lakecdp.segments.embedded import evaluate_and_write_embedded, unsupported

        not_embedded = unsupported(segments)
        if not not_embedded and not ctx.tables.uses_catalog:
            return evaluate_and_write_embedded(ctx, segments, mode="batch", fault_hook=fault_hook)
        logger.warning(
            "engine: embedded cannot run %s, so this run uses Spark",
            f"segments of kinds without a SQL form ({not_embedded})" if not_embedded else "catalog tables",
        )
    return run_batch(ctx, segments, fault_hook=fault_hook)
