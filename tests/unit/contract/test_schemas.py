"""The shared contract: schemas, codec, ids, hashing and the pydantic mirror."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest

from decision_audit.contract import (
    Checkpoint,
    CodecError,
    DecisionEvent,
    chain_hash,
    default_codec,
    genesis_hash,
    uuid7,
)
from decision_audit.contract.ids import uuid7_str, uuid7_unix_ms
from decision_audit.contract.schemas import avro_fingerprint
from tests.helpers import craft_chain, event_record


def test_single_object_header_and_spec_fingerprint() -> None:
    # Test vector from the Avro spec: CRC-64-AVRO of "null" is 0x63dd24e7cc258f8a.
    assert int.from_bytes(avro_fingerprint("null"), "little") == 0x63DD24E7CC258F8A
    value, _ = craft_chain("p", 1)[0]
    schema = default_codec().registry.latest("decision_event")
    assert value[:2] == b"\xc3\x01" and value[2:10] == schema.fingerprint


def test_codec_round_trip() -> None:
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    rec = event_record("p", 7, 1, b"\x01" * 32, tags={"k": "v"}, score=0.5)
    decoded = codec.decode(codec.encode(schema, rec))
    assert decoded.writer is schema
    assert decoded.record == rec


def test_v1_bytes_resolve_to_the_latest_version_with_defaults() -> None:
    codec = default_codec()
    v1 = codec.registry.get("decision_event", 1)
    rec = event_record("p", 1, 1, b"\x00" * 32)
    decoded = codec.decode(codec.encode(v1, rec))
    assert decoded.writer is v1
    assert codec.registry.latest("decision_event").version > 1
    assert decoded.record["code_commit"] is None and decoded.record["redaction_policy"] is None
    assert decoded.record["inputs"] == rec["inputs"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_magic"),
        (b"\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07", "bad_magic"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema"),
    ],
)
def test_codec_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as err:
        default_codec().decode(data)
    assert err.value.reason == reason


def test_codec_rejects_truncated_and_trailing_bytes() -> None:
    value, _ = craft_chain("p", 1)[0]
    for bad in (value[:-3], value + b"\x00\x00"):
        with pytest.raises(CodecError) as err:
            default_codec().decode(bad)
        assert err.value.reason == "malformed_avro"


def test_uuid7_layout_and_order() -> None:
    now = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(200)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert abs(uuid7_unix_ms(ids[0]) - now) < 5_000
    assert len(set(ids)) == 200
    assert uuid7(1000) < uuid7(2000)


def test_uuid7_text_is_a_canonical_uuid7_of_its_millisecond() -> None:
    ms = 1_795_000_000_123
    texts = [uuid7_str(ms + i // 50) for i in range(2000)]  # 50 per millisecond
    for i, text in enumerate(texts):
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert uuid7_unix_ms(u) == ms + i // 50
    assert len(set(texts)) == len(texts)
    # Every variant digit 8, 9, a, b occurs: the two bits under the variant are random.
    assert {t[19] for t in texts} == set("89ab")


def test_chain_genesis_names_the_chain() -> None:
    assert genesis_hash("a", 1) != genesis_hash("a", 2) != genesis_hash("b", 1)
    assert genesis_hash("a", 1) == genesis_hash("a", 1)
    assert chain_hash(b"\x00" * 32, b"x") != chain_hash(b"\x01" + b"\x00" * 31, b"x")


def test_crafted_chain_links() -> None:
    msgs = craft_chain("p", 3)
    codec = default_codec()
    prev = genesis_hash("p", 1)
    for value, h in msgs:
        d = codec.decode(value)
        assert d.record["prev_hash"] == prev
        assert chain_hash(prev, d.body) == h
        prev = h


def test_pydantic_model_mirrors_latest_avro_schema() -> None:
    for name, model in (("decision_event.v4", DecisionEvent), ("checkpoint.v1", Checkpoint)):
        schema = json.loads(
            resources.files("decision_audit.contract").joinpath(f"avro/{name}.avsc").read_text()
        )
        assert [f["name"] for f in schema["fields"]] == list(model.model_fields)
    assert default_codec().registry.latest("decision_event").version == 4
    assert default_codec().registry.latest("checkpoint").version == 1


def test_decision_event_model_reads_a_decoded_record() -> None:
    rec = event_record("p", 1, 3, b"\x02" * 32, prediction='{"a":1}', prediction_is_json=True)
    rec["occurred_at"] = datetime(2026, 1, 1, tzinfo=UTC)
    ev = DecisionEvent.model_validate(rec)
    assert ev.prediction_value == {"a": 1}
    assert ev.inputs_value == {"x": 3}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _both(**kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from decision_audit.contract.models import Decision, decision_record

    base: dict[str, Any] = {
        "event_id": "01a20823-9a89-7f9d-a2db-7a5ac6a897fc",
        "occurred_at": datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC),
        "model_name": "m",
        "model_version": "1",
        "inputs": {"a": 1},
        "prediction": "yes",
    }
    base.update(kw)
    tags = base.pop("tags", None)
    fast = decision_record(**base, tags=tags, redaction_policy="p@1")
    slow = Decision(**base, tags=dict(tags) if tags else {}).to_avro(redaction_policy="p@1")
    return fast, slow


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"inputs": {"ü": [1, 2.5, None, True, {"x": "é"}]}, "prediction": {"label": "a", "p": 0.3}},
        {"prediction": True, "score": 1, "latency_ms": 0},
        {"prediction": 3.5, "explanation": {"shap": [0.1, -0.2]}, "tags": {"env": "prod"}},
        {"request_id": "", "actor": "svc", "run_id": "r", "dataset_version": "d"},
        {"prediction": ["a", "b"], "score": 0.25},
        {"inputs": {"small": 1e-05, "big": 1e20, "neg": -0.0, "line": "a\u2028b"}},
        {"inputs": {"wide": 2**70}, "prediction": [2**64]},
        {"inputs": {"deep": _nested(200)}},
    ],
)
def test_fast_decision_record_equals_the_model(kw: dict[str, Any]) -> None:
    fast, slow = _both(**kw)
    assert fast == slow


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"model_name": ""}, "model_name"),
        ({"model_version": 3}, "model_version"),
        ({"inputs": ["not", "an", "object"]}, "inputs"),
        ({"inputs": {1: "int key"}}, "inputs"),
        ({"inputs": {"nested": {"t": (1, 2)}}}, "inputs"),
        ({"inputs": {"x": float("nan")}}, "inputs"),
        ({"inputs": {"x": [1.0, float("-inf")]}}, "inputs"),
        ({"prediction": float("nan")}, "prediction"),
        ({"prediction": {"p": [float("inf")]}}, "prediction"),
        ({"explanation": {"w": float("nan")}}, "explanation"),
        ({"inputs": {"deep": _nested(300)}}, "inputs"),
        ({"score": float("inf")}, "score"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"request_id": "x" * 5000}, "request_id"),
        ({"tags": {"k": 1}}, "tags"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at"),
        ({"prediction": object()}, "prediction"),
    ],
)
def test_fast_decision_record_rejects_with_the_field_named(kw: dict[str, Any], field: str) -> None:
    from decision_audit.contract.models import decision_record

    base: dict[str, Any] = {
        "event_id": "01a20823-9a89-7f9d-a2db-7a5ac6a897fc",
        "occurred_at": 1_795_000_000_000,
        "model_name": "m",
        "model_version": "1",
        "inputs": {"a": 1},
        "prediction": "yes",
    }
    base.update(kw)
    with pytest.raises(ValueError, match=field):
        decision_record(**base)
