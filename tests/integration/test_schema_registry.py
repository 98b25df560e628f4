"""The Confluent Schema Registry framing end to end: producer → broker → worker → chDB → verify.

The broker is the ``broker`` fixture: Apache Kafka by default (this module is not in the
Tansu smoke set of ``tests/conftest.py``), Tansu under ``--brokers tansu``.

No Schema Registry server can run here (Karapace is not on PyPI; Apicurio's jar on Maven
Central is a Quarkus module, not a runnable server), so the registry is confluent-kafka's own
in-memory one (``mock://``, its official test double). Its store belongs to one client
object, so the producer, the worker and Confluent's deserializer are given the same client.
A registry that is down is a real closed loopback port.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from decision_audit import AuditProducer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.contract import chain_hash, default_codec
from decision_audit.contract.codec import MAGIC
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.registry_codec import (
    RegistryCodec,
    SubjectNotRegistered,
    schema_text,
    subject_name,
)
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.batch import BatchChecker
from decision_audit.worker.loop import StoreFailed, Worker, WorkerStats
from decision_audit.worker.received import Received
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import Broker, consume_all, count, craft_chain, send_raw

pytestmark = pytest.mark.integration

HDR = "da-event-hash"
SHIPPED = default_codec().registry


@pytest.fixture
def sr() -> Any:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex[:8]}"})


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "serving-1")
    return tmp_path / "keys"


@pytest.fixture
def settings(broker: Broker, worker_settings: WorkerSettings) -> WorkerSettings:
    """The worker's settings with model-events, outcomes and reviews topics of the test's own."""
    topics = {
        name: f"{worker_settings.topic}-{suffix}"
        for name, suffix in (
            ("model_events_topic", "me"),
            ("outcomes_topic", "outcomes"),
            ("reviews_topic", "reviews"),
        )
    }
    ensure_topics(broker.bootstrap_servers, dict.fromkeys(topics.values(), 1))
    return worker_settings.model_copy(update=topics)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _producer(broker: Broker, s: WorkerSettings, pid: str, **kw: Any) -> AuditProducer:
    return AuditProducer(
        broker.bootstrap_servers,
        producer_id=pid,
        topic=s.topic,
        model_events_topic=s.model_events_topic,
        outcomes_topic=s.outcomes_topic,
        reviews_topic=s.reviews_topic,
        **kw,
    )


def _log(p: AuditProducer, n: int) -> list[str]:
    ids = [
        p.log_decision("m", "1", {"i": i}, "yes" if i % 2 else "no", score=i / n) for i in range(n)
    ]
    p.log_model_event("deploy", {"type": "model_version", "id": "m:1"}, actor="ci")
    return ids


def _follow_up(p: AuditProducer, decision: str) -> None:
    """An outcome and a review of ``decision``, each on its own topic and chain."""
    p.log_outcome(decision, "yes", source="labels")
    p.log_review(decision, "j.doe", "override", final_decision="no", reason="policy")


def _run(s: WorkerSettings, ch: Any, registry: Any = None, **update: Any) -> WorkerStats:
    return Worker(s.model_copy(update=update), client=ch, schema_registry=registry).run()


@pytest.mark.parametrize("parse_in_clickhouse", [True, False], ids=["clickhouse", "python"])
def test_registry_framed_trail_is_stored_and_verifies(
    broker: Broker,
    ch: Any,
    settings: WorkerSettings,
    sr: Any,
    keys: Path,
    parse_in_clickhouse: bool,
) -> None:
    with _producer(
        broker, settings, "framed", schema_registry=sr, signing_key=keys / "serving-1.key"
    ) as p:
        assert p.framing == "confluent"
        ids = _log(p, 50)
        _follow_up(p, ids[0])
        p.checkpoint()
    on_topic = consume_all(broker.bootstrap_servers, settings.topic, expect=51)
    assert {m.value()[:1] for m in on_topic} == {b"\x00"}  # events and checkpoints
    for side in (settings.model_events_topic, settings.outcomes_topic, settings.reviews_topic):
        # Every topic: its record and the checkpoint of its chain.
        framed = consume_all(broker.bootstrap_servers, side, expect=2)
        assert [m.value()[:1] for m in framed] == [b"\x00", b"\x00"], side
    stats = _run(settings, ch, sr, keys=keys, parse_in_clickhouse=parse_in_clickhouse)
    assert stats.quarantined_total == 0 and stats.inserted == len(ids) and stats.checkpoints >= 1
    db = settings.database
    # The trail stores single-object encoding: verify and trace need no registry.
    for table, rows in (("decisions", 50), ("model_events", 1), ("outcomes", 1), ("reviews", 1)):
        raws = ch.query(f"SELECT raw FROM {db}.{table}", column_formats={"raw": "bytes"})
        assert [bytes(r[0])[:2] for r in raws.result_rows] == [MAGIC] * rows, table
    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    # verify walks every chained kind: the decisions and each follow-up on its own chain
    assert report.ok and report.events == len(ids) + 3
    assert [(c.producer_id, c.events, c.attested_to) for c in report.chains] == [
        ("framed", 50, 50),
        ("framed/model-events", 1, 1),
        ("framed/outcomes", 1, 1),
        ("framed/reviews", 1, 1),
    ]


def test_one_topic_carries_both_framings(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any
) -> None:
    with (
        _producer(broker, settings, "framed", schema_registry=sr) as framed,
        _producer(broker, settings, "single") as single,
    ):
        assert (framed.framing, single.framing) == ("confluent", "single-object")
        for i in range(40):
            framed.log_decision("m", "1", {"i": i}, "a")
            single.log_decision("m", "1", {"i": i}, "b")
    stats = _run(settings, ch, sr)
    assert stats.inserted == 80 and stats.quarantined_total == 0
    db = settings.database
    rows = ch.query(f"SELECT producer_id, count() FROM {db}.decisions GROUP BY 1").result_rows
    assert dict(rows) == {"framed": 40, "single": 40}
    assert TrailVerifier(ch, db, KeyRing()).run().ok


def test_confluent_avro_deserializer_reads_our_topic(
    broker: Broker, settings: WorkerSettings, sr: Any, keys: Path
) -> None:
    with _producer(
        broker, settings, "interop", schema_registry=sr, signing_key=keys / "serving-1.key"
    ) as p:
        ids = _log(p, 20)
        _follow_up(p, ids[0])
        p.checkpoint()
    messages = consume_all(broker.bootstrap_servers, settings.topic, expect=21)
    deserialize = AvroDeserializer(sr)  # what Flink, ksqlDB or a plain consumer would use
    ours = RegistryCodec(sr, SHIPPED)
    names = []
    for m in messages:
        theirs = deserialize(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        decoded = ours.decode(m.value())
        assert theirs == decoded.record
        names.append(decoded.writer.name)
        if decoded.writer.name == "decision_event":
            assert chain_hash(theirs["prev_hash"], m.value()[5:]) == dict(m.headers())[HDR]
    assert sorted(set(names)) == ["checkpoint", "decision_event"]
    # The model event and the checkpoint signed right behind it.
    lifecycle = consume_all(broker.bootstrap_servers, settings.model_events_topic, expect=2)
    ctx = SerializationContext(settings.model_events_topic, MessageField.VALUE)
    read = [deserialize(m.value(), ctx) for m in lifecycle]
    assert [r.get("action") for r in read] == ["deploy", None]
    assert read == [ours.decode(m.value()).record for m in lifecycle]
    # Outcomes and reviews: each topic its record and its chain's checkpoint.
    for topic, field, value in (
        (settings.outcomes_topic, "actual", "yes"),
        (settings.reviews_topic, "verdict", "override"),
    ):
        follow_ups = consume_all(broker.bootstrap_servers, topic, expect=2)
        ctx = SerializationContext(topic, MessageField.VALUE)
        read = [deserialize(m.value(), ctx) for m in follow_ups]
        assert [r.get(field) for r in read] == [value, None], topic
        assert read[0]["decision_id"] == ids[0]
        assert read == [ours.decode(m.value()).record for m in follow_ups]


def test_lookup_only_needs_the_subjects_registered_and_names_the_missing_one(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any
) -> None:
    with pytest.raises(SubjectNotRegistered, match=f"'{settings.topic}-value'"):
        _producer(broker, settings, "governed", schema_registry=sr, auto_register_schemas=False)

    # The platform team registers the shipped schemas under the producer's subjects: every
    # topic it writes, the follow-ups' too.
    def register(topic: str, record: str) -> None:
        for schema in (SHIPPED.latest(record), SHIPPED.latest("checkpoint")):
            sr.register_schema(subject_name("topic", topic, schema), Schema(schema_text(schema)))

    register(settings.topic, "decision_event")
    register(settings.model_events_topic, "model_event")
    with pytest.raises(SubjectNotRegistered, match=f"'{settings.outcomes_topic}-value'"):
        _producer(broker, settings, "governed", schema_registry=sr, auto_register_schemas=False)
    register(settings.outcomes_topic, "outcome")
    register(settings.reviews_topic, "review")
    with _producer(
        broker, settings, "governed", schema_registry=sr, auto_register_schemas=False
    ) as p:
        assert p.framing == "confluent"
        _log(p, 10)
    assert _run(settings, ch, sr).inserted == 10


def test_registry_unreachable_at_start_falls_back_and_nothing_is_lost(
    broker: Broker,
    ch: Any,
    settings: WorkerSettings,
    sr: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    with (
        caplog.at_level(logging.WARNING, logger="decision_audit.producer"),
        _producer(broker, settings, "fallback", schema_registry=down) as p,
    ):
        assert p.framing == "single-object"
        ids = _log(p, 30)
    assert any("unreachable at start" in r.getMessage() for r in caplog.records)
    assert down in caplog.text
    stats = _run(settings, ch, sr)  # a worker with a registry reads single-object too
    assert stats.inserted == len(ids) and stats.quarantined_total == 0
    assert TrailVerifier(ch, settings.database, KeyRing()).run().ok


def test_the_environment_names_the_registry(
    broker: Broker, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECISION_AUDIT_SCHEMA_REGISTRY_URL", "mock://from-env")
    monkeypatch.setenv("DECISION_AUDIT_SUBJECT_NAME_STRATEGY", "record")
    with _producer(broker, settings, "env") as p:
        assert p.framing == "confluent" and p.settings.subject_name_strategy == "record"
    assert WorkerSettings().schema_registry_url == "mock://from-env"


def test_unknown_schema_ids_are_quarantined_as_received(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any
) -> None:
    (single, h), (single2, h2) = craft_chain("ids", 2)
    body = single[10:]
    foreign_id = sr.register_schema(
        "foreign-value",
        Schema('{"type":"record","name":"Foreign","fields":[{"name":"x","type":"long"}]}'),
    )
    unknown = b"\x00" + (999_999).to_bytes(4, "big") + body
    foreign = b"\x00" + foreign_id.to_bytes(4, "big") + body
    junk = b"\x00\x01 random bytes"
    send_raw(
        broker.bootstrap_servers,
        settings.topic,
        [
            (b"ids", unknown, [(HDR, h)]),
            (b"ids", foreign, [(HDR, h)]),
            (b"junk", junk, None),
            (b"ids", single, [(HDR, h)]),
            (b"ids", single2, [(HDR, h2)]),
        ],
    )
    stats = _run(settings, ch, sr)
    assert stats.inserted == 2
    db = settings.database
    rows = ch.query(
        f"SELECT reason, detail, raw FROM {db}.quarantine ORDER BY source_offset",
        column_formats={"raw": "bytes"},
    ).result_rows
    got = {bytes(raw): (reason, detail) for reason, detail, raw in rows}
    assert got[unknown][0] == "unknown_schema_id" and "999999" in got[unknown][1]
    assert got[foreign][0] == "unknown_schema" and f"id {foreign_id}" in got[foreign][1]
    assert got[junk][0] == "unknown_schema_id"
    dlq = consume_all(broker.bootstrap_servers, settings.dlq_topic, expect=3)
    assert {m.value() for m in dlq} == {unknown, foreign, junk}


@pytest.mark.parametrize("parse_in_clickhouse", [True, False], ids=["clickhouse", "python"])
def test_a_rejected_framed_event_is_quarantined_as_received_and_size_counts_as_received(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any, parse_in_clickhouse: bool
) -> None:
    with _producer(broker, settings, "sized", schema_registry=sr) as p:
        for i in range(3):
            p.log_decision("m", "1", {"i": i}, "yes")
    first, second, third = sorted(
        consume_all(broker.bootstrap_servers, settings.topic, expect=3), key=lambda m: m.offset()
    )
    tampered = bytearray(third.value())
    tampered[-40] ^= 0x01  # the claimed hash no longer matches
    send_raw(
        broker.bootstrap_servers,
        settings.topic,
        [(b"sized", bytes(tampered), third.headers())],
    )
    # The limit is the size as received: the largest framed event fits exactly, though
    # re-framed as single-object encoding it is 5 bytes longer.
    largest = max(len(m.value()) for m in (first, second, third))
    stats = _run(settings, ch, sr, max_event_bytes=largest, parse_in_clickhouse=parse_in_clickhouse)
    assert stats.inserted == 3
    ((reason, raw),) = ch.query(
        f"SELECT reason, raw FROM {settings.database}.quarantine",
        column_formats={"raw": "bytes"},
    ).result_rows
    assert (reason, bytes(raw)) == ("hash_mismatch", bytes(tampered))


def test_registry_outage_at_the_worker_quarantines_nothing_and_commits_nothing(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any
) -> None:
    with _producer(broker, settings, "outage", schema_registry=sr) as p:
        ids = _log(p, 20)
    down = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StoreFailed, match="Schema Registry unavailable"):
        _run(
            settings,
            ch,
            down,
            insert_retry_limit=2,
            insert_retry_backoff=0.05,
            insert_retry_max_backoff=0.1,
        )
    db = settings.database
    assert count(ch, f"SELECT count() FROM {db}.quarantine") == 0
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 0
    committed = _committed(broker, settings)
    assert all(offset < 0 for offset in committed), committed
    # The registry is back: the same group reads every event from where it was.
    stats = _run(settings, ch, sr)
    assert stats.inserted == len(ids) and stats.quarantined_total == 0


def _committed(broker: Broker, s: WorkerSettings) -> list[int]:
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": s.group})
    try:
        meta = c.list_topics(s.topic, timeout=10)
        parts = [TopicPartition(s.topic, p) for p in meta.topics[s.topic].partitions]
        return [tp.offset for tp in c.committed(parts, timeout=10)]
    finally:
        c.close()


def test_the_clickhouse_fast_path_stages_confluent_framed_events(
    ch: Any, worker_settings: WorkerSettings, sr: Any
) -> None:
    decision = SHIPPED.latest("decision_event")
    schema_id = sr.register_schema(
        subject_name("topic", worker_settings.topic, decision), Schema(schema_text(decision))
    )
    header = b"\x00" + schema_id.to_bytes(4, "big")
    received = [
        Received(worker_settings.topic, 0, i, b"fast", header + v[10:], [(HDR, h)])
        for i, (v, h) in enumerate(craft_chain("fast", 5))
    ]
    registry = prometheus_client.CollectorRegistry()
    fallbacks = prometheus_client.Counter("fallbacks", "", registry=registry)
    codec = RegistryCodec(sr, SHIPPED)
    checker = BatchChecker.for_settings(worker_settings, ch, codec, KeyRing(), fallbacks)
    checked = checker.check(received)
    assert [type(c).__name__ for _, c in checked] == ["StagedEvent"] * 5
    assert {m.value[:2] for m, _ in checked} == {MAGIC}  # staged as the trail stores them
    batch = checker.follow(checked)
    assert batch.inserted == 5 and not batch.rejected
    assert registry.get_sample_value("fallbacks_total") == 0


class DownThenUp:
    """The in-memory registry behind a connection refused until :attr:`up` is set (fault
    injection: a registry that is restarting)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.up = threading.Event()

    def _call(self, name: str, *args: Any) -> Any:
        if not self.up.is_set():
            raise ConnectionRefusedError(111, "Connection refused")
        return getattr(self._real, name)(*args)

    def register_schema(self, subject_name: str, schema: Any) -> Any:
        return self._call("register_schema", subject_name, schema)

    def lookup_schema(self, subject_name: str, schema: Any) -> Any:
        return self._call("lookup_schema", subject_name, schema)

    def get_schema(self, schema_id: int) -> Any:
        return self._call("get_schema", schema_id)


def test_the_producer_switches_to_the_registry_once_it_answers(
    broker: Broker, ch: Any, settings: WorkerSettings, sr: Any
) -> None:
    registry = DownThenUp(sr)
    with _producer(broker, settings, "late", schema_registry=registry) as p:
        assert p.framing == "single-object"
        for i in range(10):
            p.log_decision("m", "1", {"i": i}, "before")
        registry.up.set()
        deadline = time.monotonic() + 30
        while p.framing != "confluent" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.framing == "confluent"
        for i in range(10):
            p.log_decision("m", "1", {"i": i}, "after")
    on_topic = consume_all(broker.bootstrap_servers, settings.topic, expect=20)
    framings = {m.value()[:1] for m in on_topic}
    assert framings == {b"\xc3", b"\x00"}
    stats = _run(settings, ch, sr)
    assert stats.inserted == 20 and stats.quarantined_total == 0
    assert TrailVerifier(ch, settings.database, KeyRing()).run().ok
