"""The append-only intake log: accepted events are on disk (fsync'd) before the API answers 2xx.

Layout: ``<log_dir>/intake-<n:08d>.log``, numbered segment files of JSON lines. A line is either
an event record ``{"source", "id", "event", "key", "idem", "at"}`` or a request record
``{"request": <idempotency key>, "key": <api key id>, "response": {...}}`` written in the same
``write`` as the events it answered for, so a replayed request gets its first answer back.

Writes go through a few writer threads that commit in groups: a writer takes every record
waiting, appends them with one ``write`` (one writer at a time, under a lock, so lines never
interleave), then, outside the lock, makes them durable with one ``fdatasync`` (``fsync`` where
there is none) and resolves each request's future. Many concurrent requests share one sync
(group commit), which is what lets a single process accept thousands of events per second on an
ordinary disk; and while one group's sync is slow (a busy disk: tens of ms), the next group is
written and synced by another writer instead of queueing behind it. A sync that returns covers
everything written before it began, so each answer still follows a sync of its own lines.
A failed sync stops the log (fail-stop, as databases do: what the kernel dropped cannot be
known): every later append is refused (503) and ``/readyz`` says not ready until a restart.

A process killed with ``kill -9`` never leaves a half-written line that was acknowledged: the
answer follows the fsync. A torn tail (a write cut short, not yet answered) is cut off when the
log is opened again, and readers (the pickup) only ever read up to the last newline.

On open the log is scanned once to rebuild the de-duplication state: the event ids it holds
(per source) and the idempotency keys with their answers. Both live in memory for the life
of the process (about 100 bytes per event id).

Example:
    >>> log = IntakeLog(Path("warehouse/_intake"), segment_bytes=64 << 20)
    >>> await log.append(records, request=("key-1", "req-123", {"accepted": 1}))
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

_SEGMENT_RE = re.compile(r"^intake-(\d{8})\.log$")


def segment_path(log_dir: Path, number: int) -> Path:
    return log_dir / f"intake-{number:08d}.log"


def segments(log_dir: Path) -> list[tuple[int, Path]]:
    """The log's segment files, oldest first: ``(number, path)``."""
    if not log_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in log_dir.iterdir() if (m := _SEGMENT_RE.match(p.name))]
    return sorted(found)


def read_lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line)`` of every complete line of a segment from ``start`` on."""
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        for line in handle:
            if not line.endswith(b"\n"):
                return  # a tail still being written (or torn): not an event yet
            yield offset, line[:-1]
            offset += len(line)


def complete_length(path: Path) -> int:
    """Bytes of ``path`` up to and including its last newline."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as handle:
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


class IntakeLogError(RuntimeError):
    """The log could not be written (disk full, permissions): the request gets a 5xx."""


