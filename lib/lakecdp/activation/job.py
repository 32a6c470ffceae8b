"""The activation step: ``lakecdp.activation.job:run``.

1. rebuild ``activation.suppressions`` from events, consent, erasures and the identity graph
   (reused as is when its inputs' Delta versions and ``as_of`` are those it was built from);
2. read ``segments.changes`` not yet handled by each configured destination (not in
   ``activation.deliveries``, and not failed in ``retry.max_runs`` runs already: rejected and
   dead-lettered changes are tried again by the next runs), leaving out segments held back for
   approval;
3. record suppressed changes (status ``suppressed``; they never reach a payload);
4. deliver the rest to every destination, writing the ledger after each successful batch.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType

from lakecdp import catalog
from lakecdp.activation import ledger, suppression
from lakecdp.activation.embedded import ERASABLE_TYPES
from lakecdp.activation.config import (
    PROFILE_FIELDS,
    AnyDestination,
    WebhookSettings,
    env_references,
    load_destinations,
    max_delivery_runs,
)
from lakecdp.config import ConfigError
from lakecdp.activation.files import safe_path_part, write_export
from lakecdp.activation.webhook import Finalised, WebhookClient, to_json

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from lakecdp.delta_store import DeltaStore

    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

CHANGES = catalog.CHANGES.name
PROFILE = catalog.CUSTOMER_PROFILE.name
CHANGE_COLUMNS = (
    "change_id",
    "idempotency_key",
    "segment_id",
    "customer_id",
    "member_key",
    "change_type",
    "changed_at",
)
APPROVALS = catalog.APPROVALS.name
IDENTIFIER_TYPES = ERASABLE_TYPES

Row = dict[str, Any]


# -- transformations ------------------------------------------------------------------
def with_profile(changes: DataFrame, profile: DataFrame | None) -> DataFrame:
    """Adds the profile columns a payload may use, plus ``emails``/``phones`` for suppression."""
    wanted = sorted(PROFILE_FIELDS)
    if profile is None:
        extra = [F.lit(None).cast(DateType() if c == "date_of_birth" else StringType()).alias(c) for c in wanted]
        empty = F.lit(None).cast("array<string>")
        return changes.select("*", *extra, empty.alias("emails"), empty.alias("phones"))
    columns = profile.select("customer_id", *wanted, "emails", "phones")
    return changes.join(columns, "customer_id", "left")


def pending_for_destinations(
    items: DataFrame, destinations: DataFrame, handled: DataFrame, failures: DataFrame
) -> DataFrame:
    """Items per destination (its segment and change-type filters), minus handled keys and
    minus keys that already failed in ``max_runs`` runs; adds ``failed_runs`` (runs so far).

    Args:
        destinations: ``destination, d_segments, d_change_types, max_runs``.
        handled: ``idempotency_key`` never to send again (delivered, suppressed).
        failures: ``idempotency_key, failed_runs`` (see :func:`ledger.failed_runs`).
    """
    matches = ((F.size("d_segments") == 0) | F.array_contains("d_segments", F.col("segment_id"))) & F.array_contains(
        "d_change_types", F.col("change_type")
    )
    return (
        items.crossJoin(destinations)
        .where(matches)
        .withColumn(
            "idempotency_key",
            F.sha2(F.concat(F.col("destination"), F.lit("\x1f"), F.col("change_id")), 256),
        )
        .join(handled, "idempotency_key", "left_anti")
        .join(failures.select("idempotency_key", "failed_runs"), "idempotency_key", "left")
        .withColumn("failed_runs", F.coalesce(F.col("failed_runs"), F.lit(0)))
        .where(F.col("failed_runs") < F.col("max_runs"))
        .drop("d_segments", "d_change_types", "max_runs")
    )


# -- reading ---------------------------------------------------------------------------
_exists = ledger.table_exists


def _version(ctx: JobContext, name: str) -> int | None:
    store = ledger.delta_store(ctx)
    return store.version_or_none(name) if store is not None else ctx.tables.version(ctx.spark, name)


def _read_optional(ctx: JobContext, name: str) -> DataFrame | None:
    return ctx.tables.read(ctx.spark, name) if _exists(ctx, name) else None


def without_held_back(changes: DataFrame, approvals: DataFrame | None) -> DataFrame:
    """Drop changes of (run, segment) pairs the segments step holds for approval.

    ``segments.approvals`` (written by the segments step) has ``status = 'held'`` until
    someone approves; an approved run's changes are delivered by the next activation run.
    """
    if approvals is None:
        return changes
    held = approvals.where(F.col("status") == "held").select("run_id", "segment_id")
    return changes.join(held, ["run_id", "segment_id"], "left_anti")


SUPPRESSION_INPUTS = (
    catalog.EVENTS.name,
    catalog.CUSTOMER_RECORDS.name,
    catalog.ID_MAP.name,
    catalog.IDENTIFIERS.name,
    PROFILE,
    catalog.ERASURES.name,
)


def _suppression_fingerprint(ctx: JobContext) -> tuple[str, dict[str, int | None]]:
    versions = {name: _version(ctx, name) for name in SUPPRESSION_INPUTS}
    fingerprint = json.dumps({"as_of": ctx.as_of.isoformat(), "inputs": versions}, sort_keys=True)
    return fingerprint, versions


def _last_fingerprint(ctx: JobContext) -> str | None:
    if not _exists(ctx, suppression.SUPPRESSIONS):
        return None
    store = ledger.delta_store(ctx)
    if store is not None:
        return store.last_user_metadata(suppression.SUPPRESSIONS)
    row = ctx.tables.delta(ctx.spark, suppression.SUPPRESSIONS).history(1).select("userMetadata").first()
    return None if row is None else row[0]


def refresh_suppressions_embedded(ctx: JobContext, store: DeltaStore) -> pa.Table:
    """:func:`refresh_suppressions` on the embedded engine: built in DuckDB, written and read
    with delta-rs (:mod:`lakecdp.activation.embedded`); the same rows, fingerprint and reuse."""
    from lakecdp.activation import embedded

    fingerprint, versions = _suppression_fingerprint(ctx)
    if _last_fingerprint(ctx) == fingerprint:
        logger.info("activation: suppressions are up to date with their inputs")
        return store.read(suppression.SUPPRESSIONS)
    logger.info("activation: rebuilding %s from %s", suppression.SUPPRESSIONS, versions)
    rows = embedded.build_suppressions(ctx, store, versions, as_of=ctx.as_of)
    store.overwrite(
        rows, suppression.SUPPRESSIONS, catalog.SUPPRESSIONS.ddl, run_id=ctx.run_id, user_metadata=fingerprint
    )
    return store.read(suppression.SUPPRESSIONS)


def refresh_suppressions(ctx: JobContext) -> DataFrame:
    """Rebuild ``activation.suppressions`` as of ``ctx.as_of`` and return it (re-read).

    The inputs are read at pinned Delta versions, which (with ``as_of``) are stored in the
    commit's ``userMetadata``; when a later run finds the same inputs and ``as_of`` it reuses
    the table instead of rebuilding it (a re-run writes nothing).
    """
    spark = ctx.spark
    store = ledger.delta_store(ctx)
    if store is not None:
        refresh_suppressions_embedded(ctx, store)
        return ctx.tables.read(spark, suppression.SUPPRESSIONS)
    fingerprint, versions = _suppression_fingerprint(ctx)
    if _last_fingerprint(ctx) == fingerprint:
        logger.info("activation: suppressions are up to date with their inputs")
        return ctx.tables.read(spark, suppression.SUPPRESSIONS)

    logger.info("activation: rebuilding %s from %s", suppression.SUPPRESSIONS, versions)

    def pinned(name: str) -> DataFrame | None:
        version = versions[name]
        return None if version is None else ctx.tables.read(spark, name, version=version)

    events = pinned(catalog.EVENTS.name)
    records = pinned(catalog.CUSTOMER_RECORDS.name)
    id_map = pinned(catalog.ID_MAP.name)
    identifiers_table = pinned(catalog.IDENTIFIERS.name)
    profile = pinned(PROFILE)
    erasures = pinned(catalog.ERASURES.name)

    identifiers = suppression.customer_identifiers(
        identifiers=identifiers_table, records=records, id_map=id_map, profile=profile
    )
    if identifiers is None:
        identifiers = suppression.empty_identifiers(spark)
    empty_id_triggers = spark.createDataFrame(
        [], "identifier_type string, identifier_value string, reason string, since timestamp"
    )
    id_triggers = suppression.event_triggers(events, as_of=ctx.as_of) if events is not None else empty_id_triggers
    if erasures is not None:
        from lakecdp.erasure import salted_hash_column

        salted = F.coalesce(
            *[
                F.when(F.col("identifier_type") == kind, salted_hash_column(ctx, kind, F.col("identifier_value")))
                for kind in IDENTIFIER_TYPES
            ]
        )
        id_triggers = id_triggers.unionByName(suppression.erasure_triggers(erasures, identifiers, salted_hash=salted))
    if profile is not None:
        customer_triggers = suppression.consent_triggers(profile)
    elif records is not None and id_map is not None:
        customer_triggers = suppression.record_consent_triggers(records, id_map)
    else:
        customer_triggers = spark.createDataFrame([], "customer_id string, reason string, since timestamp")

    result = suppression.build_suppressions(id_triggers, customer_triggers, identifiers, run_id=ctx.run_id)
    ctx.tables.overwrite(
        result.select(*[f.name for f in suppression.SUPPRESSIONS_SCHEMA.fields]),
        suppression.SUPPRESSIONS,
        overwrite_schema=False,
        user_metadata=fingerprint,
    )
    return ctx.tables.read(spark, suppression.SUPPRESSIONS)


def _utc_row(row: Row) -> Row:
    """Spark hands timestamps to Python as naive local time; make them aware UTC."""
    return {
        k: v.astimezone(timezone.utc) if isinstance(v, datetime) and v.tzinfo is None else v for k, v in row.items()
    }


# -- delivering ------------------------------------------------------------------------
class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, destination: str, what: str, number: int) -> None:
        if number:
            self.counts[what] += number
            self.counts[f"{destination}.{what}"] += number


def exports_root(ctx: JobContext) -> Path:
    """``<warehouse>/exports``: every file destination writes under it, nowhere else."""
    return ctx.project.warehouse / "exports"


def _inside_exports(ctx: JobContext, name: str, target: Path) -> Path:
    """``target`` if it stays under the exports root once symlinks are resolved."""
    root = exports_root(ctx).resolve()
    if not target.resolve().is_relative_to(root):
        raise ConfigError(
            f"destination {name}: path: {target} resolves outside {root} (a symlink?); "
            "exports are written under <warehouse>/exports only"
        )
    return target


def _export_folder(ctx: JobContext, name: str, path: str | None) -> Path:
    # the config refuses absolute paths and '..'; a symlink on the way is caught here
    folder = exports_root(ctx) / (path if path is not None else safe_path_part(name))
    return _inside_exports(ctx, name, folder)


def _ledger_callback(
    ctx: JobContext,
    writer: ledger.LedgerWriter,
    name: str,
    rows_by_key: Mapping[str, Row],
    counter: _Counter,
    max_runs: int,
):
    def on_result(result: Finalised) -> None:
        now = datetime.now(timezone.utc)
        writer.deliveries(
            ledger.delivery_row(
                rows_by_key[item["idempotency_key"]],
                destination=name,
                run_id=ctx.run_id,
                status="delivered",
                attempts=attempts,
                response_code=code,
                at=now,
            )
            for item, attempts, code in result.delivered
        )
        # a change failing in its last allowed run (retry.max_runs) is dead-lettered for good
        rejected, dead = [], []
        for item, reason, code, attempts in result.rejected:
            runs = rows_by_key[item["idempotency_key"]].get("failed_runs", 0) + 1
            if runs >= max_runs:
                reason = (
                    f"rejected by the destination in {runs} of {max_runs} allowed runs "
                    f"(retry.max_runs), not sent again; last: {reason}"
                )
                dead.append((item, reason, code, attempts))
            else:
                rejected.append((item, reason, code, attempts))
        for item, reason, code, attempts in result.dead:
            runs = rows_by_key[item["idempotency_key"]].get("failed_runs", 0) + 1
            if runs >= max_runs:
                reason = f"failed in {runs} of {max_runs} allowed runs (retry.max_runs), not sent again; last: {reason}"
            dead.append((item, reason, code, attempts))
        failures = {"rejected": rejected, "dead_letter": dead}
        for kind, entries in failures.items():
            rows = [
                {
                    "idempotency_key": item["idempotency_key"],
                    "change_id": item["change_id"],
                    "destination": name,
                    "payload": to_json(dict(item)),
                    "reason": reason,
                    "response_code": code,
                    "attempts": attempts,
                    "run_id": ctx.run_id,
                    "at": now,
                }
                for item, reason, code, attempts in entries
            ]
            (writer.rejected if kind == "rejected" else writer.dead_letter)(rows)
            counter.add(name, kind, len(rows))
        counter.add(name, "delivered", len(result.delivered))

    return on_result


def _payload_item(row: Row, fields: Sequence[str]) -> Row:
    return {c: row.get(c) for c in (*CHANGE_COLUMNS, *fields)}


def _deliver_files(
    ctx: JobContext,
    writer: ledger.LedgerWriter,
    name: str,
    folder: Path,
    file_format: str,
    rows: Sequence[Row],
    items: Sequence[Row],
    columns: Sequence[str],
    counter: _Counter,
) -> None:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[(row["segment_id"], row["segment_run_id"])].append(index)
    extension = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[file_format]
    for (segment_id, segment_run_id), indexes in groups.items():
        target = folder / safe_path_part(segment_id) / f"{safe_path_part(segment_run_id)}.{extension}"
        _inside_exports(ctx, name, target)
        write_export([items[i] for i in indexes], columns=columns, path=target, file_format=file_format)
        now = datetime.now(timezone.utc)
        writer.deliveries(
            ledger.delivery_row(
                rows[i], destination=name, run_id=ctx.run_id, status="delivered", attempts=1, response_code=None, at=now
            )
            for i in indexes
        )
        counter.add(name, "delivered", len(indexes))
        logger.info("%s: wrote %d changes to %s", name, len(indexes), target)


@dataclass
class Delivery:
    """What a destination type delivers with (:meth:`DestinationBase.deliver`): one destination
    in one activation run. Every outcome goes through here to the delivery ledger and the
    run's counts, so a change is delivered once and never lost."""

    ctx: JobContext
    name: str
    writer: ledger.LedgerWriter
    counter: _Counter
    #: the send time (SMS quiet hours are judged at it)
    now: datetime

    def payload_items(self, rows: Sequence[Row], fields: Sequence[str]) -> list[Row]:
        """The change's own columns (:data:`CHANGE_COLUMNS`) and the profile ``fields``, in that order."""
        return [_payload_item(r, fields) for r in rows]

    def export_folder(self, path: str | None) -> Path:
        """``<warehouse>/exports/<path or the destination name>``, refused when it leaves exports."""
        return _export_folder(self.ctx, self.name, path)

    def write_files(self, rows: Sequence[Row], items: Sequence[Row], *, path: str | None, file_format: str) -> None:
        """One export file per segment and segment run (``items[i]`` is ``rows[i]``'s payload),
        then the ledger; the columns are the first item's keys."""
        _deliver_files(
            self.ctx,
            self.writer,
            self.name,
            self.export_folder(path),
            file_format,
            rows,
            items,
            list(items[0]),
            self.counter,
        )

    def on_result(self, rows: Sequence[Row], *, max_runs: int) -> Callable[[Finalised], None]:
        """The callback that writes a webhook client's outcomes (delivered, rejected, dead letter)."""
        return _ledger_callback(
            self.ctx, self.writer, self.name, {r["idempotency_key"]: r for r in rows}, self.counter, max_runs
        )

    def send(
        self,
        settings: WebhookSettings,
        items: Sequence[Row],
        rows: Sequence[Row],
        *,
        max_runs: int = 1,
        on_result: Callable[[Finalised], None] | None = None,
    ) -> None:
        """POST ``items`` in batches through :class:`WebhookClient` (retries, address policy),
        writing the ledger after each batch."""
        callback = on_result or self.on_result(rows, max_runs=max_runs)
        WebhookClient(self.name, settings, run_id=self.ctx.run_id).deliver(list(items), on_result=callback)

    def record(
        self, rows: Sequence[Mapping[str, Any]], *, status: str, attempts: int = 1, response_code: int | None = None
    ) -> None:
        """Ledger rows with ``status`` (``delivered`` or ``suppressed``) for ``rows``, counted."""
        at = datetime.now(timezone.utc)
        self.writer.deliveries(
            ledger.delivery_row(
                r,
                destination=self.name,
                run_id=self.ctx.run_id,
                status=status,
                attempts=attempts,
                response_code=response_code,
                at=at,
            )
            for r in rows
        )
        self.count(status, len(rows))

    def count(self, what: str, number: int) -> None:
        """Add to the run's counts (``what`` and ``<destination>.what``)."""
        self.counter.add(self.name, what, number)


