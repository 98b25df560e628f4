"""Folding witness logs (decision_audit.audit.witness.check_logs): version-2 statements stay
small at 12,000 chains and fold to the set a version-1 full list names; dropped or edited
statements are caught; version 1 and 2 mix in one log."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from decision_audit.audit.witness import (
    Claim,
    StoredStatement,
    WitnessProblem,
    WitnessSourceError,
    check_logs,
)
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import WitnessProblemKind
from decision_audit.contract.witness import (
    GENESIS,
    MAX_MESSAGE_BYTES,
    ChainKey,
    ChainSet,
    Statement,
    WitnessedChain,
    decode,
    delta_statements,
    envelope,
    full_statements,
    set_digest,
    statement_hash,
)
from decision_audit.producer.signing import Signer, generate_keypair

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _chain(i: int, seq: int, kind: str = "decision_event") -> WitnessedChain:
    head = seq.to_bytes(4, "big") + i.to_bytes(4, "big") + bytes(24)
    return WitnessedChain(
        kind,
        f"scoring-api-{i % 30}-pod-{i:05d}",
        1767225600000000 + i,
        seq,
        head,
        T0 + timedelta(seconds=i),
    )


class Log:
    """A witness's log built the way the worker builds it (delta_statements), signed."""

    def __init__(self, signer: Signer | None = None, witness_id: str = "worker-a") -> None:
        self.signer, self.witness_id = signer, witness_id
        self.chains = ChainSet()
        self.statements: list[tuple[Statement, bytes]] = []

    def interval(self, changed: list[WitnessedChain]) -> list[Statement]:
        seq = len(self.statements) + 1
        prev = statement_hash(self.statements[-1][1]) if self.statements else GENESIS
        at = T0 + timedelta(seconds=30 * seq)
        out = []
        for st, data, _ in delta_statements(self.witness_id, seq, prev, at, self.chains, changed):
            self.statements.append((st, data))
            out.append(st)
        return out

    def restate(self, changed: list[WitnessedChain], max_bytes: int = 20_000) -> list[Statement]:
        """A full restatement (as the worker writes one every witness_full_every)."""
        seq = len(self.statements) + 1
        prev = statement_hash(self.statements[-1][1]) if self.statements else GENESIS
        at = T0 + timedelta(seconds=30 * seq)
        out = []
        for st, data, _ in full_statements(
            self.witness_id, seq, prev, at, self.chains, changed, max_bytes
        ):
            self.statements.append((st, data))
            out.append(st)
        return out

    def append(self, st: Statement) -> None:
        """A version-1 statement: the whole set (the worker resumes from it likewise)."""
        self.statements.append((st, st.encode()))
        self.chains = ChainSet(st.chains)

    def stored(self) -> list[StoredStatement]:
        return [
            StoredStatement(
                d, self.signer.sign(d) if self.signer else b"", "test", st.witness_id, st.seq
            )
            for st, d in self.statements
        ]


def _set(claims: list[Claim]) -> dict[ChainKey, WitnessedChain]:
    return {c.key: c for _, _, c in claims}


def _kinds(problems: list[WitnessProblem]) -> list[tuple[str, int | None]]:
    assert all(type(p.kind) is WitnessProblemKind for p in problems), problems
    return [(p.kind, p.statement) for p in problems]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, KeyRing]:
    generate_keypair(tmp_path, "worker-a")
    return Signer(tmp_path / "worker-a.key"), KeyRing.load(tmp_path)


def test_statements_stay_small_at_12000_chains_and_fold_to_the_full_list(
    keys: tuple[Signer, KeyRing],
) -> None:
    signer, keyring = keys
    rng = random.Random(17)
    log = Log(signer)
    full = {c.key: c for c in (_chain(i, 1) for i in range(12_000))}
    first = log.interval(list(full.values()))
    assert len(first) > 1  # 12,000 new chains at once do not fit one message: split
    for _ in range(20):  # each interval moves a few hundred chains and starts a few
        moved = [
            replace(full[k], seq=full[k].seq + rng.randint(1, 500), head=rng.randbytes(32))
            for k in rng.sample(sorted(full), 300)
        ]
        new = [_chain(len(full) + j, 1) for j in range(30)]
        for c in moved + new:
            full[c.key] = c
        assert len(log.interval(moved + new)) == 1
    for st, data in log.statements:
        message = envelope(data, signer.sign(data))
        assert len(message) <= MAX_MESSAGE_BYTES < KAFKA_DEFAULT_MAX_MESSAGE_BYTES
        assert st.total == len({c.key for s, _ in log.statements[: st.seq] for c in s.chains})
    assert all(len(st.chains) == 330 for st, _ in log.statements[len(first) :])

    report, claims = check_logs(log.stored(), keyring)
    assert report.ok, report.problems[:3]
    assert report.chains == len(full) == 12_600 and report.witnesses == {
        "worker-a": 20 + len(first)
    }
    # What a version-1 statement listing every chain would say, byte for byte.
    v1 = Statement("worker-a", 1, GENESIS, T0, tuple(full.values()), version=1)
    listed = decode(v1.encode()).chains
    assert _set(claims) == {c.key: c for c in listed}
    assert log.statements[-1][0].digest == set_digest(listed)
    assert len(v1.encode()) > 2 * KAFKA_DEFAULT_MAX_MESSAGE_BYTES  # what v2 avoids


