"""Two workers in one group, one killed mid-run: the survivor takes its partitions over."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest

from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import Load, committed, log_has, query, start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

EVENTS = 80_000
PARTITIONS = 4


def _assignment(log: Path, topic: str) -> list[int]:
    """Partitions of ``topic`` in the last "assigned partitions ['topic[p]', ...]" line."""
    lines = [ln for ln in log.read_text().splitlines() if "assigned partitions" in ln]
    assert lines, log.read_text()[-3000:]
    names: list[str] = ast.literal_eval(lines[-1].rsplit("assigned partitions", 1)[1].strip())
    return [int(n[len(topic) + 1 : -1]) for n in names if n.startswith(f"{topic}[")]


def test_killed_member_partitions_move_without_loss_or_doubles(
    broker: LocalBroker, tmp_path: Path
) -> None:
    bs = broker.bootstrap_servers
    topic = f"pair-{uuid.uuid4().hex[:8]}"
    # A fresh group: on Tansu, when a group's last members leave close together, a new member
    # may never get an assignment (SyncGroup answers "rebalance in progress" forever).
    group = f"g-{topic}"
    ensure_topics(bs, {topic: PARTITIONS, f"{topic}-dlq": 1})
    dsn_a, dsn_b = f"chdb://{tmp_path / 'a'}", f"chdb://{tmp_path / 'b'}"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    args = ("--batch-size", "2000", "--flush-interval", "0.3")

    load = Load(bs, topic, EVENTS, producers=8, rate=6000, hold_at=EVENTS * 3 // 4).start()
    a = start_worker(bs, dsn_a, topic, group, log_a, *args)
    b = start_worker(bs, dsn_b, topic, group, log_b, *args, "--exit-when-idle", "5")
    try:
        for log in (log_a, log_b):
            wait_for(lambda lg=log: log_has(lg, "batch: consumed="), 60, "a stored batch", log)

        def split() -> bool:
            pa, pb = _assignment(log_a, topic), _assignment(log_b, topic)
            return bool(pa) and bool(pb) and sorted(pa + pb) == list(range(PARTITIONS))

        wait_for(split, 30, "the partitions split between the two", log_a)
        a_partitions = _assignment(log_a, topic)
        a.kill()
        a.wait(30)
        # A's last commits, read before B takes A's partitions over (a session timeout later).
        at_kill = committed(bs, group, topic, PARTITIONS)
        assert not load.done, "load finished before the kill: not mid-run"
        load.release()  # held at three quarters until the kill, however slow the machine
        ids = load.wait()
        assert b.wait(180) == 0, log_b.read_text()[-3000:]
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    assert sorted(_assignment(log_b, topic)) == list(range(PARTITIONS))  # B took A's partitions

    rows_sql = (
        "SELECT toString(event_id) AS id, kafka_partition AS p, kafka_offset AS o "
        "FROM audit.decisions"
    )
    rows_a, rows_b = query(dsn_a, rows_sql), query(dsn_b, rows_sql)
    ids_a = [r["id"] for r in rows_a]
    ids_b = [r["id"] for r in rows_b]
    assert len(ids_a) == len(set(ids_a)) and len(ids_b) == len(set(ids_b))
    assert set(ids_a) | set(ids_b) == set(ids)
    doubles = set(ids_a) & set(ids_b)
    # Each worker has its own store here, so the only possible doubles are events A stored
    # and was killed before committing; B must have got exactly those again. (Workers that
    # share one ClickHouse drop even those, by chain head.)
    uncommitted = {r["id"] for r in rows_a if r["p"] in a_partitions and r["o"] >= at_kill[r["p"]]}
    assert doubles == uncommitted
    for dsn in (dsn_a, dsn_b):
        [q] = query(dsn, "SELECT count() AS n FROM audit.quarantine")
        assert q["n"] == 0
    print(
        f"\ntwo workers: events logged={len(ids)} stored by A={len(ids_a)} by B={len(ids_b)} "
        f"lost=0 doubled across stores={len(doubles)} (A stored, killed before commit)"
    )
