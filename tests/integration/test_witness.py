"""The witness log on the real broker and chDB: deleted or truncated chains, forged statements,
and a witness log rewritten inside ClickHouse caught through its copy on the topic."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource

from decision_audit import AuditProducer
from decision_audit.audit.retention import PRUNING_COLUMNS
from decision_audit.audit.witness import check_logs, statements_from_clickhouse
from decision_audit.cli.main import main
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.witness import (
    GENESIS,
    ChainSet,
    Statement,
    WitnessedChain,
    complete_restatements,
    decode,
    set_digest,
    statement_hash,
)
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.worker import witness as worker_witness
from decision_audit.worker.loop import Worker
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.store import WITNESS_COLUMNS, Store
from decision_audit.worker.topics import ensure_topics
from decision_audit.worker.witness import Witness
from tests.helpers import count, run_worker

pytestmark = pytest.mark.integration

SYNC = {"mutations_sync": 2}


@dataclass
class Trail:
    settings: WorkerSettings
    keys: Path
    chdb_dir: Path
    broker: LocalBroker

    @property
    def db(self) -> str:
        return self.settings.database

    def verify(self, *extra: str, keys: bool = True) -> tuple[int, dict[str, Any]]:
        args = ["verify", "--clickhouse-url", f"chdb://{self.chdb_dir}", "--database", self.db]
        args += ["--keys", str(self.keys)] if keys else []
        args += ["--format", "json", "--witness-topic", self.settings.witness_topic, *extra]
        args += ["--bootstrap-servers", self.broker.bootstrap_servers]
        result = CliRunner().invoke(main, args)
        assert result.exit_code in (0, 1), result.output
        return result.exit_code, json.loads(result.output)


def _log(broker: LocalBroker, topic: str, keys: Path, producer_id: str, n: int) -> None:
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=producer_id,
        topic=topic,
        signing_key=keys / "serving-1.key",
        checkpoint_every=10,
    ) as p:
        for i in range(n):
            p.log_decision("m", "1", {"i": i}, "yes", score=0.5)
            if (i + 1) % 10 == 0:
                p.checkpoint()


def _witnessed(
    broker: LocalBroker, worker_settings: WorkerSettings, keys: Path, **extra: Any
) -> WorkerSettings:
    """The worker's settings with witness key ``worker-w1`` (made in ``keys``), statements
    every 0.2 s, to a witness topic of its own."""
    generate_keypair(keys, "worker-w1")
    witness_topic = f"witness-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {witness_topic: 1})
    return worker_settings.model_copy(
        update={
            "keys": keys,
            "witness_key": keys / "worker-w1.key",
            "witness_interval": 0.2,
            "witness_topic": witness_topic,
            **extra,
        }
    )


@pytest.fixture
def trail(
    broker: LocalBroker, ch: Any, chdb_dir: Path, worker_settings: WorkerSettings, tmp_path: Path
) -> Trail:
    """Two signed chains (alpha 40 events over two worker runs, beta 30), witnessed."""
    keys = tmp_path / "keys"
    generate_keypair(keys, "serving-1")
    s = _witnessed(broker, worker_settings, keys)
    _log(broker, s.topic, keys, "alpha", 30)
    _log(broker, s.topic, keys, "beta", 30)
    assert run_worker(s, ch).inserted == 60
    _log(broker, s.topic, keys, "alpha", 10)  # a new epoch of alpha, by a restarted worker
    assert run_worker(s, ch).inserted == 10
    return Trail(s, keys, chdb_dir, broker)


def _problems(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(kind, producer of the chain named) of each witness problem."""
    return [
        (p["kind"], p["chain"] and p["chain"].split("/")[0]) for p in doc["witness"]["problems"]
    ]


def _delete(ch: Any, db: str, where: str) -> None:
    """Delete events and their checkpoints alike: the chains' own checks see no trace."""
    for table in ("decisions", "checkpoints"):
        ch.command(f"ALTER TABLE {db}.{table} DELETE WHERE {where}", settings=SYNC)


