"""/metrics and /healthz of a running worker agree with what it stored and quarantined."""

from __future__ import annotations

from typing import Any

import pytest

from decision_audit.devtools.tansu_broker import LocalBroker, free_port
from decision_audit.worker.loop import Worker
from decision_audit.worker.settings import WorkerSettings
from tests.faults.procs import Load, wait_for
from tests.faults.scrape import healthz, metrics, value
from tests.faults.test_store_failures import Running
from tests.helpers import count, craft_chain, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]

P = "decision_audit_worker"


def test_metrics_match_the_store_and_health_is_ok(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    bs, port = broker.bootstrap_servers, free_port()
    s = worker_settings.model_copy(
        update={"exit_when_idle": None, "metrics_port": port, "metrics_host": "127.0.0.1"}
    )
    topic = s.topic
    ids = Load(bs, topic, 2000, producers=2).start().wait()
    chain = [(b"crafted", v, [("da-event-hash", h)]) for v, h in craft_chain("crafted", 100)]
    send_raw(bs, topic, chain)
    send_raw(bs, topic, chain)  # redelivered: dropped as duplicates
    send_raw(bs, topic, [(b"k", b"junk %d" % i, None) for i in range(30)])
    total = 2000 + 200 + 30

    running = Running(Worker(s, client=ch))
    try:
        wait_for(lambda: running.worker.stats.consumed == total, 60, "everything consumed")

        def lag_known() -> bool:
            m = metrics(port)
            lags = [v for (n, _), v in m.items() if n == f"{P}_consumer_lag"]
            return len(lags) == 3 and all(v == 0 for v in lags)

        wait_for(lag_known, 10, "lag of every partition to read 0")
        m = metrics(port)
        status, body = healthz(port)
    finally:
        running.worker.stop()
    assert running.join() is None
    db = s.database
    stored = count(ch, f"SELECT count() FROM {db}.decisions")
    assert stored == len(ids) + 100
    assert value(m, f"{P}_consumed_total") == total
    assert value(m, f"{P}_inserted_total") == stored
    assert value(m, f"{P}_duplicates_dropped_total") == 100
    assert value(m, f"{P}_quarantined_total", reason="bad_magic") == 30
    assert count(ch, f"SELECT count() FROM {db}.quarantine WHERE reason = 'bad_magic'") == 30
    batches = running.worker.stats.batches
    assert batches >= 1
    assert value(m, f"{P}_batch_size_count") == batches
    assert value(m, f"{P}_batch_size_sum") == total
    assert value(m, f"{P}_insert_seconds_count") == batches
    assert value(m, f"{P}_insert_seconds_sum") > 0
    assert value(m, f"{P}_last_success_timestamp_seconds") > 1.7e9
    assert value(m, f"{P}_pending_messages") == 0
    assert value(m, f"{P}_insert_failing") == 0
    assert sum(v for (n, _), v in m.items() if n == f"{P}_insert_retries_total") == 0
    assert value(m, f"{P}_rebalances_total", kind="assign") >= 1
    assert status == 200 and body["status"] == "ok" and body["pending"] == 0
