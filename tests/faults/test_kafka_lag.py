"""The worker's lag gauge against the true lag, which Apache Kafka's ListOffsets gives.

``decision_audit_worker_consumer_lag`` is what a partition holds after the worker's position;
``decision_audit_worker_pending_messages`` what the worker received and has not stored yet.
Their sum is the true lag: log end offset minus committed offset, both asked of the broker.
(Tansu answers ListOffsets "latest" with the start of the last batch, so only Kafka can judge.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from decision_audit.worker.loop import Worker
from decision_audit.worker.settings import WorkerSettings
from tests.faults.flaky import TOO_MANY_PARTS, FlakyClient
from tests.faults.procs import Load, wait_for
from tests.helpers import committed_offsets, end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.kafka_only]

P = "decision_audit_worker"
PARTITIONS = 3  # the ``topic`` fixture's


class Observed:
    """A worker running on a thread, and its gauges as the broker sees the truth."""

    def __init__(self, worker: Worker, settings: WorkerSettings) -> None:
        self.worker, self.s = worker, settings
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.worker.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "worker did not stop"

    def lag(self) -> dict[int, float]:
        return {
            int(sample.labels["partition"]): sample.value
            for metric in self.worker.metrics.registry.collect()
            if metric.name == f"{P}_consumer_lag"
            for sample in metric.samples
            if sample.labels.get("topic") == self.s.topic
        }

    def pending(self) -> float:
        return self.worker.metrics.registry.get_sample_value(f"{P}_pending_messages") or 0.0

    def true_lag(self) -> dict[int, int]:
        s = self.s
        ends = end_offsets(s.bootstrap_servers, s.topic, PARTITIONS)
        done = committed_offsets(s.bootstrap_servers, s.group, s.topic, PARTITIONS)
        return {p: ends[p] - max(done[p], 0) for p in range(PARTITIONS)}

    def agrees(self) -> bool:
        lag = self.lag()
        return len(lag) == PARTITIONS and sum(lag.values()) + self.pending() == sum(
            self.true_lag().values()
        )

    def caught_up(self) -> bool:
        """Nothing pending and, partition by partition, the gauge is the true lag: 0."""
        lag = self.lag()
        return not self.pending() and lag == {p: 0 for p in range(PARTITIONS)} == self.true_lag()


def _settings(base: WorkerSettings) -> WorkerSettings:
    return base.model_copy(
        update={
            "exit_when_idle": None,
            "batch_size": 1000,
            "insert_retry_limit": 1000,
            "insert_retry_budget": 120,
            "insert_retry_backoff": 0.2,
            "insert_retry_max_backoff": 1.0,
        }
    )


def test_lag_and_pending_are_the_true_lag_for_a_known_backlog(
    worker_settings: WorkerSettings, ch: Any
) -> None:
    s = _settings(worker_settings)
    bs, topic = s.bootstrap_servers, s.topic
    backlog = 5000
    Load(bs, topic, backlog, producers=6).start().wait()
    flaky = FlakyClient(ch, TOO_MANY_PARTS)
    flaky.failing.set()  # the store is down: the backlog stays
    running = Observed(Worker(s, client=flaky), s)
    try:
        wait_for(lambda: flaky.failures >= 2, 60, "a retried store")
        assert sum(running.true_lag().values()) == backlog  # nothing committed
        wait_for(running.agrees, 10, "lag + pending to equal end - committed")
        assert 0 < sum(running.lag().values()) < backlog  # some received, the rest not

        flaky.failing.clear()  # the store is back: the backlog drains
        wait_for(running.caught_up, 60, "lag 0 on every partition, as the broker says")

        more = 3000  # a healthy worker keeps up: the gauge follows the broker
        Load(bs, topic, more, producers=6).start().wait()
        wait_for(lambda: running.worker.stats.consumed == backlog + more, 60, "the new events")
        wait_for(running.caught_up, 60, "lag 0 again")
    finally:
        running.stop()
    assert running.error is None


def test_lag_counts_events_that_arrive_while_the_partitions_are_paused(
    worker_settings: WorkerSettings, ch: Any
) -> None:
    s = _settings(worker_settings)
    bs, topic = s.bootstrap_servers, s.topic
    Load(bs, topic, 2000, producers=6).start().wait()
    flaky = FlakyClient(ch, TOO_MANY_PARTS)
    flaky.failing.set()
    running = Observed(Worker(s, client=flaky), s)
    try:
        wait_for(lambda: flaky.failures >= 2, 60, "a retried store (partitions paused)")
        wait_for(running.agrees, 10, "lag + pending to equal end - committed")
        Load(bs, topic, 3000, producers=6).start().wait()  # arrives while paused
        assert sum(running.true_lag().values()) == 5000
        deadline = time.monotonic() + 10
        while not running.agrees() and time.monotonic() < deadline:
            time.sleep(0.2)
        lag, pending, true = running.lag(), running.pending(), running.true_lag()
        assert sum(lag.values()) + pending == sum(true.values()), (lag, pending, true)
    finally:
        flaky.failing.clear()
        running.stop()
