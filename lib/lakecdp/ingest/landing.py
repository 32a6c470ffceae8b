"""Landing files: what the batch ingest finds in the landing folder, hashed and line-counted.

Each path matching a source's glob becomes a :class:`LandedFile`: its content hash (the ledger
key) and, for text formats, its non-blank physical lines counted from the bytes (the audit
checks them against the rows read); or it is refused as a whole with a reason (a symbolic link,
a folder, a pipe, an unreadable file), never followed or blocked on.
"""

from __future__ import annotations

import hashlib
import logging
import operator
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from lakecdp.ingest.validate import SYMLINK, UNREADABLE_FILE

if TYPE_CHECKING:
    from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

#: a physical line ends at CRLF, LF or a lone CR (old Mac), as Python's universal newlines
LINE_BREAK = r"\r\n|\r|\n"
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
BOM = "\ufeff"


@dataclass(frozen=True)
class LandedFile:
    """One file in the landing folder.

    ``reason`` set: the file is refused as a whole (``SYMLINK``, ``UNREADABLE_FILE``) and
    ``content_hash`` keys its ledger entry (its bytes were not read: a hash of what was seen).
    """

    path: Path
    relative: str
    size: int
    content_hash: str
    #: non-blank physical lines counted from the bytes (text formats; a leading BOM ignored)
    lines: int | None = None
    #: line 1 is non-blank (a CSV header that ``read_lines`` skips)
    first_line_filled: bool = False
    #: no carriage return in the bytes (text formats): every line ends at LF, and ``read_lines``
    #: splits at LF alone -- a split Java does without its regex engine (the alternation of
    #: :data:`LINE_BREAK` was ~10 % of a 1M-line file's read on Spark, on one core)
    lf_only: bool = False
    reason: str | None = None
    detail: str | None = None

    @property
    def refused(self) -> bool:
        return self.reason is not None

    def refuse(self, reason: str, detail: str) -> LandedFile:
        return LandedFile(self.path, self.relative, self.size, self.content_hash, reason=reason, detail=detail)


def natural_key(text: str) -> list[object]:
    """``x_2`` before ``x_10``: increments are numbered, not zero-padded."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _pseudo_hash(*parts: object) -> str:
    """Ledger key of a file whose bytes were not read (a link, a folder, an unreadable file)."""
    return "refused:" + hashlib.sha256("\0".join(map(str, parts)).encode("utf-8", "surrogateescape")).hexdigest()


def _split_lines(text: bytes) -> list[bytes]:
    """``text`` split at CRLF, CR or LF (without a CR, ``bytes.split``: the same pieces, ~10x faster)."""
    return _LINE_BREAK_BYTES.split(text) if b"\r" in text else text.split(b"\n")


_STRIP_SPACES = operator.methodcaller("strip", b" ")


def lf_ends(octets: np.ndarray) -> np.ndarray:
    """The positions of the LF bytes of ``octets``, a block at a time: one flag per byte of a
    large file would be fresh memory, whose page faults cost more than the search."""
    if len(octets) <= _BLOCK:
        return np.flatnonzero(octets == 10)
    flags = np.empty(_BLOCK, dtype=bool)
    found = []
    for at in range(0, len(octets), _BLOCK):
        part = octets[at : at + _BLOCK]
        hits = flags[: len(part)]
        np.equal(part, 10, out=hits)
        found.append(np.flatnonzero(hits) + at)
    return np.concatenate(found)


_BLOCK = 1 << 20
#: lines opening with a space, past which every byte of the file is looked at in numpy
_SPACED = 4096


def filled_lf_lines(octets: np.ndarray, ends: np.ndarray, *, skip: int = 0) -> np.ndarray:
    """Per line of ``octets`` (LF breaks at ``ends``, ending in one): whether it holds a byte other
    than a space, its first ``skip`` bytes (a BOM) not counted; in numpy, no object per line."""
    if not len(ends):
        return np.zeros(0, dtype=bool)
    starts = np.empty(len(ends), np.int64)
    starts[0], starts[1:] = min(skip, int(ends[0])), ends[:-1] + 1
    # a line with a byte that is not a space at its start is filled; one that opens with a
    # space (rare) is looked at whole
    filled = ends > starts
    spaced = np.flatnonzero(filled & (octets[starts] == 32))
    if len(spaced) > _SPACED:
        return _filled_by_bytes(octets, starts, ends)
    for k in spaced.tolist():
        filled[k] = bool(np.any(octets[starts[k] : ends[k]] != 32))
    return filled


def _filled_by_bytes(octets: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`filled_lf_lines` by a flag per byte (the bytes before ``starts[0]`` not counted)."""
    other = (octets != 32) & (octets != 10)
    other[: starts[0]] = False
    # per line (its bytes and its break): any byte other than a space; an empty line has none
    return np.logical_or.reduceat(other, starts) & (ends > starts)


def _count_lf_lines(data: bytes) -> tuple[int, int]:
    """The lines of ``data`` (LF breaks only, ending in one) holding a byte other than a space, and
    all its lines (a Python bytes object per line held the GIL)."""
    octets = np.frombuffer(data, np.uint8)
    ends = lf_ends(octets)
    return int(np.count_nonzero(filled_lf_lines(octets, ends))), len(ends)


