"""Lineage end to end on the real broker and chDB: lifecycle events, trace, guard rail, rollups."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer
from decision_audit.cli.main import main
from decision_audit.contract.lineage import Reference
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import count, run_worker

pytestmark = pytest.mark.integration

SHA = "9f2c" * 16


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "platform")
    return tmp_path / "keys"


@pytest.fixture
def lineage_settings(broker: LocalBroker, worker_settings: WorkerSettings, keys: Path) -> Any:
    me_topic = f"{worker_settings.topic}-model-events"
    ensure_topics(broker.bootstrap_servers, {me_topic: 2})
    return worker_settings.model_copy(update={"model_events_topic": me_topic, "keys": keys})


def _mv(name: str, version: str) -> Reference:
    return Reference.model_version(name, version)


def _lineage(run: str, ds: str, commit: str, env: str) -> list[dict[str, str]]:
    return [
        {"type": "run", "id": run},
        {"type": "dataset", "id": ds},
        {"type": "commit", "id": commit},
        {"type": "environment", "id": env},
    ]


class Scenario:
    """Two models; credit-risk goes 1 → 2 and is rolled back to 1; fraud is promoted unapproved."""

    def __init__(self, t0: datetime) -> None:
        self.t0 = t0
        self.ids: dict[str, str] = {}

    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)

    def log(self, p: AuditProducer) -> int:
        at = self.at
        dep = {"type": "deployment", "id": "credit-prod"}
        events: list[tuple[str, Any, dict[str, Any]]] = [
            (
                "register",
                _mv("credit-risk", "1"),
                {
                    "actor": "alice",
                    "related": _lineage("run-1", "ds-1", "c0ffee1", "env-1"),
                    "metadata": {"artifact_sha256": SHA, "metrics": {"auc": 0.81}},
                    "occurred_at": at(0),
                },
            ),
            ("approve", _mv("credit-risk", "1"), {"actor": "bob", "occurred_at": at(1)}),
            (
                "promote",
                _mv("credit-risk", "1"),
                {"actor": "carol", "metadata": {"stage": "production"}, "occurred_at": at(2)},
            ),
            (
                "deploy",
                dep,
                {"actor": "deployer", "related": [_mv("credit-risk", "1")], "occurred_at": at(3)},
            ),
            (
                "register",
                _mv("credit-risk", "2"),
                {
                    "actor": "alice",
                    "related": _lineage("run-2", "ds-2", "c0ffee2", "env-2"),
                    "occurred_at": at(60),
                },
            ),
            ("approve", _mv("credit-risk", "2"), {"actor": "bob", "occurred_at": at(61)}),
            (
                "promote",
                _mv("credit-risk", "2"),
                {"actor": "carol", "metadata": {"stage": "production"}, "occurred_at": at(62)},
            ),
            (
                "deploy",
                dep,
                {"actor": "deployer", "related": [_mv("credit-risk", "2")], "occurred_at": at(63)},
            ),
            (
                "rollback",
                dep,
                {
                    "actor": "oncall",
                    "related": [_mv("credit-risk", "1")],
                    "metadata": {"reason": "score drift"},
                    "occurred_at": at(120),
                },
            ),
            (
                "register",
                {"type": "model_version", "id": "fraud@1"},
                {
                    "actor": "dave",
                    "related": _lineage("run-f", "ds-f", "f00d", "env-f"),
                    "occurred_at": at(5),
                },
            ),
            (
                "promote",
                {"type": "model_version", "id": "fraud@1"},
                {"actor": "dave", "metadata": {"stage": "Production"}, "occurred_at": at(6)},
            ),
            (
                "deploy",
                {"type": "deployment", "id": "fraud-prod"},
                {"actor": "deployer", "related": [_mv("fraud", "1")], "occurred_at": at(7)},
            ),
        ]
        for action, subject, kw in events:
            p.log_model_event(action, subject, **kw)
        return len(events)

    def decide(self, p: AuditProducer) -> int:
        n = 0

        def one(key: str, minute: float, model: str, version: str, i: int, **kw: Any) -> None:
            nonlocal n
            eid = p.log_decision(
                model,
                version,
                {"i": i},
                "approve" if (i * 7) % 10 < 6 else "decline",
                score=((i * 37) % 100) / 100,
                latency_ms=1.0 + (i % 13),
                request_id=f"{key}-{i}",
                occurred_at=self.at(minute),
                **kw,
            )
            self.ids.setdefault(key, eid)
            n += 1

        v1 = {"run_id": "run-1", "dataset_version": "ds-1", "code_commit": "c0ffee1"}
        v1 |= {"environment_hash": "env-1", "deployment_id": "credit-prod"}
        v2 = {"run_id": "run-2", "dataset_version": "ds-2", "code_commit": "c0ffee2"}
        v2 |= {"environment_hash": "env-2", "deployment_id": "credit-prod"}
        for i in range(40):
            one("v1-early", 10 + i, "credit-risk", "1", i, **v1)
        for i in range(40):
            one("v2", 70 + i, "credit-risk", "2", i, **v2)
        for i in range(40):
            one("v1-after-rollback", 130 + i, "credit-risk", "1", i, **v1)
        one("v2-after-rollback", 175, "credit-risk", "2", 1, **v2)
        for i in range(30):
            one("fraud", 20 + 3 * i, "fraud", "1", i, run_id="run-f", deployment_id="fraud-prod")
        one("shadow", 30, "shadow", "0", 0)
        return n


def _trace(chdb_dir: Path, db: str, ident: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["trace", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *extra, ident],
    )
    return result.exit_code, result.output


def _trace_json(chdb_dir: Path, db: str, ident: str, keys: Path) -> tuple[int, dict[str, Any]]:
    code, out = _trace(chdb_dir, db, ident, "--format", "json", "--keys", str(keys), "--actor", "t")
    return code, json.loads(out)


def _links(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {link["step"]: link for link in trace["links"]}


def test_lifecycle_trace_guard_rail_and_rollups(
    broker: LocalBroker, ch: Any, chdb_dir: Path, database: str, lineage_settings: Any, keys: Path
) -> None:
    s = lineage_settings
    scenario = Scenario(utc_now().replace(second=0, microsecond=0) - timedelta(hours=4))
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"serving-{uuid.uuid4().hex[:6]}",
        topic=s.topic,
        model_events_topic=s.model_events_topic,
        signing_key=keys / "platform.key",
        checkpoint_every=25,
    ) as p:
        lifecycle = scenario.log(p)
        decisions = scenario.decide(p)
    stats = run_worker(s, ch)
    assert stats.quarantined_total == 0, stats.quarantined
    assert stats.inserted == decisions

    db = database
    assert count(ch, f"SELECT count() FROM {db}.model_events FINAL") == lifecycle
    # One signed checkpoint per lifecycle event, all verified by the worker.
    assert count(ch, f"SELECT countIf(signature_verified) FROM {db}.model_event_checkpoints") == (
        lifecycle
    )
    # Model events are their own chain, gap-free, on their own topic.
    chains = ch.query(
        f"SELECT producer_id, min(seq), max(seq), count() FROM {db}.model_events GROUP BY 1"
    ).result_rows
    assert len(chains) == 1 and chains[0][0] == f"{p.producer_id}/model-events"
    assert chains[0][1:] == (1, lifecycle, lifecycle)

    # Guard rail: fraud@1 was promoted to production without an approval; credit-risk was not.
    incidents = ch.query(
        f"SELECT kind, seq_from, detail FROM {db}.incidents FINAL ORDER BY seq_from"
    ).result_rows
    assert [(k, seq) for k, seq, _ in incidents] == [("unapproved_promotion", 11)], incidents
    assert "fraud@1" in incidents[0][2] and "no recorded approval" in incidents[0][2]

    # `verify` still proves the decision chains (model-event checkpoints are kept apart).
    verify = CliRunner().invoke(
        main,
        ["verify", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, "--keys", str(keys)],
    )
    assert verify.exit_code == 0, verify.output

    # Trace a v2 decision from before the rollback: every link, by request id.
    code, t = _trace_json(chdb_dir, db, "v2-5", keys)
    assert code == 0, t
    assert t["decision"]["model_version"] == "2" and t["lineage_complete"] is True, t[
        "missing_links"
    ]
    links = _links(t)
    assert links["deployment"]["status"] == "ok"
    assert "serving credit-risk@2" in links["deployment"]["detail"]
    assert "deploy by deployer" in links["deployment"]["detail"]
    mv = links["model_version"]
    assert mv["ref"] == "model_version:credit-risk@2"
    assert "registered by alice" in mv["detail"] and "approve by bob" in mv["detail"]
    assert "promote to production by carol" in mv["detail"]
    assert [e["action"] for e in mv["events"]] == ["register", "approve", "promote", "deploy"]
    assert all(e["hash_ok"] for e in mv["events"])
    assert (links["run"]["ref"], links["dataset"]["ref"]) == ("run:run-2", "dataset:ds-2")
    assert links["commit"]["ref"] == "commit:c0ffee2"
    assert links["environment"]["ref"] == "environment:env-2"
    assert "agree" in links["dataset"]["detail"]
    integrity = t["integrity"]
    assert integrity["ok"] and integrity["hash_ok"] and integrity["columns_ok"]
    assert integrity["link_ok"] and integrity["checkpoint_ok"] is True
    assert integrity["checkpoint_seq"] >= t["decision"]["seq"]

    # After the rollback, by event id: deployment served credit-risk@1 again.
    code, t = _trace_json(chdb_dir, db, scenario.ids["v1-after-rollback"], keys)
    assert code == 0, t
    links = _links(t)
    assert links["deployment"]["status"] == "ok"
    assert "credit-risk@1" in links["deployment"]["detail"]
    assert "rollback by oncall" in links["deployment"]["detail"]
    assert links["run"]["ref"] == "run:run-1" and links["dataset"]["ref"] == "dataset:ds-1"
    assert t["integrity"]["ok"]

    # A v2 decision after the rollback contradicts the deployment record.
    code, t = _trace_json(chdb_dir, db, scenario.ids["v2-after-rollback"], keys)
    assert _links(t)["deployment"]["status"] == "mismatch"
    assert "was serving credit-risk@1" in _links(t)["deployment"]["detail"]
    assert not t["lineage_complete"]

    # Incomplete lineage is named link by link.
    code, t = _trace_json(chdb_dir, db, scenario.ids["shadow"], keys)
    assert code == 0
    assert "model_version: no register event records model version shadow@0" in t["missing_links"]
    assert any(
        m.startswith("deployment: the decision names no deployment_id") for m in t["missing_links"]
    )

    # Unknown id: a clear message, exit 1.
    code, out = _trace(chdb_dir, db, "no-such-request")
    assert code == 1 and "no decision has event id, request id or prediction id" in out

    # Human-readable text names the same facts.
    code, out = _trace(chdb_dir, db, "v2-5")
    assert code == 0
    assert "covered by signed checkpoint" in out and "lineage complete" in out

    # `query` records its reads too (the actor from the environment here).
    result = CliRunner().invoke(
        main,
        ["query", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, "SELECT 1"],
        env={"DECISION_AUDIT_ACTOR": "analyst-q"},
    )
    assert result.exit_code == 0, result.output
    # Every trace was recorded in the access log, with the actor given.
    rows = ch.query(
        f"SELECT actor, command, target, status FROM {db}.access_log ORDER BY accessed_at"
    ).result_rows
    assert ("t", "trace", "v2-5", "ok") in rows
    assert ("analyst-q", "query", "SELECT 1", "ok") in rows
    assert any(r[1:] == ("trace", "no-such-request", "not_found") for r in rows)

    _check_rollups(ch, db)

    # Tampering with a stored decision shows in its trace (and the exit code).
    ch.command(
        f"ALTER TABLE {db}.decisions UPDATE score = 0.999 WHERE request_id = 'v2-5'",
        settings={"mutations_sync": 2},
    )
    code, t = _trace_json(chdb_dir, db, "v2-5", keys)
    assert code == 1 and not t["integrity"]["ok"] and not t["integrity"]["columns_ok"]
    assert any("score" in pr for pr in t["integrity"]["problems"])


def _check_rollups(ch: Any, db: str) -> None:
    """Rollup queries equal the same aggregates over the base table."""
    rolled = {
        (m, v, h): (n, dict(mix), list(sq), list(lq), avg)
        for m, v, h, n, mix, sq, lq, avg in ch.query(
            "SELECT model_name, model_version, hour, countMerge(decisions), "
            "sumMapMerge(predictions), quantilesMerge(0.5, 0.9, 0.99)(score_q), "
            "quantilesMerge(0.5, 0.9, 0.99)(latency_q), avgMerge(score_avg) "
            f"FROM {db}.decisions_hourly GROUP BY model_name, model_version, hour"
        ).result_rows
    }
    base = {
        (m, v, h): (n, dict(mix), list(sq), list(lq), avg)
        for m, v, h, n, mix, sq, lq, avg in ch.query(
            "SELECT model_name, model_version, toStartOfHour(occurred_at) AS hour, count(), "
            # A prediction is nullable (decision_event v4): the mix counts the ones made.
            "sumMapIf(map(assumeNotNull(prediction), toUInt64(1)), prediction IS NOT NULL), "
            "quantiles(0.5, 0.9, 0.99)(score), "
            "quantiles(0.5, 0.9, 0.99)(latency_ms), avg(score) "
            f"FROM {db}.decisions FINAL GROUP BY model_name, model_version, hour"
        ).result_rows
    }
    assert rolled.keys() == base.keys() and len(base) >= 5
    for key, (n, mix, sq, lq, avg) in base.items():
        r = rolled[key]
        assert (r[0], r[1]) == (n, mix), key
        for got, want in ((r[2], sq), (r[3], lq), ([r[4]], [avg])):
            assert all(
                (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                for a, b in zip(got, want, strict=True)
            ), (key, got, want)
    for table, col, src in (
        ("incidents_hourly", "incidents", "incidents"),
        ("quarantine_hourly", "messages", "quarantine"),
    ):
        got = count(ch, f"SELECT countMerge({col}) FROM {db}.{table}")
        assert got == count(ch, f"SELECT count() FROM {db}.{src} FINAL"), table
    assert count(ch, f"SELECT countMerge(incidents) FROM {db}.incidents_hourly") == 1
