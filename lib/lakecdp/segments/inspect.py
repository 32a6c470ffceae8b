"""Guard rails for marketers: dry-run a set of segments, explain one customer's membership.

Neither writes anything. ``dry_run`` evaluates like the job and reports, per segment, the
size, the change since the current membership (entered / exited), the overlaps between
segments and a few sample members. ``explain`` says why a customer is in or out of one
segment, with each check of the rule and the feature values it read.

Example:
    >>> report = dry_run(ctx, segments, inputs)
    >>> print(format_dry_run(report))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timezone
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecdp.segments.changes import compute_changes
from lakecdp.segments.definitions import SegmentDefinition
from lakecdp.segments.evaluate import (
    SegmentInputs,
    customers_view,
    evaluate_segments,
    events_until,
)
from lakecdp.segments.guard import SqlRefused, conjuncts
from lakecdp.segments.plan_guard import guarded_columns
from lakecdp.segments.changes import MEMBERSHIP_SCHEMA
from lakecdp.segments.job import MEMBERSHIP, load_merges, size_changes

if TYPE_CHECKING:
    from lakecdp.context import JobContext


@dataclass
class SegmentReport:
    segment_id: str
    size: int
    previous_size: int
    entered: int = 0
    exited: int = 0
    rekeyed: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass
class DryRunReport:
    segments: dict[str, SegmentReport]
    # (segment_a, segment_b) -> customers in both, a < b, only pairs that overlap
    overlaps: dict[tuple[str, str], int]


def _current(ctx: JobContext) -> DataFrame:
    if ctx.tables.exists(ctx.spark, MEMBERSHIP):
        return ctx.tables.read(ctx.spark, MEMBERSHIP).filter(F.col("is_current"))
    return ctx.spark.createDataFrame([], MEMBERSHIP_SCHEMA)


def dry_run(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    inputs: SegmentInputs,
    *,
    sample_size: int = 5,
) -> DryRunReport:
    """Evaluate ``segments`` without writing; four small aggregates are collected."""
    ids = sorted(segments)
    candidates = evaluate_segments(ctx.spark, segments, inputs).localCheckpoint()
    current = _current(ctx).filter(F.col("segment_id").isin(ids))
    sizes = size_changes(current, candidates, ids)
    reports = {sid: SegmentReport(sid, size=sizes[sid].new_size, previous_size=sizes[sid].previous_size) for sid in ids}
    changes = compute_changes(current, load_merges(ctx), candidates, run_id="dry-run", as_of=inputs.as_of)
    for row in changes.groupBy("segment_id", "change_type").count().collect():
        report = reports[row["segment_id"]]
        if row["change_type"] in ("entered", "exited", "rekeyed"):
            setattr(report, row["change_type"], int(row["count"]))

    members = candidates.filter(F.col("status") == "member")
    ranked = members.withColumn(
        "_n", F.row_number().over(Window.partitionBy("segment_id").orderBy("customer_id", "member_key"))
    ).filter(F.col("_n") <= sample_size)
    for row in ranked.orderBy("segment_id", "_n").collect():
        label = row["customer_id"] + (f"/{row['member_key']}" if row["member_key"] else "")
        reports[row["segment_id"]].samples.append(label)

    people = members.select("segment_id", "customer_id").distinct()
    pairs = (
        people.alias("a")
        .join(people.alias("b"), F.col("a.customer_id") == F.col("b.customer_id"))
        .filter(F.col("a.segment_id") < F.col("b.segment_id"))
        .groupBy(F.col("a.segment_id").alias("a"), F.col("b.segment_id").alias("b"))
        .count()
        .collect()
    )
    overlaps = {(r["a"], r["b"]): int(r["count"]) for r in sorted(pairs, key=lambda r: (r["a"], r["b"]))}
    return DryRunReport(segments=reports, overlaps=overlaps)


def format_dry_run(report: DryRunReport) -> str:
    lines = [f"{'segment':<28} {'size':>8} {'before':>8} {'+in':>6} {'-out':>6} {'moved':>6}  sample"]
    for sid, r in report.segments.items():
        lines.append(
            f"{sid:<28} {r.size:>8} {r.previous_size:>8} {r.entered:>6} {r.exited:>6} {r.rekeyed:>6}  "
            + ", ".join(r.samples)
        )
    lines.append("overlaps (customers in both):")
    lines.extend(f"  {a} & {b}: {n}" for (a, b), n in report.overlaps.items())
    if not report.overlaps:
        lines.append("  none")
    return "\n".join(lines)


def _for_customer(inputs: SegmentInputs, customer_id: str) -> SegmentInputs:
    one = F.col("customer_id") == F.lit(customer_id)
    return SegmentInputs(
        profile=inputs.profile.filter(one),
        features=inputs.features.filter(one),
        events=inputs.events.filter(one),
        as_of=inputs.as_of,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def explain(
    ctx: JobContext,
    segments: dict[str, SegmentDefinition],
    inputs: SegmentInputs,
    *,
    customer_id: str,
    segment_id: str,
) -> dict[str, Any]:
    """Why ``customer_id`` is in or out of ``segment_id``, as a JSON-ready dict.

    Keys: ``in_segment``, ``status`` (member / expired / outranked / excluded /
    not_matched), ``detail``, ``rule``, ``checks`` (each part of the rule with its result),
    ``values`` (the feature or event values the rule read), ``membership`` (stored rows),
    ``recommendation_feedback`` (the customer's feedback keeping products or categories out
    of their recommendations, with ``suppressed_until``).
    """
    if segment_id not in segments:
        raise KeyError(f"unknown segment {segment_id!r}; known: {sorted(segments)}")
    definition = segments[segment_id]
    one = _for_customer(inputs, customer_id)
    spark = ctx.spark
    rows = (
        evaluate_segments(spark, segments, one)
        .filter(F.col("segment_id") == segment_id)
        .orderBy("member_key")
        .collect()
    )
    statuses = {r["member_key"]: (r["status"], r["status_detail"]) for r in rows}
    in_segment = any(status == "member" for status, _ in statuses.values())
    status = "member" if in_segment else (next(iter(statuses.values()))[0] if statuses else "not_matched")
    detail = next((d for s, d in statuses.values() if s == status and d), None)

    checks: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    if definition.condition is not None:
        parts = conjuncts(definition.condition)
        view = customers_view(one.profile, one.features, one.as_of)
        view.createOrReplaceTempView("customers")
        guarded = definition.guarded
        assert guarded is not None
        columns = [c for c in guarded.columns if c in view.columns]
        # each check is plan-checked like the segment itself (sqlglot wrote the parts' text)
        expressions = {f"check_{i}": part for i, part in enumerate(parts)}
        expressions.update({c: f"`{c}`" for c in columns})
        try:
            row = guarded_columns(spark, expressions, as_of=one.as_of).first()
        except SqlRefused as exc:
            raise exc.for_segment(segment_id) from None
        if row is None:
            checks.append({"check": "customer exists in gold.customer_profile", "result": False})
        else:
            checks.extend({"check": part, "result": row[f"check_{i}"]} for i, part in enumerate(parts))
            values = {c: _jsonable(row[c]) for c in columns}
    elif definition.event is not None:
        rule = definition.event
        events = events_until(one.events, one.as_of)
        start = one.as_of - rule.within
        trigger = events.filter(F.col("event_type").isin(list(rule.event_types)) & (F.col("occurred_at") > start))
        if rule.min_value is not None:
            trigger = trigger.filter(F.col("value") >= rule.min_value)
        if rule.product_ids:
            trigger = trigger.filter(F.col("product_id").isin(list(rule.product_ids)))
        found = trigger.agg(F.count(F.lit(1)).alias("n"), F.max("occurred_at").alias("last")).first()
        count, last = (found["n"], found["last"]) if found else (0, None)
        if last is not None and last.tzinfo is None:
            # Spark hands back session-time-zone (UTC) timestamps as naive datetimes
            last = last.replace(tzinfo=timezone.utc)
        checks.append(
            {
                "check": f"{'|'.join(rule.event_types)} events since {start.isoformat()} >= {rule.min_count}",
                "result": count >= rule.min_count,
            }
        )
        values.update({"trigger_events": count, "last_trigger_at": _jsonable(last)})
        for absence in rule.absent:
            window_start = one.as_of - (absence.within or rule.within)
            absent = events.filter(
                F.col("event_type").isin(list(absence.event_types)) & (F.col("occurred_at") > window_start)
            )
            if absence.since_last_trigger and last is not None:
                absent = absent.filter(F.col("occurred_at") >= F.lit(last))
            n = absent.count()
            label = "since the last trigger" if absence.since_last_trigger else f"since {window_start.isoformat()}"
            checks.append({"check": f"no {'|'.join(absence.event_types)} {label}", "result": n == 0})
            values[f"{'|'.join(absence.event_types)}_events"] = n
    else:
        checks.append({"check": "query returns the customer", "result": bool(statuses)})

    membership = [
        {k: _jsonable(v) for k, v in r.asDict().items()}
        for r in _current(ctx)
        .filter((F.col("segment_id") == segment_id) & (F.col("customer_id") == customer_id))
        .collect()
    ]
    # recommendation feedback in force (lakecdp.features.recommend): why a product is not offered
    held = (
        one.features.select("recommendation_feedback").first()
        if ("recommendation_feedback" in one.features.columns)
        else None
    )
    return {
        "customer_id": customer_id,
        "segment_id": segment_id,
        "as_of": one.as_of.isoformat(),
        "rule": definition.rule,
        "in_segment": in_segment,
        "status": status,
        "detail": detail,
        "member_keys": sorted(k for k, (s, _) in statuses.items() if s == "member" and k),
        "checks": checks,
        "values": values,
        "membership": membership,
        "recommendation_feedback": [{k: _jsonable(v) for k, v in f.asDict().items()} for f in (held[0] or [])]
        if held is not None
        else [],
    }


def format_explain(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)


__all__ = ["DryRunReport", "SegmentReport", "dry_run", "explain", "format_dry_run", "format_explain"]
