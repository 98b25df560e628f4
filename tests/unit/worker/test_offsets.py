"""What the worker commits for a stored batch (no broker)."""

from __future__ import annotations

from decision_audit.worker.offsets import next_offsets
from decision_audit.worker.received import Received


def test_each_partition_commits_the_offset_after_its_highest_message() -> None:
    batch = [
        Received(t, p, o, None, b"", None)
        for t, p, o in [("d", 1, 9), ("d", 0, 4), ("d", 1, 7), ("me", 0, 0), ("d", 0, 5)]
    ]
    assert [(tp.topic, tp.partition, tp.offset) for tp in next_offsets(batch)] == [
        ("d", 0, 6),
        ("d", 1, 10),
        ("me", 0, 1),
    ]