def _statements(ch: Any, db: str) -> list[tuple[Statement, bytes]]:
    rows = ch.query(
        f"SELECT statement FROM {db}.witness_statements ORDER BY seq",
        column_formats={"statement": "bytes"},
    ).result_rows
    return [(decode(bytes(r[0])), bytes(r[0])) for r in rows]


def test_a_clean_trail_is_witnessed_across_worker_restarts(trail: Trail, ch: Any) -> None:
    statements = _statements(ch, trail.db)
    assert len(statements) >= 2
    last = statements[-1][0]
    assert last.witness_id == "worker-w1" and [s.seq for s, _ in statements] == list(
        range(1, len(statements) + 1)
    )
    # The restarted worker continued the log: each statement links to the one before.
    for (prev, data), (st, _) in itertools.pairwise(statements):
        assert st.prev_hash == statement_hash(data), (prev.seq, st.seq)
    # The first restates the (new) log's whole set; each later one carries what moved; folded
    # in order they give every chain at its head, and the latest commits to that whole set.
    assert statements[0][0].full == (1, 1)
    folded = ChainSet()
    for st, _ in statements:
        assert st.version == 3 and st.chains
        for c in st.chains:
            folded.put(c)
        assert (st.total, st.digest) == (len(folded), folded.digest())
    assert sorted(c.producer_id for c in folded) == ["alpha", "alpha", "beta"]
    assert sorted(c.seq for c in folded) == [10, 30, 30]
    assert {c.producer_id for c in last.chains} == {"alpha"}  # only the restart's new chain
    code, doc = trail.verify()
    assert code == 0 and doc["ok"], doc["witness"]
    assert doc["witness"]["chains"] == 3 and doc["witness"]["signatures_checked"]
    code, doc = trail.verify("--witness-from-kafka")
    assert code == 0 and doc["ok"], doc["witness"]
    assert doc["witness"]["source"] == f"topic {trail.settings.witness_topic}"


def test_a_chain_deleted_with_its_checkpoints_fails_verify_by_name(trail: Trail, ch: Any) -> None:
    _delete(ch, trail.db, "producer_id = 'beta'")
    code, doc = trail.verify()
    assert doc["problems"] == 0  # the chains' own checks see nothing: nothing is left of beta
    assert code == 1 and not doc["ok"]
    assert _problems(doc) == [("missing_chain", "beta")]
    detail = doc["witness"]["problems"][0]["detail"]
    assert detail.startswith("chain beta/") and "witnessed by worker-w1" in detail


def test_a_truncated_tail_with_its_checkpoints_fails_verify(trail: Trail, ch: Any) -> None:
    _delete(ch, trail.db, "producer_id = 'beta' AND seq > 20")
    code, doc = trail.verify()
    assert code == 1 and _problems(doc) == [("truncated_chain", "beta")]
    assert "only up to seq 20" in doc["witness"]["problems"][0]["detail"]


def test_an_edited_statement_fails_on_its_signature_and_link(trail: Trail, ch: Any) -> None:
    _, data = _statements(ch, trail.db)[0]
    edited = data.replace(b'"seq":30', b'"seq":3', 1)
    assert edited != data
    ch.command(
        f"ALTER TABLE {trail.db}.witness_statements UPDATE statement = {{s:String}} WHERE seq = 1",
        parameters={"s": edited},
        settings=SYNC,
    )
    code, doc = trail.verify()
    assert code == 1
    problems = doc["witness"]["problems"]
    assert problems[0]["kind"] == "bad_signature" and problems[0]["statement"] == 1
    assert "statement 1 of witness worker-w1" in problems[0]["detail"]
    # Without the keys the edit still shows: the next statement no longer links to it.
    code, doc = trail.verify(keys=False)
    assert code == 1 and ("broken_link", None) in _problems(doc)


