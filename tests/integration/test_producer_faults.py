"""The producer never loses an event: broker down, broker restarted, producer process killed.

Each test runs its own broker (``broker_factory``), stopped and restarted on the same port (Tansu's
memory storage forgets its topics, so they are recreated), and stores through the real worker into
chDB.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from decision_audit import AuditProducer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.audit.verify_report import TrailReport
from decision_audit.contract.keys import KeyRing
from decision_audit.devtools.tansu_broker import free_port
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import Broker, BrokerFactory, count, run_worker

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]


def _eventually(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _topics(b: Broker, topic: str) -> None:
    ensure_topics(b.bootstrap_servers, {topic: 3, f"{topic}-dlq": 1})


def _worker(settings: WorkerSettings, b: Broker, topic: str, **extra: Any) -> WorkerSettings:
    return settings.model_copy(
        update={
            "bootstrap_servers": b.bootstrap_servers,
            "topic": topic,
            "dlq_topic": f"{topic}-dlq",
            "group": f"g-{uuid.uuid4().hex[:8]}",  # the restarted broker has no groups
            **extra,
        }
    )


def _assert_clean_trail(ch: Any, db: str, keys: KeyRing, chains: dict[str, int]) -> TrailReport:
    """Every chain stored once, seq 1..n, nothing quarantined, no incident, verify ok."""
    rows = ch.query(
        f"SELECT producer_id, producer_epoch, groupArray(seq) FROM {db}.decisions FINAL "
        "GROUP BY producer_id, producer_epoch"
    ).result_rows
    got = {f"{pid}/{epoch}": sorted(seqs) for pid, epoch, seqs in rows}
    assert {k: len(v) for k, v in got.items()} == chains
    for seqs in got.values():
        assert seqs == list(range(1, len(seqs) + 1))
    assert count(ch, f"SELECT count() FROM {db}.decisions") == sum(chains.values())  # no dups
    assert count(ch, f"SELECT count() FROM {db}.quarantine") == 0
    assert count(ch, f"SELECT count() FROM {db}.incidents") == 0
    report = TrailVerifier(ch, db, keys).run()
    assert report.ok, [(c.producer_id, c.problems) for c in report.chains if not c.ok]
    assert report.events == sum(chains.values())
    return report


def test_broker_outage_is_spooled_and_replayed_in_order(
    ch: Any, worker_settings: WorkerSettings, tmp_path: Path, broker_factory: BrokerFactory
) -> None:
    generate_keypair(tmp_path / "keys", "serving-1")
    keys = tmp_path / "keys"
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    problems: list[Any] = []
    with broker_factory() as b:
        _topics(b, topic)
        p = AuditProducer(
            b.bootstrap_servers,
            producer_id="outage",
            topic=topic,
            spool_dir=tmp_path / "spool",
            spool_after=1.0,
            signing_key=keys / "serving-1.key",
            checkpoint_every=40,
            on_error=problems.append,
        )
        # 1. Healthy: events go straight to the broker; the worker stores them.
        for i in range(100):
            p.log_decision("m", "1", {"phase": 1, "i": i}, "yes")
        assert p.flush(15) == 0
        assert p.stats.spooled == 0  # the healthy path never touched the disk
        ws = _worker(worker_settings, b, topic, keys=keys)
        assert run_worker(ws, ch).inserted == 100

        # 2. The broker dies; serving goes on. Every call returns, every event is kept.
        b.kill()
        for i in range(300):
            p.log_decision("m", "1", {"phase": 2, "i": i}, "yes")
            if i % 50 == 0:
                time.sleep(0.2)  # let trouble be noticed mid-stream, not only at the end
        assert p.stats.logged == 400 and p.stats.dropped == 0 and p.stats.failed == 0
        _eventually(lambda: p.stats.spooled >= 300, "the outage's events to reach the spool")
        assert p.stats.spool_events >= 300 and p.stats.spool_bytes > 0
        assert p.stats.delivered < 400 + p.stats.checkpoints

        # 3. The broker is back on the same port (Tansu's empty: recreate the topics).
        b.start()
        _topics(b, topic)
        _eventually(lambda: p.stats.spool_events == 0, "the spool to drain")
        for i in range(50):
            p.log_decision("m", "1", {"phase": 3, "i": i}, "yes")
        assert p.close(timeout=30) == 0
        assert p.stats.replayed >= 300 and p.stats.dropped == 0 and problems == []
        assert not list((tmp_path / "spool").glob("*.seg"))  # nothing left on disk

        stats = run_worker(_worker(worker_settings, b, topic, keys=keys), ch)
    assert stats.quarantined_total == 0 and stats.incidents == 0
    assert stats.inserted == 350
    db = worker_settings.database
    report = _assert_clean_trail(ch, db, KeyRing.load(keys), {f"outage/{p.epoch}": 450})
    # Checkpoints went through the spool too, behind the events they cover.
    assert report.chains[0].attested_to == 450 and report.chains[0].checkpoints >= 3


_CRASHING_PRODUCER = """
import sys, time
from decision_audit import AuditProducer