def _relinked(statements: list[tuple[Statement, bytes]]) -> list[tuple[Statement, bytes]]:
    """Statements renumbered 1..n and each relinked to the one before (no key needed)."""
    out: list[tuple[Statement, bytes]] = []
    for st, _ in statements:
        prev = statement_hash(out[-1][1]) if out else GENESIS
        moved = replace(st, seq=len(out) + 1, prev_hash=prev)
        out.append((moved, moved.encode()))
    return out


def _scaled_log() -> Log:
    rng = random.Random(3)
    log = Log()
    full = {c.key: c for c in (_chain(i, 1) for i in range(12_000))}
    log.interval(list(full.values()))
    for _ in range(5):
        moved = [replace(full[k], seq=full[k].seq + 10) for k in rng.sample(sorted(full), 300)]
        for c in moved:
            full[c.key] = c
        log.interval(moved)
    return log


def test_a_dropped_delta_statement_is_caught_even_when_the_log_is_relinked() -> None:
    log = _scaled_log()
    n = len(log.statements)
    dropped = log.statements[n - 3]
    log.statements.remove(dropped)
    report, claims = check_logs(log.stored(), KeyRing())
    assert _kinds(report.problems) == [("missing_statement", n - 2)]
    # Renumbered and relinked (possible without the keys): the digests give it away.
    log.statements = _relinked(log.statements)
    report, claims = check_logs(log.stored(), KeyRing())
    kinds = _kinds(report.problems)
    assert kinds == [("digest_mismatch", s) for s in range(n - 2, n)]
    assert "a statement dropped or edited" in report.problems[0].detail
    # The moves the dropped statement carried are what the fold misses.
    folded = _set(claims)
    assert any(folded[c.key].seq < c.seq for c in dropped[0].chains)


def test_an_edited_digest_is_caught_with_and_without_the_keys(
    keys: tuple[Signer, KeyRing],
) -> None:
    signer, keyring = keys
    log = _scaled_log()
    log.signer = signer
    last, _ = log.statements[-1]
    log.statements[-1] = (edited := replace(last, digest=bytes(32)), edited.encode())
    report, _ = check_logs(log.stored(), KeyRing())
    assert _kinds(report.problems) == [("digest_mismatch", last.seq)]  # the latest: no link
    stored = log.stored()
    stored[-1] = replace(stored[-1], signature=signer.sign(last.encode()))  # the signed original
    report, _ = check_logs(stored, keyring)
    assert _kinds(report.problems) == [("bad_signature", last.seq)]
    log.statements[-1] = (edited := replace(last, total=last.total + 1), edited.encode())
    report, _ = check_logs(log.stored(), KeyRing())
    assert _kinds(report.problems) == [("digest_mismatch", last.seq)]


def test_version_1_and_version_2_statements_mix_in_one_log() -> None:
    """An upgraded worker continues a version-1 log with deltas; a version-1 statement in the
    middle (an older worker) restates the whole set and may drop nothing."""
    log = Log()
    a, b, c = _chain(1, 5), _chain(2, 7), _chain(3, 1, kind="review")
    log.append(Statement("worker-a", 1, GENESIS, T0, (a, b), version=1))
    log.append(
        Statement(
            "worker-a",
            2,
            statement_hash(log.statements[-1][1]),
            T0,
            (replace(a, seq=6), b),
            version=1,
        )
    )
    log.interval([replace(b, seq=9), c])
    full = [replace(a, seq=6), replace(b, seq=9), c]
    assert log.statements[-1][0].digest == set_digest(full)
    log.append(
        Statement("worker-a", 4, statement_hash(log.statements[-1][1]), T0, tuple(full), version=1)
    )
    log.interval([replace(c, seq=4)])
    report, claims = check_logs(log.stored(), KeyRing())
    assert report.ok, report.problems
    assert sorted((k.producer_id, k.seq, n) for _, n, k in claims) == [
        (a.producer_id, 6, 2),
        (b.producer_id, 9, 3),
        (c.producer_id, 4, 5),
    ]
    # A later version-1 statement (a full restatement) that leaves out b, or a delta moving a
    # back, is a rewrite.
    log.append(
        Statement(
            "worker-a",
            6,
            statement_hash(log.statements[-1][1]),
            T0,
            (replace(a, seq=6), replace(c, seq=4)),
            version=1,
        )
    )
    log.interval([replace(a, seq=2)])
    report, claims = check_logs(log.stored(), KeyRing())
    problems = [(p.kind, p.statement, p.chain) for p in report.problems]
    assert ("restatement_mismatch", 6, b.name) in problems
    assert ("witness_rewritten", 7, a.name) in problems
    assert _set(claims)[b.key].seq == 9 and _set(claims)[a.key].seq == 6  # the highest seen


