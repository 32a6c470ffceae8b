"""The append-only intake log: accepted events are on disk (fsync'd) before the API answers 2xx.

Layout: ``<log_dir>/intake-<n:08d>.log``, numbered segment files of JSON lines. A line is either
an event record ``{"source", "id", "event", "key", "idem", "at"}`` or a request record
``{"request": <idempotency key>, "key": <api key id>, "response": {...}}`` written in the same
``write`` as the events it answered for, so a replayed request gets its first answer back.

Writes go through one writer thread that commits in groups: it takes every record waiting,
writes them with one ``write`` and makes them durable with one ``fdatasync`` (``fsync`` where there is none), then resolves each
request's future. Many concurrent requests share one fsync (group commit), which is what lets a
single process accept thousands of events per second on an ordinary disk.

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
        self._thread = threading.Thread(target=self._writer, name="intake-log-writer", daemon=True)
        self._thread.start()

    # -- opening -------------------------------------------------------------------------
    def _open_last(self):
        existing = segments(self.log_dir)
        number = existing[-1][0] if existing else 1
        path = segment_path(self.log_dir, number)
        if path.exists():
            keep = complete_length(path)
            if keep != path.stat().st_size:
                logger.warning("%s: cutting %d bytes of an unacknowledged torn write", path,
                               path.stat().st_size - keep)
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
        logger.info("intake log %s: %d events, %d idempotency keys", self.log_dir,
                    len(self.event_ids), len(self.answers))

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
                self._write_group(group)
            except OSError as exc:
                logger.exception("intake log write failed")
                error = IntakeLogError(f"intake log {self.log_dir}: {exc}")
            for pending in group:
                pending.loop.call_soon_threadsafe(_settle, pending.future, error)

    def _write_group(self, group: list[_Pending]) -> None:
        if self._size >= self.segment_bytes:
            self._handle.close()
            self._number += 1
            self._handle = open(segment_path(self.log_dir, self._number), "ab")
            self._sync_dir()
            self._size = 0
        data = b"".join(p.data for p in group)
        start = self._size
        try:
            self._handle.write(data)
            self._handle.flush()
            # data and the file's new length (what a reader needs), not its times: cheaper than fsync
            _datasync(self._handle.fileno())
        except OSError:
            # nothing of this group is acknowledged: cut it off so the log stays whole
            self._handle.truncate(start)
            raise
        self._size += len(data)

    def writable(self) -> bool:
        """The writer thread runs and the folder accepts files (for /readyz)."""
        return self._thread.is_alive() and os.access(self.log_dir, os.W_OK)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._handle.close()


_datasync = getattr(os, "fdatasync", os.fsync)


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
