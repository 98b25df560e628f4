"""When a recorded pruning may stand for a witnessed chain's head (audit/witness.py
``_unproven``): only a run covering it, at least its window after the witness saw the chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from decision_audit.audit.retention import Pruning, RunRecord
from decision_audit.audit.witness import _unproven
from decision_audit.contract.reasons import WitnessProblemKind
from decision_audit.contract.witness import WitnessedChain

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SEEN = NOW - timedelta(days=300)
"""when the statement that last moved the chain was signed"""
CHAIN = WitnessedChain("decision_event", "p", 7, 40, b"\x01" * 32, SEEN)


def pruning(
    days: int = 200,
    ran_at: datetime = NOW,
    below_floor: bool = False,
    boundary: int = 40,
    run: bool = True,
    horizon: datetime | None = None,
) -> dict[tuple[str, int], list[Pruning]]:
    h = ran_at - timedelta(days=days)
    record = RunRecord(ran_at, days, below_floor, h) if run else None
    return {("p", 7): [Pruning("pr-1", ran_at, horizon or h, boundary, record)]}


def why(recorded: dict[tuple[str, int], list[Pruning]], table: str = "decisions") -> str | None:
    found = _unproven(CHAIN, recorded, SEEN, NOW, table)
    if found is None:
        return None
    assert found[0] == WitnessProblemKind.UNPROVEN_PRUNING
    return found[1]


def test_a_run_a_window_after_the_witness_proves_the_pruning() -> None:
    assert why(pruning()) is None
    assert why(pruning(days=300)) is None  # exactly its window after
    assert why(pruning(boundary=39)) is None  # not past the witnessed head: checked as stored
    assert why(pruning(days=30, below_floor=True)) is None
    assert why(pruning(days=30), table="model_events") is None  # the floor is for decisions


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        (pruning(run=False), "covered by no retention run record"),
        (pruning(days=301), "ran less than its window after the witness saw the chain at seq 40"),
        (pruning(ran_at=NOW - timedelta(days=150)), "ran less than its window"),
        (pruning(days=30), "under the floor of 183, and no --below-eu-ai-act-floor"),
        (pruning(ran_at=NOW + timedelta(days=1)), "records a run time in the future"),
        (pruning(horizon=SEEN - timedelta(days=1)), "disagrees with its run record"),
    ],
    ids=["no-run", "too-soon", "too-soon-earlier", "below-floor", "future", "inconsistent"],
)
def test_a_pruning_no_run_accounts_for_is_named(
    recorded: dict[tuple[str, int], list[Pruning]], expected: str
) -> None:
    detail = why(recorded)
    assert detail is not None and detail.startswith("pruning pr-1 ") and expected in detail
