"""Tamper evidence on the real broker and chDB: signed checkpoints, chain checks, verify."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.audit.verify_report import TrailReport
from decision_audit.cli.main import main
from decision_audit.contract import default_codec
from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.redaction import RedactionPolicy
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.worker.settings import WorkerSettings
from tests.helpers import consume_all, count, craft_chain, run_worker, send_raw

pytestmark = pytest.mark.integration

HDR = "da-event-hash"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "serving-1")
    return tmp_path / "keys"


def _signed_run(broker: LocalBroker, ch: Any, settings: WorkerSettings, keys: Path, n: int) -> str:
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id="signed",
        topic=settings.topic,
        signing_key=keys / "serving-1.key",
        checkpoint_every=20,
    ) as p:
        for i in range(n):
            p.log_decision("m", "1", {"i": i}, "yes" if i % 2 else "no", score=i / n)
            if (i + 1) % 20 == 0:
                p.checkpoint()  # deterministic cadence; the background one is tested apart
    stats = run_worker(settings.model_copy(update={"keys": keys}), ch)
    assert stats.inserted == n and stats.quarantined_total == 0
    assert stats.checkpoints >= n // 20
    return p.producer_id


def _kinds(report: TrailReport) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for c in report.chains:
        for pr in c.problems:
            out.setdefault(pr.kind, []).append(pr.seq)
    return out


def _verify_cli(chdb_dir: Path, db: str, keys: Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main,
        [
            "verify",
            "--clickhouse-url",
            f"chdb://{chdb_dir}",
            "--database",
            db,
            "--keys",
            str(keys),
            "--format",
            "json",
        ],
    )
    return result.exit_code, json.loads(result.output)


def test_clean_trail_verifies_and_every_tampering_is_named(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    worker_settings: WorkerSettings,
    keys: Path,
    tmp_path: Path,
) -> None:
    db = worker_settings.database
    _signed_run(broker, ch, worker_settings, keys, 100)
    clean = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    assert clean.ok, _kinds(clean)
    assert [(c.events, c.attested_to, c.key_id) for c in clean.chains] == [(100, 100, "serving-1")]
    code, doc = _verify_cli(chdb_dir, db, keys)
    assert code == 0 and doc["ok"] and doc["events"] == 100

    sync = {"mutations_sync": 2}
    ch.command(
        f"ALTER TABLE {db}.decisions UPDATE prediction = 'approve' WHERE seq = 10", settings=sync
    )
    ch.command(f"ALTER TABLE {db}.decisions DELETE WHERE seq = 20", settings=sync)
    ch.command(
        f"INSERT INTO {db}.decisions SELECT * "
        "REPLACE (generateUUIDv7() AS event_id, 'forged' AS prediction) "
        f"FROM {db}.decisions WHERE seq = 30"
    )
    ch.command(
        f"ALTER TABLE {db}.decisions UPDATE seq = if(seq = 40, 41, 40) WHERE seq IN (40, 41)",
        settings=sync,
    )
    # Replace one checkpoint by one with the same content signed by another key.
    generate_keypair(tmp_path / "other", "serving-1")
    cp_seq, head = ch.query(
        f"SELECT seq, chain_head FROM {db}.checkpoints WHERE seq > 50 ORDER BY seq LIMIT 1",
        column_formats={"chain_head": "bytes"},
    ).result_rows[0]
    forged = Signer(tmp_path / "other" / "serving-1.key").sign(
        checkpoint_message("signed", clean.chains[0].producer_epoch, cp_seq, head)
    )
    ch.command(
        f"ALTER TABLE {db}.checkpoints UPDATE signature = {{sig:String}} WHERE seq = {cp_seq}",
        parameters={"sig": forged},
        settings=sync,
    )

    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    kinds = _kinds(report)
    assert not report.ok
    assert 10 in kinds["altered_row"]
    assert 20 in kinds["deleted_rows"]
    assert 30 in kinds["inserted_row"]
    assert set(kinds["reordered_row"]) == {40, 41}
    assert kinds["forged_checkpoint"] == [cp_seq]
    altered = [
        p for c in report.chains for p in c.problems if p.kind == "altered_row" and p.seq == 10
    ]
    assert "prediction" in altered[0].detail and altered[0].event_ids
    code, doc = _verify_cli(chdb_dir, db, keys)
    assert code == 1 and not doc["ok"] and doc["problems"] == sum(len(v) for v in kinds.values())


def test_verify_without_keys_reports_signatures_unchecked(
    broker: LocalBroker, ch: Any, chdb_dir: Path, worker_settings: WorkerSettings, keys: Path
) -> None:
    _signed_run(broker, ch, worker_settings, keys, 30)
    report = TrailVerifier(ch, worker_settings.database, KeyRing()).run()
    assert report.ok and not report.keys_checked and report.chains[0].attested_to == 0
    result = CliRunner().invoke(
        main,
        [
            "verify",
            "--clickhouse-url",
            f"chdb://{chdb_dir}",
            "--database",
            worker_settings.database,
        ],
    )
    assert result.exit_code == 0 and "signatures not checked" in result.output


def test_deleting_the_tail_is_caught_by_the_last_checkpoint(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, keys: Path
) -> None:
    db = worker_settings.database
    _signed_run(broker, ch, worker_settings, keys, 50)
    ch.command(f"ALTER TABLE {db}.decisions DELETE WHERE seq >= 45", settings={"mutations_sync": 2})
    kinds = _kinds(TrailVerifier(ch, db, KeyRing.load(keys)).run())
    assert kinds.get("deleted_rows") == [45]


def test_worker_quarantines_broken_links_and_records_gaps(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings
) -> None:
    real = craft_chain("linked", 5)
    other = craft_chain("linked", 3, epoch=1, prediction="forged")  # same chain id, other history
    send_raw(
        broker.bootstrap_servers,
        worker_settings.topic,
        [
            (b"linked", real[0][0], [(HDR, real[0][1])]),
            (b"linked", real[1][0], [(HDR, real[1][1])]),
            (b"linked", other[2][0], [(HDR, other[2][1])]),  # seq 3 linking to a foreign seq 2
            (b"linked", real[2][0], [(HDR, real[2][1])]),
            (b"linked", real[4][0], [(HDR, real[4][1])]),  # seq 4 never arrives
        ],
    )
    stats = run_worker(worker_settings, ch)
    db = worker_settings.database
    assert stats.inserted == 4 and stats.quarantined == {"chain_break": 1}
    seqs = [r[0] for r in ch.query(f"SELECT seq FROM {db}.decisions ORDER BY seq").result_rows]
    assert seqs == [1, 2, 3, 5]
    assert ch.query(f"SELECT kind, seq_from, seq_to FROM {db}.incidents").result_rows == [
        ("seq_gap", 4, 4)
    ]
    # A redelivered seq with different content is a fork, not a duplicate.
    send_raw(
        broker.bootstrap_servers,
        worker_settings.topic,
        [(b"linked", other[2][0], [(HDR, other[2][1])])],
    )
    again = run_worker(worker_settings, ch)
    assert again.quarantined == {"chain_fork": 1}
    # A redelivery of a stored event is dropped; the missing seq 4 arriving late is quarantined.
    send_raw(
        broker.bootstrap_servers,
        worker_settings.topic,
        [(b"linked", real[i][0], [(HDR, real[i][1])]) for i in (1, 3)],
    )
    late = run_worker(worker_settings, ch)
    assert late.duplicates == 1 and late.quarantined == {"late_event": 1}
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 4


def test_worker_checks_checkpoint_signatures_and_strict_mode(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, keys: Path, tmp_path: Path
) -> None:
    codec = default_codec()
    schema = codec.registry.latest("checkpoint")
    msgs = craft_chain("cp", 2)
    generate_keypair(tmp_path / "stranger", "stranger")

    def checkpoint(key_path: Path, key_id: str) -> bytes:
        sig = Signer(key_path, key_id).sign(checkpoint_message("cp", 1, 2, msgs[1][1]))
        return codec.encode(
            schema,
            {
                "producer_id": "cp",
                "producer_epoch": 1,
                "seq": 2,
                "chain_head": msgs[1][1],
                "key_id": key_id,
                "algorithm": "ed25519",
                "signature": sig,
                "signed_at": utc_now(),
            },
        )

    send_raw(
        broker.bootstrap_servers,
        worker_settings.topic,
        [
            *[(b"cp", v, [(HDR, h)]) for v, h in msgs],
            (b"cp", checkpoint(keys / "serving-1.key", "serving-1"), None),
            (b"cp", checkpoint(tmp_path / "stranger" / "stranger.key", "serving-1"), None),
            (b"cp", checkpoint(tmp_path / "stranger" / "stranger.key", "stranger"), None),
        ],
    )
    stats = run_worker(worker_settings, ch, keys=keys, require_signed=True)
    assert stats.checkpoints == 1
    assert stats.quarantined == {"bad_signature": 1, "unknown_key": 1, "unattested": 2}
    db = worker_settings.database
    assert count(ch, f"SELECT count() FROM {db}.checkpoints WHERE signature_verified") == 1


def test_redaction_happens_before_anything_leaves_the_process(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(
        json.dumps(
            {
                "id": "pii",
                "version": 3,
                "rules": [
                    {"path": "applicant.ssn", "action": "drop"},
                    {"path": "applicant.name", "action": "mask"},
                    {"path": "email", "action": "hash"},
                ],
            }
        )
    )
    secret_ssn, email = "078-05-1120-SECRET", "jane@example.org"
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id="redacting",
        topic=worker_settings.topic,
        redaction=policy_file,
        redaction_secret=b"s3cr3t",
    ) as p:
        for i in range(2):
            p.log_decision(
                "m",
                "1",
                {
                    "applicant": {"ssn": secret_ssn, "name": "Jane Roe", "age": 40 + i},
                    "email": email,
                },
                "approve",
            )
    raw = consume_all(broker.bootstrap_servers, worker_settings.topic, expect=2)
    assert len(raw) == 2
    for m in raw:
        assert secret_ssn.encode() not in m.value() and b"Jane Roe" not in m.value()
        assert email.encode() not in m.value()
    run_worker(worker_settings, ch)
    rows = ch.query(
        f"SELECT inputs, redaction_policy FROM {worker_settings.database}.decisions ORDER BY seq"
    ).result_rows
    stored = [json.loads(r[0]) for r in rows]
    assert all(r[1] == "pii@3" for r in rows)
    assert "ssn" not in stored[0]["applicant"] and stored[0]["applicant"]["name"] == "***"
    assert stored[0]["email"] == stored[1]["email"] != email
    assert stored[0]["email"] == RedactionPolicy.load(policy_file).compile(b"s3cr3t").hash_value(
        email
    )


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path), "--key-id", "k1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k1.pub").exists()
    assert os.stat(tmp_path / "k1.key").st_mode & 0o777 == 0o600
    assert Signer(tmp_path / "k1.key").key_id == "k1"
    again = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path), "--key-id", "k1"])
    assert again.exit_code == 1 and "already exists" in again.output


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_background_thread_signs_every_n_events_and_every_t_seconds(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, keys: Path
) -> None:
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id="cadence",
        topic=worker_settings.topic,
        signing_key=keys / "serving-1.key",
        checkpoint_every=10,
        checkpoint_interval=3600,
    ) as p:
        for i in range(10):
            p.log_decision("m", "1", {"i": i}, "y")
        assert _wait_for(lambda: p.stats.checkpoints == 1)  # count-triggered
        for i in range(3):
            p.log_decision("m", "1", {"i": i}, "y")
        assert not _wait_for(lambda: p.stats.checkpoints > 1, timeout=0.5)  # 3 < N, T far off
    assert p.stats.checkpoints == 2  # close() signs the tail
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id="cadence-timer",
        topic=worker_settings.topic,
        signing_key=keys / "serving-1.key",
        checkpoint_every=1000,
        checkpoint_interval=0.2,
    ) as t:
        t.log_decision("m", "1", {"i": 0}, "y")
        assert _wait_for(lambda: t.stats.checkpoints == 1)  # time-triggered
    stats = run_worker(worker_settings.model_copy(update={"keys": keys}), ch)
    assert stats.inserted == 14 and stats.checkpoints == 3 and stats.quarantined_total == 0
