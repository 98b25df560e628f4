"""The on-disk spool: a bounded, append-only queue of Kafka messages with a persisted cursor.

Layout of a spool directory::

    spool.lock            flock'ed while a process has the spool open (one process per dir)
    00000000000000000001.seg, ...   segments, appended in order, rolled at ``segment_bytes``
    cursor                ``"<segment> <offset> <crc32>"``: everything before it was delivered

A segment is a sequence of records::

    u32 length | u32 crc32(payload) | payload
    payload = u16 len, topic | i32 len (-1: none), key | u16 n, n x (u16 len, name,
              i32 len (-1: none), value) | i32 len (-1: none), value

all big-endian. Opening the spool checks every record after the cursor; the first record
whose length or CRC does not check out (a write torn by a crash) ends its segment, which is
truncated there. Records before the cursor are never read again: segments wholly before it
are deleted, and when everything is delivered the spool starts a fresh segment.

One thread uses a :class:`Spool` at a time (the producer's background thread, or ``close()``
after that thread stopped); it is not thread-safe on its own.

Durability (``fsync``): ``always`` fsyncs each appended batch and each cursor update before
they count as done (survives power loss; costs one fsync per batch); ``interval`` fsyncs at
most every ``fsync_interval`` seconds (a power cut may lose that much; a process crash loses
nothing written); ``never`` leaves it to the OS (a process crash still loses nothing written,
a power cut may lose recent records or roll the cursor back, which replays duplicates that
the worker drops).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from decision_audit.contract.errors import DecisionAuditError

log = logging.getLogger("decision_audit.spool")

FsyncPolicy = Literal["always", "interval", "never"]

_HEAD = struct.Struct(">II")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_MAX_RECORD = 64 * 1024 * 1024
_SUFFIX = ".seg"


class SpoolLocked(DecisionAuditError, RuntimeError):
    """Another process (or another producer in this one) has the spool directory open."""


class SpoolFull(DecisionAuditError, RuntimeError):
    """The spool has no room for the event (``spool_full_policy="raise"``)."""


class SpoolRecord(NamedTuple):
    """One Kafka message exactly as it is (re)produced (a tuple: built on every event)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def encode(self) -> bytes:
        """The framed record: length, CRC, payload."""
        payload = _payload(self)
        return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload

    def framed_size(self) -> int:
        """``len(self.encode())``, without encoding."""
        n = _HEAD.size + 2 + _utf8_len(self.topic) + 4 + 2 + 4
        n += len(self.key or b"") + len(self.value or b"")
        for name, value in self.headers:
            n += 2 + _utf8_len(name) + 4 + len(value or b"")
        return n


@functools.lru_cache(maxsize=256)
def _utf8_len(s: str) -> int:
    """Encoded length of a topic or header name (few distinct ones, asked per event)."""
    return len(s.encode())


Position = tuple[int, int]
"""``(segment number, byte offset)`` just after a record"""


def _opt(b: bytes | None) -> bytes:
    return _I32.pack(-1) if b is None else _I32.pack(len(b)) + b


def _payload(r: SpoolRecord) -> bytes:
    topic = r.topic.encode()
    parts = [_U16.pack(len(topic)), topic, _opt(r.key), _U16.pack(len(r.headers))]
    for name, value in r.headers:
        n = name.encode()
        parts += [_U16.pack(len(n)), n, _opt(value)]
    parts.append(_opt(r.value))
    return b"".join(parts)


class _Reader:
    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = memoryview(buf)
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.buf):
            raise ValueError("truncated payload")
        out = bytes(self.buf[self.at : self.at + n])
        self.at += n
        return out

    def u16(self) -> int:
        (v,) = _U16.unpack(self.take(2))
        return int(v)

    def opt(self) -> bytes | None:
        (n,) = _I32.unpack(self.take(4))
        return None if n == -1 else self.take(n)


def decode_payload(payload: bytes | memoryview) -> SpoolRecord:
    """Parse a record payload (raises ``ValueError`` if it is malformed)."""
    r = _Reader(payload)
    topic = r.take(r.u16()).decode()
    key = r.opt()
    headers = []
    for _ in range(r.u16()):
        name = r.take(r.u16()).decode()
        headers.append((name, r.opt()))
    value = r.opt()
    if r.at != len(r.buf):
        raise ValueError("trailing bytes in payload")
    return SpoolRecord(topic, key, value, tuple(headers))


