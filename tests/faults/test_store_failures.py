"""ClickHouse failing under the worker: retry the same batch, commit nothing early, or stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from decision_audit.devtools.tansu_broker import LocalBroker, free_port
from decision_audit.worker.loop import StoreFailed, Worker
from decision_audit.worker.settings import WorkerSettings
from tests.faults.flaky import RESPONSE_LOST, TOO_MANY_PARTS, TYPE_MISMATCH, FlakyClient
from tests.faults.procs import Load, committed, wait_for
from tests.faults.scrape import healthz, metrics, value
from tests.helpers import count, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 3000
HOSTILE = 10
P = "decision_audit_worker"


class Running:
    """A Worker on a thread; ``join`` returns its stats or raises what it raised."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 60) -> BaseException | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "worker did not stop"
        return self.error


def _settings(base: WorkerSettings, **kw: Any) -> WorkerSettings:
    return base.model_copy(
        update={
            "exit_when_idle": None,
            "batch_size": 1000,
            "insert_retry_backoff": 0.2,
            "insert_retry_max_backoff": 1.0,
            "metrics_host": "127.0.0.1",
            **kw,
        }
    )


def _total_committed(s: WorkerSettings) -> int:
    return sum(max(o, 0) for o in committed(s.bootstrap_servers, s.group, s.topic, 3).values())


def _assert_stored_once(ch: Any, db: str, ids: list[str]) -> None:
    """Every valid event stored exactly once, every hostile message quarantined."""
    assert count(ch, f"SELECT count() FROM {db}.decisions") == EVENTS
    assert count(ch, f"SELECT uniqExact(event_id) FROM {db}.decisions") == EVENTS
    stored = {str(r[0]) for r in ch.query(f"SELECT event_id FROM {db}.decisions").result_rows}
    assert stored == set(ids)
    assert count(ch, f"SELECT count() FROM {db}.quarantine") == HOSTILE


def _drained(worker: Worker, topic: str) -> bool:
    """The worker holds partitions of ``topic`` and stored everything it fetched from them:
    its own lag is 0 on each and nothing is pending (at once for a partition with no data)."""
    reg = worker.metrics.registry
    if not reg.get_sample_value(f"{P}_assigned_partitions"):
        return False
    lags = [
        sample.value
        for metric in reg.collect()
        if metric.name == f"{P}_consumer_lag"
        for sample in metric.samples
        if sample.labels.get("topic") == topic
    ]
    return bool(lags) and not any(lags) and not reg.get_sample_value(f"{P}_pending_messages")


def _load(s: WorkerSettings) -> list[str]:
    # Twelve chains (keys): with three, all of them hashed into the partitions the rebalance
    # test's second worker got in 2 runs of 5 on Kafka, leaving the first nothing to hand
    # over (its precondition, not a loss).
    ids = Load(s.bootstrap_servers, s.topic, EVENTS, producers=12).start().wait()
    send_raw(
        s.bootstrap_servers, s.topic, [(b"x", b"not avro %d" % i, None) for i in range(HOSTILE)]
    )
    return ids


