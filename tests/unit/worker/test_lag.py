"""The lag gauge's arithmetic: log end minus position, kept on a missing answer, dropped
when the partition is no longer assigned (the broker side: tests/faults/test_kafka_lag.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from decision_audit.worker.lag import BrokerLag


def _values(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "lag"
    }


def test_lag_is_log_end_minus_position_and_follows_the_assignment() -> None:
    registry = CollectorRegistry()
    lag = BrokerLag(Gauge("lag", "lag", ["topic", "partition"], registry=registry), {})
    lag._show({("t", 0): 10, ("t", 1): 5}, {("t", 0): 25, ("t", 1): 5})
    assert _values(registry) == {("t", "0"): 15, ("t", "1"): 0}

    # No answer for partition 0 this time: its last value stays. Partition 1 was revoked.
    lag._show({("t", 0): 12, ("t", 2): 3}, {("t", 2): 4})
    assert _values(registry) == {("t", "0"): 15, ("t", "2"): 1}

    # A position past the end the broker gave (a stale answer) is no negative lag.
    lag._show({("t", 2): 9}, {("t", 2): 4})
    assert _values(registry) == {("t", "2"): 0}
