"""Rebalances of two and three workers under both consumer-group protocols, on Apache Kafka.

Workers join one by one while producers log, then the first leaves (SIGTERM): every join and
the leave move partitions. Under ``classic`` the group rebalances eagerly (everything revoked,
then reassigned); under ``consumer`` (KIP-848) the broker assigns and a partition moves only
after its owner revoked it. Either way each owner stores and commits what it holds before
giving a partition up, so the stores' union is exactly the events logged, each once.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupType
from confluent_kafka.admin import AdminClient

from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import Load, log_has, missing_on_topic, query, start_worker, wait_for
from tests.helpers import Broker, committed_offsets, end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow, pytest.mark.kafka_only]

PARTITIONS = 6
EVENTS = 60_000
RATE = 2500  # events/s: ~24 s of load, held at HOLD until the leave however long the joins take
HOLD = EVENTS * 3 // 4


def assignment(log: Path, topic: str) -> set[int]:
    """A worker's partitions of ``topic`` now, replayed from its log's assigned / revoked /
    lost lines (eager rebalances list the whole assignment, incremental ones the change)."""
    held: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        for verb in ("assigned", "revoked", "lost"):
            marker = f"{verb} partitions "
            if marker in line:
                names: list[str] = ast.literal_eval(line.rsplit(marker, 1)[1].strip())
                parts = {int(n[len(topic) + 1 : -1]) for n in names if n.startswith(f"{topic}[")}
                if verb == "assigned":
                    held |= parts
                else:
                    held -= parts
    return held


def split_among(logs: list[Path], topic: str) -> bool:
    """Every partition held by exactly one of these workers, and each holds some."""
    held = [assignment(log, topic) for log in logs]
    flat = [p for h in held for p in h]
    return all(held) and sorted(flat) == list(range(PARTITIONS))


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
@pytest.mark.parametrize("workers", [2, 3])
def test_rebalances_move_partitions_and_the_union_is_exact(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    workers: int,
) -> None:
    monkeypatch.setenv("DECISION_AUDIT_GROUP_PROTOCOL", protocol)  # read by each worker
    bs = broker.bootstrap_servers
    topic = f"rebal-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    ensure_topics(bs, {topic: PARTITIONS, f"{topic}-dlq": 1})
    args = ("--batch-size", "2000", "--flush-interval", "0.3")
    dsns = [f"chdb://{tmp_path / f'w{i}'}" for i in range(workers)]
    logs = [tmp_path / f"w{i}.log" for i in range(workers)]

    load = Load(bs, topic, EVENTS, producers=12, rate=RATE, hold_at=HOLD).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(workers):
            procs.append(start_worker(bs, dsns[i], topic, group, logs[i], *args))
            wait_for(lambda i=i: log_has(logs[i], "assigned partitions"), 60, "a join", logs[i])
            wait_for(
                lambda n=i + 1: split_among(logs[:n], topic),
                60,
                f"the partitions to split among {i + 1} worker(s)",
                logs[0],
            )
        admin = AdminClient({"bootstrap.servers": bs})
        desc = admin.describe_consumer_groups([group])[group].result(15)
        expected = (
            ConsumerGroupType.CONSUMER if protocol == "consumer" else ConsumerGroupType.CLASSIC
        )
        assert desc.type == expected
        assert len(desc.members) == workers

        # The first leaves mid-run; the others take its partitions over.
        assert not load.done, "load finished before the leave: not mid-run"
        load.release()  # the last quarter is logged through the leave
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(60) == 0, logs[0].read_text()[-3000:]
        wait_for(lambda: split_among(logs[1:], topic), 60, "the leaver's partitions to move")
        ids = load.wait()

        # Everything stored and committed: the committed offsets reach the log end.
        ends = end_offsets(bs, topic, PARTITIONS)
        assert sum(ends.values()) == EVENTS, missing_on_topic(bs, topic, ids)
        wait_for(
            lambda: (
                {p: max(o, 0) for p, o in committed_offsets(bs, group, topic, PARTITIONS).items()}
                == ends
            ),
            120,
            "the group to commit every partition to its end",
            logs[1],
        )
        for proc, log in zip(procs[1:], logs[1:], strict=True):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    stored: list[list[str]] = []
    for dsn in dsns:
        stored.append(
            [r["id"] for r in query(dsn, "SELECT toString(event_id) AS id FROM audit.decisions")]
        )
        [q] = query(dsn, "SELECT count() AS n FROM audit.quarantine")
        assert q["n"] == 0
    union = {i for s in stored for i in s}
    rebalances = sum(log.read_text().count("revoked partitions") for log in logs)
    print(
        f"\n{protocol}, {workers} workers: events logged={len(ids)} "
        f"stored per worker={[len(s) for s in stored]} revocations={rebalances}"
    )
    assert union == set(ids)
    # Each once: a partition changes hands only after its owner stored and committed it.
    assert sum(len(s) for s in stored) == len(ids)
