"""``decision-audit reconcile`` on the real broker and chDB (seed 003, step 7): artifacts
named by lifecycle events re-hashed; a tampered and a missing one become incidents."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer, Reference
from decision_audit.cli.main import main
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import count, run_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(broker: LocalBroker, worker_settings: WorkerSettings, tmp_path: Path) -> Any:
    generate_keypair(tmp_path / "keys", "platform")
    me_topic = f"{worker_settings.topic}-me"
    ensure_topics(broker.bootstrap_servers, {me_topic: 2})
    return worker_settings.model_copy(
        update={"model_events_topic": me_topic, "keys": tmp_path / "keys"}
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reconcile(chdb_dir: Path, db: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["reconcile", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *extra],
    )
    return result.exit_code, result.output


def test_reconcile_rehashes_artifacts_and_records_mismatches(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    settings: Any,
    tmp_path: Path,
) -> None:
    store = tmp_path / "artifacts"
    store.mkdir()
    model, report, gone = store / "churn-2.pkl", store / "bias-2.html", store / "fraud-5.pkl"
    model.write_bytes(b"model weights v2")
    report.write_bytes(b"<p>no bias found</p>")
    gone.write_bytes(b"fraud model")
    other = "9f2c" * 16
    t0 = utc_now() - timedelta(hours=1)
    mv = Reference.model_version
    events: list[tuple[str, Any, dict[str, Any]]] = [
        # matching, named by a file:// URL
        ("register", mv("churn", "2"), {"artifact_uri": model.as_uri(), "artifact_sha256": ""}),
        # tampered after the attestation, named by a plain path
        (
            "attest",
            mv("churn", "2"),
            {"predicate": "bias-report", "result": "pass", "artifact_uri": str(report)},
        ),
        # deleted after registration
        ("register", mv("fraud", "5"), {"artifact_uri": str(gone)}),
        # not checkable here, and a digest with nowhere to look
        (
            "attest",
            mv("fraud", "5"),
            {"predicate": "tests", "result": "pass", "artifact_uri": "gopher://ci/tests.xml"},
        ),
        ("register", mv("risk", "3"), {"artifact_sha256": other}),
        ("register", mv("plain", "1"), {}),
    ]
    digests = {model: _sha(model.read_bytes()), report: _sha(report.read_bytes())}
    digests[gone] = _sha(gone.read_bytes())
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"ml-{uuid.uuid4().hex[:6]}",
        topic=settings.topic,
        model_events_topic=settings.model_events_topic,
        signing_key=settings.keys / "platform.key",
    ) as p:
        for i, (action, subject, meta) in enumerate(events):
            uri = meta.get("artifact_uri", "")
            path = next((f for f in digests if uri in (str(f), f.as_uri())), None)
            if path is not None:
                meta["artifact_sha256"] = digests[path]
            elif action == "attest":
                meta["artifact_sha256"] = other
            p.log_model_event(
                action, subject, actor="alice", metadata=meta, occurred_at=t0 + timedelta(minutes=i)
            )
    stats = run_worker(settings, ch)
    assert stats.quarantined_total == 0, stats.quarantined
    report.write_bytes(b"<p>no bias found</p><!-- edited -->")
    gone.unlink()

    code, out = _reconcile(chdb_dir, database, "--format", "json", "--actor", "auditor-1")
    assert code == 1, out
    r = json.loads(out)
    by = {(a["subject"], a["action"]): a for a in r["artifacts"]}
    assert len(by) == len(r["artifacts"]) == 5  # plain@1 names no artifact
    ok = by[("model_version:churn@2", "register")]
    assert ok["status"] == "ok" and ok["actual_sha256"] == digests[model]
    tampered = by[("model_version:churn@2", "attest")]
    assert tampered["status"] == "mismatch"
    assert tampered["actual_sha256"] == _sha(report.read_bytes()) != digests[report]
    missing = by[("model_version:fraud@5", "register")]
    assert missing["status"] == "missing" and missing["actual_sha256"] is None
    assert by[("model_version:fraud@5", "attest")]["status"] == "unsupported"
    assert by[("model_version:risk@3", "register")]["status"] == "unlocated"
    assert r["checked"] == 3 and r["incidents_recorded"] == 2
    assert r["summary"] == {"ok": 1, "mismatch": 1, "missing": 1, "unsupported": 1, "unlocated": 1}

    incidents = ch.query(
        f"SELECT kind, seq_from, detail FROM {database}.incidents FINAL "
        "WHERE kind LIKE 'artifact_%' ORDER BY seq_from"
    ).result_rows
    assert [(k, s) for k, s, _ in incidents] == [("artifact_mismatch", 2), ("artifact_missing", 3)]
    assert f"artifact {report} has sha256 {tampered['actual_sha256']}" in incidents[0][2]
    assert f"the event recorded {digests[report]}" in incidents[0][2]
    assert f"artifact {gone} is missing (recorded sha256 {digests[gone]})" in incidents[1][2]
    access = ch.query(
        f"SELECT actor, command, status FROM {database}.access_log WHERE command = 'reconcile'"
    ).result_rows
    assert access == [("auditor-1", "reconcile", "failed")]

    # A rerun replaces the incidents rather than repeating them; the table names each state.
    code, out = _reconcile(chdb_dir, database)
    assert code == 1, out
    assert "1 ok, 1 mismatch, 1 missing, 1 unsupported, 1 unlocated" in out
    assert "2 incident(s) recorded" in out
    n = f"SELECT count() FROM {database}.incidents FINAL WHERE kind LIKE 'artifact_%'"
    assert count(ch, n) == 2

    # Restored artifacts reconcile cleanly once the unchecked ones are the only others.
    report.write_bytes(b"<p>no bias found</p>")
    gone.write_bytes(b"fraud model")
    code, out = _reconcile(chdb_dir, database, "--format", "json")
    assert code == 0, out
    assert json.loads(out)["summary"] == {"ok": 3, "unsupported": 1, "unlocated": 1}


def test_reconcile_reads_other_urls_through_fsspec(
    broker: LocalBroker, ch: Any, chdb_dir: Path, database: str, settings: Any
) -> None:
    """memory:// is fsspec's own in-process filesystem: a real fsspec driver, no fake."""
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    root = f"memory://artifacts-{uuid.uuid4().hex[:8]}"
    ok, edited, gone = f"{root}/churn-2.pkl", f"{root}/bias-2.html", f"{root}/fraud-5.pkl"
    for uri, data in ((ok, b"weights"), (edited, b"<p>no bias</p>"), (gone, b"fraud")):
        mem.pipe(uri, data)
    digests = {uri: _sha(mem.cat(uri)) for uri in (ok, edited, gone)}
    mv = Reference.model_version
    events = [
        ("register", mv("churn", "2"), ok),
        ("attest", mv("churn", "2"), edited),
        ("register", mv("fraud", "5"), gone),
        ("attest", mv("fraud", "5"), "nodriver://ci/tests.xml"),
    ]
    t0 = utc_now() - timedelta(hours=1)
    try:
        with AuditProducer(
            broker.bootstrap_servers,
            producer_id=f"ml-{uuid.uuid4().hex[:6]}",
            topic=settings.topic,
            model_events_topic=settings.model_events_topic,
            signing_key=settings.keys / "platform.key",
        ) as p:
            for i, (action, subject, uri) in enumerate(events):
                meta = {"artifact_uri": uri, "artifact_sha256": digests.get(uri, "0" * 64)}
                if action == "attest":
                    meta |= {"predicate": "bias-report", "result": "pass"}
                p.log_model_event(
                    action,
                    subject,
                    actor="alice",
                    metadata=meta,
                    occurred_at=t0 + timedelta(minutes=i),
                )
        stats = run_worker(settings, ch)
        assert stats.quarantined_total == 0, stats.quarantined
        mem.pipe(edited, b"<p>no bias</p><!-- edited -->")
        mem.rm(gone)

        code, out = _reconcile(chdb_dir, database, "--format", "json")
        assert code == 1, out
        r = json.loads(out)
        by = {a["uri"]: a for a in r["artifacts"]}
        assert by[ok]["status"] == "ok" and by[ok]["actual_sha256"] == digests[ok]
        assert by[edited]["status"] == "mismatch"
        assert by[edited]["actual_sha256"] == _sha(mem.cat(edited)) != digests[edited]
        assert by[gone]["status"] == "missing" and by[gone]["detail"] == f"{gone} does not exist"
        unsupported = by["nodriver://ci/tests.xml"]
        assert unsupported["status"] == "unsupported"
        assert "fsspec cannot open nodriver://" in unsupported["detail"]
        assert r["summary"] == {"ok": 1, "mismatch": 1, "missing": 1, "unsupported": 1}
        kinds = ch.query(
            f"SELECT kind FROM {database}.incidents FINAL WHERE kind LIKE 'artifact_%' "
            "ORDER BY seq_from"
        ).result_rows
        assert kinds == [("artifact_mismatch",), ("artifact_missing",)]
    finally:
        mem.rm(root, recursive=True)
