"""Crypto-shredding erasure on the embedded stack: real brokers (Apache Kafka, Tansu) and chDB.

Producers encrypt input fields under a data key per event, sealed to the key store's public
key; the worker stores the decisions, the key filer the sealed keys; ``erase`` destroys one
subject's keys. The ciphertext stays in Kafka and ClickHouse, ``verify`` stays green, and
``trace`` says who erased it and when.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from decision_audit import AuditProducer, RedactionPolicy
from decision_audit.audit.keystore import KeystoreKey, decrypt_inputs
from decision_audit.audit.trace import Tracer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.cli.main import main
from decision_audit.contract import default_codec
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.sealing import generate_keystore_keypair, subject_hash
from decision_audit.producer.sealing import KeystoreSealer
from decision_audit.worker import keystore as filer_module
from decision_audit.worker.keystore import FilerStats, KeyFiler, KeyFilerSettings
from decision_audit.worker.loop import Worker
from decision_audit.worker.received import Received
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import wait_for
from tests.helpers import Broker, consume_all, count, craft_chain, run_worker, send_raw

pytestmark = pytest.mark.integration

SECRET = "erasure-test-secret"
SUBJECTS = ("s-1", "s-2", "s-3")
PER_SUBJECT = 4
POLICY = RedactionPolicy(
    id="pii",
    version=1,
    subject="applicant.id",
    rules=(
        {"path": "applicant.id", "action": "hash"},
        {"path": "applicant.name", "action": "encrypt"},
        {"path": "applicant.contacts.*.email", "action": "encrypt"},
    ),
)


@dataclass
class Trail:
    """What a test logged: event ids by subject, the stack's coordinates, the key files."""

    events: dict[str, list[str]]
    plain: list[str]
    """decisions without an applicant (nothing encrypted)"""
    keys_topic: str
    private: Path
    dsn: str
    database: str

    def cli(self, *args: str, secret: str | None = SECRET) -> Result:
        env = {"DECISION_AUDIT_REDACTION_SECRET": secret} if secret is not None else {}
        store = ["--clickhouse-url", self.dsn, "--database", self.database]
        return CliRunner().invoke(main, [args[0], *store, *args[1:]], env=env)

    def erase(self, subject: str, *extra: str, key: Path | None = None) -> Result:
        return self.cli(
            "erase",
            "--subject",
            subject,
            "--reason",
            "GDPR art. 17 request #17",
            "--actor",
            "alice",
            "--keystore-key",
            str(key or self.private),
            *extra,
        )


def _filer(
    broker: Broker, trail: Trail, ch: Any, group: str | None = None, registry: Any = None
) -> FilerStats:
    settings = KeyFilerSettings(
        bootstrap_servers=broker.bootstrap_servers,
        clickhouse_url=trail.dsn,
        database=trail.database,
        keys_topic=trail.keys_topic,
        keys_group=group or f"k-{uuid.uuid4().hex[:8]}",
        keys_flush_interval=0.2,
        keys_exit_when_idle=1.5,
        keys_session_timeout_ms=2000,
        keys_create_topic=False,
    )
    return KeyFiler(settings, client=ch, schema_registry=registry).run()


@pytest.fixture
def trail(
    broker: Broker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    topic: str,
    worker_settings: WorkerSettings,
    tmp_path: Path,
) -> Trail:
    keys_topic = f"{topic}-keys"
    ensure_topics(broker.bootstrap_servers, {keys_topic: 3})
    private, public = generate_keystore_keypair(tmp_path / "keystore", "ks-1")
    events: dict[str, list[str]] = {s: [] for s in SUBJECTS}
    plain = []
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"scoring-{uuid.uuid4().hex[:6]}",
        topic=topic,
        keys_topic=keys_topic,
        redaction=POLICY,
        redaction_secret=SECRET,
        keystore_public_key=public,
    ) as producer:
        for i in range(PER_SUBJECT):
            for s in SUBJECTS:
                applicant = {
                    "id": s,
                    "name": f"Name of {s}",
                    "contacts": [{"email": f"{s}-{i}@example.org", "kind": "home"}],
                }
                inputs = {"applicant": applicant, "income": 1000 * i}
                events[s].append(
                    producer.log_decision("credit", "1.0", inputs, "approve", score=0.5 + i / 10)
                )
            plain.append(producer.log_decision("credit", "1.0", {"income": i}, "deny"))
    t = Trail(events, plain, keys_topic, private, f"chdb://{chdb_dir}", database)
    run_worker(worker_settings, ch)
    stats = _filer(broker, t, ch)
    assert (stats.filed, stats.refused, stats.malformed) == (len(SUBJECTS) * PER_SUBJECT, 0, 0)
    return t


