"""Segment evaluation: inputs -> candidate rows with a status per (segment, customer, key).

Pipeline (DataFrame -> DataFrame, no IO):

1. ``resolve_events``: events get a ``customer_id`` through ``identity.identifiers``
   (customer_number first, then email, then device_id).
2. ``customers_view``: profile LEFT JOIN features plus the run's ``as_of`` as a column.
3. Each definition gives its raw matches with a reason JSON (rule + deciding values):
   SQL conditions/queries run over the views once the plan check accepts them
   (``plan_guard``), event rules are compiled to DataFrame code (their values become
   literals, never SQL text). Each segment runs within its time and row budget.
4. ``apply_policies``: expiry (days without activity), exclusive groups (highest priority
   wins), exclusions (not in segment Y, in dependency order). Rows are kept with a
   ``status`` (``member|expired|outranked|excluded``) so exits can say why.

Example:
    >>> candidates = evaluate_segments(spark, segments, inputs)
    >>> members = candidates.filter("status = 'member'")
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.columns import MissingColumnsError, require_columns
from lakecdp.segments.definitions import SegmentDefinition, SegmentLimits, exclusion_order
from lakecdp.segments.guard import SqlRefused
from lakecdp.segments.plan_guard import guarded_condition, guarded_query, guarded_row_condition, planning_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("segment_id", "customer_id", "member_key", "reason", "status", "status_detail")
MEMBER = "member"


@dataclass(frozen=True)
class SegmentInputs:
    """What a segment run reads. ``events`` already carry ``customer_id`` (see resolve_events)."""

    profile: DataFrame
    features: DataFrame
    events: DataFrame
    as_of: datetime


# -- inputs --------------------------------------------------------------------------


def resolve_events(events: DataFrame, identifiers: DataFrame) -> DataFrame:
    """Add ``customer_id`` to events via identifiers: customer_number, then email, then device_id.

    Events no identifier resolves keep ``customer_id`` null (anonymous visitors).
    """
    require_columns(events, ["event_id", "event_type", "occurred_at"], what=catalog.EVENTS.name)
    require_columns(identifiers, ["identifier_type", "identifier_value", "customer_id"], what=catalog.IDENTIFIERS.name)
    result = events
    resolved: list[Column] = []
    for identifier_type, column in (
        ("customer_number", "customer_number"),
        ("email", "email"),
        ("device_id", "device_id"),
    ):
        if column not in events.columns:
            continue
        alias = f"_cid_{identifier_type}"
        lookup = identifiers.filter(F.col("identifier_type") == identifier_type).select(
            F.col("identifier_value").alias(f"_val_{identifier_type}"),
            F.col("customer_id").alias(alias),
        )
        result = result.join(lookup, result[column] == lookup[f"_val_{identifier_type}"], "left").drop(
            f"_val_{identifier_type}"
        )
        resolved.append(F.col(alias))
    if "customer_id" in events.columns:
        resolved.insert(0, F.col("customer_id"))
        result = result.withColumnRenamed("customer_id", "_cid_given")
        resolved[0] = F.col("_cid_given")
    out = result.withColumn("customer_id", F.coalesce(*resolved) if resolved else F.lit(None).cast("string"))
    return out.drop(*[c for c in out.columns if c.startswith("_cid_")])


# Names segment authors use for values gold.customer_features holds under another name or
# type: name -> (source column, how it is derived). Added only when features lack the name.
VIEW_ALIASES: dict[str, tuple[str, str]] = {
    # the calendar day (UTC) of the last completed order, to compare with CURRENT_DATE
    "last_purchase_date": ("last_purchase_at", "date"),
}


def customers_view(profile: DataFrame, features: DataFrame, as_of: datetime) -> DataFrame:
    """Profile LEFT JOIN features on customer_id, with the run's ``as_of`` as a column.

    Also the :data:`VIEW_ALIASES` (``last_purchase_date``), so the rules marketers write
    (``last_purchase_date > CURRENT_DATE - INTERVAL '30 days' AND total_spent > 500``) run
    as written.
    """
    require_columns(profile, ["customer_id"], what=catalog.CUSTOMER_PROFILE.name)
    require_columns(features, ["customer_id"], what=catalog.CUSTOMER_FEATURES.name)
    profile_part = profile.drop("run_id", "as_of")
    feature_cols = [c for c in features.columns if c not in ("run_id", "as_of") and c not in profile_part.columns]
    joined = profile_part.join(features.select("customer_id", *feature_cols), "customer_id", "left")
    for alias, (source, data_type) in VIEW_ALIASES.items():
        if source in joined.columns and alias not in joined.columns:
            joined = joined.withColumn(alias, F.col(source).cast(data_type))
    return joined.withColumn("as_of", F.lit(as_of).cast("timestamp"))


#: columns of profile and features the segment views leave out (:func:`customers_view`): never compared
_NOT_IN_VIEWS = ("run_id", "as_of")


def changed_customers(moved: dict[str, tuple[DataFrame, DataFrame]]) -> DataFrame:
    """``customer_id`` of the customers whose row in a moved table differs between its previous
    version and now (added, removed or any column the segment views see changed): the Spark twin
    of :func:`lakecdp.segments.run_state.changed_customers`, with the same rows.

    Args:
        moved: table name -> (rows now, rows at the previous run's version).
    """
    parts: list[DataFrame] = []
    for now, then in moved.values():
        now_fields = [(f.name, f.dataType) for f in now.schema.fields if f.name not in _NOT_IN_VIEWS]
        then_fields = [(f.name, f.dataType) for f in then.schema.fields if f.name not in _NOT_IN_VIEWS]
        columns = [name for name, _ in now_fields]
        if now_fields != then_fields or "customer_id" not in columns:
            # a column appeared, went or changed type: every customer's view row may differ
            parts.append(now.select("customer_id").unionByName(then.select("customer_id")))
            continue
        n, t = now.select(*columns).alias("n"), then.select(*columns).alias("t")
        differs = F.col("n.customer_id").isNull() | F.col("t.customer_id").isNull()
        for column in columns:
            if column != "customer_id":
                differs = differs | ~F.col(f"n.`{column}`").eqNullSafe(F.col(f"t.`{column}`"))
        # a customer whose rows differ: on one side only, or some pair of its rows (one per
        # version) differs in a column (duplicate rows of a customer make it count as changed)
        joined = n.join(t, F.col("n.customer_id").eqNullSafe(F.col("t.customer_id")), "full")
        parts.append(
            joined.filter(differs).select(
                F.coalesce(F.col("n.customer_id"), F.col("t.customer_id")).alias("customer_id")
            )
        )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.distinct()


def events_until(events: DataFrame, as_of: datetime) -> DataFrame:
    """Resolved events up to ``as_of`` (later ones belong to a later run)."""
    return events.filter(F.col("customer_id").isNotNull() & (F.col("occurred_at") <= F.lit(as_of).cast("timestamp")))


def register_views(spark: SparkSession, inputs: SegmentInputs) -> None:
    """Temp views the segment SQL reads: customers, profile, features, events."""
    customers_view(inputs.profile, inputs.features, inputs.as_of).createOrReplaceTempView("customers")
    inputs.profile.createOrReplaceTempView("profile")
    inputs.features.createOrReplaceTempView("features")
    events_until(inputs.events, inputs.as_of).createOrReplaceTempView("events")


# -- one segment ---------------------------------------------------------------------


def _reason(rule: str, values: Column) -> Column:
    return F.to_json(F.struct(F.lit(rule).alias("rule"), values.alias("values")))


def sql_segment_matches(spark: SparkSession, definition: SegmentDefinition, as_of: datetime) -> DataFrame:
    """Raw matches of a condition/query segment (views must be registered).

    The SQL goes through the plan check first (:mod:`lakecdp.segments.plan_guard`): a
    refusal raises before anything runs. ``CURRENT_DATE`` / ``now()`` read ``as_of``.

    Raises:
        SqlRefused: naming the segment, with line, column and reason.
    """
    try:
        # the plan check first: it decides, whatever the definition went through before
        if definition.condition is not None:
            matches = guarded_condition(spark, definition.condition, as_of=as_of)
        else:
            result = guarded_query(spark, definition.query or "", as_of=as_of)
        # the sqlglot reading: which columns the reason JSON shows
        guarded = definition.guarded
    except SqlRefused as exc:
        raise exc.for_segment(definition.id) from None
    assert guarded is not None
    if definition.condition is not None:
        deciding = [c for c in guarded.columns if c in matches.columns and c != "customer_id"]
        values = F.struct(*[F.col(c) for c in deciding]) if deciding else F.struct()
        return matches.select(
            F.col("customer_id"), F.lit("").alias("member_key"), _reason(definition.rule, values).alias("reason")
        )
    if "customer_id" not in result.columns:
        raise MissingColumnsError(
            f"segment {definition.id}: query must return a customer_id column, returns {result.columns}"
        )
    key = F.coalesce(F.col("member_key").cast("string"), F.lit("")) if "member_key" in result.columns else F.lit("")
    extra = [c for c in result.columns if c not in ("customer_id", "member_key")]
    values = F.struct(*[F.col(c) for c in extra]) if extra else F.struct()
    return (
        result.filter(F.col("customer_id").isNotNull())
        .select(
            F.col("customer_id").cast("string").alias("customer_id"),
            key.alias("member_key"),
            _reason(definition.rule, values).alias("reason"),
        )
        .dropDuplicates(["customer_id", "member_key"])
    )


class SegmentBudgetExceeded(RuntimeError):
    """A segment ran longer, or produced more rows, than its ``limits`` allow."""


_JOB_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


def warn_if_every_customer(log: logging.Logger, segment_id: str, matched: int, customers_total: int) -> None:
    """A WARNING on ``log`` (the engine's) when a segment matches every customer: a rule that is
    always true is most likely a mistake."""
    if matched >= customers_total:
        log.warning(
            "segment %s matches every customer (%d of %d, 100%%): check its rule", segment_id, matched, customers_total
        )


class _TimedOut(RuntimeError):
    """A job group's time ran out; its Spark jobs were cancelled."""


def _materialise_in_group(
    spark: SparkSession, frame: DataFrame, *, label: str, max_seconds: float
) -> tuple[DataFrame, int]:
    """``frame`` computed once (``localCheckpoint``) and counted, in its own Spark job group; a
    timer cancels the group (interrupting its tasks) when ``max_seconds`` pass (:class:`_TimedOut`)."""
    context = spark.sparkContext
    group = f"lakecdp-{label}-{uuid.uuid4().hex[:8]}"
    previous = {key: context.getLocalProperty(key) for key in _JOB_PROPERTIES}
    timed_out = threading.Event()

    def cancel() -> None:
        timed_out.set()
        context.cancelJobGroup(group)

    timer = threading.Timer(max_seconds, cancel)
    context.setJobGroup(group, label, interruptOnCancel=True)
    timer.start()
    try:
        materialised = frame.localCheckpoint(eager=True)
        rows = materialised.count()
    except Exception as exc:
        if timed_out.is_set():
            raise _TimedOut(label) from exc
        raise
    finally:
        timer.cancel()
        for key, value in previous.items():
            context.setLocalProperty(key, value)  # type: ignore[arg-type]
    return materialised, rows


def _over_row_budget(segment_id: str, rows: int, limits: SegmentLimits) -> SegmentBudgetExceeded:
    return SegmentBudgetExceeded(
        f"segment {segment_id}: produced {rows} rows, more than its row budget of {limits.max_rows} (limits.max_rows)"
    )


def materialise_within_budget(
    spark: SparkSession, matches: DataFrame, *, segment_id: str, limits: SegmentLimits
) -> tuple[DataFrame, int]:
    """Compute one segment's matches once, within its time and row budget.

    The work runs in its own Spark job group; a timer cancels the group (interrupting its
    tasks) when ``limits.max_seconds`` pass.

    Returns:
        The materialised matches and their row count.

    Raises:
        SegmentBudgetExceeded: naming the segment and the budget it exceeded.
    """
    try:
        materialised, rows = _materialise_in_group(
            spark, matches, label=f"segment {segment_id}", max_seconds=limits.max_seconds
        )
    except _TimedOut as exc:
        raise SegmentBudgetExceeded(
            f"segment {segment_id}: ran longer than its time budget of {limits.max_seconds:g} s "
            "(limits.max_seconds); its Spark jobs were cancelled"
        ) from exc
    if rows > limits.max_rows:
        raise _over_row_budget(segment_id, rows, limits)
    return materialised, rows


def check_segments(
    spark: SparkSession, segments: dict[str, SegmentDefinition], inputs: SegmentInputs
) -> dict[str, SqlRefused]:
    """Plan-check every SQL segment against the views of ``inputs``; nothing is executed.

    Returns:
        segment id -> refusal (line, column, reason) for each segment the plan check refuses.
    """
    register_views(spark, inputs)
    refused: dict[str, SqlRefused] = {}
    for segment_id, definition in segments.items():
        if not definition.spec.reads_views:
            continue
        try:
            definition.spec.spark_matches(spark, definition, events=inputs.events, as_of=inputs.as_of)
        except SqlRefused as exc:
            refused[segment_id] = exc
    return refused


def event_segment_matches(events: DataFrame, definition: SegmentDefinition, as_of: datetime) -> DataFrame:
    """Raw matches of an event-triggered segment, compiled from the validated rule.

    ``events`` are resolved events up to as_of (``events_until``).
    """
    rule = definition.event
    assert rule is not None
    now = F.lit(as_of).cast("timestamp")

    def since(window: timedelta) -> Column:
        return F.col("occurred_at") > now - F.expr(f"INTERVAL {int(window.total_seconds())} SECONDS")

    trigger = F.col("event_type").isin(list(rule.event_types)) & since(rule.within)
    if rule.min_value is not None:
        trigger = trigger & (F.col("value") >= F.lit(rule.min_value))
    if rule.product_ids:
        trigger = trigger & F.col("product_id").isin(list(rule.product_ids))
    if rule.categories:
        trigger = trigger & F.col("category").isin(list(rule.categories))
    key = F.col("product_id") if rule.per_product else F.lit("")
    triggered = events.filter(trigger)
    if rule.per_product:
        triggered = triggered.filter(F.col("product_id").isNotNull())
    matches = (
        triggered.groupBy("customer_id", key.alias("member_key"))
        .agg(
            F.count(F.lit(1)).alias("event_count"),
            F.max("occurred_at").alias("last_event_at"),
            F.max("value").alias("max_value"),
        )
        .filter(F.col("event_count") >= rule.min_count)
    )
    for absence in rule.absent:
        absent_events = events.filter(
            F.col("event_type").isin(list(absence.event_types)) & since(absence.within or rule.within)
        )
        if absence.since_last_trigger:
            last_absent = absent_events.groupBy("customer_id").agg(F.max("occurred_at").alias("_absent_at"))
            matches = (
                matches.join(last_absent, "customer_id", "left")
                .filter(F.col("_absent_at").isNull() | (F.col("_absent_at") < F.col("last_event_at")))
                .drop("_absent_at")
            )
        else:
            matches = matches.join(absent_events.select("customer_id").distinct(), "customer_id", "left_anti")
    values = F.struct(
        "event_count",
        "last_event_at",
        *(["max_value"] if rule.min_value is not None else []),
    )
    return matches.select("customer_id", "member_key", _reason(definition.rule, values).alias("reason"))


# -- all segments --------------------------------------------------------------------


def last_activity(inputs: SegmentInputs) -> DataFrame:
    """customer_id -> last_activity_at: latest resolved event or features.last_activity_at."""
    from_events = (
        events_until(inputs.events, inputs.as_of).groupBy("customer_id").agg(F.max("occurred_at").alias("_event_at"))
    )
    if "last_activity_at" in inputs.features.columns:
        from_features = inputs.features.select("customer_id", F.col("last_activity_at").alias("_feature_at"))
        joined = from_events.join(from_features, "customer_id", "full")
        return joined.select("customer_id", F.greatest("_event_at", "_feature_at").alias("last_activity_at"))
    return from_events.withColumnRenamed("_event_at", "last_activity_at")


def _condition_reason(definition: SegmentDefinition, columns: list[str]) -> Column:
    """The reason JSON of a condition segment's match: its rule and the columns its text names
    (as :func:`sql_segment_matches` writes it)."""
    guarded = definition.guarded
    assert guarded is not None
    deciding = [c for c in guarded.columns if c in columns and c != "customer_id"]
    return _reason(definition.rule, F.struct(*[F.col(c) for c in deciding]) if deciding else F.struct())


def _row_conditions(spark: SparkSession, segments: dict[str, SegmentDefinition], as_of: datetime) -> dict[str, Column]:
    """The condition segments that read their customer's own row only, as plan-checked Columns
    (:func:`~lakecdp.segments.plan_guard.guarded_row_condition`); the others are left out."""
    conditions: dict[str, Column] = {}
    planner = None
    for segment_id, definition in segments.items():
        if definition.condition is None:
            continue
        if planner is None:
            # one planning session for every condition of the run (a clone per check cost more than the check)
            planner = planning_session(spark)
        try:
            # the plan check first: it decides, whatever the definition went through before
            column = guarded_row_condition(spark, definition.condition, as_of=as_of, planner=planner)
            # the sqlglot reading: the reason's columns, and whether it has a subquery
            guarded = definition.guarded
        except SqlRefused as exc:
            raise exc.for_segment(segment_id) from None
        if guarded is not None and not guarded.subquery:
            conditions[segment_id] = column
    return conditions


def _one_pass_matches(
    spark: SparkSession, segments: dict[str, SegmentDefinition], conditions: dict[str, Column]
) -> tuple[DataFrame, dict[str, int], int] | None:
    """Every condition of ``conditions`` evaluated in one pass over ``customers``, materialised once.

    One row per customers row: ``customer_id`` and ``_matched``, an array of (segment_id, reason)
    of the segments it meets. The pass runs within the smallest time budget of these segments
    (each segment alone would take less than all of them together); then each segment's row
    count is checked against its own row budget.

    Returns:
        The materialised rows, rows per segment and customers rows; None when the pass ran out
        of time (the caller runs each segment alone within its own budget, which names it).

    Raises:
        SegmentBudgetExceeded: a segment produced more rows than its row budget (named).
    """
    customers = spark.table("customers")
    matched = F.array(
        *[
            F.when(
                condition,
                F.struct(
                    F.lit(sid).alias("segment_id"), _condition_reason(segments[sid], customers.columns).alias("reason")
                ),
            )
            for sid, condition in conditions.items()
        ]
    )
    frame = customers.select(
        F.col("customer_id").cast("string").alias("customer_id"), F.array_compact(matched).alias("_matched")
    )
    max_seconds = min(segments[sid].limits.max_seconds for sid in conditions)
    try:
        evaluated, customers_total = _materialise_in_group(
            spark, frame, label=f"segments {len(conditions)} conditions in one pass", max_seconds=max_seconds
        )
    except _TimedOut:
        logger.warning(
            "the %d row-wise conditions did not finish in one pass within %g s (the smallest time budget "
            "among them); each runs alone within its own budget",
            len(conditions),
            max_seconds,
        )
        return None
    counted = {
        row["segment_id"]: int(row["count"])
        for row in evaluated.select(F.explode("_matched").alias("m")).groupBy("m.segment_id").count().collect()
    }
    for sid in conditions:
        rows = counted.get(sid, 0)
        if rows > segments[sid].limits.max_rows:
            raise _over_row_budget(sid, rows, segments[sid].limits)
    return evaluated, counted, customers_total


def raw_matches(spark: SparkSession, segments: dict[str, SegmentDefinition], inputs: SegmentInputs) -> DataFrame:
    """Union of every segment's raw matches as (segment_id, customer_id, member_key, reason).

    Every SQL segment is plan-checked over the lazy views before any Spark job starts. Conditions
    that read their customer's own row only are then evaluated together, in one pass over
    ``customers`` (:func:`_one_pass_matches`; ``customers`` is read once when other segments read
    it too); every other segment (queries, event rules,
    conditions with a subquery), and the conditions again one by one when that pass runs out of
    time, is computed once within its own budget (``limits``). A segment that matches every
    customer is logged as a warning (usually a rule that went wrong).
    """
    needs_views = any(d.spec.reads_views for d in segments.values())
    if needs_views:
        register_views(spark, inputs)
    events = events_until(inputs.events, inputs.as_of)
    # every segment plan-checked over the lazy views first: a refusal raises before any Spark job
    conditions = _row_conditions(spark, segments, inputs.as_of) if needs_views else {}
    planned: dict[str, DataFrame] = {}
    for segment_id, definition in segments.items():
        if segment_id in conditions:
            continue
        # the kind computes its matches (lakecdp.segments.kinds)
        planned[segment_id] = definition.spec.spark_matches(spark, definition, events=events, as_of=inputs.as_of)
    others_read_views = [sid for sid in planned if segments[sid].spec.reads_views]
    if conditions and others_read_views:
        # then the customers rows read once, for the one pass and the other segments that read
        # the views (planned again over these rows: the same text and plan check, no Delta scan)
        spark.table("customers").localCheckpoint().createOrReplaceTempView("customers")
        for segment_id in others_read_views:
            definition = segments[segment_id]
            planned[segment_id] = definition.spec.spark_matches(spark, definition, events=events, as_of=inputs.as_of)
    parts: list[DataFrame] = []
    customers_total: int | None = None
    if conditions:
        one_pass = _one_pass_matches(spark, segments, conditions)
        if one_pass is None:
            for segment_id in conditions:
                definition = segments[segment_id]
                planned[segment_id] = definition.spec.spark_matches(
                    spark, definition, events=events, as_of=inputs.as_of
                )
        else:
            evaluated, counted, customers_total = one_pass
            matches = evaluated.select("customer_id", F.explode("_matched").alias("m"))
            for segment_id, rows in counted.items():
                if customers_total and rows >= customers_total:
                    matched = (
                        matches.filter(F.col("m.segment_id") == segment_id).select("customer_id").distinct().count()
                    )
                    warn_if_every_customer(logger, segment_id, matched, customers_total)
            parts.append(matches.select("m.segment_id", "customer_id", F.lit("").alias("member_key"), "m.reason"))
    if customers_total is None and needs_views and planned:
        customers_total = spark.table("customers").count()
    for segment_id, part in planned.items():
        part, rows = materialise_within_budget(spark, part, segment_id=segment_id, limits=segments[segment_id].limits)
        if customers_total and rows >= customers_total:
            warn_if_every_customer(logger, segment_id, part.select("customer_id").distinct().count(), customers_total)
        parts.append(part.select(F.lit(segment_id).alias("segment_id"), "customer_id", "member_key", "reason"))
    if not parts:
        return spark.createDataFrame([], "segment_id string, customer_id string, member_key string, reason string")
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def apply_policies(
    matches: DataFrame,
    segments: dict[str, SegmentDefinition],
    *,
    activity: DataFrame | None,
    as_of: datetime,
    other_members: DataFrame | None = None,
    evaluated: Iterable[str] | None = None,
) -> DataFrame:
    """Expiry, exclusive groups and exclusions -> one candidate row per match with a status.

    Args:
        matches: raw matches (segment_id, customer_id, member_key, reason).
        segments: the definitions evaluated (and any they refer to).
        activity: customer_id -> last_activity_at (needed when a segment has expiry).
        other_members: current members of segments not evaluated in this run (streaming
            evaluates event segments only); they take part in groups and exclusions and
            are dropped from the result.
        evaluated: the segments in ``matches`` (default: all of ``segments``); expiry
            applies to these only.

    Returns:
        Rows of ``CANDIDATE_COLUMNS``; ``status`` is member / expired / outranked / excluded.
    """
    rows = matches.withColumn("status", F.lit(MEMBER)).withColumn("status_detail", F.lit(None).cast("string"))
    rows = rows.withColumn("_external", F.lit(False))
    if other_members is not None:
        rows = rows.unionByName(
            other_members.select(
                "segment_id",
                "customer_id",
                "member_key",
                F.lit(None).cast("string").alias("reason"),
                F.lit(MEMBER).alias("status"),
                F.lit(None).cast("string").alias("status_detail"),
                F.lit(True).alias("_external"),
            )
        )

    evaluated_ids = set(segments if evaluated is None else evaluated)
    expiring = {sid: d.expire_after_days for sid, d in segments.items() if d.expire_after_days and sid in evaluated_ids}
    if expiring:
        if activity is None:
            raise ValueError("segments with expire_after_days need the activity DataFrame")
        days = F.lit(None).cast("int")
        for sid, n in sorted(expiring.items()):
            days = F.when(F.col("segment_id") == sid, F.lit(n)).otherwise(days)
        rows = rows.join(activity, "customer_id", "left").withColumn("_days", days)
        expired = (
            F.col("_days").isNotNull()
            & ~F.col("_external")
            & (
                F.col("last_activity_at").isNull()
                | (F.col("last_activity_at") < F.lit(as_of).cast("timestamp") - F.make_interval(days=F.col("_days")))
            )
        )
        rows = rows.withColumn("status", F.when(expired, F.lit("expired")).otherwise(F.col("status")))
        rows = rows.withColumn(
            "status_detail",
            F.when(
                expired,
                F.concat(
                    F.lit("no activity for "),
                    F.col("_days").cast("string"),
                    F.lit(" days; last at "),
                    F.coalesce(F.col("last_activity_at").cast("string"), F.lit("never")),
                ),
            ).otherwise(F.col("status_detail")),
        ).drop("_days", "last_activity_at")

    grouped = {sid: (d.group, d.priority) for sid, d in segments.items() if d.group}
    if grouped:
        group_col = F.lit(None).cast("string")
        priority_col = F.lit(None).cast("int")
        for sid, (group, priority) in sorted(grouped.items()):
            group_col = F.when(F.col("segment_id") == sid, F.lit(group)).otherwise(group_col)
            priority_col = F.when(F.col("segment_id") == sid, F.lit(priority)).otherwise(priority_col)
        rows = rows.withColumn("_group", group_col).withColumn("_priority", priority_col)
        window = Window.partitionBy("_group", "customer_id").orderBy(F.col("_priority").desc(), F.col("segment_id"))
        ranked = rows.withColumn(
            "_winner",
            F.when(
                F.col("_group").isNotNull() & (F.col("status") == MEMBER),
                F.first(F.when(F.col("status") == MEMBER, F.col("segment_id")), ignorenulls=True).over(
                    window.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
                ),
            ),
        )
        outranked = F.col("_winner").isNotNull() & (F.col("_winner") != F.col("segment_id"))
        rows = ranked.withColumn("status", F.when(outranked, F.lit("outranked")).otherwise(F.col("status")))
        rows = rows.withColumn(
            "status_detail",
            F.when(
                outranked,
                F.concat(F.lit("group "), F.col("_group"), F.lit(": higher-priority segment "), F.col("_winner")),
            ).otherwise(F.col("status_detail")),
        ).drop("_group", "_priority", "_winner")

    known = {sid: d for sid, d in segments.items()}
    for level in exclusion_order(known):
        pairs = [(sid, other) for sid in level for other in known[sid].exclude]
        if not pairs:
            continue
        excluders = sorted({other for _, other in pairs})
        blockers = (
            rows.filter((F.col("status") == MEMBER) & F.col("segment_id").isin(excluders))
            .select(F.col("customer_id").alias("_b_customer"), F.col("segment_id").alias("_b_segment"))
            .distinct()
        )
        rule_pairs = rows.sparkSession.createDataFrame(pairs, "_r_segment string, _r_excluded_by string")
        blocked = (
            blockers.join(rule_pairs, F.col("_b_segment") == F.col("_r_excluded_by"))
            .groupBy(F.col("_r_segment").alias("_x_segment"), F.col("_b_customer").alias("_x_customer"))
            .agg(F.array_join(F.array_sort(F.collect_set("_b_segment")), ",").alias("_x_by"))
        )
        rows = rows.join(
            blocked,
            (F.col("segment_id") == F.col("_x_segment")) & (F.col("customer_id") == F.col("_x_customer")),
            "left",
        )
        is_blocked = F.col("_x_by").isNotNull() & (F.col("status") == MEMBER) & ~F.col("_external")
        rows = rows.withColumn(
            "status_detail",
            F.when(is_blocked, F.concat(F.lit("excluded by "), F.col("_x_by"))).otherwise(F.col("status_detail")),
        )
        rows = rows.withColumn("status", F.when(is_blocked, F.lit("excluded")).otherwise(F.col("status")))
        rows = rows.drop("_x_segment", "_x_customer", "_x_by")

    return rows.filter(~F.col("_external")).select(*CANDIDATE_COLUMNS)


def evaluate_segments(
    spark: SparkSession,
    segments: dict[str, SegmentDefinition],
    inputs: SegmentInputs,
    *,
    other_members: DataFrame | None = None,
    all_segments: dict[str, SegmentDefinition] | None = None,
) -> DataFrame:
    """Raw matches + policies for ``segments`` (see module docstring).

    Args:
        all_segments: every definition (for groups/exclusions that name segments not
            evaluated now); defaults to ``segments``.
    """
    matches = raw_matches(spark, segments, inputs)
    needs_activity = any(d.expire_after_days for d in segments.values())
    activity = last_activity(inputs) if needs_activity else None
    policy_segments = dict(all_segments or segments)
    return apply_policies(
        matches,
        policy_segments,
        activity=activity,
        as_of=inputs.as_of,
        other_members=other_members,
        evaluated=list(segments),
    )