def test_a_forged_statement_is_named_with_a_clear_error(
    trail: Trail, ch: Any, tmp_path: Path
) -> None:
    """A statement signed by another key under the witness's id: dropping beta from the log
    (committing to the witnessed set without it)."""
    statements = _statements(ch, trail.db)
    last, data = statements[-1]
    folded = {c.key: c for st, _ in statements for c in st.chains}
    generate_keypair(tmp_path / "other", "worker-w1")
    kept = [c for c in folded.values() if c.producer_id != "beta"]
    forged = Statement(
        last.witness_id,
        last.seq + 1,
        statement_hash(data),
        last.signed_at,
        (),
        len(kept),
        set_digest(kept),
    )
    body = forged.encode()
    signature = Signer(tmp_path / "other" / "worker-w1.key").sign(body)
    row = [forged.witness_id, forged.seq, forged.prev_hash, statement_hash(body)]
    row += [forged.signed_at, forged.total, body, signature]
    ch.insert(f"{trail.db}.witness_statements", [row], column_names=list(WITNESS_COLUMNS))
    _delete(ch, trail.db, "producer_id = 'beta'")
    code, doc = trail.verify()
    assert code == 1
    kinds = _problems(doc)
    assert ("bad_signature", None) in kinds and ("missing_chain", "beta") in kinds
    bad = next(p for p in doc["witness"]["problems"] if p["kind"] == "bad_signature")
    assert bad["statement"] == forged.seq
    assert f"statement {forged.seq} of witness worker-w1" in bad["detail"]
    assert "signature does not verify" in bad["detail"]
    # Nothing was lost: the worker's statements are all still there and still verify.
    assert count(ch, f"SELECT count() FROM {trail.db}.witness_statements") == forged.seq


def test_a_witness_log_rewritten_in_clickhouse_is_caught_from_kafka(trail: Trail, ch: Any) -> None:
    _delete(ch, trail.db, "producer_id = 'beta'")
    ch.command(f"TRUNCATE TABLE {trail.db}.witness_statements")
    code, doc = trail.verify()
    assert code == 0 and doc["witness"]["witnesses"] == {}  # ClickHouse alone cannot tell
    code, doc = trail.verify("--witness-from-kafka")
    assert code == 1
    kinds = _problems(doc)
    assert ("missing_chain", "beta") in kinds
    assert ("witness_rewritten", None) in kinds
    rewritten = next(p for p in doc["witness"]["problems"] if p["kind"] == "witness_rewritten")
    assert "missing from" in rewritten["detail"]


