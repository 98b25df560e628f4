"""Lineage contract, model-event verification and the promotion guard rail (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from decision_audit import AuditProducer
from decision_audit.audit import charts
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.ids import uuid7
from decision_audit.contract.lineage import (
    ModelEventInput,
    Reference,
    as_reference,
    model_event_chain_id,
    model_event_problem,
)
from decision_audit.contract.models import utc_now
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.checks import EventVerifier, Rejection, VerifiedEvent
from decision_audit.worker.model_events import ModelEventIngest, PromotionPolicy
from tests.helpers import craft_chain

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _record(producer_id: str = "svc/model-events", **overrides: Any) -> dict[str, Any]:
    event = ModelEventInput(
        event_id=uuid7(),
        occurred_at=utc_now(),
        action="promote",
        actor="carol",
        subject=Reference.model_version("credit-risk", "2"),
        related=(as_reference({"type": "run", "id": "run-2"}),),
        metadata={"stage": "production", "artifact_sha256": "ab" * 32},
    )
    rec = event.to_avro()
    rec.update(
        key_id=None,
        producer_id=producer_id,
        producer_epoch=7,
        seq=1,
        prev_hash=genesis_hash(producer_id, 7),
    )
    rec.update(overrides)
    return rec


def _message(rec: dict[str, Any]) -> tuple[bytes, bytes]:
    codec = default_codec()
    schema = codec.registry.latest("model_event")
    body = codec.encode_body(schema, rec)
    return codec.frame(schema, body), chain_hash(rec["prev_hash"], body)


def test_references_accept_models_and_plain_dicts() -> None:
    assert as_reference({"type": "dataset", "id": "ds-1"}) == Reference(type="dataset", id="ds-1")
    assert str(Reference.model_version("m", "3")) == "model_version:m@3"
    with pytest.raises(ValueError, match="type"):
        as_reference({"type": "notebook", "id": "x"})
    with pytest.raises(ValueError, match="id"):
        as_reference({"type": "run", "id": ""})
    assert model_event_chain_id("scoring-7") == "scoring-7/model-events"


def test_bad_lifecycle_arguments_raise_before_anything_is_sent() -> None:
    p = AuditProducer("127.0.0.1:1", producer_id="unit", message_timeout_ms=100)
    try:
        with pytest.raises(ValueError, match="action"):
            p.log_model_event("launch", {"type": "model_version", "id": "m@1"}, actor="a")
        with pytest.raises(ValueError, match="subject"):
            p.log_model_event("register", {"type": "model", "id": "m@1"}, actor="a")
        with pytest.raises(ValueError, match="metadata"):
            p.log_model_event(
                "register", Reference.model_version("m", "1"), actor="a", metadata={"x": object()}
            )
        assert p.stats.logged == 0
    finally:
        p.close(timeout=0.1)


def test_model_event_round_trips_and_is_verified_on_its_own_topic() -> None:
    rec = _record()
    value, event_hash = _message(rec)
    decoded = default_codec().decode(value)
    assert decoded.writer.name == "model_event"
    assert json.loads(decoded.record["metadata"])["stage"] == "production"
    assert model_event_problem(decoded.record) is None

    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    headers = [("da-event-hash", event_hash)]
    key = rec["producer_id"].encode()
    ok = verifier.check(value, key, headers, record="model_event")
    assert isinstance(ok, VerifiedEvent) and ok.event_hash == event_hash
    # Each topic carries its own record type.
    wrong = verifier.check(value, key, headers)
    assert isinstance(wrong, Rejection) and wrong.reason == "unexpected_record"
    decision, h = craft_chain("p", 1)[0]
    wrong = verifier.check(decision, b"p", [("da-event-hash", h)], record="model_event")
    assert isinstance(wrong, Rejection) and wrong.reason == "unexpected_record"


def test_model_event_contract_violations_are_named() -> None:
    assert "producer_id" in (model_event_problem(_record(producer_id="svc")) or "")
    assert "action" in (model_event_problem(_record(action="launch")) or "")
    assert "not a JSON object" in (model_event_problem(_record(metadata="[1]")) or "")
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    rec = _record(occurred_at=utc_now() + timedelta(days=3))
    value, h = _message(rec)
    got = verifier.check(value, rec["producer_id"].encode(), [("da-event-hash", h)],
                         record="model_event")  # fmt: skip
    assert isinstance(got, Rejection) and got.reason == "invalid_timestamp"


def _verdict(action: str, minutes: int, actor: str = "bob", **meta: Any) -> tuple[Any, ...]:
    return (T0 + timedelta(minutes=minutes), action, meta, actor)


@pytest.mark.parametrize(
    ("verdicts", "meta", "policy", "expected"),
    [
        ([_verdict("approve", -5)], {}, {}, None),
        ([], {}, {}, "no recorded approval"),
        ([_verdict("approve", 5)], {}, {}, "no recorded approval"),  # approval came after
        ([_verdict("approve", -9), _verdict("reject", -5, "eve")], {}, {}, "rejection by 'eve'"),
        ([_verdict("reject", -9), _verdict("approve", -5)], {}, {}, None),
        ([], {}, {"require_approval": False}, None),
        (
            [_verdict("approve", -5)],
            {},
            {"required_attestations": ["artifact_sha256"]},
            "missing attestation(s) artifact_sha256",
        ),
        (
            [_verdict("approve", -5, artifact_sha256="ab")],
            {},
            {"required_attestations": ["artifact_sha256"]},
            None,
        ),
        (
            [_verdict("approve", -5)],
            {"artifact_sha256": "cd"},
            {"required_attestations": ["artifact_sha256"]},
            None,
        ),
    ],
)
def test_promotion_guard_rail(
    verdicts: list[Any], meta: dict[str, Any], policy: dict[str, Any], expected: str | None
) -> None:
    ingest = ModelEventIngest(ChainReader(None, "audit"), PromotionPolicy(**policy))
    rec = {"actor": "carol", "occurred_at": T0, "metadata": json.dumps({"stage": "prod", **meta})}
    problem = ingest._promotion_problem(rec, "m@2", verdicts)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and "m@2" in problem


def test_policy_names_production_stages_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PromotionPolicy().targets_production({"stage": "Production"})
    assert not PromotionPolicy().targets_production({"stage": "staging"})
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_PRODUCTION_STAGES", '["live"]')
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_REQUIRED_ATTESTATIONS", '["model_card"]')
    policy = PromotionPolicy()
    assert policy.targets_production({"to_stage": "live"})
    assert policy.required_attestations == ["model_card"]


def test_charts_escape_labels_and_show_empty_windows() -> None:
    svg = charts.line_chart("t<1>", ["a&b"], {"<s>": [1.0]})
    assert "&lt;s&gt;" in svg and "a&amp;b" in svg and 'class="mark"' in svg
    assert 'data-kind="empty"' in charts.bar_chart("nothing", {})
    assert 'data-kind="empty"' in charts.line_chart("gaps only", ["x"], {"s": [None]})
