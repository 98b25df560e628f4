"""Which store failures are worth retrying, and how long to wait between tries."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import OperationalError

from decision_audit.worker.dlq import DeadLetterError

# ClickHouse error codes that say "try again later": the server is overloaded, busy merging,
# out of memory or disk for now, or the network/replication failed. Names as in
# ClickHouse's src/Common/ErrorCodes.cpp.
TRANSIENT_CODES: dict[int, str] = {
    3: "UNEXPECTED_END_OF_FILE",
    32: "ATTEMPT_TO_READ_AFTER_EOF",
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    173: "CANNOT_ALLOCATE_MEMORY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    285: "TOO_FEW_LIVE_REPLICAS",
    286: "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    473: "DEADLOCK_AVOIDED",
    999: "KEEPER_EXCEPTION",
    1000: "POCO_EXCEPTION",
}

_CODE = re.compile(r"\bCode:\s*(\d+)")
_HTTP_STATUS = re.compile(r"\bHTTP (?:status )?(?:code )?(\d{3})\b", re.IGNORECASE)
# Messages of failures below the ClickHouse protocol (clickhouse-connect, urllib3, chDB).
_TRANSIENT_TEXT = re.compile(
    r"connection (?:refused|reset|aborted)|timed? ?out|temporarily unavailable|"
    r"network (?:error|is unreachable)|broken pipe|server overloaded|too many parts|"
    r"failed to read response|remote end closed|max retries exceeded",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Failure:
    """How the worker reads one store error."""

    transient: bool
    cause: str
    """short name for logs and the ``cause`` label of the retry metric"""


def classify(exc: BaseException) -> Failure:
    """Transient (retry the same batch later) or permanent (bad data, schema, permissions).

    Network errors, timeouts and ClickHouse's overload/merge-pressure codes are transient;
    a rejected value, unknown column/table, syntax or access error is not, and retrying it
    cannot help. Unknown errors count as permanent: the worker stops and says why, rather
    than spinning on something it does not understand.
    """
    if isinstance(exc, DeadLetterError):
        return Failure(True, "dlq_unacknowledged")  # the broker is slow or away
    if isinstance(exc, ConnectionError | TimeoutError):
        return Failure(True, type(exc).__name__)
    text = str(exc)
    code = _CODE.search(text)
    if code is not None:
        n = int(code.group(1))
        name = TRANSIENT_CODES.get(n)
        return Failure(True, name) if name else Failure(False, f"code_{n}")
    status = _HTTP_STATUS.search(text)
    if status is not None and status.group(1) in {"429", "502", "503", "504"}:
        return Failure(True, f"http_{status.group(1)}")
    if isinstance(exc, OperationalError) or _TRANSIENT_TEXT.search(text):
        return Failure(True, "network")
    if isinstance(exc, OSError):
        return Failure(True, type(exc).__name__)
    return Failure(False, type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded by attempts and by total time.

    The wait before retry ``n`` (1-based) is drawn uniformly from ``[d/2, d]`` where
    ``d = min(maximum, initial * 2**(n-1))``: spread out so that several workers hit by the
    same outage do not retry in lockstep, never shorter than half the nominal wait.
    """

    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 12
    """tries in all, the first included"""
    budget: float = 300.0
    """seconds from the first failure after which no new try starts"""

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        nominal = min(self.maximum, self.initial * 2 ** max(retry - 1, 0))
        return (rng or random).uniform(nominal / 2, nominal)

    def gives_up(self, tries: int, elapsed: float, next_delay: float = 0.0) -> bool:
        """True once ``tries`` failed tries, or the time spent plus the next wait, pass a limit."""
        return tries >= self.attempts or elapsed + next_delay > self.budget
