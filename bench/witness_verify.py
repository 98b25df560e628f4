"""What verify's witness check costs per million statements (issue 17/15): every statement's
decode, link and signature, against the fold with digests it does only from the second-latest
full restatement on. ``python -m bench.witness_verify [--statements N] [--moves M]``."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from decision_audit.audit.witness import StoredStatement, check_logs
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.witness import (
    GENESIS,
    ChainSet,
    WitnessedChain,
    delta_statements,
    full_statements,
    statement_hash,
)
from decision_audit.producer.signing import Signer, generate_keypair

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _log(
    signer: Signer, chains: int, deltas: int, moves: int, anchored: bool
) -> list[StoredStatement]:
    """A restatement of ``chains``, ``deltas`` deltas of ``moves`` chains each, and (anchored)
    two more restatements at the end, so verify folds only the last few statements."""
    rng = random.Random(1)
    full = [
        WitnessedChain("decision_event", f"pod-{i:05d}", i, 1, rng.randbytes(32), T0)
        for i in range(chains)
    ]
    state, out = ChainSet(), []
    prev, seq = GENESIS, 1

    def emit(statements: object) -> None:
        nonlocal prev, seq
        for st, data, _ in statements:  # type: ignore[attr-defined]
            out.append(StoredStatement(data, signer.sign(data), "bench", st.witness_id, st.seq))
            prev, seq = statement_hash(data), seq + 1

    at = T0
    emit(full_statements("w", seq, prev, at, state, full))
    for n in range(deltas):
        at += timedelta(seconds=30)
        moved = [replace(c, seq=c.seq + n + 1) for c in rng.sample(full, moves)]
        emit(delta_statements("w", seq, prev, at, state, moved))
    if anchored:
        for _ in range(2):
            emit(full_statements("w", seq, prev, at, state, []))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--statements", type=int, default=4000)
    ap.add_argument("--chains", type=int, default=12_000)
    ap.add_argument("--moves", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate_keypair(Path(tmp), "w")
        signer, keyring = Signer(Path(tmp) / "w.key"), KeyRing.load(Path(tmp))
        for anchored in (True, False):
            took = []
            for n in (a.statements // 4, a.statements):  # the slope: restatements cancel out
                log = _log(signer, a.chains, n, a.moves, anchored)
                t = time.perf_counter()
                report, _ = check_logs(log, keyring)
                took.append(time.perf_counter() - t)
                assert report.ok, report.problems[:3]
            per = (took[1] - took[0]) / (a.statements - a.statements // 4)
            what = "before the restatement folded from" if anchored else "folded with digests"
            print(
                f"deltas of {a.moves} of {a.chains} chains, {what}: "
                f"{per * 1e6:.0f} s per million statements"
            )


if __name__ == "__main__":
    main()
