"""The three questions of seed 003, answered by ``trace`` with the seed's own ids, on the real
broker and chDB: reproduce a production prediction, a post-incident root cause (a
deployment's timeline), who approved what (a model version's approval chain)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer, Reference
from decision_audit.cli.main import main
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import run_worker

pytestmark = pytest.mark.integration

SHA = "9f2c" * 16
BIAS_SHA = "b1a5" * 16
DAY = datetime(2024, 5, 16, tzinfo=UTC)
"""the incident's day (seed 003, example 2)"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "platform")
    return tmp_path / "keys"


@pytest.fixture
def settings(broker: LocalBroker, worker_settings: WorkerSettings, keys: Path) -> Any:
    t = worker_settings.topic
    topics = {
        "model_events_topic": f"{t}-me",
        "outcomes_topic": f"{t}-o",
        "reviews_topic": f"{t}-r",
    }
    ensure_topics(broker.bootstrap_servers, dict.fromkeys(topics.values(), 2))
    return worker_settings.model_copy(update={**topics, "keys": keys})


def _producer(broker: LocalBroker, s: WorkerSettings, keys: Path) -> AuditProducer:
    return AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"ml-{uuid.uuid4().hex[:6]}",
        topic=s.topic,
        model_events_topic=s.model_events_topic,
        outcomes_topic=s.outcomes_topic,
        reviews_topic=s.reviews_topic,
        signing_key=keys / "platform.key",
    )


