"""The store-failure classifier and the backoff schedule."""

from __future__ import annotations

import random

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

from decision_audit.worker.dlq import DeadLetterError
from decision_audit.worker.retry import Backoff, classify


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            DatabaseError("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)"),
            "TOO_MANY_PARTS",
        ),
        (
            DatabaseError(
                "Code: 202. Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)"
            ),
            "TOO_MANY_SIMULTANEOUS_QUERIES",
        ),
        (
            DatabaseError("Code: 241. Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"),
            "MEMORY_LIMIT_EXCEEDED",
        ),
        (DatabaseError("Code: 159. Timeout exceeded. (TIMEOUT_EXCEEDED)"), "TIMEOUT_EXCEEDED"),
        (
            DatabaseError("Code: 242. Table is in readonly mode. (TABLE_IS_READ_ONLY)"),
            "TABLE_IS_READ_ONLY",
        ),
        (OperationalError("Failed to read response data from server"), "network"),
        (
            DatabaseError("HTTPDriver for http://ch:8123 received ClickHouse error: HTTP 503"),
            "http_503",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError"),
        (TimeoutError("timed out"), "TimeoutError"),
        (DeadLetterError("DLQ 'x': 3 unacknowledged"), "dlq_unacknowledged"),
        (RuntimeError("connection reset by peer"), "network"),
    ],
)
def test_transient_errors(exc: Exception, cause: str) -> None:
    failure = classify(exc)
    assert failure.transient and failure.cause == cause


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (DatabaseError("Code: 53. Type mismatch. (TYPE_MISMATCH)"), "code_53"),
        (
            DatabaseError("Code: 27. Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"),
            "code_27",
        ),
        (
            DatabaseError("Code: 60. Table audit.decisions does not exist. (UNKNOWN_TABLE)"),
            "code_60",
        ),
        (DatabaseError("Code: 516. Authentication failed. (AUTHENTICATION_FAILED)"), "code_516"),
        (ProgrammingError("Unrecognized column 'b' in table t"), "ProgrammingError"),
        (ValueError("invalid literal for int() with base 10: 'x'"), "ValueError"),
        (TypeError("unsupported operand"), "TypeError"),
    ],
)
def test_permanent_errors(exc: Exception, cause: str) -> None:
    failure = classify(exc)
    assert not failure.transient and failure.cause == cause


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    b = Backoff(initial=0.5, maximum=8.0, attempts=10, budget=1000)
    rng = random.Random(1)
    for retry, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [b.delay(retry, rng) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(set(delays)) > 100  # jittered, not a fixed schedule
        assert max(delays) > nominal * 0.9 and min(delays) < nominal * 0.6


def test_backoff_gives_up_on_attempts_or_budget() -> None:
    b = Backoff(initial=1, maximum=10, attempts=3, budget=20)
    assert not b.gives_up(1, 0.0, 1.0)
    assert not b.gives_up(2, 5.0, 2.0)
    assert b.gives_up(3, 5.0, 0.0)  # three tries made
    assert b.gives_up(2, 19.0, 2.0)  # the next wait would pass the budget
