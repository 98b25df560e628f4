"""Benchmark 2 (and the worker half of 4): end-to-end worker throughput against a naive consumer.

A topic is preloaded with real AuditProducer events (eight producer chains, so several
partitions carry data). Then each consumer runs in its own subprocess into its own fresh chDB
directory, one after the other, on the same topic data, each under a fresh consumer group.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import log_call, make_calls, run_json
from decision_audit import AuditProducer
from decision_audit.worker.topics import ensure_topics

TOPIC = "decisions"
CHAINS = 8


def preload(bootstrap: str, events: int, topic: str = TOPIC) -> dict[str, Any]:
    """Log ``events`` decisions through AuditProducers; returns how many were delivered."""
    ensure_topics(bootstrap, {topic: 4, topic + "-dlq": 1, topic + "-model-events": 1})
    run = uuid.uuid4().hex[:8]
    pool = make_calls(4096, seed=7)
    producers = [
        AuditProducer(
            bootstrap, producer_id=f"bench-preload-{run}-{k}", topic=topic, enqueue_timeout=30.0
        )
        for k in range(CHAINS)
    ]
    started = time.perf_counter()
    try:
        for i in range(events):
            log_call(producers[i % CHAINS], pool[i % 4096])
        undelivered = sum(p.flush(120) for p in producers)
    finally:
        for p in producers:
            p.close(30)
    delivered = sum(p.stats.delivered for p in producers)
    problems = sum(p.stats.failed + p.stats.dropped for p in producers)
    if delivered != events or undelivered or problems:
        raise RuntimeError(
            f"preload delivered {delivered} of {events} ({undelivered} undelivered, "
            f"{problems} failed or dropped)"
        )
    return {"events": events, "seconds": time.perf_counter() - started}


def consume(
    mode: str,
    bootstrap: str,
    events: int,
    workdir: Path,
    *,
    topic: str = TOPIC,
    disk: bool = True,
    profile: Path | None = None,
) -> dict[str, Any]:
    chdb = workdir / f"chdb-{mode}-{uuid.uuid4().hex[:6]}"
    # Generous: the naive consumer at ~10k ev/s, plus start-up, the group join and a merge.
    deadline = 120 + events / 5000
    args = [
        "-m",
        "bench.worker_run",
        "--mode",
        mode,
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        f"bench-{mode}-{uuid.uuid4().hex[:8]}",
        "--chdb",
        str(chdb),
        "--expect",
        str(events),
        "--deadline",
        str(deadline),
    ]
    if disk:
        args.append("--disk")
    if profile is not None:
        args += ["--profile", str(profile)]
    result = run_json(args, timeout=deadline + 120)
    if result["stored"] != events:
        raise RuntimeError(f"{mode} consumer stored {result['stored']} of {events} events")
    return result


def run(bootstrap: str, events: int, workdir: Path) -> dict[str, Any]:
    loaded = preload(bootstrap, events)
    ours = consume("ours", bootstrap, events, workdir)
    naive = consume("naive", bootstrap, events, workdir)
    return {"preload": loaded, "ours": ours, "naive": naive}
