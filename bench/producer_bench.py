"""Benchmark 1: microseconds per ``log_decision`` against a bare produce and a JSON log line.

The three contestants run interleaved, in rounds of equal chunks with a rotating order, so the
noise of this machine lands on all of them alike. Every call is timed alone with
``perf_counter_ns``. Outside the timed region: the bare producer's ``poll(0)`` every 1,000
calls (the AuditProducer polls in its own thread, as in production), and a ``flush()`` of both
producers after each chunk, so one contestant's deliveries do not run during another's chunk.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.common import make_calls, percentile
from decision_audit import AuditProducer, ProducerSettings
from decision_audit.worker.topics import ensure_topics

OURS_TOPIC = "bench-producer-ours"
BARE_TOPIC = "bench-producer-bare"
POOL = 4096
WARMUP = 1000


def run(bootstrap: str, calls: int, workdir: Path, rounds: int = 10) -> dict[str, Any]:
    ensure_topics(bootstrap, {OURS_TOPIC: 4, BARE_TOPIC: 4})
    pool = make_calls(POOL)
    events = [c.as_json_event() for c in pool]
    producer_id = f"bench-producer-{uuid.uuid4().hex[:8]}"

    ours = AuditProducer(bootstrap, producer_id=producer_id, topic=OURS_TOPIC)
    # The same librdkafka settings the AuditProducer uses (acks=all, in order, lz4, linger 5).
    conf = ProducerSettings(bootstrap_servers=bootstrap, producer_id=producer_id).kafka_config()
    conf["client.id"] = "bench-bare"
    bare = Producer(conf)

    log_path = workdir / "decisions.jsonl"
    jlog = logging.getLogger("bench.jsonlog")
    jlog.handlers.clear()
    jlog.propagate = False
    jlog.setLevel(logging.INFO)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    jlog.addHandler(handler)

    samples: dict[str, list[int]] = {name: [0] * calls for name in ("ours", "bare", "logging")}
    bare_buffer_full = 0

    def time_ours(lo: int, hi: int) -> None:
        pc = time.perf_counter_ns
        s = samples["ours"]
        p = ours
        for i in range(lo, hi):
            c = pool[i % POOL]
            t0 = pc()
            p.log_decision(
                c.model_name,
                c.model_version,
                c.inputs,
                c.prediction,
                score=c.score,
                request_id=c.request_id,
                deployment_id=c.deployment_id,
            )
            s[i] = pc() - t0

    def time_bare(lo: int, hi: int) -> None:
        nonlocal bare_buffer_full
        pc = time.perf_counter_ns
        s = samples["bare"]
        produce, dumps, now = bare.produce, json.dumps, time.time
        for i in range(lo, hi):
            ev = events[i % POOL]
            t0 = pc()
            ev["ts"] = now()
            try:
                produce(BARE_TOPIC, dumps(ev))
            except BufferError:  # local queue full: count it, make room, untimed
                s[i] = pc() - t0
                bare_buffer_full += 1
                bare.poll(0.01)
                continue
            s[i] = pc() - t0
            if i % 1000 == 0:
                bare.poll(0)

    def time_logging(lo: int, hi: int) -> None:
        pc = time.perf_counter_ns
        s = samples["logging"]
        info, dumps, now = jlog.info, json.dumps, time.time
        for i in range(lo, hi):
            ev = events[i % POOL]
            t0 = pc()
            ev["ts"] = now()
            info(dumps(ev))
            s[i] = pc() - t0

    runners = {"ours": time_ours, "bare": time_bare, "logging": time_logging}
    try:
        # Warm up every path (imports, pydantic validators, connections) before timing.
        for name in runners:
            runners[name](0, min(WARMUP, calls))
        ours.flush(30)
        bare.flush(30)
        order = list(runners)
        bounds = [calls * r // rounds for r in range(rounds + 1)]
        for r in range(rounds):
            lo, hi = bounds[r], bounds[r + 1]
            for name in order[r % 3 :] + order[: r % 3]:
                runners[name](lo, hi)
                ours.flush(30)
                bare.flush(30)
        undelivered = ours.flush(30) + bare.flush(30)
        stats = ours.stats
        result: dict[str, Any] = {
            "calls": calls,
            "rounds": rounds,
            "ours_dropped": stats.dropped,
            "ours_failed": stats.failed,
            "bare_buffer_full": bare_buffer_full,
            "undelivered": undelivered,
            "log_bytes": log_path.stat().st_size,
        }
        for name, s in samples.items():
            s.sort()
            result[name] = {
                "p50_us": percentile(s, 50) / 1000,
                "p99_us": percentile(s, 99) / 1000,
                "p999_us": percentile(s, 99.9) / 1000,
                "mean_us": sum(s) / len(s) / 1000,
            }
        return result
    finally:
        ours.close(10)
        bare.flush(10)
        jlog.removeHandler(handler)
        handler.close()