def test_two_workers_witnesses_are_unioned_across_a_rebalance(
    broker: LocalBroker, ch: Any, chdb_dir: Path, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    """Worker w1 stores alpha and beta; w2 joins the group and w1 leaves, so w1's partitions
    move to w2, which stores more of alpha and a new chain gamma. verify unions both logs:
    gamma is witnessed only by w2, alpha by both, at most by w2."""
    keys = tmp_path / "keys"
    for key_id in ("serving-1", "worker-w1", "worker-w2"):
        generate_keypair(keys, key_id)
    witness_topic = f"witness-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {witness_topic: 1})
    base = worker_settings.model_copy(
        update={"keys": keys, "witness_interval": 0.2, "witness_topic": witness_topic}
    )
    s1 = base.model_copy(update={"witness_key": keys / "worker-w1.key"})
    s2 = base.model_copy(update={"witness_key": keys / "worker-w2.key", "exit_when_idle": None})
    db = base.database

    def producer(producer_id: str) -> AuditProducer:
        return AuditProducer(
            broker.bootstrap_servers,
            producer_id=producer_id,
            topic=base.topic,
            signing_key=keys / "serving-1.key",
            checkpoint_every=10,
        )

    def log(p: AuditProducer, n: int) -> None:
        for i in range(n):
            p.log_decision("m", "1", {"i": i}, "yes", score=0.5)
        p.checkpoint()
        p.flush()

    def stored(n: int) -> None:
        deadline = time.monotonic() + 90
        while count(ch, f"SELECT count() FROM {db}.decisions") < n:
            assert time.monotonic() < deadline, f"fewer than {n} events stored"
            time.sleep(0.2)

    alpha, beta, gamma = producer("alpha"), producer("beta"), producer("gamma")
    log(alpha, 20)
    log(beta, 20)
    assert run_worker(s1, ch).inserted == 40  # w1 alone: every partition

    w1, w2 = (
        Worker(s1.model_copy(update={"exit_when_idle": None}), client=ch),
        Worker(s2, client=ch),
    )
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(w.run) for w in (w1, w2)]
        try:
            log(alpha, 10)
            log(beta, 10)
            stored(60)  # by whichever of the two holds the partitions
            w1.stop()  # its partitions move to w2
            runs[0].result(60)
            log(alpha, 5)
            gamma_events = 20
            log(gamma, gamma_events)
            alpha.close()
            beta.close()
            gamma.close()
            stored(85)
        finally:
            w1.stop()
            w2.stop()
        stats = [r.result(60) for r in runs]
    assert sum(s.quarantined_total for s in stats) == 0

    trail = Trail(base, keys, chdb_dir, broker)
    code, doc = trail.verify()
    assert code == 0 and doc["ok"], (doc["problems"], doc["witness"])
    assert doc["witness"]["chains"] == 3 and set(doc["witness"]["witnesses"]) == {
        "worker-w1",
        "worker-w2",
    }
    code, doc = trail.verify("--witness-from-kafka")
    assert code == 0 and doc["ok"], doc["witness"]

    # alpha past seq 30 existed only while w2 held it: cutting it there is w2's claim alone.
    _delete(ch, db, "producer_id = 'alpha' AND seq > 30")
    code, doc = trail.verify()
    alpha_problems = [p for p in doc["witness"]["problems"] if p["chain"].startswith("alpha/")]
    assert code == 1 and [(p["kind"], p["witness_id"]) for p in alpha_problems] == [
        ("truncated_chain", "worker-w2")
    ]
    assert "only up to seq 30" in alpha_problems[0]["detail"]

    _delete(ch, db, "producer_id = 'gamma'")
    code, doc = trail.verify()
    gamma_problems = [p for p in doc["witness"]["problems"] if p["chain"].startswith("gamma/")]
    assert code == 1 and [(p["kind"], p["witness_id"]) for p in gamma_problems] == [
        ("missing_chain", "worker-w2")
    ]
    assert "witnessed by worker-w2" in gamma_problems[0]["detail"]