def _scan(handle: BinaryIO, *, count_lines: bool) -> tuple[str, int, bool, bool]:
    """sha256 of the bytes and, for text, the non-blank lines (only spaces = blank, as Spark's
    ``trim``), counted independently of the Spark reader; whether line 1 is non-blank; and
    whether the bytes hold no carriage return."""
    digest = hashlib.sha256()
    lines, first_filled, number = 0, False, 0
    lf_only = True
    carry = b""

    def count(parts: list[bytes]) -> None:
        nonlocal lines, first_filled, number
        if not parts:
            return
        if number == 0:
            first = parts[0].removeprefix(b"\xef\xbb\xbf")
            first_filled = bool(first.strip(b" "))
            lines += first_filled
            number, parts = 1, parts[1:]
        number += len(parts)
        # the non-blank parts, counted by C iteration (a generator per part cost ~0.5 s per 1M lines)
        lines += sum(map(bool, map(_STRIP_SPACES, parts)))

    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
        if not count_lines:
            continue
        lf_only = lf_only and b"\r" not in block
        text = carry + block
        if b"\r" not in text:
            # whole lines counted in numpy, the first one by count() (a BOM, and first_filled)
            end = text.rfind(b"\n") + 1
            if number == 0 and end:
                first = text.find(b"\n")
                count([text[:first]])
                text, end = text[first + 1 :], end - first - 1
            filled, whole = _count_lf_lines(text[:end])
            lines, number, carry = lines + filled, number + whole, text[end:]
            continue
        held = b""
        if text.endswith(b"\r"):  # maybe the first half of a CRLF split over two blocks
            text, held = text[:-1], b"\r"
        parts = _split_lines(text)
        count(parts[:-1])
        carry = parts[-1] + held
    if count_lines and carry:
        parts = _split_lines(carry)
        count(parts if parts[-1] else parts[:-1])
    return digest.hexdigest(), lines, first_filled, lf_only and count_lines


def _link_on_the_way(landing: Path, path: Path) -> Path | None:
    """The first symbolic link among ``path`` and its folders below ``landing`` (the landing
    folder itself is configuration and may be a link)."""
    current = landing
    for part in path.relative_to(landing).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def inspect_file(landing: Path, path: Path, source: SourceConfig) -> LandedFile:
    """One landing path as a :class:`LandedFile`: hashed and line-counted, or refused with a reason.

    Never follows a symbolic link (``O_NOFOLLOW`` also covers a link swapped in after the
    listing) and never blocks on a pipe (``O_NONBLOCK``, then ``fstat`` must say regular file).
    """
    relative = path.relative_to(landing).as_posix()
    link = _link_on_the_way(landing, path)
    if link is not None:
        try:
            target = os.readlink(link)
        except OSError as exc:
            target = f"? ({exc.strerror})"
        where = "it" if link == path else f"its folder {link.relative_to(landing).as_posix()}"
        return LandedFile(path, relative, 0, _pseudo_hash("symlink", relative, target)).refuse(
            SYMLINK,
            f"{relative}: {where} is a symbolic link (to {target}); links in landing are not followed",
        )
    try:
        info = os.lstat(path)
    except OSError as exc:
        return LandedFile(path, relative, 0, _pseudo_hash("gone", relative, exc.errno)).refuse(
            UNREADABLE_FILE, f"{relative}: cannot be read: {exc.strerror} (listed, then gone?)"
        )
    seen = LandedFile(
        path, relative, info.st_size, _pseudo_hash("unreadable", relative, info.st_size, info.st_mtime_ns)
    )
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        return seen.refuse(UNREADABLE_FILE, f"{relative}: is {kind}, not a data file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return seen.refuse(UNREADABLE_FILE, f"{relative}: cannot be opened: {exc.strerror}")
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return seen.refuse(UNREADABLE_FILE, f"{relative}: is not a regular file, not a data file")
        try:
            content_hash, lines, first_filled, lf_only = _scan(handle, count_lines=source.file_format.text)
        except OSError as exc:
            return seen.refuse(UNREADABLE_FILE, f"{relative}: read failed: {exc.strerror}")
    text = source.file_format.text
    return LandedFile(
        path,
        relative,
        info.st_size,
        content_hash,
        lines=lines if text else None,
        first_line_filled=first_filled,
        lf_only=lf_only,
    )


def discover(landing: Path, source: SourceConfig) -> list[LandedFile]:
    """Paths matching the source's glob, in natural order (increment 2 before 10), each hashed
    or refused (:func:`inspect_file`): one bad path never stops the others."""
    found = list(landing.glob(source.path))
    found.sort(key=lambda p: natural_key(p.relative_to(landing).as_posix()))
    return [inspect_file(landing, p, source) for p in found]


def new_files(landing: Path, source: SourceConfig, seen: set[str]) -> tuple[list[LandedFile], int]:
    """The files of ``source`` whose content hash is not in ``seen`` (the ledger's), each once, and
    how many were skipped (already loaded or refused with the same content, or empty)."""
    seen = set(seen)
    new: list[LandedFile] = []
    skipped = 0
    for file in discover(landing, source):
        if file.content_hash in seen or (file.size == 0 and not file.refused):
            logger.info(
                "%s: %s already loaded or refused (same content), or empty: skipped", source.name, file.relative
            )
            skipped += 1
            continue
        seen.add(file.content_hash)
        new.append(file)
    return new, skipped
