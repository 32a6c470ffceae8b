"""The one module that writes the segments tables, on either engine.

``segments.membership``, ``segments.changes``, ``segments.runs`` and ``segments.approvals`` are
written here and nowhere else (their writer in :mod:`lakecdp.catalog`): :class:`SparkWrites`
through :class:`~lakecdp.tables.Tables` for the Spark job, the stream and ``segments approve``;
:class:`EmbeddedWrites` through :class:`~lakecdp.delta_store.DeltaStore` (delta-rs) for the
embedded engine. The two write the same rows with the same keys and the same "never overwrite"
rules, so either engine continues what the other wrote (tests/test_segments_engines.py): a run's
changes are appended under the Delta app transaction ``<CHANGES_APP_ID><run_id>`` (change ids of
the run already stored left out), the stays it opens appended, closed and updated stays MERGEd.

Example:
    >>> writes = SparkWrites(ctx.spark, ctx.tables)
    >>> writes.create_tables()
    >>> writes.changes(changes, run_id=ctx.run_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lakecdp import catalog

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.delta_store import DeltaStore, OneFile
    from lakecdp.tables import Tables

MEMBERSHIP, CHANGES = catalog.MEMBERSHIP.name, catalog.CHANGES.name
RUNS, APPROVALS = catalog.SEGMENT_RUNS.name, catalog.APPROVALS.name
#: a run's changes are appended under the Delta app transaction ``<this><run_id>`` (both engines)
CHANGES_APP_ID = "lakecdp.segments.changes/"
_APPROVAL_KEYS = ["run_id", "segment_id"]
#: a same-id re-run that changed nothing keeps the first run record (and its membership version)
_RUN_RECORD_UPDATE = "s.changes > 0"
#: a membership MERGE names at most this many opening runs (file skipping); more match on the keys alone
_MAX_RUNS_NAMED = 1000


def run_record_rows(
    run_id: str, *, mode: str, as_of: datetime, segment_ids: list[str], change_count: int, membership_version: int
) -> pa.Table:
    """The one ``segments.runs`` row recording a run (applied now), as Arrow (both engines' record)."""
    import pyarrow as pa

    return pa.table(
        {
            "run_id": [run_id],
            "mode": [mode],
            "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC")),
            "segments": pa.array([segment_ids], pa.list_(pa.string())),
            "changes": pa.array([change_count], pa.int64()),
            "membership_version": pa.array([membership_version], pa.int64()),
            "applied_at": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC")),
        }
    )