def _scan(data: bytes) -> tuple[int, int]:
    """``(valid_end, records)``: where the last intact record of ``data`` ends, and how many."""
    at, n, size = 0, 0, len(data)
    view = memoryview(data)
    while at + _HEAD.size <= size:
        length, crc = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + length
        if length > _MAX_RECORD or end > size:
            break
        payload = view[at + _HEAD.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            decode_payload(payload)
        except (ValueError, UnicodeDecodeError):
            break
        at, n = end, n + 1
    return at, n


class Spool:
    """A bounded on-disk FIFO of :class:`SpoolRecord` with a persisted read cursor."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        segment_bytes: int | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes or min(16 << 20, max(64 << 10, max_bytes // 8))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "spool.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolLocked(
                f"spool directory {self.dir} is in use by another producer; give each "
                "serving process its own spool_dir"
            ) from None
        self._sizes: dict[int, int] = {}
        """segment number -> bytes on disk"""
        self._writer: BinaryIO | None = None
        self._reader: BinaryIO | None = None
        self._reader_seg = -1
        self._cursor: Position = (1, 0)
        self._read_pos: Position = (1, 0)
        self._last_seg = 0
        self._dirty = False
        self._cursor_dirty = False
        self._last_sync = time.monotonic()
        self.events = 0
        """records after the cursor (not yet delivered)"""
        self.pending_bytes = 0
        """bytes of the records after the cursor"""
        self.recovered_bytes = 0
        """bytes of torn or corrupt records discarded when the spool was opened"""
        self._recover()

    # -- state --------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        """Bytes the spool occupies on disk (all segments)."""
        return sum(self._sizes.values())

    @property
    def room(self) -> int:
        """Bytes that may still be appended."""
        return max(0, self.max_bytes - self.disk_bytes)

    @property
    def cursor(self) -> Position:
        return self._cursor

    @property
    def empty(self) -> bool:
        return self.events == 0

    # -- writing ------------------------------------------------------------------------

    def append(self, records: Iterable[bytes]) -> int:
        """Append framed records (from :meth:`SpoolRecord.encode`); returns bytes written.

        The caller checks :attr:`room` first; the bound is the caller's policy, not an error
        here. Synced according to the fsync policy before returning.
        """
        written = 0
        for framed in records:
            w = self._segment_for_append()
            w.write(framed)
            seg = self._last_seg
            self._sizes[seg] += len(framed)
            self.events += 1
            self.pending_bytes += len(framed)
            written += len(framed)
        if written:
            assert self._writer is not None
            self._writer.flush()
            self._dirty = True
            self._sync(force=self.fsync == "always")
        return written

    def _segment_for_append(self) -> BinaryIO:
        if self._writer is not None and self._sizes[self._last_seg] < self.segment_bytes:
            return self._writer
        if self._writer is not None:
            self._sync(force=self.fsync != "never")
            self._writer.close()
        seg = self._last_seg + 1 if self._sizes else self._cursor[0]
        self._sizes[seg] = 0
        self._last_seg = seg
        self._writer = open(self._path(seg), "ab")  # noqa: SIM115 - kept open across calls
        if self.fsync != "never":
            self._sync_dir()
        return self._writer

    # -- reading ------------------------------------------------------------------------

    def read(self, max_records: int, max_bytes: int) -> list[tuple[SpoolRecord, Position, int]]:
        """Records from the read position: ``(record, position after it, framed size)``.

        Reading does not move the cursor; :meth:`ack` does, :meth:`rewind` returns the read
        position to the cursor.
        """
        out: list[tuple[SpoolRecord, Position, int]] = []
        taken = 0
        seg, off = self._read_pos
        while len(out) < max_records and taken < max_bytes:
            size = self._sizes.get(seg)
            if size is None:
                break
            if off >= size:
                if seg >= self._last_seg:
                    break
                seg, off = seg + 1, 0
                continue
            f = self._open_reader(seg)
            f.seek(off)
            head = f.read(_HEAD.size)
            length, _crc = _HEAD.unpack(head)
            payload = f.read(length)
            framed = _HEAD.size + length
            off += framed
            taken += framed
            out.append((decode_payload(payload), (seg, off), framed))
        self._read_pos = (seg, off)
        return out

    def _open_reader(self, seg: int) -> BinaryIO:
        if self._reader is None or self._reader_seg != seg:
            if self._reader is not None:
                self._reader.close()
            self._reader = open(self._path(seg), "rb")  # noqa: SIM115 - kept open across calls
            self._reader_seg = seg
        return self._reader

    @property
    def read_position(self) -> Position:
        """Where :meth:`read` continues."""
        return self._read_pos

    @read_position.setter
    def read_position(self, pos: Position) -> None:
        self._read_pos = pos

    def rewind(self) -> None:
        """Read again from the cursor (after a replayed record failed)."""
        self._read_pos = self._cursor

    @property
    def unread(self) -> bool:
        """True if :meth:`read` has records to return."""
        seg, off = self._read_pos
        return (seg, off) < (self._last_seg, self._sizes.get(self._last_seg, 0)) and bool(
            self._sizes
        )

    def ack(self, position: Position, framed_size: int) -> None:
        """The record ending at ``position`` was delivered: move the cursor past it."""
        self._cursor = position
        self.events -= 1
        self.pending_bytes -= framed_size
        self._cursor_dirty = True

    def commit(self) -> None:
        """Persist the cursor (if it moved), drop delivered segments, restart when empty."""
        if not self._cursor_dirty:
            self._sync(force=False)
            return
        self._cursor_dirty = False
        seg, off = self._cursor
        if self.events == 0 and self._sizes and self._read_pos == self._cursor:
            # Everything delivered: start over in a fresh segment (cursor first, then delete).
            nxt = self._last_seg + 1
            self._write_cursor((nxt, 0))
            self._close_files()
            for s in list(self._sizes):
                self._unlink(s)
            self._sizes.clear()
            self._cursor = self._read_pos = (nxt, 0)
            self._last_seg = nxt - 1
            return
        self._write_cursor((seg, off))
        for s in [s for s in self._sizes if s < seg]:
            if self._reader is not None and self._reader_seg == s:
                self._reader.close()
                self._reader = None
            self._unlink(s)
            del self._sizes[s]
        self._sync(force=False)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Persist the cursor, sync and release the directory."""
        if self._lock_fd < 0:
            return
        self._cursor_dirty = True
        self.commit()
        self._sync(force=self.fsync != "never")
        self._close_files()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:020d}{_SUFFIX}"

    def _unlink(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(seg).unlink()

    def _close_files(self) -> None:
        for f in (self._writer, self._reader):
            if f is not None:
                f.close()
        self._writer = self._reader = None
        self._reader_seg = -1

    def _sync(self, *, force: bool) -> None:
        if not self._dirty or self.fsync == "never":
            return
        now = time.monotonic()
        if force or now - self._last_sync >= self.fsync_interval:
            if self._writer is not None:
                os.fsync(self._writer.fileno())
            self._dirty = False
            self._last_sync = now

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_cursor(self, pos: Position) -> None:
        text = f"{pos[0]} {pos[1]}"
        data = f"{text} {zlib.crc32(text.encode())}\n".encode()
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync == "always":
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / "cursor")
        if self.fsync == "always":
            self._sync_dir()

    def _read_cursor(self) -> Position | None:
        try:
            parts = (self.dir / "cursor").read_text().split()
            seg, off, crc = int(parts[0]), int(parts[1]), int(parts[2])
        except (OSError, ValueError, IndexError):
            return None
        if zlib.crc32(f"{seg} {off}".encode()) != crc:
            log.warning("spool %s: cursor file is corrupt; replaying from the start", self.dir)
            return None
        return seg, off

    def _recover(self) -> None:
        segs = sorted(
            int(p.name[: -len(_SUFFIX)])
            for p in self.dir.glob(f"*{_SUFFIX}")
            if p.name[: -len(_SUFFIX)].isdigit()
        )
        cursor = self._read_cursor()
        if cursor is None:
            cursor = (segs[0], 0) if segs else (1, 0)
        cseg, coff = cursor
        for s in segs:
            if s < cseg:
                self._unlink(s)  # delivered before the last run ended
        segs = [s for s in segs if s >= cseg]
        if segs and segs[0] > cseg:
            cseg, coff = segs[0], 0  # the cursor's segment was already removed
        for s in segs:
            path = self._path(s)
            data = path.read_bytes()
            if s == cseg:
                coff = min(coff, len(data))  # the cursor outlived data the OS never wrote
            start = coff if s == cseg else 0
            end, n = _scan(data[start:])
            end += start
            if end < len(data):
                lost = len(data) - end
                self.recovered_bytes += lost
                log.warning(
                    "spool %s: segment %s has %d torn/corrupt bytes at offset %d; truncated",
                    self.dir,
                    path.name,
                    lost,
                    end,
                )
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            self._sizes[s] = end
            self.events += n
            self.pending_bytes += end - start
        self._cursor = (cseg, coff)
        self._read_pos = self._cursor
        self._cursor_dirty = False
        self._last_seg = max(self._sizes) if self._sizes else cseg - 1
        if self._sizes:
            self._writer = open(self._path(self._last_seg), "ab")  # noqa: SIM115
        if self.events:
            log.warning(
                "spool %s holds %d undelivered events (%d bytes) from an earlier run; "
                "replaying them",
                self.dir,
                self.events,
                self.pending_bytes,
            )