def _sealed_keys(ch: Any, db: str, sub: str) -> list[bytes]:
    rows = ch.query(
        f"SELECT sealed_key FROM {db}.subject_keys FINAL WHERE subject_hash = {{s:String}}",
        parameters={"s": sub},
        column_formats={"sealed_key": "bytes"},
    ).result_rows
    return [bytes(r[0]) for r in rows]


def _files_holding(ch: Any, db: str, needles: list[bytes]) -> list[str]:
    """The files of the subject_keys table's data directory holding any of ``needles``."""
    (paths,) = ch.query(
        "SELECT data_paths FROM system.tables WHERE database = {d:String} "
        "AND name = 'subject_keys'",
        parameters={"d": db},
    ).result_rows[0]
    found = []
    for root in paths:
        for folder, _, files in os.walk(root):
            for name in files:
                data = Path(folder, name).read_bytes()
                if any(n in data for n in needles):
                    found.append(os.path.join(folder, name))
    return found


def test_erase_one_subject_among_many(
    broker: Broker, ch: Any, database: str, topic: str, trail: Trail
) -> None:
    db = database
    sub2 = subject_hash(SECRET.encode(), "s-2")
    key = KeystoreKey(trail.private)
    victim = trail.events["s-2"][1]

    # Before: the key holder reads the fields, through the CLI only; the store has ciphertext.
    inputs, _ = decrypt_inputs(ch, db, victim, key)
    assert inputs["applicant"]["name"] == "Name of s-2"
    assert inputs["applicant"]["contacts"][0]["email"] == "s-2-1@example.org"
    traced = trail.cli("trace", victim, "--keystore-key", str(trail.private))
    assert traced.exit_code == 0, traced.output
    assert "decrypted" in traced.output and "Name of s-2" in traced.output
    stored = ch.query(
        f"SELECT inputs FROM {db}.decisions WHERE event_id = {{e:UUID}}", parameters={"e": victim}
    ).result_rows[0][0]
    assert "Name of s-2" not in stored and "s-2-1@example.org" not in stored
    ciphertext = json.loads(stored)["applicant"]["name"]["ct"]
    sealed = _sealed_keys(ch, db, sub2)
    assert len(sealed) == PER_SUBJECT
    assert _files_holding(ch, db, sealed), "the check below would prove nothing"

    result = trail.erase("s-2")
    assert result.exit_code == 0, result.output
    assert f"destroyed the keys of {PER_SUBJECT} decision(s)" in result.output

    # No key of the subject exists: not in the key store, nor on its disk once the parts
    # the mutation replaced are gone (a second, by the table's settings), nor in the
    # decisions topic (keys never travel there).
    assert _sealed_keys(ch, db, sub2) == []
    wait_for(lambda: not _files_holding(ch, db, sealed), timeout=60, what="old parts removed")
    messages = consume_all(broker.bootstrap_servers, topic, expect=4 * PER_SUBJECT)
    values = [m.value() for m in messages]
    assert not any(s in v for s in sealed for v in values)
    # The ciphertext is still in Kafka's bytes and in ClickHouse.
    assert any(ciphertext.encode() in v for v in values)
    assert (
        ciphertext
        in ch.query(
            f"SELECT inputs FROM {db}.decisions WHERE event_id = {{e:UUID}}",
            parameters={"e": victim},
        ).result_rows[0][0]
    )
    # The other subjects keep their keys; every other field of the erased decisions queries.
    assert count(ch, f"SELECT count() FROM {db}.subject_keys FINAL") == 2 * PER_SUBJECT
    rows = ch.query(
        f"SELECT prediction, score, model_name FROM {db}.decisions FINAL "
        "WHERE event_id IN {e:Array(UUID)} ORDER BY score",
        parameters={"e": trail.events["s-2"]},
    ).result_rows
    assert [(p, m) for p, _, m in rows] == [("approve", "credit")] * PER_SUBJECT
    assert decrypt_inputs(ch, db, trail.events["s-1"][1], key)[0]["applicant"]["name"] == (
        "Name of s-1"
    )

    # The erasure is on record, with the keyed hash and never the subject id.
    (row,) = ch.query(
        f"SELECT subject_hash, actor, reason, records, keystore_key_ids FROM {db}.erasures"
    ).result_rows
    assert row == (sub2, "alice", "GDPR art. 17 request #17", PER_SUBJECT, ["ks-1"])
    assert "s-2" not in json.dumps(row[:3])

    # verify is green: the hash chain covers the ciphertext, which did not change.
    report = TrailVerifier(ch, db, KeyRing()).run()
    assert report.ok
    assert sum(c.events for c in report.chains) == 4 * PER_SUBJECT

    # trace shows the erasure; nobody reads the fields any more, the key holder neither.
    t = Tracer(ch, db, keystore_key=key).trace(victim)
    assert [(f.path, f.status) for f in t.encrypted] == [
        ("applicant.name", "erased"),
        ("applicant.contacts.0.email", "erased"),
    ]
    assert "by alice" in t.encrypted[0].detail and t.integrity.ok
    shown = trail.cli("trace", victim, "--keystore-key", str(trail.private))
    assert shown.exit_code == 0, shown.output
    assert "erased on" in shown.output and "by alice" in shown.output
    assert "Name of s-2" not in shown.output
    refused = trail.cli("decrypt", victim, "--keystore-key", str(trail.private))
    assert refused.exit_code == 1 and "were erased on" in refused.output
    assert len(refused.output.strip().splitlines()) == 1

    # A second erase is a no-op that says so.
    again = trail.erase("s-2")
    assert again.exit_code == 0, again.output
    assert "already erased on" in again.output and "nothing to do" in again.output
    by_hash = trail.cli(
        "erase",
        "--subject-hash",
        sub2,
        "--reason",
        "restored a backup",
        "--keystore-key",
        str(trail.private),
        secret=None,
    )
    assert by_hash.exit_code == 0 and "already erased on" in by_hash.output, by_hash.output
    assert count(ch, f"SELECT count() FROM {db}.erasures") == 1

    # The keys topic still holds the sealed keys until its retention passes: filed again
    # from the start (a new filer group), they are refused, and the erasure holds.
    stats = _filer(broker, trail, ch)
    assert (stats.filed, stats.refused) == (2 * PER_SUBJECT, PER_SUBJECT)
    assert _sealed_keys(ch, db, sub2) == []


