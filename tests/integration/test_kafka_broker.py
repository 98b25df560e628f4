"""The Apache Kafka broker the project starts (devtools/kafka_broker.py): its settings, its jar
cache, and what only it does among our brokers: keep data across kill -9 and serve both group
protocols."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from decision_audit.devtools import kafka_broker
from decision_audit.devtools.kafka_broker import KafkaBroker, fetch_jars
from decision_audit.devtools.tansu_broker import BrokerUnavailable
from decision_audit.worker.topics import ensure_topics
from tests.helpers import Broker, BrokerFactory, consume_all

ROOT = Path(__file__).resolve().parents[2]
# Node-specific in the compose file (host names, volumes, heap): not the broker's behaviour.
NODE_SPECIFIC = {
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "listener.security.protocol.map",
    "log.dirs",
    "heap.opts",
}


def _compose_kafka_properties() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["kafka"][
        "environment"
    ]
    return {
        k.removeprefix("KAFKA_").lower().replace("_", "."): str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_")
    }


def test_broker_settings_are_the_compose_files_kafka_settings() -> None:
    compose = _compose_kafka_properties()
    ours = KafkaBroker(port=9092).server_properties()
    shared = set(compose) - NODE_SPECIFIC
    assert {"auto.create.topics.enable", "message.max.bytes", "process.roles"} <= shared
    assert {k: ours.get(k) for k in shared} == {k: compose[k] for k in shared}
    assert ours["group.initial.rebalance.delay.ms"] == "0"


def test_jars_are_fetched_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A completed fetch is reused without Maven; an unfinished one says how to get Maven."""
    monkeypatch.setattr(kafka_broker.shutil, "which", lambda _name: None)  # no mvn, no java
    libs = tmp_path / "9.9.9" / "libs"
    libs.mkdir(parents=True)
    with pytest.raises(BrokerUnavailable, match="make kafka-jars"):
        fetch_jars(tmp_path, "9.9.9")
    (libs / ".complete").write_text("kafka_2.13-9.9.9.jar\n")
    assert fetch_jars(tmp_path, "9.9.9") == libs


@pytest.mark.integration
@pytest.mark.kafka_only
def test_running_broker_has_the_settings_and_both_group_protocols(broker: Broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    config = {k: e.value for k, e in admin.describe_configs([res])[res].result(15).items()}
    assert config["auto.create.topics.enable"] == "false"
    assert config["message.max.bytes"] == "4194304"
    assert config["group.initial.rebalance.delay.ms"] == "0"
    protocols = set(config["group.coordinator.rebalance.protocols"].split(","))
    assert {"classic", "consumer"} <= protocols

    topic = f"proto-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {topic: 2})
    p = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(100):
        p.produce(topic, b"%d" % i, b"%d" % (i % 5))
    assert p.flush(15) == 0
    for protocol in ("classic", "consumer"):
        c = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": f"g-{protocol}-{uuid.uuid4().hex[:6]}",
                "group.protocol": protocol,
                "auto.offset.reset": "earliest",
            }
        )
        c.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < 100 and time.monotonic() < deadline:
            got.extend(m for m in c.consume(100, 0.5) if m.error() is None)
        assert len(c.assignment()) == 2, protocol
        c.close()
        assert sorted(int(m.value()) for m in got) == list(range(100)), protocol


@pytest.mark.integration
@pytest.mark.kafka_only
def test_no_topic_is_created_by_producing_to_it(broker: Broker) -> None:
    topic = f"typo-{uuid.uuid4().hex[:8]}"
    errors: list[KafkaError] = []
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.timeout.ms": 2000})
    p.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    assert topic not in admin.list_topics(timeout=10).topics


@pytest.mark.integration
@pytest.mark.kafka_only
def test_data_and_offsets_survive_kill9_and_restart_on_the_same_log_dir(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(kind="kafka")
    assert isinstance(b, KafkaBroker)
    bs, topic, group = b.bootstrap_servers, f"durable-{uuid.uuid4().hex[:8]}", "g-durable"
    ensure_topics(bs, {topic: 3})
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all"})
    for i in range(3000):
        p.produce(topic, b"%d" % i, b"%d" % (i % 7))
    assert p.flush(15) == 0
    p.close()
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 17)], asynchronous=False)
    c.close()

    pid = b.pid
    b.kill()
    assert not b.running
    b.start()
    assert b.pid != pid
    assert "since no clean shutdown file was found" in b.log_path.read_text()  # a real recovery

    msgs = consume_all(bs, topic, expect=3000)
    assert sorted(int(m.value()) for m in msgs) == list(range(3000))
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    assert tp.offset == 17
