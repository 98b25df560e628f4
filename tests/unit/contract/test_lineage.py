"""Lineage contract, model-event verification and the promotion guard rail (no broker)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from decision_audit import AuditProducer
from decision_audit.audit import charts
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.ids import uuid7
from decision_audit.contract.lineage import (
    ACTION_DETAILS,
    ACTIONS,
    ModelEventInput,
    Reference,
    as_reference,
    model_event_chain_id,
    model_event_problem,
)
from decision_audit.contract.models import utc_now
from decision_audit.contract.promotion import Fact, PromotionPolicy, promotion_problems
from decision_audit.contract.reasons import Reason
from decision_audit.producer.lifecycle import model_event_record
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.checks import EventVerifier, Rejection, VerifiedEvent
from decision_audit.worker.model_events import ModelEventIngest
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


def _verdict(action: str, minutes: int, actor: str = "bob", **meta: Any) -> Fact:
    return Fact(T0 + timedelta(minutes=minutes), action, actor, meta)


def _attest(predicate: str, result: str, minutes: int = -3, actor: str = "ci") -> Fact:
    meta = {"predicate": predicate, "result": result, "artifact_sha256": "ab" * 32}
    return Fact(T0 + timedelta(minutes=minutes), "attest", actor, meta)


REGISTERED = _verdict("register", -30, "alice")


@pytest.mark.parametrize(
    ("facts", "meta", "policy", "expected"),
    [
        ([_verdict("approve", -5)], {}, {}, None),
        ([], {}, {}, "no recorded approval: needs 1 from distinct actors, has none"),
        ([_verdict("approve", 5)], {}, {}, "no recorded approval"),  # approval came after
        (
            [_verdict("approve", -9), _verdict("reject", -5, "eve")],
            {},
            {},
            "since the rejection by 'eve'",
        ),
        ([_verdict("reject", -9), _verdict("approve", -5)], {}, {}, None),
        ([], {}, {"require_approval": False}, None),
        ([], {}, {"required_approvals": 0}, None),
        # Two approvals from distinct actors: one actor approving twice is one approval.
        (
            [_verdict("approve", -5), _verdict("approve", -4)],
            {},
            {"required_approvals": 2},
            "too few approvals: needs 2 from distinct actors, has 1 ('bob')",
        ),
        (
            [_verdict("approve", -5), _verdict("approve", -4, "dan")],
            {},
            {"required_approvals": 2},
            None,
        ),
        # Separation of duties: neither the registrant nor the promoter (carol) counts.
        (
            [REGISTERED, _verdict("approve", -5, "alice")],
            {},
            {},
            "approval by 'alice' does not count: 'alice' registered m@2 (separation of duties)",
        ),
        (
            [REGISTERED, _verdict("approve", -5, "carol")],
            {},
            {},
            "approval by 'carol' does not count: 'carol' is the promoter",
        ),
        (
            [REGISTERED, _verdict("approve", -5, "alice")],
            {},
            {"approver_may_be_registrant": True},
            None,
        ),
        ([_verdict("approve", -5, "carol")], {}, {"approver_may_be_promoter": True}, None),
        # Attestation predicates: the latest of each must exist and pass.
        (
            [_verdict("approve", -5)],
            {},
            {"required_predicates": ["tests"]},
            "no 'tests' attestation",
        ),
        (
            [_verdict("approve", -5), _attest("tests", "fail")],
            {},
            {"required_predicates": ["tests"]},
            "'tests' attestation by 'ci' at 2026-05-01T11:57:00+00:00 did not pass (fail)",
        ),
        (
            [_verdict("approve", -5), _attest("tests", "fail", -9), _attest("tests", "pass", -4)],
            {},
            {"required_predicates": ["tests"]},
            None,
        ),
        (
            [_verdict("approve", -5), _attest("tests", "pass", -9), _attest("tests", "fail", -4)],
            {},
            {"required_predicates": ["tests"]},
            "did not pass",
        ),
        (
            [_verdict("approve", -5), _attest("tests", "pass", 4)],  # attested after
            {},
            {"required_predicates": ["tests"]},
            "no 'tests' attestation",
        ),
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
    facts: list[Fact], meta: dict[str, Any], policy: dict[str, Any], expected: str | None
) -> None:
    ingest = ModelEventIngest(ChainReader(None, "audit"), PromotionPolicy(**policy))
    rec = {"actor": "carol", "occurred_at": T0, "metadata": json.dumps({"stage": "prod", **meta})}
    problem = ingest._promotion_problem(rec, "m@2", facts)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and "m@2" in problem


def test_promotion_problems_names_everything_missing() -> None:
    policy = PromotionPolicy(required_approvals=2, required_predicates=["tests", "bias-report"])
    facts = [REGISTERED, _verdict("approve", -5, "alice"), _verdict("approve", -4, "bob")]
    facts.append(_attest("tests", "fail"))
    assert promotion_problems(policy, "m@2", "carol", T0, facts) == [
        "approval by 'alice' does not count: 'alice' registered m@2 (separation of duties)",
        "too few approvals: needs 2 from distinct actors, has 1 ('bob')",
        "'tests' attestation by 'ci' at 2026-05-01T11:57:00+00:00 did not pass (fail)",
        "no 'bias-report' attestation",
    ]


def test_policy_file_under_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        "[promotion]\nrequired_approvals = 2\nrequired_predicates = ['tests', 'bias-report']\n"
    )
    policy = PromotionPolicy.load(f)
    assert policy.required_approvals == 2 and policy.required_predicates == ["tests", "bias-report"]
    assert not policy.approver_may_be_registrant and not policy.approver_may_be_promoter
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_REQUIRED_APPROVALS", "3")
    assert PromotionPolicy.load(f).required_approvals == 3
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_POLICY_FILE", str(f))
    assert PromotionPolicy.load().required_predicates == ["tests", "bias-report"]
    assert PromotionPolicy.load(required_approvals=1).required_approvals == 1
    f.write_text("required_aprovals = 2\n")
    with pytest.raises(ValueError, match=r"unknown setting.*required_aprovals"):
        PromotionPolicy.load(f)


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


SHA256 = "ab" * 32
LIFECYCLE: dict[str, tuple[Reference, list[dict[str, str]], dict[str, Any]]] = {
    "train": (
        Reference(type="run", id="R678"),
        [
            {"type": "dataset", "id": "DS:2024-05-15"},
            {"type": "commit", "id": "C1a2b"},
            {"type": "environment", "id": "sha256:lock"},
            {"type": "model_version", "id": "churn@2"},
        ],
        {"parameters": {"lr": 0.01}, "metrics": {"auc": 0.92}},
    ),
    "evaluate": (
        Reference.model_version("churn", "2"),
        [{"type": "dataset", "id": "DS:test"}],
        {"metrics": {"auc": 0.92}, "thresholds": {"auc": 0.9}},
    ),
    "data_snapshot": (
        Reference(type="dataset", id="DS:2024-05-15"),
        [],
        {"source": "s3://lake/events", "transformations": ["dedupe", "drop_pii"]},
    ),
    "retrain": (
        Reference.model_version("churn", "2"),
        [],
        {"reason": "score drift", "trigger": "alert-77"},
    ),
    "attest": (
        Reference.model_version("churn", "2"),
        [],
        {"predicate": "bias-report", "result": "pass", "artifact_sha256": SHA256},
    ),
}


@pytest.mark.parametrize("action", sorted(LIFECYCLE))
def test_new_actions_are_accepted_with_their_details(action: str) -> None:
    subject, related, meta = LIFECYCLE[action]
    rec = model_event_record(action, subject, actor="ml", related=related, metadata=meta)
    assert rec["action"] == action
    full = _record(action=action, subject=rec["subject"], related=rec["related"])
    full["metadata"] = rec["metadata"]
    assert model_event_problem(full) is None


@pytest.mark.parametrize(
    ("action", "change", "expected"),
    [
        ("train", {"metadata": {}}, "train needs detail 'parameters' in metadata: a JSON object"),
        ("train", {"related": []}, "train needs detail 'dataset': a dataset reference"),
        (
            "train",
            {"metadata": {"parameters": [1]}},
            "train detail 'parameters' is not a JSON object",
        ),
        (
            "evaluate",
            {"metadata": {"metrics": {"auc": "high"}, "thresholds": {}}},
            "evaluate detail 'metrics' has 'auc', which is not a number",
        ),
        ("evaluate", {"related": []}, "evaluate needs detail 'dataset'"),
        ("data_snapshot", {"metadata": {"source": "x"}}, "needs detail 'transformations'"),
        (
            "data_snapshot",
            {"metadata": {"source": "", "transformations": []}},
            "data_snapshot detail 'source' is empty",
        ),
        ("retrain", {"metadata": {}}, "retrain needs detail 'reason'"),
        (
            "attest",
            {"metadata": {"predicate": "tests", "result": "ok", "artifact_sha256": SHA256}},
            "attest detail 'result' 'ok' is not one of pass, fail",
        ),
        (
            "attest",
            {"metadata": {"predicate": "tests", "result": "pass", "artifact_sha256": "ab"}},
            "attest detail 'artifact_sha256' 'ab' is not 64 lowercase hex characters",
        ),
        (
            "attest",
            {"metadata": {"predicate": "Bias Report", "result": "pass", "artifact_sha256": SHA256}},
            "attest detail 'predicate' 'Bias Report' is not a lowercase slug",
        ),
        (
            "attest",
            {"metadata": {"result": "pass", "artifact_sha256": SHA256}},
            "attest needs detail 'predicate'",
        ),
        (
            "launch",
            {},
            "action 'launch' is not one of register, promote, deploy, rollback, "
            "approve, reject, retire, grant_access, revoke_access, train, evaluate, data_snapshot, "
            "retrain, attest",
        ),
    ],
)
def test_bad_details_are_refused_by_producer_and_quarantined_by_worker(
    action: str, change: dict[str, Any], expected: str
) -> None:
    subject, related, meta = LIFECYCLE.get(action, LIFECYCLE["retrain"])
    related = change.get("related", related)
    meta = change.get("metadata", meta)
    # The producer refuses before anything is sent, naming the detail.
    with pytest.raises(ValueError, match=re.escape(expected)):
        model_event_record(action, subject, actor="ml", related=related, metadata=meta)
    # A record written past the producer is quarantined with the same words.
    rec = _record(
        action=action,
        subject=subject.to_avro(),
        related=[as_reference(r).to_avro() for r in related],
        metadata=json.dumps(meta),
    )
    value, h = _message(rec)
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    got = verifier.check(
        value, rec["producer_id"].encode(), [("da-event-hash", h)], record="model_event"
    )
    assert isinstance(got, Rejection) and got.reason == Reason.INVALID_EVENT
    assert expected in got.detail


def test_every_action_declares_its_details_once() -> None:
    assert set(ACTION_DETAILS) == set(ACTIONS) and len(ACTIONS) == len(set(ACTIONS))
    for action, details in ACTION_DETAILS.items():
        names = [d.name for d in details]
        assert len(names) == len(set(names)), action
        assert all(d.meaning for d in details), action