def test_unknown_subject_and_bad_key_store_keys_lose_nothing(
    broker: Broker, ch: Any, database: str, trail: Trail, tmp_path: Path
) -> None:
    db = database
    keys_before = count(ch, f"SELECT count() FROM {db}.subject_keys FINAL")

    def nothing_lost(result: Result) -> None:
        assert result.exit_code != 0, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert count(ch, f"SELECT count() FROM {db}.subject_keys FINAL") == keys_before
        assert count(ch, f"SELECT count() FROM {db}.erasures") == 0

    unknown = trail.erase("nobody")
    nothing_lost(unknown)
    assert unknown.exit_code == 1 and "no key of subject" in unknown.output

    # Another key store's key (even under the same key id): nothing opens, nothing is erased.
    other, _ = generate_keystore_keypair(tmp_path / "other", "ks-1")
    wrong = trail.erase("s-1", key=other)
    nothing_lost(wrong)
    assert "does not open the key" in wrong.output and "nothing was erased" in wrong.output
    renamed, _ = generate_keystore_keypair(tmp_path / "other", "ks-9")
    named = trail.erase("s-1", key=renamed)
    nothing_lost(named)
    assert "'ks-1'" in named.output and "'ks-9'" in named.output
    assert "nothing was erased" in named.output

    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    unreadable = trail.erase("s-1", key=garbage)
    nothing_lost(unreadable)
    assert "--keystore-key" in unreadable.output and "not an unencrypted PEM" in unreadable.output
    missing = trail.erase("s-1", key=tmp_path / "absent.key")
    nothing_lost(missing)
    assert "cannot read key store key" in missing.output

    # Without the secret the subject cannot be named; without a reason nothing is done.
    no_secret = trail.cli(
        "erase",
        "--subject",
        "s-1",
        "--reason",
        "r",
        "--keystore-key",
        str(trail.private),
        secret=None,
    )
    nothing_lost(no_secret)
    assert "DECISION_AUDIT_REDACTION_SECRET" in no_secret.output
    both = trail.erase("s-1", "--subject-hash", "ab" * 32)
    nothing_lost(both)
    assert "either --subject or --subject-hash" in both.output
    empty = trail.erase("s-1", "--reason", " ")
    nothing_lost(empty)
    assert "--reason must say why" in empty.output

    # What is not a sealed key on the keys topic is logged and counted, never filed; the keys
    # filed again (a new group) collapse onto the ones on file.
    decision = craft_chain("intruder", 1)[0][0]
    hostile = [(None, b"junk", None), (None, decision, None)]
    send_raw(broker.bootstrap_servers, trail.keys_topic, hostile)
    stats = _filer(broker, trail, ch)
    assert (stats.filed, stats.malformed, stats.refused) == (keys_before, 2, 0)
    assert count(ch, f"SELECT count() FROM {db}.subject_keys FINAL") == keys_before


