"""The started / done chunk ledger of the intake followers, read and written the same way for both.

``ops.api_intake`` (the HTTP intake log's pickup, :mod:`lakecdp.api.pickup`: a stream is a log
segment) and ``ops.kafka_intake`` (:mod:`lakecdp.api.kafka_follow`: a stream is a topic
partition) hold one row per chunk and status: ``started`` (stream, start, end) is committed before
the chunk's rows are written, ``done`` after. A follower killed in between finds a started chunk
without its done row and replays it with the same bounds (the writes are keyed: nothing twice).

This module reads the state out of those rows and builds the rows to commit; each ledger's own
module reads and writes its table (tests/test_catalog.py: one writer per table).

Example:
    >>> ledger = ChunkLedger(catalog.KAFKA_INTAKE, key=("topic", "partition"))
    >>> ledger.state(store.read(ledger.name, columns=ledger.columns).to_pylist())
    {('events', 0): (120, None), ('events', 1): (80, (80, 95))}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from lakecdp import catalog
from lakecdp.delta_store import arrow_schema

#: the values of a ledger's key columns: ``(segment,)`` or ``(topic, partition)``
Stream = tuple[Any, ...]
#: a stream's position: (end of its last done chunk or None, a chunk started and not done or None)
Position = tuple[int | None, tuple[int, int] | None]
STARTED = "started"
DONE = "done"


@dataclass(frozen=True)
class ChunkLedger:
    """One chunk ledger table; ``key``: its columns that name a stream (before ``start_offset``)."""

    table: catalog.Table
    key: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def ddl(self) -> str:
        return self.table.ddl

    @property
    def columns(self) -> list[str]:
        """What :meth:`state` reads."""
        return [*self.key, "start_offset", "end_offset", "status"]

    def state(self, rows: Iterable[Mapping[str, Any]]) -> dict[Stream, Position]:
        """stream -> (end of its last done chunk or None, a chunk started and not done or None).

        A done chunk clears a started one it ends at or after (rows are taken by end offset).
        """
        rows = list(rows)
        done = {(*self._stream(r), r["start_offset"], r["end_offset"]) for r in rows if r["status"] == DONE}
        state: dict[Stream, Position] = {}
        for r in sorted(rows, key=lambda r: (*self._stream(r), r["end_offset"])):
            stream = self._stream(r)
            end, pending = state.get(stream, (None, None))
            if r["status"] == DONE:
                state[stream] = (max(end or 0, r["end_offset"]), None)
            elif (*stream, r["start_offset"], r["end_offset"]) not in done:
                state[stream] = (end, (r["start_offset"], r["end_offset"]))
        return state

    def rows(self, chunks: Sequence[tuple[Stream, int, int, int]], status: str, *, run_id: str) -> pa.Table:
        """The rows to commit for ``chunks`` [(stream, start, end, events)], stamped now."""
        if status not in (STARTED, DONE):
            raise ValueError(f"{self.name}: status must be {STARTED!r} or {DONE!r}, got {status!r}")
        now = datetime.now(timezone.utc)
        schema = arrow_schema(self.ddl)
        return pa.Table.from_pylist(
            [
                {
                    **dict(zip(self.key, stream, strict=True)),
                    "start_offset": start,
                    "end_offset": end,
                    "status": status,
                    "events": events,
                    "run_id": run_id,
                    "at": now,
                }
                for stream, start, end, events in chunks
            ],
            schema,
        )

    def _stream(self, row: Mapping[str, Any]) -> Stream:
        return tuple(row[k] for k in self.key)
