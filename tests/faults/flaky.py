"""A real clickhouse-connect client that fails inserts on purpose (fault injection)."""

from __future__ import annotations

import threading
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

TOO_MANY_PARTS = DatabaseError(
    "Code: 252. DB::Exception: Too many parts (3001 with average size of 1.00 KiB) in table "
    "'audit.decisions'. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS)"
)
TYPE_MISMATCH = DatabaseError("Code: 53. DB::Exception: Type mismatch in VALUES. (TYPE_MISMATCH)")
RESPONSE_LOST = OperationalError("Failed to read response data from server")


class FlakyClient:
    """Delegates to ``real``; while :attr:`failing` is set, writes raise ``error``.

    Writes are ``insert`` calls and ``INSERT`` commands (the worker copies staged events with
    ``INSERT … SELECT``). With ``apply_first`` the first failing write is carried out before
    it raises, as when a server stores a block and the connection drops before the answer.
    """

    def __init__(self, real: Any, error: Exception, *, apply_first: bool = False) -> None:
        self._real = real
        self._error = error
        self._apply_first = apply_first
        self.failing = threading.Event()
        self.failures = 0
        self.inserts = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._write(self._real.insert, *args, **kwargs)

    def command(self, cmd: str, *args: Any, **kwargs: Any) -> Any:
        if cmd.lstrip().upper().startswith("INSERT"):
            return self._write(self._real.command, cmd, *args, **kwargs)
        return self._real.command(cmd, *args, **kwargs)

    def _write(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self.failing.is_set():
            self.failures += 1
            if self._apply_first and self.failures == 1:
                method(*args, **kwargs)
            raise self._error
        self.inserts += 1
        return method(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