def deliver(
    ctx: JobContext,
    name: str,
    destination: AnyDestination,
    rows: Sequence[Row],
    writer: ledger.LedgerWriter,
    counter: _Counter,
    *,
    now: datetime | None = None,
) -> None:
    """Deliver one destination's pending, unsuppressed rows and write the ledger as it goes."""
    if not rows:
        return
    # the destination's type knows how (lakecdp.activation.config.DESTINATION_TYPES)
    destination.deliver(Delivery(ctx, name, writer, counter, now or datetime.now(timezone.utc)), rows)


def waiting_demo_destinations(destinations: Mapping[str, AnyDestination]) -> list[str]:
    """Demo destinations (``demo_receiver: true``) whose url names an environment variable that is
    not set: ``lakecdp demo`` runs the local receiver and sets it (:mod:`lakecdp.demo`); any other
    run leaves them out and their changes wait for the next demo (or for the url to be set).
    """
    waiting = []
    for name, destination in destinations.items():
        url = destination.demo_url()
        if url is not None and any(variable not in os.environ for variable in env_references(url)):
            waiting.append(name)
    return waiting


def run(ctx: JobContext, *, now: datetime | None = None) -> dict[str, int]:
    """Deliver new segment changes to every configured destination, exactly once.

    Args:
        now: the send time SMS quiet hours are judged at (default: the environment's
            ``send_time``, else the clock).

    Returns:
        Counts for ops.runs: ``delivered``, ``suppressed``, ``rejected``, ``dead_letter`` in
        total and per destination (``<destination>.delivered`` ...).
    """
    destinations = {n: d for n, d in load_destinations(ctx.project.conf_dir).items() if d.enabled}
    waiting = waiting_demo_destinations(destinations)
    for name in waiting:
        logger.warning(
            "%s: a demo destination whose url variable is not set: left out of this run, its "
            "changes wait (`lakecdp demo` runs the local receiver and sets it)",
            name,
        )
        del destinations[name]
    ledger.ensure_tables(ctx)
    logger.info("activation: refreshing %s", suppression.SUPPRESSIONS)
    store = ledger.delta_store(ctx)
    suppressions = refresh_suppressions(ctx) if store is None else refresh_suppressions_embedded(ctx, store)
    counter = _Counter()
    if not destinations or not _exists(ctx, CHANGES):
        logger.info(
            "activation: %s", "no destinations configured" if not destinations else f"{CHANGES} does not exist yet"
        )
        return {"delivered": 0, **({"demo_destinations_waiting": len(waiting)} if waiting else {})}

    logger.info("activation: reading pending changes for %s", sorted(destinations))
    if store is not None:
        from lakecdp.activation.embedded import pending_rows

        rows = pending_rows(
            store,
            destinations=[
                (n, list(d.segments), list(d.change_types), max_delivery_runs(d)) for n, d in destinations.items()
            ],
            suppressions=suppressions,
            profile_fields=sorted(PROFILE_FIELDS),
        )
    else:
        rows = _pending_rows_spark(ctx, destinations, suppressions)
    _deliver_pending(ctx, destinations, rows, counter, now=now or ctx.project.environment.send_time)

    counts = dict(counter.counts)
    if counts.get("dead_letter"):
        logger.warning(
            "activation: %d changes went to activation.dead_letter: %s",
            counts["dead_letter"],
            {k: v for k, v in counts.items() if k.endswith(".dead_letter")},
        )
    counts.setdefault("delivered", 0)
    if waiting:
        counts["demo_destinations_waiting"] = len(waiting)
    return counts