bootstrap, topic, spool, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = AuditProducer(bootstrap, producer_id="crashy", topic=topic, spool_dir=spool,
                  spool_after=0.5, spool_fsync="always")
for i in range(n):
    p.log_decision("m", "1", {"i": i}, "yes")
deadline = time.monotonic() + 60
while p.stats.spooled < n and time.monotonic() < deadline:
    time.sleep(0.02)
print(p.stats.spooled, p.epoch, flush=True)
time.sleep(600)
"""


def test_spool_of_a_killed_producer_is_replayed_by_the_next_one(
    ch: Any, worker_settings: WorkerSettings, tmp_path: Path, broker_factory: BrokerFactory
) -> None:
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool"
    port = free_port()
    n = 120
    # The broker is down while the first producer runs; SIGKILL ends it with a full spool.
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PRODUCER, f"127.0.0.1:{port}", topic, str(spool), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        spooled, old_epoch = map(int, proc.stdout.readline().split())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert spooled == n
    # A write torn by the crash: half a record at the end of the last segment.
    last = sorted(spool.glob("*.seg"))[-1]
    with last.open("ab") as f:
        f.write(b"\x00\x00\x01\x00\xde\xad")

    with broker_factory(port=port) as b:
        _topics(b, topic)
        p = AuditProducer(b.bootstrap_servers, producer_id="crashy", topic=topic, spool_dir=spool)
        assert p.stats.spool_events == n  # picked up at start; the torn bytes are gone
        assert p.epoch != old_epoch
        for i in range(10):  # its own chain goes out directly meanwhile
            p.log_decision("m", "1", {"new": i}, "yes")
        assert p.close(timeout=30) == 0
        assert p.stats.replayed == n and p.stats.spool_events == 0
        stats = run_worker(_worker(worker_settings, b, topic), ch)
    assert stats.inserted == n + 10
    _assert_clean_trail(
        ch, worker_settings.database, KeyRing(), {f"crashy/{old_epoch}": n, f"crashy/{p.epoch}": 10}
    )


def test_without_a_spool_undelivered_events_are_reported_failed_with_their_seq() -> None:
    problems: list[Any] = []
    p = AuditProducer(
        f"127.0.0.1:{free_port()}",  # nothing listens
        producer_id="no-spool-down",
        topic="t",
        on_error=problems.append,
        message_timeout_ms=500,
    )
    try:
        for i in range(3):
            p.log_decision("m", "1", {"i": i}, "y")
        assert p.flush(15) == 0
        assert (p.stats.logged, p.stats.failed, p.stats.delivered) == (3, 3, 0)
        assert sorted(pr.seq for pr in problems if pr.kind == "failed") == [1, 2, 3]
    finally:
        p.close(1)


def test_without_a_spool_delivered_counts_what_the_broker_acknowledged(broker: Broker) -> None:
    topic = f"plain-{uuid.uuid4().hex[:6]}"
    _topics(broker, topic)
    with AuditProducer(broker.bootstrap_servers, producer_id="no-spool-up", topic=topic) as p:
        seen = []
        for i in range(500):
            p.log_decision("m", "1", {"i": i}, "y")
            if i % 100 == 0:
                seen.append(p.stats.delivered)
        assert p.flush(15) == 0
        seen.append(p.stats.delivered)
        assert seen == sorted(seen)  # never runs ahead, then comes down
        assert p.stats.delivered == 500 and p.stats.failed == 0