def test_transient_failures_are_retried_paused_and_nothing_commits_early(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    port = free_port()
    s = _settings(
        worker_settings,
        insert_retry_limit=1000,
        insert_retry_budget=120,
        max_poll_interval_ms=4000,  # the outage below lasts longer: only polling keeps us
        health_stall_seconds=1.5,
        metrics_port=port,
    )
    ids = _load(s)
    # The first failing insert is applied and then "loses its answer"; the next ones fail.
    flaky = FlakyClient(ch, RESPONSE_LOST, apply_first=True)
    flaky.failing.set()
    running = Running(Worker(s, client=flaky))
    try:
        wait_for(lambda: flaky.failures >= 2, 60, "a retried insert")
        flaky._error = TOO_MANY_PARTS
        outage_started = time.monotonic()
        wait_for(lambda: healthz(port)[0] == 503, 30, "/healthz to report the stall")
        status, body = healthz(port)
        assert (
            status == 503 and body["status"] == "stuck" and "TOO_MANY_PARTS" in body["last_error"]
        )
        while time.monotonic() - outage_started < 6:  # > max.poll.interval.ms
            assert _total_committed(s) == 0, "committed while the store was failing"
            time.sleep(0.5)
        m = metrics(port)
        assert value(m, f"{P}_insert_failing") == 1
        assert value(m, f"{P}_insert_retries_total", cause="TOO_MANY_PARTS") >= 2
        assert value(m, f"{P}_insert_retries_total", cause="network") >= 1
        assert value(m, f"{P}_consumed_total") == 0
        # Lag is what the consumer has not received; pending what it holds unstored.
        lag = sum(v for (n, _), v in m.items() if n == f"{P}_consumer_lag")
        assert lag + value(m, f"{P}_pending_messages") == EVENTS + HOSTILE
        assert 0 < lag < EVENTS + HOSTILE
        assert _total_committed(s) == 0

        flaky.failing.clear()  # the store recovers
        wait_for(lambda: running.worker.stats.consumed == EVENTS + HOSTILE, 60, "everything stored")
        wait_for(lambda: healthz(port)[0] == 200, 10, "/healthz to recover")
        assert _total_committed(s) == EVENTS + HOSTILE
        m = metrics(port)
    finally:
        running.worker.stop()
        flaky.failing.clear()
    assert running.join() is None
    assert value(m, f"{P}_insert_failing") == 0
    # The consumer stayed in its group through the outage: no revocation, no loss.
    assert value(m, f"{P}_rebalances_total", kind="revoke") == 0
    assert value(m, f"{P}_rebalances_total", kind="lost") == 0
    db = s.database
    # The applied-then-failed insert was retried under the same token: not doubled.
    _assert_stored_once(ch, db, ids)


def test_past_the_retry_limit_the_worker_stops_naming_the_cause(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    s = _settings(worker_settings, insert_retry_limit=3, insert_retry_backoff=0.05)
    _load(s)
    flaky = FlakyClient(ch, TOO_MANY_PARTS)
    flaky.failing.set()
    worker = Worker(s, client=flaky)
    with pytest.raises(StoreFailed) as info:
        worker.run()
    msg = str(info.value)
    assert "failed 3 time(s)" in msg and "TOO_MANY_PARTS" in msg
    assert "Nothing past the batch was committed" in msg and "--insert-retry-limit" in msg
    assert flaky.failures == 3 and worker.stats.insert_retries == 2
    assert _total_committed(s) == 0
    assert count(ch, f"SELECT count() FROM {s.database}.decisions") == 0

    # The next worker (store healthy again) gets the batch and stores everything once.
    stats = Worker(_settings(s, exit_when_idle=1.5), client=ch).run()
    assert stats.inserted == EVENTS and stats.quarantined_total == HOSTILE
    assert _total_committed(s) == EVENTS + HOSTILE


def test_a_permanent_error_stops_at_once(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    s = _settings(worker_settings)
    _load(s)
    flaky = FlakyClient(ch, TYPE_MISMATCH)
    flaky.failing.set()
    worker = Worker(s, client=flaky)
    with pytest.raises(StoreFailed, match=r"permanent error \(code_53\)"):
        worker.run()
    assert flaky.failures == 1 and worker.stats.insert_retries == 0
    assert _total_committed(s) == 0


def test_stop_while_retrying_returns_without_waiting_out_the_backoff(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    # A backoff longer than the join below: a worker that waited it out would not return.
    s = _settings(
        worker_settings,
        insert_retry_backoff=600.0,
        insert_retry_max_backoff=600.0,
        insert_retry_budget=3600.0,
    )
    _load(s)
    flaky = FlakyClient(ch, TOO_MANY_PARTS)
    flaky.failing.set()
    running = Running(Worker(s, client=flaky))
    wait_for(lambda: flaky.failures >= 1, 60, "a failed insert")
    tries = flaky.failures
    running.worker.stop()
    error = running.join(60)
    assert isinstance(error, StoreFailed) and "stopped while the store was failing" in str(error)
    assert flaky.failures == tries  # no further try after the stop
    assert _total_committed(s) == 0


def test_a_rebalance_while_retrying_hands_partitions_over_without_loss(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    # The Python path: both workers share this process's chDB session (one temporary
    # staging table per session), and the rebalance logic is the same on both paths.
    s = _settings(
        worker_settings,
        insert_retry_limit=1000,
        insert_retry_budget=120,
        parse_in_clickhouse=False,
        exit_when_idle=None,
    )
    ids = _load(s)
    flaky = FlakyClient(ch, TOO_MANY_PARTS)
    flaky.failing.set()
    a = Running(Worker(s, client=flaky))
    b: Running | None = None
    try:
        # A holds everything it consumed, unstored, paused and retrying.
        wait_for(lambda: flaky.failures >= 2, 60, "A retrying a failed store")
        # B joins the group: A's partitions are revoked mid-retry and split between them.
        b = Running(Worker(s, client=ch))
        # Which partitions B gets, and whether the producers' keys put events there, is up
        # to the assignor and the hash: B has done its part once it stored all it fetched.
        wait_for(lambda: b is not None and _drained(b.worker, s.topic), 60, "B storing its share")
        revokes = a.worker.metrics.registry.get_sample_value(
            f"{P}_rebalances_total", {"kind": "revoke"}
        )
        assert revokes is not None and revokes >= 1
        assert a.worker.stats.consumed == 0 and _total_committed(s) < EVENTS + HOSTILE
        flaky.failing.clear()  # A's store recovers: it stores what it kept
        deadline = time.monotonic() + 60
        while _total_committed(s) != EVENTS + HOSTILE and time.monotonic() < deadline:
            time.sleep(0.2)
        offsets = committed(s.bootstrap_servers, s.group, s.topic, 3)
        assert sum(max(o, 0) for o in offsets.values()) == EVENTS + HOSTILE, (
            offsets,
            a.worker.stats,
            b.worker.stats,
        )
    finally:
        flaky.failing.clear()
        for r in (a, b):
            if r is not None:
                r.worker.stop()
    assert a.join() is None and b is not None and b.join() is None
    db = s.database
    _assert_stored_once(ch, db, ids)
    assert count(ch, f"SELECT count() FROM {db}.incidents") == 0
