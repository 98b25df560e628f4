"""When the retrying store gives up, what it says, and how a batch is named (no services)."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from decision_audit.worker.received import Received
from decision_audit.worker.retry import Backoff, classify
from decision_audit.worker.retrying_store import StoreFailed, describe, give_up

TOO_MANY_PARTS = DatabaseError("Code: 252. DB::Exception: Too many parts (3001). (TOO_MANY_PARTS)")
TYPE_MISMATCH = DatabaseError("Code: 53. DB::Exception: Type mismatch in VALUES. (TYPE_MISMATCH)")
BACKOFF = Backoff(initial=0.5, maximum=30.0, attempts=4, budget=60.0)


def _at(topic: str, partition: int, offset: int) -> Received:
    return Received(topic, partition, offset, None, b"", None)


def test_describe_names_each_partitions_offset_span_in_order() -> None:
    messages = [_at("d", 1, 7), _at("d", 0, 3), _at("d", 1, 5), _at("me", 0, 2), _at("d", 0, 4)]
    assert describe(messages) == "d[0:3-4], d[1:5-7], me[0:2-2]"
    assert describe([]) == ""


def test_a_transient_failure_within_the_limits_is_retried() -> None:
    failure = classify(TOO_MANY_PARTS)
    assert give_up(BACKOFF, "d[0:0-9]", TOO_MANY_PARTS, failure, 1, 0.0, 0.5) is None
    assert give_up(BACKOFF, "d[0:0-9]", TOO_MANY_PARTS, failure, 3, 50.0, 9.0) is None


def test_a_permanent_failure_gives_up_at_once_and_says_what_to_fix() -> None:
    error = give_up(BACKOFF, "d[0:0-9]", TYPE_MISMATCH, classify(TYPE_MISMATCH), 1, 0.0, 0.5)
    assert isinstance(error, StoreFailed)
    text = str(error)
    assert "storing batch d[0:0-9] failed with a permanent error (code_53)" in text
    assert "Type mismatch" in text and "decision-audit migrate" in text
    assert "Nothing past the batch was committed" in text


@pytest.mark.parametrize(
    ("tries", "elapsed", "delay"),
    [(4, 1.0, 0.5), (2, 55.0, 6.0)],
    ids=["past the tries", "past the time budget"],
)
def test_a_transient_failure_past_a_limit_gives_up_naming_the_limits(
    tries: int, elapsed: float, delay: float
) -> None:
    failure = classify(TOO_MANY_PARTS)
    error = give_up(BACKOFF, "d[0:0-9]", TOO_MANY_PARTS, failure, tries, elapsed, delay)
    assert isinstance(error, StoreFailed)
    text = str(error)
    assert f"failed {tries} time(s) over {elapsed:.0f}s with transient errors" in text
    assert "(TOO_MANY_PARTS)" in text and "a restarted worker gets it again" in text
    assert "--insert-retry-limit" in text and "DECISION_AUDIT_INSERT_RETRY_BUDGET" in text