def _pending_rows_spark(ctx: JobContext, destinations: Mapping[str, AnyDestination], suppressions) -> list[Row]:
    changes = ctx.tables.read(ctx.spark, CHANGES)
    items = (
        without_held_back(changes, _read_optional(ctx, APPROVALS))
        .select(
            "change_id",
            "run_id",
            "segment_id",
            "customer_id",
            "member_key",
            "change_type",
            "previous_customer_id",
            "changed_at",
        )
        .withColumnRenamed("run_id", "segment_run_id")
        .transform(with_profile, _read_optional(ctx, PROFILE))
        .transform(suppression.mark_suppressed, suppressions)
    )
    destination_rows = ctx.spark.createDataFrame(
        [(n, list(d.segments), list(d.change_types), max_delivery_runs(d)) for n, d in destinations.items()],
        "destination string, d_segments array<string>, d_change_types array<string>, max_runs int",
    )
    pending = pending_for_destinations(items, destination_rows, ledger.handled_keys(ctx), ledger.failed_runs(ctx))
    return [
        _utc_row(r.asDict(recursive=True)) for r in pending.orderBy("destination", "changed_at", "change_id").collect()
    ]


def _deliver_pending(
    ctx: JobContext,
    destinations: Mapping[str, AnyDestination],
    rows: list[Row],
    counter: _Counter,
    *,
    now: datetime | None,
) -> None:
    from lakecdp.campaign.exposures import hold_out_and_expose  # campaign exposures; holdout not sent

    rows = hold_out_and_expose(ctx, rows)
    by_destination: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_destination[row["destination"]].append(row)

    writer = ledger.LedgerWriter(ctx)
    at = datetime.now(timezone.utc)
    suppressed = [
        ledger.delivery_row(
            r,
            destination=r["destination"],
            run_id=ctx.run_id,
            status="suppressed",
            attempts=0,
            response_code=None,
            at=at,
        )
        for r in rows
        if r["suppression_reason"]
    ]
    writer.deliveries(suppressed)
    for row in suppressed:
        counter.add(row["destination"], "suppressed", 1)

    for name, destination in destinations.items():
        sendable = [r for r in by_destination.get(name, []) if not r["suppression_reason"]]
        logger.info("%s: %d changes to deliver", name, len(sendable))
        deliver(ctx, name, destination, sendable, writer, counter, now=now)
