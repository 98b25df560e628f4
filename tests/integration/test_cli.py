"""The command line, run as a user would: real processes, real broker, real chDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer
from decision_audit.cli.main import main
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import committed, query, start_worker

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "decision_audit.cli.main"]
SUBCOMMANDS = ["demo", "broker", "migrate", "worker", "query"]
PARTITIONS = 4


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main " + command in result.output or f"{command} [OPTIONS]" in result.output
    assert len(result.output.splitlines()) > 4


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["worker", "--batch-size", "0", "--clickhouse-url", f"chdb://{tmp_path}"],
    )
    assert result.exit_code == 2
    assert "--batch-size" in result.output


def test_demo_runs_and_reports_from_clickhouse(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    out = subprocess.run(
        [*CLI, "demo", "--events", "2000", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2000 decisions stored" in out.stdout
    assert "Decisions per model" in out.stdout and "Lookup by request id" in out.stdout
    assert "bad_magic" in out.stdout  # the demo's hostile message was quarantined
    assert "VERIFIED: 2000 events in 3 chain(s)" in out.stdout
    rows = query(f"chdb://{data}", "SELECT count() AS n FROM audit.decisions FINAL")
    assert rows == [{"n": 2000}]


def _committed(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(o, 0) for o in committed(bootstrap, group, topic, PARTITIONS).values())


def _worker(bootstrap: str, dsn: str, topic: str, log: Path, *extra: str) -> Any:
    flags = ("--flush-interval", "0.2", "--batch-size", "500", *extra)
    return start_worker(bootstrap, dsn, topic, f"g-{topic}", log, *flags)


def test_worker_process_stops_cleanly_on_sigterm(broker: LocalBroker, tmp_path: Path) -> None:
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    dsn = f"chdb://{tmp_path / 'store'}"
    bs = broker.bootstrap_servers
    ensure_topics(bs, {topic: PARTITIONS, f"{topic}-dlq": 1})
    log = tmp_path / "worker.log"
    proc = _worker(bs, dsn, topic, log)
    try:
        with AuditProducer(bs, producer_id="cli", topic=topic) as p:
            for i in range(3000):
                p.log_decision("m", "1", {"i": i}, "y")
                if i == 1000:
                    p.flush(10)
                    deadline = time.monotonic() + 30
                    while _committed(bs, f"g-{topic}", topic) == 0:
                        assert time.monotonic() < deadline, "worker committed nothing in 30 s"
                        time.sleep(0.2)
                    proc.send_signal(signal.SIGTERM)  # mid-stream
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 0, err
    assert "worker stopped" in err
    stopped_at = _committed(bs, f"g-{topic}", topic)
    assert 0 < stopped_at <= 3000

    again = _worker(bs, dsn, topic, log, "--exit-when-idle", "2")
    assert again.wait(timeout=60) == 0, log.read_text()[-3000:]
    rows = query(dsn, "SELECT count() AS n, uniqExact(event_id) AS u FROM audit.decisions")
    assert rows == [{"n": 3000, "u": 3000}], log.read_text()[-3000:]


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'm'}"
    first = subprocess.run(
        [*CLI, "migrate", "--clickhouse-url", dsn], capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert "applied 0001_decisions" in first.stdout
    second = subprocess.run(
        [*CLI, "migrate", "--clickhouse-url", dsn], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0
    assert "0 migration(s) applied" in second.stdout


def test_unopenable_store_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = subprocess.run(
        [*CLI, "query", "--clickhouse-url", f"chdb://{blocker}", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot open ClickHouse" in out.stderr
