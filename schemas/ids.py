"""Time-ordered identifiers (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_RAND_B_MASK = (1 << 62) - 1
_POOL_SIZE = 4000  # 400 identifiers per getrandom() call instead of one each


class _RandomPool:
    """``os.urandom`` bytes drawn in blocks; thread-safe, and emptied in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def take10(self) -> bytes:
        with self._lock:
            pos = self._pos
            if pos + 10 > len(self._buf):
                self._buf = os.urandom(_POOL_SIZE)
                pos = 0
            self._pos = pos + 10
            return self._buf[pos : pos + 10]

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.reset)


def _uuid7_int(ms: int) -> int:
    rand = int.from_bytes(_pool.take10(), "big")
    return (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | ((rand >> 68) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & _RAND_B_MASK)
    )


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """Return a UUIDv7: 48-bit Unix milliseconds, then 74 random bits."""
    return uuid.UUID(int=_uuid7_int(time.time_ns() // 1_000_000 if unix_ms is None else unix_ms))


def uuid7_str(unix_ms: int) -> str:
    """The canonical text of a fresh UUIDv7 for ``unix_ms`` (cheaper than ``str(uuid7())``)."""
    h = f"{_uuid7_int(unix_ms):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_unix_ms(value: uuid.UUID) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    return value.int >> 80
