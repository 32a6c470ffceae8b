"""The segments step: evaluate every definition, write changes then membership, exactly once.

Write order and why:

1. ``segments.approvals``: segments whose size moved more than their
   ``hold_if_change_exceeds`` share are ``held`` *before* their changes become visible,
   so activation never sees a change it should have waited for.
2. ``segments.changes``: MERGE on the deterministic ``change_id`` (insert only), so a
   re-run of the same run adds nothing.
3. ``segments.membership``: the run's changes, read back from the table, applied with a
   MERGE keyed on (segment_id, customer_id, member_key, entered_run_id).
4. ``segments.runs``: the run is recorded as applied, with membership's Delta version
   (membership as of any run = time travel to that version). Membership is changed only
   with the changes this run computed (or, in recovery, a killed run's stored changes),
   never by re-applying an old run's changes over later ones.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.segments.changes import (
    compute_changes,
    membership_upserts,
    resolve_merges,
)
from lakecdp.segments.definitions import SegmentDefinition, load_segments
from lakecdp.segments.evaluate import SegmentInputs, evaluate_segments, resolve_events
from lakecdp.segments.writes import SparkWrites

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


def load_inputs(ctx: JobContext) -> SegmentInputs:
    """Profile, features and resolved events, as of the run's ``as_of``."""
    identifiers = read_or_empty(ctx, catalog.IDENTIFIERS.name, IDENTIFIERS_SCHEMA)
    events = read_or_empty(ctx, catalog.EVENTS.name, EVENTS_SCHEMA)
    return SegmentInputs(
        profile=require_input(ctx, catalog.CUSTOMER_PROFILE.name),
        features=require_input(ctx, catalog.CUSTOMER_FEATURES.name),
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
    if not ctx.tables.exists(ctx.spark, catalog.ID_CHANGES.name):
        return ctx.spark.createDataFrame([], MERGES_SCHEMA)
    rows = (
        ctx.tables.read(ctx.spark, catalog.ID_CHANGES.name)
        .filter((F.col("change_type") == "merge") & (F.col("old_customer_id") != F.col("new_customer_id")))
        .select("old_customer_id", "new_customer_id")
        .distinct()
        .collect()
    )
    final = resolve_merges((r["old_customer_id"], r["new_customer_id"]) for r in rows)
    return ctx.spark.createDataFrame(sorted(final.items()), MERGES_SCHEMA)


# -- applying changes ---------------------------------------------------------------


def apply_run(
    ctx: JobContext,
    run_id: str,
    changes: DataFrame,
    *,
    mode: str,
    segment_ids: list[str],
    as_of: datetime,
    change_count: int,
) -> None:
    """Apply one run's changes to membership, then record the run with membership's version.

    Applying the same changes again is a no-op (closing/updating match current rows only,
    opened rows are keyed on the run id), so a crash between the two writes is harmless.
    """
    spark, tables = ctx.spark, ctx.tables
    if change_count:
        upserts = membership_upserts(tables.read(spark, MEMBERSHIP), changes).localCheckpoint()
        SparkWrites(spark, tables).membership(upserts)
    version = tables.version(spark, MEMBERSHIP)
    record = spark.createDataFrame(
        [(run_id, mode, as_of, segment_ids, change_count, version, datetime.now(timezone.utc))], RUNS_SCHEMA
    )
    SparkWrites(spark, tables).run_record(record)


def recover_pending(ctx: JobContext) -> list[str]:
    """Apply changes of runs that were written but never recorded as applied (killed runs)."""
    spark, tables = ctx.spark, ctx.tables
    if not tables.exists(spark, RUNS):
        # no run finished yet: every run id in changes is pending
        applied = spark.createDataFrame([], "run_id string")
    else:
        applied = tables.read(spark, RUNS).select("run_id")
    pending = (
        tables.read(spark, CHANGES)
        .groupBy("run_id")
        .agg(F.min("changed_at").alias("as_of"), F.sort_array(F.collect_set("segment_id")).alias("segments"))
        .join(applied, "run_id", "left_anti")
        .orderBy("run_id")
        .collect()
    )
    for row in pending:
        logger.warning("run %s wrote changes but did not finish; applying them now", row["run_id"])
        stored = tables.read(spark, CHANGES).filter(F.col("run_id") == row["run_id"]).localCheckpoint()
        apply_run(
            ctx,
            row["run_id"],
            stored,
            mode="recovered",
            segment_ids=list(row["segments"]),
            as_of=row["as_of"],
            change_count=stored.count(),
        )
    return [row["run_id"] for row in pending]


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


def evaluate_and_write(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    inputs: SegmentInputs,
    *,
    mode: str = "batch",
    scope: DataFrame | None = None,
    all_segments: dict[str, SegmentDefinition] | None = None,
    fault_hook: FaultHook | None = None,
) -> dict[str, int]:
    """Evaluate ``segments`` and write approvals, changes, membership and the run record.

    Args:
        segments: the definitions to evaluate now.
        inputs: profile, features, resolved events, as_of.
        mode: recorded in segments.runs (``batch`` / ``stream``).
        scope: only these ``customer_id`` rows may enter or exit (streaming).
        all_segments: every definition, for groups and exclusions naming segments not
            evaluated now (their current members take part).
        fault_hook: called with ``"after_approvals"`` / ``"after_changes"`` between writes.

    Returns:
        Counts: segments, members, entered, exited, updated, rekeyed, held.
    """
    spark, tables = ctx.spark, ctx.tables
    ensure_tables(ctx)
    recovered = recover_pending(ctx)
    segment_ids = sorted(segments)

    membership = tables.read(spark, MEMBERSHIP)
    current = membership.filter(F.col("is_current") & F.col("segment_id").isin(segment_ids))
    other_ids = sorted(set(all_segments or {}) - set(segment_ids))
    other_members = None
    if other_ids:
        other_members = membership.filter(F.col("is_current") & F.col("segment_id").isin(other_ids))
        if scope is not None:
            other_members = other_members.join(scope.select("customer_id").distinct(), "customer_id", "left_semi")
    candidates = evaluate_segments(spark, segments, inputs, other_members=other_members, all_segments=all_segments)
    if scope is not None:
        candidates = candidates.join(scope.select("customer_id").distinct(), "customer_id", "left_semi")
    # materialised once: sizes, approvals and the diff all read the same evaluation
    candidates = candidates.localCheckpoint()

    changes = compute_changes(
        current,
        load_merges(ctx),
        candidates,
        run_id=ctx.run_id,
        as_of=inputs.as_of,
        scope=scope,
        update_segments=[sid for sid, d in segments.items() if d.emit_updates],
    ).localCheckpoint()
    per_segment = changes.groupBy("segment_id", "change_type").count().collect()
    by_type: dict[str, int] = {}
    for row in per_segment:
        by_type[row["change_type"]] = by_type.get(row["change_type"], 0) + int(row["count"])
    changed_segments = {row["segment_id"] for row in per_segment}

    counts: dict[str, int] = {"segments": len(segment_ids), "recovered_runs": len(recovered)}
    held: list[tuple[SizeChange, float]] = []
    if scope is None:
        sizes = size_changes(current, candidates, segment_ids)
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

    if by_type:
        SparkWrites(spark, tables).changes(changes)
    if fault_hook is not None:
        fault_hook("after_changes")
    apply_run(
        ctx,
        ctx.run_id,
        changes,
        mode=mode,
        segment_ids=segment_ids,
        as_of=inputs.as_of,
        change_count=sum(by_type.values()),
    )

    for change_type in ("entered", "exited", "updated", "rekeyed"):
        counts[change_type] = by_type.get(change_type, 0)
    counts["held"] = len(held)
    logger.info("segments run %s: %s", ctx.run_id, counts)
    return counts


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
    inputs = load_inputs(ctx)
    return evaluate_and_write(ctx, segments, inputs, mode="batch", fault_hook=fault_hook)
