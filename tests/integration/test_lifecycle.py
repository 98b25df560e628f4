"""Lifecycle actions and the promotion gate on the real broker and chDB (issue 16, seed 003)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer, Reference
from decision_audit.cli.main import main
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.ids import uuid7
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import count, run_worker, send_raw

pytestmark = pytest.mark.integration

SHA = "9f2c" * 16
POLICY = "[promotion]\nrequired_approvals = 2\nrequired_predicates = ['tests', 'bias-report']\n"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "platform")
    return tmp_path / "keys"


@pytest.fixture
def settings(broker: LocalBroker, worker_settings: WorkerSettings, keys: Path) -> Any:
    me_topic = f"{worker_settings.topic}-model-events"
    ensure_topics(broker.bootstrap_servers, {me_topic: 2})
    return worker_settings.model_copy(update={"model_events_topic": me_topic, "keys": keys})


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Seed 003's project 2: two approvals and passing tests and bias-report attestations."""
    f = tmp_path / "promotion.toml"
    f.write_text(POLICY)
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_POLICY_FILE", str(f))
    return f


def _mv(ref: str) -> Reference:
    return Reference(type="model_version", id=ref)


def _attest(predicate: str, result: str) -> dict[str, Any]:
    return {"predicate": predicate, "result": result, "artifact_sha256": SHA}


def _log_lifecycle(p: AuditProducer, t0: datetime) -> dict[str, int]:
    """churn@2 passes the gate; fraud@5 has one approval and no bias report; risk@3 is
    approved by its registrant and its tests failed."""
    events: list[tuple[str, Any, dict[str, Any]]] = [
        (
            "data_snapshot",
            Reference(type="dataset", id="DS:2024-05-15"),
            {
                "actor": "etl",
                "metadata": {"source": "s3://lake/churn", "transformations": ["dedupe"]},
            },
        ),
        (
            "train",
            Reference(type="run", id="R678"),
            {
                "actor": "trainer",
                "related": [
                    {"type": "dataset", "id": "DS:2024-05-15"},
                    {"type": "commit", "id": "C1a2b"},
                    {"type": "environment", "id": "lock-77"},
                    {"type": "model_version", "id": "churn@2"},
                ],
                "metadata": {"parameters": {"lr": 0.01}},
            },
        ),
        (
            "register",
            _mv("churn@2"),
            {
                "actor": "alice",
                "related": [
                    {"type": "run", "id": "R678"},
                    {"type": "dataset", "id": "DS:2024-05-15"},
                    {"type": "commit", "id": "C1a2b"},
                    {"type": "environment", "id": "lock-77"},
                ],
            },
        ),
        (
            "evaluate",
            _mv("churn@2"),
            {
                "actor": "ci",
                "related": [{"type": "dataset", "id": "DS:test"}],
                "metadata": {"metrics": {"auc": 0.92}, "thresholds": {"auc": 0.9}},
            },
        ),
        ("attest", _mv("churn@2"), {"actor": "ci", "metadata": _attest("tests", "pass")}),
        ("attest", _mv("churn@2"), {"actor": "ci", "metadata": _attest("bias-report", "pass")}),
        ("approve", _mv("churn@2"), {"actor": "bob"}),
        ("approve", _mv("churn@2"), {"actor": "dan"}),
        ("promote", _mv("churn@2"), {"actor": "carol", "metadata": {"stage": "production"}}),
        ("register", _mv("fraud@5"), {"actor": "alice"}),
        ("attest", _mv("fraud@5"), {"actor": "ci", "metadata": _attest("tests", "pass")}),
        ("approve", _mv("fraud@5"), {"actor": "bob"}),
        ("promote", _mv("fraud@5"), {"actor": "carol", "metadata": {"stage": "production"}}),
        ("register", _mv("risk@3"), {"actor": "alice"}),
        ("attest", _mv("risk@3"), {"actor": "ci", "metadata": _attest("tests", "fail")}),
        ("attest", _mv("risk@3"), {"actor": "ci", "metadata": _attest("bias-report", "pass")}),
        ("approve", _mv("risk@3"), {"actor": "alice"}),
        ("approve", _mv("risk@3"), {"actor": "bob"}),
        ("promote", _mv("risk@3"), {"actor": "carol", "metadata": {"stage": "production"}}),
        (
            "retrain",
            _mv("churn@2"),
            {"actor": "monitor", "metadata": {"reason": "score drift", "trigger": "alert-17"}},
        ),
    ]
    seqs: dict[str, int] = {}
    for i, (action, subject, kw) in enumerate(events):
        p.log_model_event(action, subject, occurred_at=t0 + timedelta(minutes=i), **kw)
        seqs[f"{action} {subject.id}"] = i + 1
    p.log_decision(
        "churn",
        "2",
        {"tenure": 3},
        "stay",
        score=0.2,
        request_id="P123",
        deployment_id="D45",
        run_id="R678",
        dataset_version="DS:2024-05-15",
        code_commit="C1a2b",
        environment_hash="lock-77",
        occurred_at=t0 + timedelta(minutes=40),
    )
    return seqs


def _bad_model_event(producer_id: str, action: str, metadata: dict[str, Any]) -> Any:
    """A model event written past the producer's checks (seq 1 of its own chain)."""
    codec = default_codec()
    schema = codec.registry.latest("model_event")
    prev = genesis_hash(producer_id, 1)
    rec = {
        "event_id": str(uuid7()),
        "occurred_at": utc_now(),
        "action": action,
        "actor": "mallory",
        "subject": {"type": "model_version", "id": "churn@2"},
        "related": [],
        "metadata": json.dumps(metadata),
        "key_id": None,
        "producer_id": producer_id,
        "producer_epoch": 1,
        "seq": 1,
        "prev_hash": prev,
    }
    body = codec.encode_body(schema, rec)
    return (
        producer_id.encode(),
        codec.frame(schema, body),
        [("da-event-hash", chain_hash(prev, body))],
    )


