"""SIGTERM while events pour in: finish the batch, commit it, exit 0 promptly, lose nothing."""

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

EVENTS = 60_000
EXIT_BOUND = 20.0  # seconds from SIGTERM to exit: a batch, a commit, leaving the group


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

    proc = start_worker(bs, dsn, topic, group, log, *args)
    load = Load(bs, topic, EVENTS, producers=4, rate=8000).start()
    try:
        wait_for(
            lambda: sum(max(o, 0) for o in committed(bs, group, topic, 4).values()) > 0,
            60,
            "a first commit",
            log,
        )
        assert not load.done, "load finished before the signal: not a test under load"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    assert took < EXIT_BOUND, f"exit took {took:.1f}s"
    assert "worker stopped" in log.read_text()
    # Everything it stored is committed, and nothing beyond: the last batch was finished.
    at_exit = sum(max(o, 0) for o in committed(bs, group, topic, 4).values())
    [row] = query(dsn, "SELECT count() AS n FROM audit.decisions")
    assert row["n"] == at_exit > 0

    ids = load.wait()
    again = start_worker(bs, dsn, topic, group, log, *args, "--exit-when-idle", "3")
    assert again.wait(120) == 0, log.read_text()[-3000:]
    [row] = query(dsn, "SELECT count() AS n, uniqExact(event_id) AS u FROM audit.decisions")
    stored = {r["id"] for r in query(dsn, "SELECT toString(event_id) AS id FROM audit.decisions")}
    assert row == {"n": EVENTS, "u": EVENTS}
    assert stored == set(ids)
    print(f"\nSIGTERM under load: exit 0 in {took:.1f}s with {at_exit} stored and committed")
