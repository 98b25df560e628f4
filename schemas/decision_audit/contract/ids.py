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
        self._hex = ""
        self._hex_pos = 0

    def take10(self) -> bytes:
        with self._lock:
            pos = self._pos
            if pos + 10 > len(self._buf):
                self._buf = os.urandom(_POOL_SIZE)
                pos = 0
            self._pos = pos + 10
            return self._buf[pos : pos + 10]

    def take_hex19(self) -> str:
        """19 random hex digits (76 bits)."""
        with self._lock:
            pos = self._hex_pos
            if pos + 19 > len(self._hex):
                self._hex = os.urandom(_POOL_SIZE).hex()
                pos = 0
            self._hex_pos = pos + 19
            return self._hex[pos : pos + 19]

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0
        self._hex = ""
        self._hex_pos = 0


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


_VARIANT = str.maketrans("0123456789abcdef", "89ab89ab89ab89ab")  # 2 random bits under 10xx
_prefix: tuple[int, str] = (-1, "")


def uuid7_str(unix_ms: int) -> str:
    """The canonical text of a fresh UUIDv7 for ``unix_ms`` (cheaper than ``str(uuid7())``).

    Built as text: the millisecond prefix is kept while the millisecond lasts, and the 74
    random bits come from a pool of random hex digits.
    """
    global _prefix
    ms, prefix = _prefix
    if ms != unix_ms:
        h = f"{unix_ms & 0xFFFF_FFFF_FFFF:012x}"
        prefix = f"{h[:8]}-{h[8:]}-7"
        _prefix = (unix_ms, prefix)
    r = _pool.take_hex19()
    return f"{prefix}{r[:3]}-{r[3].translate(_VARIANT)}{r[4:7]}-{r[7:]}"


def uuid7_unix_ms(value: uuid.UUID) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    return value.int >> 80