def test_several_witnesses_are_unioned_at_the_highest_seq_each_saw() -> None:
    """A chain that moved from worker-a to worker-b in a rebalance: both claims are checked."""
    wa, wb = Log(witness_id="worker-a"), Log(witness_id="worker-b")
    x, y = _chain(1, 10), _chain(2, 3)
    wa.interval([x, y])
    wb.interval([replace(x, seq=25)])
    report, claims = check_logs(wa.stored() + wb.stored(), KeyRing())
    assert report.ok and report.chains == 2 and report.witnesses == {"worker-a": 1, "worker-b": 1}
    assert sorted((w, c.producer_id, c.seq) for w, _, c in claims) == [
        ("worker-a", x.producer_id, 10),
        ("worker-a", y.producer_id, 3),
        ("worker-b", x.producer_id, 25),
    ]


def _anchored_log(signer: Signer | None = None) -> tuple[Log, dict[ChainKey, WitnessedChain]]:
    """500 chains: three restatements (each in parts), each followed by deltas."""
    rng = random.Random(5)
    log = Log(signer)
    full = {c.key: c for c in (_chain(i, 1) for i in range(500))}
    log.restate(list(full.values()))

    def moves(n: int) -> list[WitnessedChain]:
        moved = [replace(full[k], seq=full[k].seq + 1) for k in rng.sample(sorted(full), n)]
        new = [_chain(len(full) + 1000, 1)]
        for c in moved + new:
            full[c.key] = c
        return moved + new

    for _ in range(4):
        log.interval(moves(20))
    for _ in range(2):
        assert len(log.restate(moves(20))) > 2  # 500 chains over 20 KB parts
        for _ in range(3):
            log.interval(moves(20))
    return log, full


def _restatements(log: Log) -> list[list[int]]:
    """The seqs of each restatement's parts."""
    out: list[list[int]] = []
    for st, _ in log.statements:
        if st.full is not None:
            if st.full[0] == 1:
                out.append([])
            out[-1].append(st.seq)
    return out


def test_restatements_split_over_parts_fold_to_the_whole_set(
    keys: tuple[Signer, KeyRing],
) -> None:
    signer, keyring = keys
    log, full = _anchored_log(signer)
    restatements = _restatements(log)
    assert len(restatements) == 3 and all(len(r) > 2 for r in restatements)
    report, claims = check_logs(log.stored(), keyring)
    assert report.ok, report.problems[:3]
    assert _set(claims) == full and report.witnesses == {"worker-a": len(log.statements)}


def test_a_restatement_that_drops_a_chain_is_named(keys: tuple[Signer, KeyRing]) -> None:
    """Signed by the witness's own key and with a digest over what it lists: only the fold
    from the restatement before shows the chain it left out."""
    signer, keyring = keys
    log, full = _anchored_log(signer)
    dropped = sorted(full)[7]
    log.chains.remove(dropped)
    log.restate([])
    log.interval([replace(full[sorted(full)[0]], seq=99)])
    report, claims = check_logs(log.stored(), keyring)
    kinds = {(p.kind, p.chain) for p in report.problems}
    assert kinds == {("restatement_mismatch", full[dropped].name)}
    assert "drops chain" in report.problems[0].detail
    assert _set(claims)[dropped] == full[dropped]  # still claimed, so still checked


def test_a_tampered_statement_is_still_caught_before_and_after_the_restatements(
    keys: tuple[Signer, KeyRing],
) -> None:
    signer, keyring = keys
    for at in (9, -1):  # before the restatement folded from (link only), the latest
        log, _ = _anchored_log(signer)
        st, _ = log.statements[at]
        assert (st.full is None and st.seq < _restatements(log)[1][0]) or at == -1
        edited = replace(st, chains=st.chains[1:])
        stored = log.stored()
        stored[at] = replace(stored[at], data=edited.encode())
        report, _ = check_logs(stored, keyring)
        assert ("bad_signature", st.seq) in _kinds(report.problems)
        report, _ = check_logs(stored, KeyRing())
        assert _kinds(report.problems) == (
            [("broken_link", st.seq + 1)] if at == 9 else [("digest_mismatch", st.seq)]
        )


def test_a_missing_statement_is_reported_and_a_later_restatement_restores_the_set() -> None:
    log, full = _anchored_log()
    first = _restatements(log)[2][0]
    lost, _ = log.statements[first - 3]  # a delta between the last two restatements
    assert lost.full is None
    del log.statements[first - 3]
    report, claims = check_logs(log.stored(), KeyRing())
    assert _kinds(report.problems) == [("missing_statement", lost.seq)]
    assert _set(claims) == full  # what only the lost statement carried is restated later


def test_a_restatement_missing_its_last_part_is_not_complete() -> None:
    """Folding starts at the restatement before it, and its parts commit to no folded set."""
    log, full = _anchored_log()
    last = _restatements(log)[-1][-1]
    del log.statements[last - 1]
    report, claims = check_logs(log.stored(), KeyRing())
    assert _kinds(report.problems) == [("missing_statement", last)]
    assert _set(claims) == full


def test_an_unreadable_witness_source_is_under_the_error_root() -> None:
    assert issubclass(WitnessSourceError, DecisionAuditError)
    assert issubclass(WitnessSourceError, RuntimeError)  # callers caught RuntimeError
