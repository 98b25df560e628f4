"""The consumer-group protocol setting: classic, or KIP-848 ``consumer``."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer
from pydantic import ValidationError

from decision_audit.worker.settings import WorkerSettings


def test_classic_is_the_default_and_sets_the_session() -> None:
    config = WorkerSettings(session_timeout_ms=2000).consumer_config()
    assert "group.protocol" not in config
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (2000, 666)


def test_consumer_protocol_leaves_session_and_heartbeat_to_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DECISION_AUDIT_GROUP_PROTOCOL", "consumer")
    config = WorkerSettings().consumer_config()
    assert config["group.protocol"] == "consumer"
    assert "session.timeout.ms" not in config and "heartbeat.interval.ms" not in config
    # librdkafka accepts it (it refuses session.timeout.ms and heartbeat.interval.ms here).
    Consumer(config).close()


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(group_protocol="cooperative")  # type: ignore[arg-type]