def test_a_version_1_log_is_continued_with_version_2_statements(
    broker: LocalBroker, ch: Any, chdb_dir: Path, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    """A worker upgraded over a log of version-1 statements (each listing every chain) goes on
    from the latest with deltas; verify folds the mixed log."""
    keys = tmp_path / "keys"
    generate_keypair(keys, "serving-1")
    s = _witnessed(broker, worker_settings, keys)
    _log(broker, s.topic, keys, "alpha", 30)
    assert run_worker(s, ch).inserted == 30
    # What the older worker would have written instead: one version-1 statement over alpha.
    [(written, _)] = _statements(ch, s.database)
    v1 = Statement("worker-w1", 1, GENESIS, written.signed_at, written.chains, version=1)
    body = v1.encode()
    ch.command(f"TRUNCATE TABLE {s.database}.witness_statements")
    row = [v1.witness_id, 1, GENESIS, statement_hash(body), v1.signed_at, 1, body]
    row.append(Signer(keys / "worker-w1.key").sign(body))
    ch.insert(f"{s.database}.witness_statements", [row], column_names=list(WITNESS_COLUMNS))

    _log(broker, s.topic, keys, "beta", 30)
    assert run_worker(s, ch).inserted == 30
    statements = _statements(ch, s.database)
    # the version-1 statement is a complete restatement: no new one is needed
    assert [(st.seq, st.version, st.full) for st, _ in statements] == [(1, 1, None), (2, 3, None)]
    second = statements[1][0]
    assert [c.producer_id for c in second.chains] == ["beta"] and second.total == 2
    assert second.prev_hash == statement_hash(body)
    assert second.digest == set_digest([*written.chains, *second.chains])
    trail = Trail(s, keys, chdb_dir, broker)
    code, doc = trail.verify()
    assert code == 0 and doc["ok"], doc["witness"]
    assert doc["witness"]["chains"] == 2

    _delete(ch, s.database, "producer_id = 'alpha'")  # named only by the version-1 statement
    code, doc = trail.verify()
    assert code == 1 and _problems(doc) == [("missing_chain", "alpha")]


def test_full_restatements_bound_what_a_restart_reads_and_verify_stays_green(
    broker: LocalBroker, ch: Any, chdb_dir: Path, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    """With --witness-full-every 2 a worker restarted four times writes full restatements
    among its deltas; each restart folds only its latest complete restatement and what
    follows, and verify (folding from the restatement before) stays green."""
    keys = tmp_path / "keys"
    generate_keypair(keys, "serving-1")
    s = _witnessed(broker, worker_settings, keys, witness_full_every=2)

    def restarted() -> Witness:
        """What a worker's start reads back (the same resume, without consuming)."""
        return Witness(
            Signer(s.witness_key or keys),
            Store(ch, s.database),
            s.witness_producer_config(),
            s.witness_topic,
            s.witness_interval,
            s.witness_full_every,
        )

    for producer_id in ("alpha", "beta", "gamma", "delta"):
        _log(broker, s.topic, keys, producer_id, 10)
        assert run_worker(s, ch).inserted == 10
        statements = _statements(ch, s.database)
        first, last = complete_restatements({st.seq: st.marker for st, _ in statements})[-1]
        w = restarted()
        assert w.seq == len(statements)
        assert (w.resumed_from, w.resume_read) == (first, len(statements) - first + 1)
    restatements = complete_restatements({st.seq: st.marker for st, _ in statements})
    assert len(restatements) >= 2 and restatements[0][0] == 1
    first, last = restatements[-1]
    assert first > 1 and w.resume_read < len(statements)
    restated = {c.producer_id for st, _ in statements[first - 1 : last] for c in st.chains}
    assert restated >= {"alpha", "beta", "gamma"}  # every chain stored before it
    chains = sorted(w._chains, key=lambda c: c.key)
    assert [c.producer_id for c in chains] == ["alpha", "beta", "delta", "gamma"]
    trail = Trail(s, keys, chdb_dir, broker)
    code, doc = trail.verify("--witness-from-kafka")
    assert code == 0 and doc["ok"], doc["witness"]

    # A restatement begun and not finished (part 1 of 2, then the worker was killed) is not
    # complete: a restart still folds from the one before, through the lone part.
    top, data = statements[-1]
    part = Statement(
        top.witness_id,
        top.seq + 1,
        statement_hash(data),
        top.signed_at,
        tuple(chains[:2]),
        len(chains),
        set_digest(chains),
        full=(1, 2),
    )
    body = part.encode()
    row = [part.witness_id, part.seq, part.prev_hash, statement_hash(body), part.signed_at]
    row += [part.total, body, Signer(keys / "worker-w1.key").sign(body)]
    ch.insert(f"{s.database}.witness_statements", [row], column_names=list(WITNESS_COLUMNS))
    w = restarted()
    assert (w.seq, w.resumed_from, w.resume_read) == (part.seq, first, part.seq - first + 1)
    code, doc = trail.verify()
    assert code == 0 and doc["ok"], doc["witness"]
    assert doc["witness"]["chains"] == 4
    assert doc["witness"]["witnesses"] == {"worker-w1": part.seq}

    _delete(ch, s.database, "producer_id = 'alpha'")  # restated, so still witnessed
    code, doc = trail.verify()
    assert code == 1 and _problems(doc) == [("missing_chain", "alpha")]


@pytest.mark.kafka_only
def test_the_worker_creates_the_witness_topic_keeping_every_statement(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    """A chain's head is only in the statement where it last moved: no retention may delete
    one, so the topic the worker creates has ``retention.ms=-1``."""
    keys = tmp_path / "keys"
    generate_keypair(keys, "worker-w1")
    topic = f"witness-{uuid.uuid4().hex[:8]}"
    s = worker_settings.model_copy(
        update={
            "keys": keys,
            "witness_key": keys / "worker-w1.key",
            "witness_topic": topic,
            "create_topics": True,
        }
    )
    run_worker(s, ch)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert admin.describe_configs([res])[res].result(15)["retention.ms"].value == "-1"


# -- issue 17 §3: pruning rows held to the witness, and a witness the auditor expects ---------


def _claim(ch: Any, db: str, producer_id: str) -> WitnessedChain:
    _, claims = check_logs(statements_from_clickhouse(ch, db), KeyRing())
    (chain,) = [c for _, _, c in claims if c.producer_id == producer_id]
    return chain


@pytest.mark.parametrize("run_record", [False, True], ids=["no-run-record", "run-too-soon"])
def test_a_fresh_chain_deleted_under_a_forged_pruning_fails_verify(
    trail: Trail, ch: Any, run_record: bool
) -> None:
    """The admin deletes beta and writes the pruning row retention would have written for it
    (boundary = witnessed seq, hash = witnessed head), with a run record that fits or none."""
    db = trail.db
    beta = _claim(ch, db, "beta")
    _delete(ch, db, "producer_id = 'beta'")
    now = datetime.now(UTC)
    horizon = now - timedelta(days=183)
    pruning_id, run_id = uuid.uuid4(), uuid.uuid4() if run_record else uuid.UUID(int=0)
    row = [pruning_id, run_id, now, "decisions", horizon, "beta", beta.epoch, beta.seq]
    row += [beta.head, beta.seq, "retention-cron", "root", "db-host"]
    ch.insert(f"{db}.retention_prunings", [row], column_names=PRUNING_COLUMNS)
    if run_record:
        run = [run_id, now, "decisions", 183, False, horizon, "retention-cron", "root", "db-host"]
        ch.insert(
            f"{db}.retention_runs",
            [run],
            column_names=[
                *("run_id", "ran_at", "kind", "window_days", "below_floor", "horizon"),
                *("actor", "os_user", "host"),
            ],
        )
    for extra in ((), ("--witness-from-kafka",)):
        code, doc = trail.verify(*extra)
        assert doc["problems"] == 0  # the chain walk starts past the pruning: nothing to see
        assert code == 1 and _problems(doc) == [("unproven_pruning", "beta")], doc["witness"]
        detail = doc["witness"]["problems"][0]["detail"]
        assert detail.startswith("chain beta/") and f"pruning {pruning_id}" in detail
        why = "ran less than its window after the witness saw" if run_record else "no retention"
        assert why in detail


def test_a_witnessed_chain_pruned_by_a_real_retention_run_verifies_green(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    worker_settings: WorkerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decisions 400 days old, witnessed then (the worker's clock set back); retention with a
    200-day window removes all of ``old`` (past its witnessed head) and the old part of
    ``mixed``: verify, expecting a witness, is green, from ClickHouse and from the topic."""
    keys = tmp_path / "keys"
    s = _witnessed(broker, worker_settings, keys)
    then = datetime.now(UTC).replace(microsecond=0) - timedelta(days=400)
    for pid in ("old", "mixed"):
        with AuditProducer(broker.bootstrap_servers, producer_id=pid, topic=s.topic) as p:
            for i in range(3):
                p.log_decision("m", "1", {"i": i}, "ok", occurred_at=then + timedelta(minutes=i))
            assert p.flush(10) == 0
    monkeypatch.setattr(worker_witness, "_now", lambda: then + timedelta(hours=1))
    assert run_worker(s, ch).inserted == 6
    monkeypatch.undo()
    with AuditProducer(broker.bootstrap_servers, producer_id="mixed", topic=s.topic) as p:
        for i in range(2):
            p.log_decision("m", "1", {"i": 3 + i}, "ok")
        assert p.flush(10) == 0
    assert run_worker(s, ch).inserted == 2
    trail = Trail(s, keys, chdb_dir, broker)
    assert _claim(ch, trail.db, "old").seq == 3

    store = ["--clickhouse-url", s.clickhouse_url, "--database", s.database]
    pruned = CliRunner().invoke(main, ["retention", *store, "--retention-decisions-days", "200"])
    assert pruned.exit_code == 0, pruned.output
    assert "decisions: pruned 6 row(s) in 2 chain(s)" in pruned.output
    assert count(ch, f"SELECT count() FROM {trail.db}.decisions WHERE producer_id = 'old'") == 0
    (run,) = ch.query(
        f"SELECT kind, window_days, below_floor FROM {trail.db}.retention_runs"
    ).result_rows
    assert run == ("decisions", 200, False)
    assert (
        count(
            ch,
            f"SELECT countIf(run_id = (SELECT any(run_id) FROM {trail.db}.retention_runs)) "
            f"FROM {trail.db}.retention_prunings",
        )
        == 2
    ), "each pruning names its run"
    for extra in ((), ("--witness-from-kafka",)):
        code, doc = trail.verify("--expect-witness", "--witness-grace", "0", *extra)
        assert code == 0 and doc["ok"], doc["witness"]
        assert doc["witness"]["chains"] == 3  # old, and both epochs of mixed


def test_an_emptied_witness_log_fails_verify_when_a_witness_is_expected(
    trail: Trail, ch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, doc = trail.verify("--expect-witness", "--witness-grace", "0")
    assert code == 0 and doc["ok"], doc["witness"]
    ch.command(f"TRUNCATE TABLE {trail.db}.witness_statements")
    code, doc = trail.verify()
    assert code == 0 and doc["witness"]["witnesses"] == {}, "not expected: only a warning"
    monkeypatch.setenv("DECISION_AUDIT_EXPECT_WITNESS", "true")
    code, doc = trail.verify()
    assert code == 1 and not doc["ok"]
    assert _problems(doc) == [("no_witness", None)]
    assert "holds no witness statement" in doc["witness"]["problems"][0]["detail"]


def test_statements_dropped_from_the_end_leave_a_chain_unwitnessed(trail: Trail, ch: Any) -> None:
    """The restarted worker's statements (the only ones naming alpha's second epoch) deleted:
    the rest of the log is a consistent prefix, so only an expected witness sees it."""
    statements = _statements(ch, trail.db)
    first_run = {c.key for c in statements[0][0].chains}
    cut = min(st.seq for st, _ in statements if any(c.key not in first_run for c in st.chains))
    ch.command(
        f"ALTER TABLE {trail.db}.witness_statements DELETE WHERE seq >= {cut}", settings=SYNC
    )
    code, doc = trail.verify()
    assert code == 0 and doc["ok"], doc["witness"]
    code, doc = trail.verify("--expect-witness")  # stored a moment ago: within the grace
    assert code == 0 and doc["ok"], doc["witness"]
    code, doc = trail.verify("--expect-witness", "--witness-grace", "0")
    assert code == 1 and _problems(doc) == [("unwitnessed_chain", "alpha")], doc["witness"]