def test_a_key_filed_while_its_subject_is_erased_is_deleted_again(
    ch: Any, chdb_dir: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the filer looked for erasures before an erase recorded itself, and inserts
    after the erase deleted. Its sweep after the insert deletes what the erasure covers."""
    _, public = generate_keystore_keypair(tmp_path, "ks-1")
    sub = subject_hash(SECRET.encode(), "s-9")
    codec = default_codec()
    schema = codec.registry.latest("subject_key")
    then = datetime.now(UTC) - timedelta(minutes=1)
    messages = []
    for i, s in enumerate((sub, "cd" * 32)):
        box = KeystoreSealer(public).begin(str(uuid.uuid4()), s)
        value = codec.encode(schema, box.key_record(then, "p"))
        messages.append(Received("keys", 0, i, None, value, None))
    ch.insert(
        f"{database}.erasures",
        [[str(uuid.uuid4()), datetime.now(UTC), sub, "alice", "u", "h", "r", 1, None, None, []]],
    )
    real = filer_module._erased_at
    calls: list[int] = []

    def before_the_erase_recorded_itself(client: Any, db: str, subjects: list[str]) -> Any:
        calls.append(1)
        return {} if len(calls) == 1 else real(client, db, subjects)

    monkeypatch.setattr(filer_module, "_erased_at", before_the_erase_recorded_itself)
    settings = KeyFilerSettings(clickhouse_url=f"chdb://{chdb_dir}", database=database)
    filer = KeyFiler(settings, client=ch)
    filer.file(ch, messages)
    assert (filer.stats.filed, filer.stats.refused) == (1, 1)
    assert _sealed_keys(ch, database, sub) == []
    assert len(_sealed_keys(ch, database, "cd" * 32)) == 1


def test_sealed_keys_in_the_schema_registry_framing(
    broker: Broker,
    ch: Any,
    chdb_dir: Path,
    database: str,
    topic: str,
    worker_settings: WorkerSettings,
    tmp_path: Path,
) -> None:
    """With ``schema_registry=`` the producer frames its sealed keys 00 + schema id too
    (subject ``<keys topic>-value``); a filer reading through the registry files them, one
    without a registry files none (and says why); the fields open, the erase works."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from decision_audit.contract.codec import CONFLUENT_MAGIC
    from decision_audit.contract.registry_codec import subject_name

    sr = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex[:8]}"})
    keys_topic = f"{topic}-keys"
    ensure_topics(broker.bootstrap_servers, {keys_topic: 1})
    private, public = generate_keystore_keypair(tmp_path / "keystore", "ks-1")
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"scoring-{uuid.uuid4().hex[:6]}",
        topic=topic,
        keys_topic=keys_topic,
        redaction=POLICY,
        redaction_secret=SECRET,
        keystore_public_key=public,
        schema_registry=sr,
    ) as producer:
        assert producer.framing == "confluent"
        applicant = {"id": "s-1", "name": "Name of s-1", "contacts": []}
        events = [
            producer.log_decision("credit", "1.0", {"applicant": applicant}, "approve")
            for _ in range(3)
        ]
    key_schema = default_codec().registry.latest("subject_key")
    subject = subject_name("topic", keys_topic, key_schema)
    assert subject == f"{keys_topic}-value"
    schema_id = sr.get_latest_version(subject).schema_id
    raw = consume_all(broker.bootstrap_servers, keys_topic, 3)
    assert {m.value()[:5] for m in raw} == {CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")}

    Worker(worker_settings, client=ch, schema_registry=sr).run()
    trail = Trail({"s-1": events}, [], keys_topic, private, f"chdb://{chdb_dir}", database)
    without = _filer(broker, trail, ch)
    assert (without.filed, without.malformed) == (0, 3)
    filed = _filer(broker, trail, ch, registry=sr)
    assert (filed.filed, filed.refused, filed.malformed) == (3, 0, 0)
    inputs, _ = decrypt_inputs(ch, database, events[0], KeystoreKey(private))
    assert inputs["applicant"]["name"] == "Name of s-1"
    erased = trail.erase("s-1")
    assert erased.exit_code == 0, erased.output
    assert "destroyed the keys of 3 decision(s)" in erased.output
    assert _sealed_keys(ch, database, subject_hash(SECRET.encode(), "s-1")) == []