def _cli(chdb_dir: Path, db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, [args[0], "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *args[1:]]
    )
    return result.exit_code, result.output


def test_lifecycle_actions_gate_and_incidents(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    settings: Any,
    keys: Path,
    policy_file: Path,
) -> None:
    t0 = utc_now().replace(second=0, microsecond=0) - timedelta(hours=2)
    pid = f"ml-{uuid.uuid4().hex[:6]}"
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=pid,
        topic=settings.topic,
        model_events_topic=settings.model_events_topic,
        signing_key=keys / "platform.key",
    ) as p:
        seqs = _log_lifecycle(p, t0)
    send_raw(
        broker.bootstrap_servers,
        settings.model_events_topic,
        [
            _bad_model_event(f"{pid}-x/model-events", "launch", {}),
            _bad_model_event(
                f"{pid}-y/model-events", "attest", {"predicate": "tests", "result": "pass"}
            ),
        ],
    )
    stats = run_worker(settings, ch)
    db = database

    # Each new action is stored, on the signed model-event chain.
    actions = dict(
        ch.query(f"SELECT action, count() FROM {db}.model_events FINAL GROUP BY action").result_rows
    )
    for action, n in (("data_snapshot", 1), ("train", 1), ("evaluate", 1), ("attest", 5)):
        assert actions.get(action) == n, actions
    assert actions.get("retrain") == 1 and sum(actions.values()) == 20
    # The bad ones are quarantined with their reason and what was wrong.
    rows = ch.query(f"SELECT reason, detail FROM {db}.quarantine FINAL ORDER BY detail").result_rows
    assert stats.quarantined_total == 2, rows
    assert [r for r, _ in rows] == ["invalid_event", "invalid_event"]
    details = " | ".join(d for _, d in rows)
    assert "action 'launch' is not one of register, promote, deploy" in details
    assert "retrain, attest" in details
    assert "attest needs detail 'artifact_sha256'" in details

    # Promotions that miss the policy are stored as they happened, and each is an incident
    # naming exactly what was missing; churn@2 passed.
    assert count(ch, f"SELECT count() FROM {db}.model_events FINAL WHERE action = 'promote'") == 3
    incidents = dict(
        ch.query(
            f"SELECT seq_from, detail FROM {db}.incidents FINAL WHERE kind = 'unapproved_promotion'"
        ).result_rows
    )
    assert set(incidents) == {seqs["promote fraud@5"], seqs["promote risk@3"]}, incidents
    fraud = incidents[seqs["promote fraud@5"]]
    assert fraud == (
        "promote of fraud@5 by 'carol' to production: too few approvals: needs 2 from distinct "
        "actors, has 1 ('bob'); no 'bias-report' attestation"
    )
    risk = incidents[seqs["promote risk@3"]]
    assert "approval by 'alice' does not count: 'alice' registered risk@3" in risk
    assert "too few approvals: needs 2 from distinct actors, has 1 ('bob')" in risk
    assert "'tests' attestation by 'ci'" in risk and "did not pass (fail)" in risk
    assert "bias-report" not in risk

    # The gate asks the same before a promotion: exit 0, or 1 with what is missing.
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "churn@2", "--to", "production")
    assert code == 0, out
    assert "churn@2 → production: may be promoted" in out
    assert "approvals recorded: bob, dan; attestations: tests pass, bias-report pass" in out
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "fraud@5", "--promoter", "carol")
    assert code == 1, out
    assert "fraud@5 → production: may NOT be promoted" in out
    assert "missing: too few approvals: needs 2 from distinct actors, has 1 ('bob')" in out
    assert "missing: no 'bias-report' attestation" in out
    # Separation of duties: bob may not promote what he approved.
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "churn@2", "--promoter", "bob")
    assert code == 1 and "approval by 'bob' does not count: 'bob' is the promoter" in out
    # An explicit policy file; a non-production stage asks nothing; JSON for pipelines.
    lenient = policy_file.with_name("lenient.toml")
    lenient.write_text("required_approvals = 1\n")
    args = ("gate", "--model-version", "fraud@5", "--policy", str(lenient), "--format", "json")
    code, out = _cli(chdb_dir, db, *args)
    assert code == 0 and json.loads(out)["ok"] is True, out
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "risk@3", "--to", "staging")
    assert code == 0 and "'staging' is not a production stage" in out
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "nope@1", "--format", "json")
    answer = json.loads(out)
    assert code == 1 and answer["problems"] == [
        "no recorded approval: needs 2 from distinct actors, has none",
        "no 'tests' attestation",
        "no 'bias-report' attestation",
    ]
    assert "no register event records model version nope@1" in answer["notes"]
    code, out = _cli(chdb_dir, db, "gate", "--model-version", "churn")
    assert code == 2 and "NAME@VERSION" in out

    # trace shows the new actions in the lineage of a churn@2 decision.
    code, out = _cli(chdb_dir, db, "trace", "--format", "json", "P123")
    assert code == 0, out
    links = {link["step"]: link for link in json.loads(out)["links"]}
    mv = links["model_version"]
    assert "evaluate auc=0.92 (thresholds auc=0.9) on dataset:DS:test by ci" in mv["detail"]
    assert f"attest bias-report pass (evidence sha256 {SHA[:12]}…) by ci" in mv["detail"]
    assert "train run:R678 by trainer" in mv["detail"]
    assert "retrain: score drift (trigger alert-17) by monitor" in mv["detail"]
    assert [e["action"] for e in links["dataset"]["events"]][:2] == ["data_snapshot", "train"]
    assert "train" in [e["action"] for e in links["run"]["events"]]
