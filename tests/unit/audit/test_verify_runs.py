"""How far a run leaves each chain proven (what the next incremental run starts from)."""

from __future__ import annotations

from datetime import UTC, datetime

from decision_audit.audit.chain_walk import ChainRow
from decision_audit.audit.verify_report import ChainReport, Problem
from decision_audit.audit.verify_runs import Boundary, RunRecorder
from decision_audit.contract.reasons import ProblemKind

LATEST = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE = Boundary(5, b"\x05" * 32, "e5", 5, "k", LATEST)
LAST = ChainRow(9, "e9", b"", b"\x09" * 32)


def _rep(ok: bool) -> ChainReport:
    rep = ChainReport("p", 1, events=4, first_seq=6, last_seq=9, key_id="k", attested_to=8)
    if not ok:
        rep.problems.append(Problem(ProblemKind.CHAIN_BREAK, 7, "broken"))
    return rep


def test_a_clean_chain_is_proven_to_its_last_event() -> None:
    for mode in ("full", "incremental"):
        proven = RunRecorder._proven(_rep(True), LAST, LATEST, BEFORE, mode, proves=True)
        assert proven == Boundary(9, b"\x09" * 32, "e9", 8, "k", LATEST)


def test_a_problem_keeps_an_incremental_proof_and_voids_a_full_one() -> None:
    assert RunRecorder._proven(_rep(False), LAST, LATEST, BEFORE, "incremental", True) == BEFORE
    assert RunRecorder._proven(_rep(False), LAST, LATEST, BEFORE, "full", True) is None


def test_a_window_proves_nothing_new() -> None:
    assert RunRecorder._proven(_rep(True), LAST, LATEST, BEFORE, "full", proves=False) == BEFORE
    assert RunRecorder._proven(_rep(True), None, None, None, "full", proves=True) is None
