"""Issue-3 benchmark: what integrity costs, each figure beside the same path without it.

Producer: µs per ``log_decision`` for three producers timed interleaved in one process —
``signed`` (hash chain + Ed25519 checkpoints every 1,000 events / 5 s, the recommended
setting), ``chained`` (hash chain, no signing key: the default) and ``off`` (the same code with
the SHA-256 chain step replaced by a no-op, i.e. what the producer would cost without
integrity). Verification: events/s of the worker's checks and of ``decision-audit verify``,
run in a subprocess (``bench.verify_run``) with its own chDB directory.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import decision_audit.producer.chain as chain_module
from bench.common import log_call, make_calls, percentile, run_json
from decision_audit import AuditProducer
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.topics import ensure_topics

TOPIC = "bench-integrity"
POOL = 4096
WARMUP = 1000


def _no_chain(prev_hash: bytes, _body: bytes) -> bytes:
    return prev_hash


def producer_costs(bootstrap: str, calls: int, workdir: Path, rounds: int) -> dict[str, Any]:
    ensure_topics(bootstrap, {TOPIC: 4})
    keys = workdir / "integrity-keys"
    generate_keypair(keys, "bench")
    pool = make_calls(POOL, seed=11)
    run = uuid.uuid4().hex[:8]
    contestants = {
        "signed": AuditProducer(
            bootstrap,
            producer_id=f"bench-signed-{run}",
            topic=TOPIC,
            signing_key=keys / "bench.key",
            checkpoint_every=1000,
            checkpoint_interval=5.0,
        ),
        "chained": AuditProducer(bootstrap, producer_id=f"bench-chained-{run}", topic=TOPIC),
        "off": AuditProducer(bootstrap, producer_id=f"bench-off-{run}", topic=TOPIC),
    }
    samples: dict[str, list[int]] = {name: [0] * calls for name in contestants}
    real_chain_hash = chain_module.chain_hash

    def timed(name: str, lo: int, hi: int) -> None:
        p, s, pc = contestants[name], samples[name], time.perf_counter_ns
        if name == "off":
            chain_module.chain_hash = _no_chain  # type: ignore[assignment]
        try:
            for i in range(lo, hi):
                c = pool[i % POOL]
                t0 = pc()
                log_call(p, c)
                s[i] = pc() - t0
        finally:
            chain_module.chain_hash = real_chain_hash
        p.flush(30)

    try:
        for name in contestants:
            timed(name, 0, min(WARMUP, calls))
        order = list(contestants)
        bounds = [calls * r // rounds for r in range(rounds + 1)]
        for r in range(rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                timed(name, bounds[r], bounds[r + 1])
        checkpoints = contestants["signed"].stats.checkpoints
    finally:
        for p in contestants.values():
            p.close(30)
    out: dict[str, Any] = {"calls": calls, "rounds": rounds, "checkpoints_signed": checkpoints}
    for name, s in samples.items():
        s.sort()
        out[name] = {
            "p50_us": percentile(s, 50) / 1000,
            "p99_us": percentile(s, 99) / 1000,
            "mean_us": sum(s) / len(s) / 1000,
        }
    return out


def run(bootstrap: str, calls: int, events: int, workdir: Path, rounds: int) -> dict[str, Any]:
    producer = producer_costs(bootstrap, calls, workdir, rounds)
    chdb = workdir / f"chdb-verify-{uuid.uuid4().hex[:6]}"
    verification = run_json(
        ["-m", "bench.verify_run", "--events", str(events), "--chdb", str(chdb)],
        timeout=120 + events / 2000,
    )
    return {"producer": producer, "verification": verification}
