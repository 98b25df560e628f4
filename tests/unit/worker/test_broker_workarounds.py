"""The offset-gap guard's bookkeeping over received messages (no broker)."""

from __future__ import annotations

import pytest

from decision_audit.worker.broker_workarounds import GAP_REFETCHES, OffsetGapGuard, needed
from decision_audit.worker.metrics import WorkerMetrics
from decision_audit.worker.received import Received


def _msgs(topic: str, partition: int, offsets: range | list[int]) -> list[Received]:
    return [Received(topic, partition, o, b"k", b"v", None) for o in offsets]


def _guard(**kw: bool) -> OffsetGapGuard:
    return OffsetGapGuard(WorkerMetrics().offset_refetches, **kw)


def test_consecutive_offsets_pass_and_set_the_next_expected_one() -> None:
    guard = _guard()
    first = _msgs("d", 0, range(10, 15))
    assert guard.admit(first) == (first, {})
    second = _msgs("d", 0, range(15, 18))  # the first message of a partition starts it
    assert guard.admit(second) == (second, {})


def test_a_jump_drops_the_rest_of_that_partition_and_asks_for_the_missing_offset() -> None:
    guard = _guard()
    guard.admit(_msgs("d", 0, range(5)) + _msgs("d", 1, range(3)))
    batch = _msgs("d", 0, [5, 6, 9, 10]) + _msgs("d", 1, [3, 4]) + _msgs("d", 0, [11])
    kept, refetch = guard.admit(batch)
    assert [(m.partition, m.offset) for m in kept] == [(0, 5), (0, 6), (1, 3), (1, 4)]
    assert refetch == {("d", 0): 7}
    # Fetched again from 7: the skipped offsets come, and the partition goes on.
    again = _msgs("d", 0, range(7, 12))
    assert guard.admit(again) == (again, {})


def test_a_gap_that_persists_is_accepted_after_the_refetches() -> None:
    guard = _guard()
    guard.admit(_msgs("d", 2, range(3)))
    for _ in range(GAP_REFETCHES):
        assert guard.admit(_msgs("d", 2, [8, 9])) == ([], {("d", 2): 3})
    kept, refetch = guard.admit(_msgs("d", 2, [8, 9]))
    assert [m.offset for m in kept] == [8, 9] and refetch == {}
    assert guard.admit(_msgs("d", 2, [10])) == (_msgs("d", 2, [10]), {})


def test_an_offset_below_the_expected_one_is_kept_without_moving_back() -> None:
    guard = _guard()
    guard.admit(_msgs("d", 0, range(10)))
    redelivered = _msgs("d", 0, [4, 5])
    assert guard.admit(redelivered) == (redelivered, {})
    assert guard.admit(_msgs("d", 0, [12])) == ([], {("d", 0): 10})


def test_switched_off_the_guard_lets_everything_through() -> None:
    guard = _guard(enabled=False)
    guard.admit(_msgs("d", 0, range(3)))
    jumped = _msgs("d", 0, [40, 41])
    assert guard.admit(jumped) == (jumped, {})


@pytest.mark.parametrize(
    ("setting", "cluster_id", "on"),
    [
        ("auto", "tansu_cluster", True),
        ("auto", "q_TaWoMSQWygexUENUcQ8g", False),  # an Apache Kafka KRaft cluster id
        ("auto", None, False),
        ("on", "q_TaWoMSQWygexUENUcQ8g", True),
        ("off", "tansu_cluster", False),
    ],
)
def test_workarounds_are_needed_for_tansu_only(
    setting: str, cluster_id: str | None, on: bool
) -> None:
    assert needed(setting, cluster_id) is on
