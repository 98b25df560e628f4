"""kill -9 the Apache Kafka broker twice while three producers log 50,000 decisions, restart it
on the same log dir each time: nothing lost, nothing doubled, the trail verifies.

The producers never stop logging: while the broker is down (a restart after a crash takes
~15 s: the controller waits out the dead incarnation's session) their events wait in librdkafka
and then in each producer's on-disk spool, and are replayed in order once it is back. The
producers run without librdkafka's idempotence: one produce request in flight per connection
keeps each chain in order through retries, and a batch written twice (its acknowledgement
lost in the kill) is dropped by the worker's chain following (a seq it holds, same hash).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from decision_audit import AuditProducer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.contract.keys import KeyRing
from decision_audit.devtools.kafka_broker import KafkaBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.loop import Worker, WorkerStats
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import wait_for
from tests.helpers import BrokerFactory, committed_offsets, count, end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow, pytest.mark.kafka_only]

EVENTS = 50_000
PRODUCERS = 3
LOAD_SECONDS = 80  # paced: the producers log through both kills and both restarts
KILLS = 2
PARTITIONS = 4


class SpooledLoad:
    """``PRODUCERS`` signing ``AuditProducer``s, each with its own spool, logging from a
    background thread at a steady rate; ``logged_at()`` samples how far they got."""

    def __init__(self, bootstrap: str, topic: str, spools: Path, keys: Path) -> None:
        self.ids: list[str] = []
        self.producers = []
        for i in range(PRODUCERS):
            generate_keypair(keys, f"serving-{i}")
            self.producers.append(
                AuditProducer(
                    bootstrap,
                    producer_id=f"{topic}-p{i}",
                    topic=topic,
                    spool_dir=spools / f"p{i}",
                    spool_after=2.0,
                    signing_key=keys / f"serving-{i}.key",
                    checkpoint_every=500,
                )
            )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SpooledLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = time.monotonic()
            for i in range(EVENTS):
                p = self.producers[i % PRODUCERS]
                self.ids.append(p.log_decision("m", "1", {"i": i}, "yes", score=i / EVENTS))
                if i % 500 == 499:
                    ahead = (i + 1) * LOAD_SECONDS / EVENTS - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def finish(self) -> list[str]:
        self._thread.join(LOAD_SECONDS * 3)
        assert self.done, "producers did not finish"
        if self.error is not None:
            raise self.error
        for p in self.producers:
            assert p.close(120) == 0, p.stats
            st = p.stats
            assert (st.dropped, st.failed, st.spool_events) == (0, 0, 0), st
        assert len(self.ids) == EVENTS == len(set(self.ids))
        return self.ids


class WorkerThread:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> WorkerStats:
        self.worker.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def test_broker_kill9_and_restart_lose_and_double_nothing(
    broker_factory: BrokerFactory, ch: Any, chdb_dir: Path, database: str, tmp_path: Path
) -> None:
    broker = broker_factory(kind="kafka")
    assert isinstance(broker, KafkaBroker)
    bs = broker.bootstrap_servers
    topic = f"bkill-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    ensure_topics(bs, {topic: PARTITIONS, f"{topic}-dlq": 1})
    keys = tmp_path / "keys"
    # The producers make their keys, which the worker settings check exist.
    load = SpooledLoad(bs, topic, tmp_path / "spools", keys).start()
    settings = WorkerSettings(
        bootstrap_servers=bs,
        clickhouse_url=f"chdb://{chdb_dir}",
        database=database,
        topic=topic,
        dlq_topic=f"{topic}-dlq",
        group=group,
        flush_interval=0.3,
        session_timeout_ms=2000,
        create_topics=False,
        keys=keys,
    )

    worker = WorkerThread(Worker(settings, client=ch))
    logged_while_down: list[int] = []
    for _ in range(KILLS):
        wait_for(lambda: worker.worker.stats.inserted > 0, 60, "a stored batch")
        time.sleep(8)  # well into a stretch of steady logging and storing
        assert not load.done, "load finished before the kill: not mid-run"
        before = len(load.ids)
        broker.kill()
        assert not broker.running
        broker.start()  # same log dir, same ports
        logged_while_down.append(len(load.ids) - before)
        assert not load.done, "load finished while the broker was down: not mid-run"
    ids = load.finish()

    # Everything logged reached the broker; the worker stored and committed all of it.
    ends = end_offsets(bs, topic, PARTITIONS)
    wait_for(
        lambda: (
            {p: max(o, 0) for p, o in committed_offsets(bs, group, topic, PARTITIONS).items()}
            == ends
        ),
        180,
        "the worker to commit every partition to its end",
    )
    stats = worker.stop()

    db = database
    rows = count(ch, f"SELECT count() FROM {db}.decisions")
    final = count(ch, f"SELECT count() FROM {db}.decisions FINAL")
    distinct = count(
        ch, f"SELECT uniqExact(producer_id, producer_epoch, seq) FROM {db}.decisions FINAL"
    )
    stored = {str(r[0]) for r in ch.query(f"SELECT event_id FROM {db}.decisions").result_rows}
    chains = ch.query(
        f"SELECT producer_id, producer_epoch, min(seq), max(seq), count() FROM {db}.decisions "
        "GROUP BY producer_id, producer_epoch"
    ).result_rows
    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    spooled = sum(p.stats.spooled for p in load.producers)
    replayed = sum(p.stats.replayed for p in load.producers)
    checkpoints = sum(p.stats.checkpoints for p in load.producers)
    recoveries = broker.log_path.read_text().count("since no clean shutdown file was found")
    print(
        f"\nbroker kill -9 x{KILLS}: events logged={len(ids)} (while down: {logged_while_down}) "
        f"spooled={spooled} replayed={replayed} messages in topic={sum(ends.values())} "
        f"(events+checkpoints={len(ids) + checkpoints}) redeliveries dropped={stats.duplicates} "
        f"stored rows={rows} FINAL={final} distinct (producer, epoch, seq)={distinct}"
    )
    assert recoveries == KILLS  # each restart recovered the crashed log dir
    assert all(n > 0 for n in logged_while_down)  # the producers kept logging
    assert spooled > 0 and replayed > 0  # ... and the spool carried them over the outages
    assert rows == final == distinct == len(ids) == EVENTS
    assert stored == set(ids)
    assert len(chains) == PRODUCERS
    for pid, epoch, lo, hi, n in chains:
        assert (lo, hi) == (1, n), (pid, epoch, lo, hi, n)
    assert count(ch, f"SELECT count() FROM {db}.quarantine") == 0
    assert count(ch, f"SELECT count() FROM {db}.incidents") == 0
    assert report.ok, [(c.producer_id, c.problems) for c in report.chains if not c.ok]
    assert report.keys_checked and report.events == EVENTS
    assert all(c.attested_to == c.last_seq for c in report.chains)  # signed to the end
