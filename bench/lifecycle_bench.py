"""Benchmark: a producer's lifecycle — open, log a few decisions, flush, close.

A batch-scoring job that opens a producer per shard pays this on every shard. Ours (the
default settings) is timed beside a bare librdkafka producer with the same settings (the
floor: connect, one produce round trip, close) and beside ours with librdkafka's idempotence
(the earlier default: its producer id is requested on a 500 ms timer).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Producer

from bench.common import percentile
from decision_audit import AuditProducer, ProducerSettings
from decision_audit.worker.topics import ensure_topics

TOPIC = "bench-lifecycle"
EVENTS_PER_CYCLE = 3


def _ours(bootstrap: str, cycles: int, **kafka: Any) -> dict[str, Any]:
    flush_ms: list[float] = []
    close_ms: list[float] = []
    started = time.perf_counter()
    for i in range(cycles):
        p = AuditProducer(bootstrap, f"lifecycle-{uuid.uuid4().hex[:8]}-{i}", TOPIC, **kafka)
        for j in range(EVENTS_PER_CYCLE):
            p.log_decision("m", "1", {"x": j}, "yes")
        t = time.perf_counter()
        assert p.flush(10) == 0, "undelivered after flush"
        flush_ms.append((time.perf_counter() - t) * 1000)
        p.log_decision("m", "1", {"x": -1}, "yes")
        t = time.perf_counter()
        assert p.close(10) == 0, "undelivered after close"
        close_ms.append((time.perf_counter() - t) * 1000)
    return _summary(flush_ms, close_ms, time.perf_counter() - started, cycles)


def _bare(bootstrap: str, cycles: int) -> dict[str, Any]:
    conf = ProducerSettings(bootstrap_servers=bootstrap, producer_id="bare").kafka_config()
    flush_ms: list[float] = []
    close_ms: list[float] = []
    started = time.perf_counter()
    for _ in range(cycles):
        p = Producer(conf)
        for _ in range(EVENTS_PER_CYCLE):
            p.produce(TOPIC, b"x" * 444, b"bare")
        t = time.perf_counter()
        assert p.flush(10) == 0
        flush_ms.append((time.perf_counter() - t) * 1000)
        p.produce(TOPIC, b"x" * 444, b"bare")
        t = time.perf_counter()
        assert p.flush(10) == 0
        p.close()
        close_ms.append((time.perf_counter() - t) * 1000)
    return _summary(flush_ms, close_ms, time.perf_counter() - started, cycles)


def _summary(flush_ms: list[float], close_ms: list[float], total: float, n: int) -> dict[str, Any]:
    return {
        "cycles": n,
        "flush_p50_ms": percentile(sorted(flush_ms), 50),
        "flush_p99_ms": percentile(sorted(flush_ms), 99),
        "close_p50_ms": percentile(sorted(close_ms), 50),
        "close_p99_ms": percentile(sorted(close_ms), 99),
        "total_s": total,
        "per_1000_s": total / n * 1000,
    }


def run(bootstrap: str, cycles: int) -> dict[str, Any]:
    ensure_topics(bootstrap, {TOPIC: 4})
    idempotent_cycles = max(3, cycles // 20)  # ~0.5-1 s each: a sample is enough
    return {
        "ours": _ours(bootstrap, cycles),
        "bare": _bare(bootstrap, cycles),
        "idempotent": _ours(bootstrap, idempotent_cycles, enable_idempotence=True),
    }
