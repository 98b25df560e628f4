"""SIGTERM while events pour in: store and commit the pending batch, exit 0, lose nothing."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import Load, committed, query, start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 240_000


def test_sigterm_under_load_stores_and_commits_the_batch_then_exits_0(
    broker: LocalBroker, tmp_path: Path
) -> None:
    bs = broker.bootstrap_servers
    topic = f"term-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    ensure_topics(bs, {topic: 4, f"{topic}-dlq": 1})
    dsn = f"chdb://{tmp_path / 'store'}"
    log = tmp_path / "worker.log"
    args = ("--batch-size", "5000", "--flush-interval", "0.5")
    # Batches of 4 s: the signal, sent 1 s after the first commit, finds a batch pending.
    slow = ("--batch-size", "1000000", "--flush-interval", "4")

    proc = start_worker(bs, dsn, topic, group, log, *slow)
    load = Load(bs, topic, EVENTS, producers=4, rate=8000).start()
    try:
        wait_for(
            lambda: sum(max(o, 0) for o in committed(bs, group, topic, 4).values()) > 0,
            60,
            "a first commit",
            log,
        )
        time.sleep(1.0)  # events accumulate in the next batch
        assert not load.done, "load finished before the signal: not a test under load"
        # A batch may be committed in between (one that waited out a long first flush): the
        # log after the mark shows none before the stop, so `before` is the last commit.
        mark = log.stat().st_size
        before = sum(max(o, 0) for o in committed(bs, group, topic, 4).values())
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    # The sequence after the signal: the stop is noticed with a batch pending, that batch is
    # stored and committed, and only then does the worker stop.
    after = log.read_bytes()[mark:].decode(errors="replace").splitlines()
    stop = next(i for i, line in enumerate(after) if "stop requested: storing" in line)
    pending = int(after[stop].split("storing ")[1].split()[0])
    assert pending > 0, "nothing pending at the signal: not a test of the pending batch"
    assert not any("batch: consumed=" in line for line in after[:stop]), after[:stop]
    final = [i for i, line in enumerate(after) if "batch: consumed=" in line]
    assert final and all(i > stop for i in final), after
    assert sum(int(after[i].split("consumed=")[1].split()[0]) for i in final) == pending
    stopped = next(i for i, line in enumerate(after) if "worker stopped" in line)
    assert stopped > max(final)
    # What was pending at the signal is exactly what the exit committed on top.
    at_exit = sum(max(o, 0) for o in committed(bs, group, topic, 4).values())
    assert at_exit == before + pending
    [row] = query(dsn, "SELECT count() AS n FROM audit.decisions")
    assert row["n"] == at_exit > 0

    ids = load.wait()
    again = start_worker(bs, dsn, topic, group, log, *args, "--exit-when-idle", "3")
    assert again.wait(120) == 0, log.read_text()[-3000:]
    [row] = query(dsn, "SELECT count() AS n, uniqExact(event_id) AS u FROM audit.decisions")
    stored = {r["id"] for r in query(dsn, "SELECT toString(event_id) AS id FROM audit.decisions")}
    assert row == {"n": EVENTS, "u": EVENTS}
    assert stored == set(ids)
    print(f"\nSIGTERM under load: exit 0, {pending} pending stored, {at_exit} committed at exit")