@dataclass(frozen=True)
class SparkWrites:
    """The segments tables' writes through Spark."""

    spark: SparkSession
    tables: Tables

    def create_tables(self) -> None:
        """Membership and changes exist from the first run on, so readers never meet a missing
        table; runs and approvals are created by their first write (readers treat absent as empty)."""
        for name, schema in ((MEMBERSHIP, catalog.MEMBERSHIP.ddl), (CHANGES, catalog.CHANGES.ddl)):
            self.tables.create_if_missing(self.spark, name, schema)

    def membership(self, upserts: DataFrame, *, insert: bool = True) -> None:
        """Stays closed, updated or opened (``membership_upserts``), matched on the membership keys;
        ``insert=False`` updates stored stays only.

        The match also names the runs that opened the stays (``entered_run_id``, a key, so the
        rows matched are the same): Delta skips the files no such run wrote (each run's opened
        stays are appended in their own files), so finding the stays of a recent run to close
        reads that run's files, not every file of membership."""
        from pyspark.sql import functions as F

        opened_by = [row[0] for row in upserts.select("entered_run_id").distinct().collect()]
        named = None not in opened_by and len(opened_by) <= _MAX_RUNS_NAMED
        self.tables.merge(
            self.spark,
            upserts,
            MEMBERSHIP,
            keys=list(catalog.MEMBERSHIP.keys),
            insert=insert,
            match_also=F.col("t.entered_run_id").isin(sorted(opened_by)) if named else None,
        )

    def opened_stays(self, opened: DataFrame) -> None:
        """Stays a run opens that no stored row can carry yet (keyed on the run id): appended."""
        self.tables.append(opened, MEMBERSHIP)

    def run_record(self, record: DataFrame, *, user_metadata: str | None = None) -> None:
        """``user_metadata``: the commit's ``userMetadata`` (what the run read, for the no-op check)."""
        self.tables.merge(
            self.spark,
            record,
            RUNS,
            keys=["run_id"],
            update_condition=_RUN_RECORD_UPDATE,
            user_metadata=user_metadata,
        )

    def held(self, approvals: DataFrame) -> None:
        """Segments whose changes wait for approval; a decision already stored is never reset."""
        self.tables.merge(self.spark, approvals, APPROVALS, keys=_APPROVAL_KEYS, update_condition="false")

    def decided(self, approvals: DataFrame) -> None:
        """Held approvals with their decision (``segments approve``)."""
        self.tables.merge(self.spark, approvals, APPROVALS, keys=_APPROVAL_KEYS)

    def changes(self, fresh: DataFrame, *, run_id: str, version: int | None = None) -> int:
        """A run's changes not stored yet, appended once under the run's app transaction (as
        :meth:`EmbeddedWrites.changes`: the next version of ``<CHANGES_APP_ID><run_id>``).

        ``version``: that next version when the caller knows it (1: the run id committed none yet);
        None: read from the table's snapshot.

        Returns:
            The app transaction version written."""
        app_id = CHANGES_APP_ID + run_id
        if version is None:
            version = (self.tables.app_transaction_version(self.spark, CHANGES, app_id) or 0) + 1
        self.tables.append(
            fresh, CHANGES, app_transaction=(app_id, version), user_metadata=f"lakecdp-segments changes {run_id}"
        )
        return version


@dataclass(frozen=True)
class EmbeddedWrites:
    """The same writes through delta-rs; every commit is labelled with the run id."""

    store: DeltaStore

    def create_tables(self) -> None:
        """As :meth:`SparkWrites.create_tables`."""
        for name, schema in ((MEMBERSHIP, catalog.MEMBERSHIP.ddl), (CHANGES, catalog.CHANGES.ddl)):
            self.store.create_if_missing(name, schema)

    def membership(self, upserts: pa.Table, *, run_id: str, insert: bool = True) -> None:
        """As :meth:`SparkWrites.membership`; ``insert=False`` updates stored stays only."""
        keys = list(catalog.MEMBERSHIP.keys)
        self.store.merge(upserts, MEMBERSHIP, catalog.MEMBERSHIP.ddl, keys=keys, run_id=run_id, insert=insert)

    def opened_stays(self, opened: pa.Table | OneFile, *, run_id: str) -> None:
        """Stays a run opens that no stored row can carry yet (keyed on the run id): appended."""
        self.store.append(opened, MEMBERSHIP, catalog.MEMBERSHIP.ddl, run_id=run_id)

    def run_record(self, record: pa.Table, *, run_id: str, user_metadata: str | None = None) -> None:
        """``user_metadata``: the commit's ``userMetadata`` (what the run read, for the no-op check)."""
        self.store.merge(
            record,
            RUNS,
            catalog.SEGMENT_RUNS.ddl,
            keys=["run_id"],
            run_id=run_id,
            update_predicate=_RUN_RECORD_UPDATE,
            user_metadata=user_metadata,
        )

    def held(self, approvals: pa.Table, *, run_id: str) -> None:
        """As :meth:`SparkWrites.held`."""
        self.store.merge(approvals, APPROVALS, catalog.APPROVALS.ddl, keys=_APPROVAL_KEYS, run_id=run_id, update=False)

    def changes(self, fresh: pa.Table | OneFile, *, run_id: str) -> int | None:
        """A run's changes not stored yet, appended once under the run's app transaction.

        Returns:
            The app transaction version, None when ``fresh`` has no rows (nothing committed)."""
        return self.store.append_once(
            fresh, CHANGES, catalog.CHANGES.ddl, app_id=CHANGES_APP_ID + run_id, run_id=run_id
        )
