"""The producer's Prometheus metrics read its real counters (real broker, real spool)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from decision_audit import AuditProducer
from decision_audit.devtools.tansu_broker import LocalBroker, free_port
from decision_audit.producer.metrics import instrument

pytestmark = pytest.mark.integration


def _value(registry: CollectorRegistry, name: str, producer_id: str) -> float | None:
    return registry.get_sample_value(name, {"producer_id": producer_id})


def test_counters_and_spool_depth_are_exported(
    broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    up = AuditProducer(broker.bootstrap_servers, producer_id="metrics-up", topic=topic)
    down = AuditProducer(
        f"127.0.0.1:{free_port()}",  # nothing listens: events go to the spool
        producer_id="metrics-down",
        topic=topic,
        spool_dir=tmp_path / "spool",
        spool_after=0.2,
    )
    instrument(up, down, registry=registry)
    try:
        for i in range(5):
            up.log_decision("m", "1", {"i": i}, "y")
            down.log_decision("m", "1", {"i": i}, "y")
        assert up.flush(10) == 0
        assert _value(registry, "decision_audit_producer_logged_total", "metrics-up") == 5
        assert _value(registry, "decision_audit_producer_delivered_total", "metrics-up") == 5
        assert _value(registry, "decision_audit_producer_dropped_total", "metrics-up") == 0
        deadline = time.monotonic() + 20
        while _value(registry, "decision_audit_producer_spool_events", "metrics-down") != 5:
            assert time.monotonic() < deadline, generate_latest(registry).decode()
            time.sleep(0.1)
        assert _value(registry, "decision_audit_producer_delivered_total", "metrics-down") == 0
        spool_bytes = _value(registry, "decision_audit_producer_spool_bytes", "metrics-down")
        assert spool_bytes is not None and spool_bytes > 5 * 150  # ~230 B per small event
    finally:
        up.close(5)
        down.close(0.5)
