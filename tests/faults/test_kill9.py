"""kill -9 the worker over and over while 200k events flow: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import Load, log_has, query, start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

EVENTS = 200_000
PRODUCERS = 6
KILLS = 12
LOAD_SECONDS = 90
PARTITIONS = 4
DIE = [sys.executable, "-m", "tests.faults.die_before_commit"]


def test_kill9_at_random_points_loses_and_doubles_nothing(
    broker: LocalBroker, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    bs = broker.bootstrap_servers
    topic = f"kill9-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    ensure_topics(bs, {topic: PARTITIONS, f"{topic}-dlq": 1})
    dsn = f"chdb://{tmp_path / 'store'}"
    log = tmp_path / "worker.log"
    args = ("--batch-size", "5000", "--flush-interval", "0.5")

    # Paced so that events keep arriving through every kill cycle: a worker that caught up
    # would wait forever for the commit it is set to die before.
    load = Load(bs, topic, EVENTS, PRODUCERS, rate=EVENTS / LOAD_SECONDS).start()
    kills = 0
    stored_before_kill: list[int] = []
    for cycle in range(KILLS):
        mark = log.stat().st_size if log.exists() else 0
        if cycle % 2:
            # The worst moment: the batch is stored, its offsets are not yet committed.
            nth = str(rng.randint(1, 3))
            # The hook kills the worker in its nth commit, which follows that batch's store.
            proc = start_worker(bs, dsn, topic, group, log, *args, cli=[*DIE, nth])
            rc = proc.wait(120)
        else:
            proc = start_worker(bs, dsn, topic, group, log, *args)
            # Killed only once this run stored a batch, so every kill interrupts work.
            wait_for(lambda m=mark: log_has(log, "batch: consumed=", m), 60, "a stored batch", log)
            # Somewhere in poll, verify, insert or commit: a random point of the loop.
            time.sleep(rng.uniform(0.2, 4.0))
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.kill()
            rc = proc.wait(30)
        assert rc == -signal.SIGKILL, log.read_text()[-3000:]
        kills += 1
        stored_before_kill.append(log.read_bytes()[mark:].count(b"batch: consumed="))
    ids = load.wait()

    final = start_worker(bs, dsn, topic, group, log, *args, "--exit-when-idle", "4")
    assert final.wait(240) == 0, log.read_text()[-3000:]

    [counts] = query(
        dsn,
        "SELECT count() AS n, uniqExact(event_id) AS u, "
        "(SELECT count() FROM audit.decisions FINAL) AS f, "
        "(SELECT count() FROM audit.quarantine) AS q, "
        "(SELECT count() FROM audit.incidents) AS i FROM audit.decisions",
    )
    stored = [r["id"] for r in query(dsn, "SELECT toString(event_id) AS id FROM audit.decisions")]
    redelivered = sum(
        int(part.split("=")[1])
        for line in log.read_text().splitlines()
        if "batch: consumed=" in line
        for part in line.split()
        if part.startswith("duplicates=")
    )
    lost = len(set(ids) - set(stored))
    duplicated = len(stored) - len(set(stored))
    print(
        f"\nkill -9 (seed {seed}): events logged={len(ids)} kills injected={kills} "
        f"lost={lost} duplicated={duplicated} quarantined={counts['q']} "
        f"redeliveries dropped={redelivered} "
        f"batches stored across kills={stored_before_kill}"
    )
    # Every run stored before it was killed (the hook's runs die in the commit after a store).
    assert all(n >= 1 for n in stored_before_kill[::2]), stored_before_kill
    assert counts["n"] == counts["f"] == counts["u"] == EVENTS, counts
    assert set(stored) == set(ids)
    assert (lost, duplicated) == (0, 0)
    assert counts["q"] == 0 and counts["i"] == 0, counts  # redeliveries dropped, not flagged
    assert redelivered > 0  # stored-but-uncommitted batches did come back
