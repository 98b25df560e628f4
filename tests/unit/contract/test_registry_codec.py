"""The Confluent Schema Registry framing (contract/registry_codec.py), against confluent-kafka's
own in-memory registry (``mock://``, its official test double) and its own serializers."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from decision_audit.contract import chain_hash, default_codec
from decision_audit.contract.codec import MAGIC, CodecError
from decision_audit.contract.reasons import Reason
from decision_audit.contract.registry_codec import (
    ConfluentFraming,
    RegistryCodec,
    RegistryExtraMissing,
    RegistryUnavailable,
    SchemaIds,
    SchemaRejected,
    SubjectNameStrategy,
    SubjectNotRegistered,
    redact_url,
    registry_client,
    resolve_schema_id,
    schema_text,
    subject_name,
)
from tests.helpers import craft_chain, event_record

SHIPPED = default_codec().registry
DECISION = SHIPPED.latest("decision_event")
CHECKPOINT = SHIPPED.latest("checkpoint")
MODEL_EVENT = SHIPPED.latest("model_event")
FOREIGN = {"type": "record", "name": "Foreign", "fields": [{"name": "x", "type": "long"}]}


class CountingRegistry:
    """The mock registry, counting the id look-ups that reach it."""

    def __init__(self) -> None:
        self.real = SchemaRegistryClient.new_client({"url": "mock://counting"})
        self.lookups = 0

    def register_schema(self, subject_name: str, schema: Any) -> int:
        return int(self.real.register_schema(subject_name, schema))

    def lookup_schema(self, subject_name: str, schema: Any) -> Any:
        return self.real.lookup_schema(subject_name, schema)

    def get_schema(self, schema_id: int) -> Any:
        self.lookups += 1
        return self.real.get_schema(schema_id)


@pytest.fixture
def sr() -> Any:
    return SchemaRegistryClient.new_client({"url": "mock://unit"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _framing(sr: Any, topic: str = "decisions") -> ConfluentFraming:
    framing = ConfluentFraming(SHIPPED)
    framing.use(
        {
            s.fingerprint: resolve_schema_id(
                sr, subject_name("topic", topic, s), s, auto_register=True
            )
            for s in (DECISION, CHECKPOINT)
        }
    )
    return framing


def test_subject_names_per_strategy() -> None:
    topic = "decisions"
    assert subject_name("topic", topic, DECISION) == "decisions-value"
    assert subject_name("topic", "model-events", MODEL_EVENT) == "model-events-value"
    # One record type per TopicNameStrategy subject: checkpoints get their record's name.
    assert subject_name("topic", topic, CHECKPOINT) == "decisions-io.decision_audit.Checkpoint"
    assert subject_name("record", topic, DECISION) == "io.decision_audit.DecisionEvent"
    assert subject_name("record", topic, CHECKPOINT) == "io.decision_audit.Checkpoint"
    assert (
        subject_name(SubjectNameStrategy.TOPIC_RECORD, topic, DECISION)
        == "decisions-io.decision_audit.DecisionEvent"
    )
    with pytest.raises(ValueError):
        subject_name("bogus", topic, DECISION)


def test_the_body_and_hash_are_the_same_in_both_framings(sr: Any) -> None:
    framing = _framing(sr)
    (single, event_hash), *_ = craft_chain("p", 1)
    body = single[10:]
    framed = framing.frame(DECISION, body)
    schema_id = framing.schema_ids[DECISION.fingerprint]
    assert framed == b"\x00" + schema_id.to_bytes(4, "big") + body
    codec = RegistryCodec(sr, SHIPPED)
    from_confluent, from_single = codec.decode(framed), codec.decode(single)
    assert from_confluent.body == from_single.body == body
    assert from_confluent.record == from_single.record
    assert from_confluent.writer is from_single.writer is DECISION
    assert chain_hash(from_confluent.record["prev_hash"], from_confluent.body) == event_hash
    # What the trail stores: the same message in single-object encoding, byte for byte.
    assert codec.as_single_object(framed) == single
    assert codec.as_single_object(single) is single


def test_a_schema_without_an_id_is_framed_single_object() -> None:
    framing = ConfluentFraming(SHIPPED)
    body = b"\x02"
    assert framing.frame(DECISION, body) == MAGIC + DECISION.fingerprint + body


def test_confluent_serde_reads_our_framing_and_we_read_theirs(sr: Any) -> None:
    framing = _framing(sr)
    record = event_record("p", 7, 1, b"\x11" * 32, score=0.5, tags={"k": "v"})
    ours = framing.encode(DECISION, dict(record))
    ctx = SerializationContext("decisions", MessageField.VALUE)
    theirs = AvroDeserializer(sr)(ours, ctx)
    assert theirs == RegistryCodec(sr, SHIPPED).decode(ours).record
    # Confluent's serializer, given the shipped schema, writes what our codec reads.
    serializer = AvroSerializer(sr, schema_text(DECISION), conf={"auto.register.schemas": True})
    written = serializer(dict(record), ctx)
    assert written[:1] == b"\x00" and written[5:] == ours[5:]
    assert RegistryCodec(sr, SHIPPED).decode(written).record == theirs
    # Single-object encoding (what a producer writes while the registry is out of reach) is
    # not skipped by Confluent's deserializer: it raises on the magic byte.
    single = ConfluentFraming(SHIPPED).encode(DECISION, dict(record))
    assert single[:2] == MAGIC
    with pytest.raises(SerializationError, match="magic byte"):
        AvroDeserializer(sr)(single, ctx)


def test_lookup_only_needs_the_subject_registered(sr: Any) -> None:
    with pytest.raises(SubjectNotRegistered, match="'decisions-value'") as caught:
        resolve_schema_id(sr, "decisions-value", DECISION, auto_register=False)
    assert caught.value.subject == "decisions-value"
    latest = default_codec().registry.latest("decision_event").version
    assert f"decision_event.v{latest}.avsc" in str(caught.value)
    registered = sr.register_schema("decisions-value", Schema(schema_text(DECISION), "AVRO"))
    assert resolve_schema_id(sr, "decisions-value", DECISION, auto_register=False) == registered
    assert resolve_schema_id(sr, "decisions-value", DECISION, auto_register=True) == registered


def test_a_refused_registration_names_the_subject() -> None:
    class Refusing(CountingRegistry):
        def register_schema(self, subject_name: str, schema: Any) -> int:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            raise SchemaRegistryError(409, 409, "Schema being registered is incompatible")

    with pytest.raises(SchemaRejected, match="'decisions-value' \\(HTTP 409\\)"):
        resolve_schema_id(Refusing(), "decisions-value", DECISION, auto_register=True)


def test_schema_ids_resolve_to_shipped_schemas_and_are_cached() -> None:
    client = CountingRegistry()
    decision_id = client.register_schema("decisions-value", Schema(schema_text(DECISION), "AVRO"))
    foreign_id = client.register_schema("foreign-value", Schema(json.dumps(FOREIGN), "AVRO"))
    ids = SchemaIds(client, SHIPPED)
    assert ids.writer(decision_id) is DECISION
    assert ids.writer(decision_id) is DECISION
    with pytest.raises(CodecError) as unknown:
        ids.writer(424242)
    assert unknown.value.reason is Reason.UNKNOWN_SCHEMA_ID and "424242" in unknown.value.detail
    with pytest.raises(CodecError) as foreign:
        ids.writer(foreign_id)
    assert foreign.value.reason is Reason.UNKNOWN_SCHEMA and f"id {foreign_id}" in str(
        foreign.value
    )
    for schema_id in (424242, foreign_id):  # remembered: no second request
        with pytest.raises(CodecError):
            ids.writer(schema_id)
    assert client.lookups == 3


def test_a_registry_that_cannot_answer_is_unavailable_not_a_rejection() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = registry_client(url, timeout=2.0)
    with pytest.raises(RegistryUnavailable, match="schema id 1"):
        SchemaIds(client, SHIPPED).writer(1)
    with pytest.raises(RegistryUnavailable, match="'decisions-value'"):
        resolve_schema_id(client, "decisions-value", DECISION, auto_register=True)
    # Not remembered as unknown: asked again next time.
    codec = RegistryCodec(client, SHIPPED)
    for _ in range(2):
        with pytest.raises(RegistryUnavailable):
            codec.decode(b"\x00\x00\x00\x00\x01" + b"\x00" * 20)


def test_without_a_registry_confluent_framing_is_bad_magic_and_says_why() -> None:
    with pytest.raises(CodecError) as caught:
        default_codec().decode(b"\x00\x00\x00\x00\x07rest")
    assert caught.value.reason is Reason.BAD_MAGIC
    assert "schema id 7" in caught.value.detail and "Confluent" in caught.value.detail


def test_short_zero_prefixed_values_are_bad_magic_with_a_registry_too(sr: Any) -> None:
    with pytest.raises(CodecError) as caught:
        RegistryCodec(sr, SHIPPED).decode(b"\x00\x01")
    assert caught.value.reason is Reason.BAD_MAGIC


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)
    with pytest.raises(RegistryExtraMissing, match=r"decision-audit\[registry\]"):
        registry_client("http://registry:8081", timeout=1.0)


def test_urls_in_logs_lose_their_password() -> None:
    assert redact_url("https://u:secret@sr.example:8081/x") == "https://u:***@sr.example:8081/x"
    assert redact_url("http://sr:8081") == "http://sr:8081"