@dataclass
class _Pending:
    data: bytes
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclass
class IntakeLog:
    """The durable, de-duplicating append-only log of accepted events."""

    log_dir: Path
    segment_bytes: int = 64 * 1024 * 1024
    #: "<source>\x1f<event id>" of every event in the log
    event_ids: set[str] = field(default_factory=set)
    #: (api key id, idempotency key) -> the answer given
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir = Path(self.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._reserved_ids: set[str] = set()
        self._in_flight: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._number, self._handle = self._open_last()
        self._size = self._handle.tell()
        self._scan()
        #: one appender at a time (never held while waiting for work or for the disk)
        self._lock = threading.Lock()
        #: syncs in flight per segment handle: a rotated-out segment is closed after its last one
        self._syncing: dict[Any, int] = {}
        self._retired: set[Any] = set()
        self._failed: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._writer, name=f"intake-log-writer-{n}", daemon=True) for n in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()

    # -- opening -------------------------------------------------------------------------
    def _open_last(self):
        existing = segments(self.log_dir)
        number = existing[-1][0] if existing else 1
        path = segment_path(self.log_dir, number)
        if path.exists():
            keep = complete_length(path)
            if keep != path.stat().st_size:
                logger.warning("%s: cutting %d bytes of an unacknowledged torn write", path, path.stat().st_size - keep)
                with open(path, "r+b") as handle:
                    handle.truncate(keep)
                    os.fsync(handle.fileno())
        handle = open(path, "ab")
        self._sync_dir()
        return number, handle

    def _sync_dir(self) -> None:
        fd = os.open(self.log_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _scan(self) -> None:
        for _, path in segments(self.log_dir):
            for _, line in read_lines(path, 0):
                record = load_line(line)
                if "request" in record:
                    self.answers[(record["key"], record["request"])] = record["response"]
                else:
                    self.event_ids.add(f"{record['source']}\u001f{record['id']}")
        logger.info(
            "intake log %s: %d events, %d idempotency keys", self.log_dir, len(self.event_ids), len(self.answers)
        )

    # -- de-duplication (called on the event loop: check and reserve are one step) ----------
    def answer_for(self, key_id: str, idempotency_key: str) -> dict[str, Any] | None:
        return self.answers.get((key_id, idempotency_key))

    def in_flight(self, key_id: str, idempotency_key: str) -> asyncio.Future[dict[str, Any]] | None:
        return self._in_flight.get((key_id, idempotency_key))

    def reserve(self, source: str, ids: list[str]) -> list[bool]:
        """Claim event ids; False for an id already stored or claimed by a request in flight."""
        fresh = []
        for event_id in ids:
            token = f"{source}\u001f{event_id}"
            new = token not in self.event_ids and token not in self._reserved_ids
            if new:
                self._reserved_ids.add(token)
            fresh.append(new)
        return fresh

    # -- writing --------------------------------------------------------------------------
    async def append(
        self,
        records: list[dict[str, Any]],
        *,
        key_id: str,
        idempotency_key: str | None,
        response: dict[str, Any],
        strict_json: bool = False,
    ) -> None:
        """Make ``records`` (and the request's answer) durable; returns after the fsync.

        The records' ids must have been :meth:`reserve`-d; they are released either way.
        ``strict_json``: the records hold nothing orjson would write differently from the
        standard library (no NaN / Infinity, no integer beyond 64 bits), so the fast encoder is used.
        """
        loop = asyncio.get_running_loop()
        encode = orjson.dumps if strict_json else _encode
        lines = [encode(r) for r in records]
        request_future: asyncio.Future[dict[str, Any]] | None = None
        if idempotency_key is not None:
            lines.append(_encode({"request": idempotency_key, "key": key_id, "response": response}))
            request_future = loop.create_future()
            self._in_flight[(key_id, idempotency_key)] = request_future
        tokens = [f"{r['source']}\u001f{r['id']}" for r in records]
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(b"\n".join(lines) + b"\n", done, loop))
        try:
            await done
        except BaseException as exc:
            if request_future is not None:
                request_future.set_exception(exc)
                request_future.exception()  # retrieved: a waiting retry sees it, nobody else must
            raise
        else:
            self.event_ids.update(tokens)
            if idempotency_key is not None:
                self.answers[(key_id, idempotency_key)] = response
                request_future.set_result(response)  # type: ignore[union-attr]
        finally:
            self._reserved_ids.difference_update(tokens)
            if idempotency_key is not None:
                self._in_flight.pop((key_id, idempotency_key), None)

    def _writer(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)  # the other writers stop too
                return
            group = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            error: BaseException | None = None
            try:
                handle = self._write_group(group)
            except OSError as exc:
                logger.exception("intake log write failed")
                error = IntakeLogError(f"intake log {self.log_dir}: {exc}")
            except IntakeLogError as exc:
                error = exc
            else:
                error = self._sync(handle)
            for pending in group:
                pending.loop.call_soon_threadsafe(_settle, pending.future, error)

    def _write_group(self, group: list[_Pending]):
        """Append the group (under the lock); the handle to sync. Nothing of a failed write stays."""
        data = b"".join(p.data for p in group)
        with self._lock:
            if self._failed is not None:
                raise IntakeLogError(f"intake log {self.log_dir} stopped after a failed sync: {self._failed}")
            if self._size >= self.segment_bytes:
                self._rotate()
            start = self._size
            try:
                self._handle.write(data)
                self._handle.flush()
            except OSError:
                # nothing of this group is acknowledged: cut it off so the log stays whole
                self._handle.truncate(start)
                raise
            self._size += len(data)
            self._syncing[self._handle] = self._syncing.get(self._handle, 0) + 1
            return self._handle

    def _sync(self, handle) -> BaseException | None:
        """fdatasync ``handle``: data and the file's new length (what a reader needs), not its times."""
        error: BaseException | None = None
        try:
            _datasync(handle.fileno())
        except OSError as exc:
            logger.exception("intake log sync failed: the log stops taking events")
            error = IntakeLogError(f"intake log {self.log_dir}: {exc}")
        with self._lock:
            if error is not None and self._failed is None:
                self._failed = error
            self._syncing[handle] -= 1
            if not self._syncing[handle]:
                del self._syncing[handle]
                if handle in self._retired:
                    self._retired.discard(handle)
                    handle.close()
        return error

    def _rotate(self) -> None:
        old = self._handle
        self._number += 1
        self._handle = open(segment_path(self.log_dir, self._number), "ab")
        self._sync_dir()
        self._size = 0
        if old in self._syncing:
            self._retired.add(old)  # closed by its last sync
        else:
            old.close()

    def writable(self) -> bool:
        """The writers run, no sync has failed and the folder accepts files (for /readyz)."""
        return self._failed is None and all(t.is_alive() for t in self._threads) and os.access(self.log_dir, os.W_OK)

    def close(self) -> None:
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._handle.close()


_datasync = getattr(os, "fdatasync", os.fsync)
#: writer threads: while one waits for a slow sync, another writes and syncs the next group
WRITERS = 3


def _encode(record: dict[str, Any]) -> bytes:
    """One log line (without its newline) as the standard library writes it: NaN / Infinity as
    tokens, integers of any size (what the pickup's ``json.loads`` reads back as they came)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: orjson reads an integer beyond 64 bits as a float: lines with a 19-digit run go to the standard library
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def load_line(line: bytes) -> Any:
    """A log line's record: orjson, or the standard library for a line orjson refuses (a NaN /
    Infinity token) or would change (a long integer)."""
    if _LONG_NUMBER.search(line) is None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
