"""Membership history and change computation (DataFrame -> DataFrame, no IO).

- ``rekey_changes``: memberships of customers identity merged away move to the surviving
  id (``rekeyed``, ``previous_customer_id`` = the old id), never exit + entry.
- ``marked_keys`` then ``diff_changes``: current membership (after rekeying) vs this run's
  members, on keys first (one row per customer, its (segment, member key) pairs as an array,
  joined on customer_id); only the reasons a change needs are
  joined after -> ``entered`` / ``exited`` / ``updated`` rows with a deterministic ``change_id``.
- ``membership_upserts``: the membership rows one run's changes produce, keyed on
  (segment_id, customer_id, member_key, entered_run_id); applying them twice changes
  nothing, which is what makes a killed-and-re-run job end in the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakecdp import catalog

MEMBERSHIP_SCHEMA = catalog.MEMBERSHIP.ddl
CHANGES_SCHEMA = catalog.CHANGES.ddl
MEMBERSHIP_KEYS = catalog.MEMBERSHIP.keys
CHANGE_COLUMNS = tuple(part.split()[0] for part in CHANGES_SCHEMA.split(", "))
MEMBERSHIP_COLUMNS = tuple(part.split()[0] for part in MEMBERSHIP_SCHEMA.split(", "))
#: what a stay and a change are keyed on within a run
KEYS = ["segment_id", "customer_id", "member_key"]


def change_id(
    run_id: Column,
    segment_id: Column,
    customer_id: Column,
    member_key: Column,
    change_type: Column,
    previous_customer_id: Column,
) -> Column:
    """sha256 of run, segment, customer, key, type and previous customer (rekeys only)."""
    return F.sha2(
        F.concat_ws(
            "\u001f",
            run_id,
            segment_id,
            customer_id,
            member_key,
            change_type,
            F.coalesce(previous_customer_id, F.lit("")),
        ),
        256,
    )


def change_rows(df: DataFrame, *, run_id: str, as_of: datetime) -> DataFrame:
    """Finish change rows: run id, changed_at and change_id, in contract column order."""
    with_run = df.withColumn("run_id", F.lit(run_id)).withColumn("changed_at", F.lit(as_of).cast("timestamp"))
    with_id = with_run.withColumn(
        "change_id",
        change_id(
            F.col("run_id"),
            F.col("segment_id"),
            F.col("customer_id"),
            F.col("member_key"),
            F.col("change_type"),
            F.col("previous_customer_id"),
        ),
    )
    return with_id.select(*CHANGE_COLUMNS)


def resolve_merges(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """old -> surviving id, following chains (A->B, B->C gives A->C); cycles stop at the loop."""
    direct = {old: new for old, new in pairs if old and new and old != new}
    final: dict[str, str] = {}
    for old in direct:
        seen = {old}
        target = direct[old]
        while target in direct and target not in seen:
            seen.add(target)
            target = direct[target]
        final[old] = target
    return final


def rekey_changes(current: DataFrame, merges: DataFrame) -> DataFrame:
    """Rekeyed rows (without run columns) for current memberships of merged-away customers.

    Args:
        current: current membership rows (``is_current``).
        merges: ``old_customer_id, new_customer_id`` (chains already resolved).
    """
    moved = current.join(merges, current["customer_id"] == merges["old_customer_id"])
    return moved.select(
        "segment_id",
        F.col("new_customer_id").alias("customer_id"),
        "member_key",
        F.lit("rekeyed").alias("change_type"),
        F.col("old_customer_id").alias("previous_customer_id"),
        "reason",
    ).dropDuplicates(["segment_id", "customer_id", "member_key", "previous_customer_id"])


def effective_current(current: DataFrame, merges: DataFrame | None) -> DataFrame:
    """Current memberships as they stand after rekeying (one row per segment/customer/key).

    ``merges`` None: no customer was merged away; the open stays are already one per key (a
    stay opens only where none is open), so they are taken as they are."""
    if merges is None:
        return current.select(*KEYS, "reason")
    mapped = current.join(F.broadcast(merges), current["customer_id"] == merges["old_customer_id"], "left")
    return (
        mapped.withColumn("customer_id", F.coalesce(F.col("new_customer_id"), F.col("customer_id")))
        .select(*KEYS, "reason")
        .dropDuplicates(KEYS)
    )


def _maybe_broadcast(frame: DataFrame, small: bool) -> DataFrame:
    return F.broadcast(frame) if small else frame


def _keys_per_customer(rows: DataFrame, name: str) -> DataFrame:
    """One row per customer: the sorted (segment_id, member_key) pairs of ``rows`` as ``name``."""
    return rows.groupBy("customer_id").agg(
        F.array_sort(F.collect_set(F.struct("segment_id", "member_key"))).alias(name)
    )


def marked_keys(
    effective: DataFrame,
    candidates: DataFrame,
    *,
    update_segments: Iterable[str] = (),
) -> DataFrame:
    """The keys whose stay can change, on keys alone (no reason strings): ``_in_old`` (an open
    stay), ``_in_new`` (a member now); rows in one side only (entries, exits) and rows in both of
    an ``emit_updates`` segment (compared on their reasons by :func:`diff_changes`).

    The two sides are compared one row per customer (its keys as a sorted array, joined on
    ``customer_id``): customers whose keys are the same on both sides, and who are in no
    ``emit_updates`` segment, drop out before any key row is made.

    Args:
        effective: effective current membership (:func:`effective_current`), limited to the
            segments (and customers) this run evaluates.
        candidates: evaluation rows with ``status``; members are ``status = 'member'``.
    """
    old = _keys_per_customer(effective, "_old")
    new = _keys_per_customer(candidates.filter(F.col("status") == "member"), "_new")
    none = F.array().cast(old.schema["_old"].dataType)
    both = old.join(new, "customer_id", "full").select(
        "customer_id", F.coalesce("_old", none).alias("_old"), F.coalesce("_new", none).alias("_new")
    )
    update_list = sorted(set(update_segments))
    differs = F.col("_old") != F.col("_new")
    if update_list:
        differs = differs | F.exists("_new", lambda key: key["segment_id"].isin(update_list))
    keys = both.filter(differs).select(
        "customer_id", "_old", "_new", F.explode(F.array_union("_old", "_new")).alias("_key")
    )
    marked = keys.select(
        F.col("_key.segment_id").alias("segment_id"),
        "customer_id",
        F.col("_key.member_key").alias("member_key"),
        F.array_contains("_old", F.col("_key")).alias("_in_old"),
        F.array_contains("_new", F.col("_key")).alias("_in_new"),
    )
    return marked.filter((F.col("_in_old") != F.col("_in_new")) | F.col("segment_id").isin(update_list))


def diff_changes(
    marked: DataFrame | None,
    effective: DataFrame,
    candidates: DataFrame,
    *,
    small: bool = False,
) -> DataFrame:
    """entered / exited / updated rows (without run columns) from :func:`marked_keys`.

    Only the reasons a change needs are joined: the new reason of an entry or a possible update,
    the old reason of an exit (the rule it names) or a possible update.

    Args:
        marked: :func:`marked_keys` (materialised by the caller: it is read four times); None
            when there is no open stay (a first run): every member enters, no key is compared.
        effective: effective current membership with ``reason``, as given to :func:`marked_keys`.
        candidates: evaluation rows with ``status``.
        small: ``marked`` is small enough to broadcast to the joins that read reasons.
    """
    members = candidates.filter(F.col("status") == "member").select(*KEYS, F.col("reason").alias("new_reason"))
    if marked is None:
        return members.select(
            *KEYS,
            F.lit("entered").alias("change_type"),
            F.lit(None).cast("string").alias("previous_customer_id"),
            F.col("new_reason").alias("reason"),
        )
    entered = members.join(_maybe_broadcast(marked.filter(~F.col("_in_old")).select(*KEYS), small), KEYS).select(
        *KEYS,
        F.lit("entered").alias("change_type"),
        F.lit(None).cast("string").alias("previous_customer_id"),
        F.col("new_reason").alias("reason"),
    )
    stayed = _maybe_broadcast(marked.filter(F.col("_in_old")), small)
    old_reasons = (
        effective.join(stayed.select(*KEYS), KEYS)
        .select(*KEYS, F.col("reason").alias("old_reason"))
        .dropDuplicates(KEYS)
    )
    why_not = (
        candidates.filter(F.col("status") != "member")
        .select(*KEYS, F.col("status").alias("_status"), F.col("status_detail").alias("_detail"))
        .dropDuplicates(KEYS)
    )
    exit_reason = F.to_json(
        F.struct(
            F.get_json_object("old_reason", "$.rule").alias("rule"),
            F.coalesce(F.col("_status"), F.lit("no_longer_matches")).alias("exit"),
            F.col("_detail").alias("detail"),
        )
    )
    exited = (
        stayed.filter(~F.col("_in_new"))
        .select(*KEYS)
        .join(old_reasons, KEYS, "left")
        .join(why_not, KEYS, "left")
        .select(
            *KEYS,
            F.lit("exited").alias("change_type"),
            F.lit(None).cast("string").alias("previous_customer_id"),
            exit_reason.alias("reason"),
        )
    )
    updated = (
        members.join(stayed.filter(F.col("_in_new")).select(*KEYS), KEYS)
        .join(old_reasons, KEYS, "left")
        .filter(~F.col("old_reason").eqNullSafe(F.col("new_reason")))
        .select(
            *KEYS,
            F.lit("updated").alias("change_type"),
            F.lit(None).cast("string").alias("previous_customer_id"),
            F.col("new_reason").alias("reason"),
        )
    )
    return entered.unionByName(exited).unionByName(updated)


def compute_changes(
    current: DataFrame,
    merges: DataFrame,
    candidates: DataFrame,
    *,
    run_id: str,
    as_of: datetime,
    scope: DataFrame | None = None,
    update_segments: Iterable[str] = (),
) -> DataFrame:
    """All changes of one run as one lazy plan (``segments dry-run``; the job runs the same steps
    materialising the keys in between): rekeys first, then the diff against the rekeyed membership.

    Args:
        current: membership rows with ``is_current``, limited to the evaluated segments.
        merges: resolved ``old_customer_id -> new_customer_id``.
        candidates: evaluation rows (``evaluate_segments``).
        scope: optional ``customer_id`` rows; only these customers can enter or exit.
    """
    rekeyed = rekey_changes(current, merges)
    effective = effective_current(current, merges)
    if scope is not None:
        scope_ids = scope.select("customer_id").distinct()
        effective = effective.join(scope_ids, "customer_id", "left_semi")
        candidates = candidates.join(scope_ids, "customer_id", "left_semi")
    marked = marked_keys(effective, candidates, update_segments=update_segments)
    diff = diff_changes(marked, effective, candidates)
    return change_rows(rekeyed.unionByName(diff), run_id=run_id, as_of=as_of)


def opened_stays(changes: DataFrame) -> DataFrame:
    """The stays the entries among ``changes`` open (membership rows, ``MEMBERSHIP_COLUMNS``)."""
    return changes.filter(F.col("change_type") == "entered").select(
        *KEYS,
        F.col("changed_at").alias("entered_at"),
        F.lit(None).cast("timestamp").alias("exited_at"),
        F.col("run_id").alias("entered_run_id"),
        F.lit(None).cast("string").alias("exited_run_id"),
        "reason",
        F.lit(True).alias("is_current"),
    )


def membership_upserts(membership: DataFrame, changes: DataFrame, *, small: bool = False) -> DataFrame:
    """Membership rows (full rows, ``MEMBERSHIP_COLUMNS``) one run's changes produce.

    Closing and updating rows match *current* rows only, opening rows are keyed on the
    run id, so re-applying the same changes yields rows equal to what is stored.

    ``small``: ``changes`` are few enough to broadcast to the joins with the open stays (no
    shuffle of membership).
    """
    current = membership.filter(F.col("is_current"))
    keys = KEYS

    closing = (
        changes.filter(F.col("change_type").isin("exited", "rekeyed"))
        .select(
            "segment_id",
            F.when(F.col("change_type") == "rekeyed", F.col("previous_customer_id"))
            .otherwise(F.col("customer_id"))
            .alias("customer_id"),
            "member_key",
            F.col("run_id").alias("_run"),
            F.col("changed_at").alias("_at"),
        )
        .dropDuplicates(keys)
    )
    closed = current.join(_maybe_broadcast(closing, small), keys).select(
        *keys,
        "entered_at",
        F.col("_at").alias("exited_at"),
        "entered_run_id",
        F.col("_run").alias("exited_run_id"),
        "reason",
        F.lit(False).alias("is_current"),
    )

    updating = changes.filter(F.col("change_type") == "updated").select(*keys, F.col("reason").alias("_reason"))
    updated = current.join(_maybe_broadcast(updating, small), keys).select(
        *keys,
        "entered_at",
        "exited_at",
        "entered_run_id",
        "exited_run_id",
        F.col("_reason").alias("reason"),
        "is_current",
    )

    entered = opened_stays(changes)

    # the surviving customer keeps the stay's original entered_at; skip when already a member
    moved_from = current.select(
        "segment_id",
        F.col("customer_id").alias("previous_customer_id"),
        "member_key",
        F.col("entered_at").alias("_entered_at"),
    )
    # a stay moved and exited in the same run (the survivor no longer qualifies) lands closed
    exits = changes.filter(F.col("change_type") == "exited").select(
        *keys, F.col("changed_at").alias("_exited_at"), F.col("run_id").alias("_exited_run")
    )
    moved = (
        changes.filter(F.col("change_type") == "rekeyed")
        .join(moved_from, ["segment_id", "previous_customer_id", "member_key"])
        .join(current.select(*keys), keys, "left_anti")
        .groupBy(*keys)
        .agg(
            F.min("_entered_at").alias("entered_at"),
            F.first("run_id").alias("entered_run_id"),
            F.min("reason").alias("reason"),
        )
        .join(exits, keys, "left")
        .select(
            *keys,
            "entered_at",
            F.col("_exited_at").alias("exited_at"),
            "entered_run_id",
            F.col("_exited_run").alias("exited_run_id"),
            "reason",
            F.col("_exited_run").isNull().alias("is_current"),
        )
    )
    return closed.unionByName(updated).unionByName(entered).unionByName(moved).select(*MEMBERSHIP_COLUMNS)