def _cli(chdb_dir: Path, db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, [args[0], "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *args[1:]]
    )
    return result.exit_code, result.output


def _mv(ref: str) -> Reference:
    return Reference(type="model_version", id=ref)


def _at(hh: int, mm: int, ss: int = 0) -> datetime:
    return DAY.replace(hour=hh, minute=mm, second=ss)


CHURN_MODEL = """
def predict(inputs):
    score = 0.4 - 0.03 * inputs["tenure"]
    return ("churn" if score >= 0.5 else "stay"), score
"""
"""a stand-in for churn@2 (the seed gives no model): what scored P123, for ``replay``"""


def test_reproduce_a_production_prediction(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    settings: Any,
    keys: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """P123 → D45 → churn@2 → R678 → DS:2024-05-15, commit, environment; review, outcome;
    and ``replay`` re-scoring P123's stored inputs agreeing with its stored prediction."""
    lineage = [
        {"type": "dataset", "id": "DS:2024-05-15"},
        {"type": "commit", "id": "C1a2b"},
        {"type": "environment", "id": "sha256-lock-77"},
    ]
    t0 = _at(8, 0)
    with _producer(broker, settings, keys) as p:
        events: list[tuple[str, Any, dict[str, Any]]] = [
            (
                "data_snapshot",
                Reference(type="dataset", id="DS:2024-05-15"),
                {"actor": "etl", "metadata": {"source": "s3://lake/churn", "transformations": []}},
            ),
            (
                "train",
                Reference(type="run", id="R678"),
                {
                    "actor": "trainer",
                    "related": [*lineage, {"type": "model_version", "id": "churn@2"}],
                    "metadata": {"parameters": {"lr": 0.01}},
                },
            ),
            (
                "register",
                _mv("churn@2"),
                {"actor": "alice", "related": [{"type": "run", "id": "R678"}, *lineage]},
            ),
            ("approve", _mv("churn@2"), {"actor": "bob"}),
            ("promote", _mv("churn@2"), {"actor": "carol", "metadata": {"stage": "production"}}),
            (
                "deploy",
                Reference(type="deployment", id="D45"),
                {"actor": "deployer", "related": [_mv("churn@2")]},
            ),
        ]
        for i, (action, subject, kw) in enumerate(events):
            p.log_model_event(action, subject, occurred_at=t0 + timedelta(minutes=i), **kw)
        eid = p.log_decision(
            "churn",
            "2",
            {"tenure": 3},
            "stay",
            score=0.31,
            request_id="req-77",
            tags={"prediction_id": "P123"},
            deployment_id="D45",
            run_id="R678",
            dataset_version="DS:2024-05-15",
            code_commit="C1a2b",
            environment_hash="sha256-lock-77",
            occurred_at=t0 + timedelta(hours=1),
        )
        p.log_review(
            eid,
            "j.doe",
            "override",
            final_decision="churn",
            reason="customer asked to cancel",
            occurred_at=t0 + timedelta(hours=2),
        )
        p.log_outcome(eid, "churn", observed_at=t0 + timedelta(days=30), source="billing")
    stats = run_worker(settings, ch)
    assert stats.quarantined_total == 0, stats.quarantined

    code, out = _cli(chdb_dir, database, "trace", "--format", "json", "--keys", str(keys), "P123")
    assert code == 0, out
    t = json.loads(out)
    assert t["decision"]["event_id"] == eid and t["decision"]["request_id"] == "req-77"
    refs = {link["step"]: link["ref"] for link in t["links"]}
    assert refs == {
        "deployment": "deployment:D45",
        "model_version": "model_version:churn@2",
        "run": "run:R678",
        "dataset": "dataset:DS:2024-05-15",
        "commit": "commit:C1a2b",
        "environment": "environment:sha256-lock-77",
    }
    assert t["lineage_complete"] is True, t["missing_links"]
    links = {link["step"]: link for link in t["links"]}
    assert "serving churn@2 since the deploy by deployer" in links["deployment"]["detail"]
    assert "train run:R678 by trainer" in links["model_version"]["detail"]
    assert [e["action"] for e in links["dataset"]["events"]][:2] == ["data_snapshot", "train"]
    [review] = t["reviews"]
    assert review["summary"].startswith("overridden to 'churn' by j.doe at 2024-05-16T10:00")
    assert review["summary"].endswith(": customer asked to cancel") and review["ok"]
    [outcome] = t["outcomes"]
    assert outcome["summary"].startswith("outcome 'churn' observed at 2024-06-15T08:00")
    assert "(source billing)" in outcome["summary"]
    assert "the prediction 'stay' was wrong" in outcome["summary"] and outcome["ok"]
    assert t["integrity"]["ok"] and t["integrity"]["checkpoint_ok"] is True

    code, out = _cli(chdb_dir, database, "trace", "P123")
    assert code == 0, out
    assert "overridden to 'churn' by j.doe" in out and "lineage complete" in out

    (tmp_path / "churn_model.py").write_text(CHURN_MODEL)
    monkeypatch.chdir(tmp_path)
    code, out = _cli(
        chdb_dir, database, "replay", "--model", "churn_model:predict", "--format", "json", "P123"
    )
    assert code == 0, out
    replay = json.loads(out)
    assert (replay["agreed"], replay["differed"], replay["not_replayable"]) == (1, 0, 0)
    [d] = replay["decisions"]
    assert d["event_id"] == eid and d["prediction"] == d["replayed_prediction"] == "stay"
    assert d["replayed_score"] == pytest.approx(0.31) and replay["recorded"]


def test_post_incident_root_cause(
    broker: LocalBroker, ch: Any, chdb_dir: Path, database: str, settings: Any, keys: Path
) -> None:
    """A promotion at 09:03 by a service account approved automatically, a failed
    data-validation attestation overridden, a rollback at 10:10: the timeline of D45."""
    d45 = Reference(type="deployment", id="D45")
    with _producer(broker, settings, keys) as p:
        events: list[tuple[datetime, str, Any, dict[str, Any]]] = [
            (_at(7, 0), "register", _mv("ctr@7"), {"actor": "alice"}),
            (_at(7, 30), "deploy", d45, {"actor": "svc-release", "related": [_mv("ctr@7")]}),
            (
                _at(8, 40),
                "register",
                _mv("ctr@8"),
                {"actor": "alice", "related": [{"type": "commit", "id": "C9f3e"}]},
            ),
            (
                _at(8, 50),
                "attest",
                _mv("ctr@8"),
                {
                    "actor": "svc-validator",
                    "metadata": {
                        "predicate": "data-validation",
                        "result": "fail",
                        "artifact_sha256": SHA,
                        "finding": "shift in feature f_17",
                    },
                },
            ),
            (
                _at(9, 2),
                "approve",
                _mv("ctr@8"),
                {
                    "actor": "svc-release",
                    "metadata": {"automated": True, "basis": "auc 0.93 >= 0.90"},
                },
            ),
            (
                _at(9, 3),
                "promote",
                _mv("ctr@8"),
                {"actor": "svc-release", "metadata": {"stage": "production"}},
            ),
            (_at(9, 3, 30), "deploy", d45, {"actor": "svc-release", "related": [_mv("ctr@8")]}),
            (
                _at(10, 10),
                "rollback",
                d45,
                {
                    "actor": "oncall.kim",
                    "related": [_mv("ctr@7")],
                    "metadata": {"reason": "CTR dropped 8%"},
                },
            ),
        ]
        for at, action, subject, kw in events:
            p.log_model_event(action, subject, occurred_at=at, **kw)

        def serve(version: str, start: datetime, end: datetime, clicks: int) -> None:
            at, i = start, 0
            while at < end:
                p.log_decision(
                    "ctr",
                    version,
                    {"i": i},
                    "click" if i % 10 < clicks else "skip",
                    score=clicks / 10,
                    deployment_id="D45",
                    occurred_at=at,
                )
                at, i = at + timedelta(minutes=2), i + 1

        serve("7", _at(8, 30), _at(9, 3, 30), 3)
        serve("8", _at(9, 4), _at(10, 10), 6)
        serve("7", _at(10, 11), _at(11, 0), 3)
    stats = run_worker(settings, ch)
    assert stats.quarantined_total == 0, stats.quarantined

    args = ("trace", "--deployment", "D45", "--since", "2024-05-16T08:30", "--until")
    code, out = _cli(chdb_dir, database, *args, "2024-05-16T11:00", "--format", "json")
    assert code == 0, out
    t = json.loads(out)
    assert t["serving_at_start"] == "ctr@7" and t["ok"]
    timeline = [
        (e["event"]["occurred_at"][11:19], e["event"]["action"], e["event"]["actor"])
        for e in t["events"]
    ]
    assert timeline == [
        ("08:40:00", "register", "alice"),
        ("08:50:00", "attest", "svc-validator"),
        ("09:02:00", "approve", "svc-release"),
        ("09:03:00", "promote", "svc-release"),
        ("09:03:30", "deploy", "svc-release"),
        ("10:10:00", "rollback", "oncall.kim"),
    ]
    by = {e["event"]["action"]: e for e in t["events"] if e["event"]["action"] != "register"}
    assert all(e["event"]["integrity"].startswith("intact, signed") for e in t["events"])
    attest = by["attest"]["event"]
    assert attest["flags"] == [
        "data-validation attestation failed but was overridden: promote by svc-release at "
        "2024-05-16T09:03:00+00:00 went ahead"
    ]
    approve = by["approve"]["event"]
    assert approve["summary"] == "approve model_version:ctr@8 automatically (auc 0.93 >= 0.90)"
    assert "approved automatically although data-validation failed" in approve["flags"]
    assert (
        "gate policy rejects: approval by 'svc-release' does not count: 'svc-release' is the "
        "promoter (separation of duties)" in approve["flags"]
    )
    promote = by["promote"]["event"]
    assert any("no recorded approval" in f for f in promote["flags"]), promote["flags"]
    # The decision volume and the shift around the deploy and the rollback.
    deploy, rollback = by["deploy"], by["rollback"]
    assert deploy["before"]["predictions"] == {} and deploy["after"]["decisions"] == 33
    assert deploy["after"]["predictions"] == {"click": 21, "skip": 12}
    assert rollback["before"]["decisions"] == 33 and rollback["after"]["decisions"] == 25
    assert rollback["score_shift"] == pytest.approx(-0.3)
    assert rollback["prediction_shift"] == pytest.approx(21 / 33 - 9 / 25)
    promote_entry = by["promote"]
    assert promote_entry["before"]["decisions"] == 1 and promote_entry["before"]["mean_score"] == (
        pytest.approx(0.3)
    )
    assert (
        sum(e["before"]["decisions"] for e in t["events"]) + t["events"][-1]["after"]["decisions"]
        == 17 + 33 + 25
    )

    code, out = _cli(chdb_dir, database, *args, "2024-05-16T11:00")
    assert code == 0, out
    assert "Deployment D45" in out and "serving ctr@7 at the start" in out
    assert "rollback deployment:D45 → ctr@7: CTR dropped 8%" in out
    assert "flag: data-validation attestation failed but was overridden" in out
    assert "shift:  score -0.300" in out
    code, out = _cli(chdb_dir, database, "trace", "--deployment", "D99")
    assert code == 1 and "no lifecycle event or decision names deployment 'D99'" in out
    code, out = _cli(chdb_dir, database, "trace", "--since", "2024-05-16", "P1")
    assert code == 2 and "--since and --until go with --deployment" in out


POLICY = "[promotion]\nrequired_approvals = 2\nrequired_predicates = ['tests', 'bias-report']\n"


def test_who_approved_what(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    settings: Any,
    keys: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fraud@5's approval chain: registration, test attestation, bias-report hash, two
    approvals with user ids and times, the promotion; each proven; what the gate rejects."""
    policy = tmp_path / "promotion.toml"
    policy.write_text(POLICY)
    monkeypatch.setenv("DECISION_AUDIT_PROMOTION_POLICY_FILE", str(policy))
    fraud = _mv("fraud@5")
    t0 = _at(12, 0)
    with _producer(broker, settings, keys) as p:
        events: list[tuple[str, dict[str, Any]]] = [
            ("register", {"actor": "alice", "metadata": {"artifact_sha256": SHA}}),
            (
                "attest",
                {
                    "actor": "ci",
                    "metadata": {"predicate": "tests", "result": "pass", "artifact_sha256": SHA},
                },
            ),
            (
                "attest",
                {
                    "actor": "fairness-bot",
                    "metadata": {
                        "predicate": "bias-report",
                        "result": "pass",
                        "artifact_sha256": BIAS_SHA,
                        "artifact_uri": "s3://reports/fraud-5-bias.html",
                    },
                },
            ),
            ("approve", {"actor": "u-1042"}),
            ("approve", {"actor": "u-2077"}),
            ("promote", {"actor": "u-2077", "metadata": {"stage": "production"}}),
        ]
        for i, (action, kw) in enumerate(events):
            p.log_model_event(action, fraud, occurred_at=t0 + timedelta(minutes=10 * i), **kw)
    stats = run_worker(settings, ch)
    assert stats.quarantined_total == 0, stats.quarantined

    args = ("trace", "--model-version", "fraud@5", "--keys", str(keys))
    code, out = _cli(chdb_dir, database, *args, "--format", "json")
    assert code == 0, out
    chain = json.loads(out)
    rows = [(e["action"], e["actor"], e["occurred_at"][11:16]) for e in chain["events"]]
    assert rows == [
        ("register", "alice", "12:00"),
        ("attest", "ci", "12:10"),
        ("attest", "fairness-bot", "12:20"),
        ("approve", "u-1042", "12:30"),
        ("approve", "u-2077", "12:40"),
        ("promote", "u-2077", "12:50"),
    ]
    assert all(e["ok"] and e["checkpoint_ok"] is True for e in chain["events"]), chain
    assert chain["ok"] and all(e["integrity"].startswith("intact, signed") for e in chain["events"])
    bias = chain["events"][2]
    assert BIAS_SHA in bias["summary"] and "s3://reports/fraud-5-bias.html" in bias["summary"]
    # u-2077 approved and promoted: the policy counts one approval of the two it needs.
    rejected = (
        "approval by 'u-2077' does not count: 'u-2077' is the promoter (separation of duties)"
    )
    assert chain["flagged"] == [
        f"approve by u-2077: gate policy rejects: {rejected}",
        f"promote by u-2077: gate policy rejects: {rejected}",
        "promote by u-2077: gate policy rejects: too few approvals: needs 2 from distinct "
        "actors, has 1 ('u-1042')",
    ]
    assert chain["gate"]["approvals"] == ["u-1042", "u-2077"]
    assert chain["gate"]["attestations"] == {"tests": "pass", "bias-report": "pass"}

    code, out = _cli(chdb_dir, database, *args)
    assert code == 0, out
    assert "Approval chain of fraud@5" in out and "flag: gate policy rejects" in out
    assert f"evidence sha256 {BIAS_SHA}" in out

    # An approval altered in the store shows in its integrity status (and the exit code).
    ch.command(
        f"ALTER TABLE {database}.model_events UPDATE actor = 'u-9999' WHERE actor = 'u-1042'",
        settings={"mutations_sync": 2},
    )
    code, out = _cli(chdb_dir, database, *args, "--format", "json")
    chain = json.loads(out)
    assert code == 1 and not chain["ok"]
    altered = [e for e in chain["events"] if not e["ok"]]
    assert [(e["actor"], e["integrity"]) for e in altered] == [("u-9999", "columns altered")]
    code, out = _cli(chdb_dir, database, "trace", "--model-version", "nope@1")
    assert code == 1 and "no lifecycle event names model version 'nope@1'" in out
