"""Segments for email platforms, read from the Delta tables with delta-rs (no Spark).

* members of a segment as of a run: ``segments.membership`` at the Delta version the run
  recorded in ``segments.runs`` (``membership_version``), current rows of the segment, ordered
  by ``(customer_id, member_key)`` and paged by that key (a page token names the last row and
  the run, so every page of one listing reads the same version);
* changes since a cursor: ``segments.changes`` of runs recorded in ``segments.runs`` (a run's
  changes are complete once its row is there), ordered by (run's place in ``segments.runs``,
  ``change_id``); the cursor is the last (run, change) returned, so a cursor always yields the
  same next rows and each change is returned once per cursor. A (run, segment) held for
  approval (``segments.approvals.status = 'held'``) stops that segment's feed before the run
  until someone approves it (activation holds the same changes back);
* suppression as in activation: ``activation.suppressions`` (built by the activation step,
  expanded through the identity graph) by ``customer_id``, and by any of the profile's emails
  or phones; a suppressed person is in no page.

Each table is read once per Delta version and kept (sorted, filtered) in memory, so a page is
a binary search and a slice; a new version (a new run) is picked up by the next request.
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import threading
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakecdp import catalog
from lakecdp.config import Project
from lakecdp.delta_store import arrow_table
from lakecdp.tables import Tables

logger = logging.getLogger(__name__)

MEMBERSHIP = catalog.MEMBERSHIP.name
CHANGES = catalog.CHANGES.name
RUNS = catalog.SEGMENT_RUNS.name
APPROVALS = catalog.APPROVALS.name
PROFILE = catalog.CUSTOMER_PROFILE.name
SUPPRESSIONS = catalog.SUPPRESSIONS.name
#: profile fields a member row carries (what an email platform needs to address someone)
MEMBER_FIELDS = ("email", "first_name", "last_name")


class NotFound(LookupError):
    """An unknown segment, run or an unusable page token / cursor (the caller's fault)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def encode_token(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotFound(field, f"{field} is not a token this API gave out") from exc
    if not isinstance(value, dict):
        raise NotFound(field, f"{field} is not a token this API gave out")
    return value


@dataclass
class _Cached:
    key: tuple[Any, ...]
    value: Any


class SegmentReader:
    """Reads segment membership and changes (delta-rs + pyarrow), suppression applied."""

    def __init__(self, project: Project) -> None:
        self.tables = Tables(project)
        self.segment_ids = sorted(p.stem for p in (project.conf_dir / "segments").glob("*.yaml"))
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    # -- tables ---------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return Path(self.tables.location(name))

    def _delta(self, name: str, version: int | None = None):
        from deltalake import DeltaTable

        path = self._path(name)
        if not (path / "_delta_log").is_dir():
            return None
        return DeltaTable(str(path), version=version)

    def _version(self, name: str) -> int | None:
        table = self._delta(name)
        return None if table is None else table.version()

    def _cached(self, slot: str, key: tuple[Any, ...], build):
        with self._lock:
            hit = self._cache.get(slot)
            if hit is not None and hit.key == key:
                return hit.value
        value = build()
        with self._lock:
            self._cache[slot] = _Cached(key, value)
        return value

    def ready(self) -> bool:
        return (self._path(MEMBERSHIP) / "_delta_log").is_dir() or not self.segment_ids

    # -- runs and suppression -------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """``segments.runs`` in the order runs were applied (oldest first)."""
        return self._runs_at(self._version(RUNS))

    def _runs_at(self, version: int | None) -> list[dict[str, Any]]:
        """``segments.runs`` as of ``version`` (None: no table), oldest first."""
        if version is None:
            return []

        def build() -> list[dict[str, Any]]:
            rows = arrow_table(
                self._delta(RUNS, version),
                columns=["run_id", "segments", "membership_version", "applied_at", "changes"],
            ).to_pylist()
            return sorted(rows, key=lambda r: (r["applied_at"], r["run_id"]))

        return self._cached(RUNS, (version,), build)

    def _run(self, run_id: str | None) -> dict[str, Any]:
        runs = self.runs()
        if not runs:
            raise NotFound("run_id", "no segment run has been recorded yet")
        if run_id is None:
            return runs[-1]
        for run in runs:
            if run["run_id"] == run_id:
                return run
        raise NotFound("run_id", f"run {run_id!r} is not recorded in {RUNS}")

    def suppressed(self) -> pa.Array:
        """Customer ids no page may show: suppressed by id, or by one of their emails / phones."""
        key = (self._version(SUPPRESSIONS), self._version(PROFILE))

        def build() -> pa.Array:
            table = self._delta(SUPPRESSIONS)
            if table is None:
                return pa.array([], pa.string())
            rows = arrow_table(table, columns=["customer_id", "identifier_type", "identifier_value"])
            ids = [rows.column("customer_id").drop_null()]
            profile = self._delta(PROFILE)
            for kind, column in (("email", "emails"), ("phone", "phones")):
                values = rows.filter(
                    pc.and_(
                        pc.equal(rows.column("identifier_type"), kind), pc.is_valid(rows.column("identifier_value"))
                    )
                ).column("identifier_value")
                if len(values) == 0 or profile is None:
                    continue
                people = arrow_table(profile, columns=["customer_id", column])
                lists = people.column(column).combine_chunks()
                flat = pc.list_flatten(lists)
                owners = pc.list_parent_indices(lists)
                if kind == "email":
                    flat = pc.utf8_lower(pc.utf8_trim_whitespace(flat))
                hit = pc.is_in(flat, value_set=values.combine_chunks())
                ids.append(pc.take(people.column("customer_id"), pc.filter(owners, hit)))
            return pc.unique(pa.chunked_array(ids, pa.string()).combine_chunks())

        return self._cached(SUPPRESSIONS, key, build)

    def _profile(self) -> pa.Table | None:
        version = self._version(PROFILE)

        def build() -> pa.Table | None:
            table = self._delta(PROFILE)
            return None if table is None else arrow_table(table, columns=["customer_id", *MEMBER_FIELDS])

        return self._cached(PROFILE, (version,), build)

    def _not_suppressed(self, rows: pa.Table, column: str) -> pa.Table:
        suppressed = self.suppressed()
        if len(suppressed) == 0:
            return rows
        return rows.filter(pc.invert(pc.fill_null(pc.is_in(rows.column(column), value_set=suppressed), False)))

    # -- members --------------------------------------------------------------------------
    def _members(self, segment_id: str, membership_version: int) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
        key = (segment_id, membership_version, self._version(SUPPRESSIONS), self._version(PROFILE))

        def build():
            table = self._delta(MEMBERSHIP, membership_version)
            # is_current is filtered in Arrow: delta-rs' DNF filter compares a boolean column with
            # a Python True as text and matched no row of a Spark-written table
            rows = arrow_table(
                table,
                columns=["customer_id", "member_key", "entered_at", "is_current"],
                filters=[("segment_id", "=", segment_id)],
            )
            rows = rows.filter(pc.fill_null(rows.column("is_current"), False)).drop_columns(["is_current"])
            rows = self._not_suppressed(rows, "customer_id")
            rows = rows.set_column(
                rows.schema.get_field_index("member_key"), "member_key", pc.fill_null(rows.column("member_key"), "")
            )
            profile = self._profile()
            if profile is not None:
                rows = rows.join(profile, "customer_id", join_type="left outer")
            else:
                for name in MEMBER_FIELDS:
                    rows = rows.append_column(name, pa.nulls(len(rows), pa.string()))
            rows = rows.sort_by([("customer_id", "ascending"), ("member_key", "ascending")])
            entered = pc.strftime(rows.column("entered_at"), format="%Y-%m-%dT%H:%M:%S+00:00")
            rows = rows.set_column(rows.schema.get_field_index("entered_at"), "entered_at", entered)
            members = rows.select(["customer_id", "member_key", "entered_at", *MEMBER_FIELDS]).to_pylist()
            keys = [(m["customer_id"], m["member_key"]) for m in members]
            return keys, members

        return self._cached(f"members:{segment_id}", key, build)

    def members(
        self, segment_id: str, *, run_id: str | None = None, page_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of a segment's members as of a run (default: the latest run).

        Returns:
            ``{"segment_id", "run_id", "total", "members": [{"customer_id", "member_key", "entered_at",
            "email", "first_name", "last_name"}], "next_page_token"}`` (token null on the last page).
        """
        self._check_segment(segment_id)
        after: tuple[str, str] | None = None
        if page_token is not None:
            token = decode_token(page_token, "page_token")
            after_value = token.get("after")
            if (
                token.get("segment") != segment_id
                or not isinstance(token.get("run"), str)
                or not isinstance(after_value, list)
                or len(after_value) != 2
                or not all(isinstance(part, str) for part in after_value)
            ):
                raise NotFound("page_token", "page_token belongs to another listing")
            run_id, after = token["run"], tuple(token["after"])
        run = self._run(run_id)
        keys, members = self._members(segment_id, int(run["membership_version"]))
        start = bisect.bisect_right(keys, after) if after is not None else 0
        page = members[start : start + limit]
        more = start + limit < len(keys)
        next_token = (
            encode_token({"segment": segment_id, "run": run["run_id"], "after": list(keys[start + limit - 1])})
            if more
            else None
        )
        return {
            "segment_id": segment_id,
            "run_id": run["run_id"],
            "total": len(keys),
            "members": page,
            "next_page_token": next_token,
        }

    # -- changes --------------------------------------------------------------------------
    def _changes(self, segment_id: str) -> tuple[list[tuple[int, str]], list[dict[str, Any]], dict[str, int]]:
        """The sort keys of the segment's served changes, those changes in serving order and each
        recorded run's place.

        Every table is read at the version in the cache key: a run recorded while a request reads
        (the follow loop, a batch job) is either wholly in the answer or wholly in the next one. Runs
        read before the versions were taken once cached a new run's changes as not served, under
        the new versions' key, until the next write."""
        versions = {name: self._version(name) for name in (CHANGES, RUNS, APPROVALS, SUPPRESSIONS, PROFILE)}
        key = (segment_id, *versions.values())
        runs = self._runs_at(versions[RUNS])
        place = {run["run_id"]: i for i, run in enumerate(runs)}

        def build():
            held_table = None if versions[APPROVALS] is None else self._delta(APPROVALS, versions[APPROVALS])
            if held_table is not None:
                held = (
                    arrow_table(
                        held_table,
                        columns=["run_id"],
                        filters=[("segment_id", "=", segment_id), ("status", "=", "held")],
                    )
                    .column("run_id")
                    .to_pylist()
                )
                first_held = min((place[r] for r in held if r in place), default=len(runs))
            else:
                first_held = len(runs)
            if versions[CHANGES] is None:
                return [], [], place
            table = self._delta(CHANGES, versions[CHANGES])
            rows = arrow_table(
                table,
                columns=[
                    "change_id",
                    "run_id",
                    "customer_id",
                    "member_key",
                    "change_type",
                    "previous_customer_id",
                    "changed_at",
                ],
                filters=[("segment_id", "=", segment_id)],
            ).to_pylist()
            suppressed = set(self.suppressed().to_pylist())
            kept = [
                r
                for r in rows
                if place.get(r["run_id"], first_held) < first_held
                and r["customer_id"] not in suppressed
                and r["previous_customer_id"] not in suppressed
            ]
            kept.sort(key=lambda r: (place[r["run_id"]], r["change_id"]))
            return [(place[r["run_id"]], r["change_id"]) for r in kept], kept, place

        return self._cached(f"changes:{segment_id}", key, build)

    def changes(self, segment_id: str, *, cursor: str | None = None, limit: int = 1000) -> dict[str, Any]:
        """Changes of a segment after ``cursor`` (from the start without one), oldest first.

        Returns:
            ``{"segment_id", "changes": [...], "cursor"}``: pass ``cursor`` back for the next
            rows; with no new rows it is the cursor given (nothing is skipped, nothing repeated).
        """
        self._check_segment(segment_id)
        order, rows, place = self._changes(segment_id)
        start = 0
        if cursor is not None:
            token = decode_token(cursor, "cursor")
            if (
                token.get("segment") != segment_id
                or not isinstance(token.get("run"), str)
                or not isinstance(token.get("change"), str)
            ):
                raise NotFound("cursor", "cursor belongs to another segment")
            if token["run"] not in place:
                raise NotFound("cursor", f"cursor names run {token['run']!r}, which is not recorded")
            start = bisect.bisect_right(order, (place[token["run"]], token["change"]))
        page = rows[start : start + limit]
        changes = [
            {
                "change_id": r["change_id"],
                "run_id": r["run_id"],
                "change_type": r["change_type"],
                "customer_id": r["customer_id"],
                "member_key": r["member_key"] or "",
                "previous_customer_id": r["previous_customer_id"],
                "changed_at": _iso(r["changed_at"]),
            }
            for r in page
        ]
        next_cursor: str | None
        if page:
            next_cursor = encode_token(
                {"segment": segment_id, "run": page[-1]["run_id"], "change": page[-1]["change_id"]}
            )
        else:
            next_cursor = cursor
        return {
            "segment_id": segment_id,
            "changes": changes,
            "cursor": next_cursor,
            "has_more": start + limit < len(rows),
        }

    def list_segments(self, allowed: set[str] | None) -> list[dict[str, Any]]:
        runs = self.runs()
        latest = runs[-1]["run_id"] if runs else None
        return [{"id": s, "latest_run_id": latest} for s in self.segment_ids if allowed is None or s in allowed]

    def _check_segment(self, segment_id: str) -> None:
        if segment_id not in self.segment_ids:
            raise NotFound("segment_id", f"no segment {segment_id!r} (conf/segments/{segment_id}.yaml)")


def _iso(value: Any) -> str | None:
    """UTC, microseconds, fixed width: the same text the member pages carry (arrow's strftime)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
