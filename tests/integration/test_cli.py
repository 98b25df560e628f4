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
from decision_audit.devtools.tansu_broker import LocalBroker, free_port
from decision_audit.worker.topics import ensure_topics
from tests.faults.procs import committed, log_has, query, start_worker, wait_for

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


def test_worker_started_before_its_broker_waits_for_it(tmp_path: Path) -> None:
    port = free_port()
    bs = f"127.0.0.1:{port}"
    topic = f"late-{uuid.uuid4().hex[:8]}"
    dsn = f"chdb://{tmp_path / 'store'}"
    log = tmp_path / "worker.log"
    proc = _worker(
        bs, dsn, topic, log, "--create-topics", "--broker-wait", "120", "--exit-when-idle", "5"
    )
    try:
        wait_for(lambda: log_has(log, f"waiting for the Kafka broker at {bs}"), 60, "wait", log)
        assert proc.poll() is None, log.read_text()
        with LocalBroker(port=port):
            wait_for(lambda: log_has(log, "worker started"), 60, "the worker to start", log)
            with AuditProducer(bs, producer_id="late", topic=topic) as p:
                for i in range(500):
                    p.log_decision("m", "1", {"i": i}, "y")
                assert p.flush(30) == 0
            assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log_has(log, f"Kafka broker at {bs} is up")
    rows = query(dsn, "SELECT count() AS n, uniqExact(event_id) AS u FROM audit.decisions")
    assert rows == [{"n": 500, "u": 500}], log.read_text()[-3000:]


def test_worker_gives_up_on_a_broker_that_never_comes(tmp_path: Path) -> None:
    bs = f"127.0.0.1:{free_port()}"
    dsn = f"chdb://{tmp_path / 'store'}"
    out = subprocess.run(
        [*CLI, "worker", "--bootstrap-servers", bs, "--broker-wait", "3", "--clickhouse-url", dsn],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"waiting for the Kafka broker at {bs} (Connect to" in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: no Kafka broker answered at {bs} within 3s"), last
    assert "Connection refused" in last and "--bootstrap-servers" in last
    assert "--broker-wait" in last


def test_worker_stopped_while_waiting_for_its_broker_exits_0(tmp_path: Path) -> None:
    bs = f"127.0.0.1:{free_port()}"
    log = tmp_path / "worker.log"
    proc = _worker(bs, f"chdb://{tmp_path / 'store'}", "t", log, "--broker-wait", "300")
    try:
        wait_for(lambda: log_has(log, "waiting for the Kafka broker"), 60, "wait", log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stored 0 events" in log.read_text()


@pytest.mark.parametrize(
    ("command", "rest"),
    [("verify", []), ("trace", ["some-id"]), ("report", ["--html", "r.html"])],
)
def test_audit_tools_on_an_unmigrated_store_name_the_migrate_command(
    tmp_path: Path, command: str, rest: list[str]
) -> None:
    dsn = f"chdb://{tmp_path / 'empty'}"
    out = subprocess.run(
        [*CLI, command, "--clickhouse-url", dsn, *rest],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "has no audit tables" in lines[0]
    assert f"run `decision-audit migrate --clickhouse-url {dsn} --database audit`" in lines[0]


def test_report_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'm'}"
    migrated = subprocess.run([*CLI, "migrate", "--clickhouse-url", dsn], capture_output=True)
    assert migrated.returncode == 0
    # /proc passes the up-front check as root (who may write anywhere) and refuses the file.
    out = subprocess.run(
        [*CLI, "report", "--clickhouse-url", dsn, "--html", "/proc/report.html"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode in (1, 2), out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "/proc" in lines[0] and "--html" in lines[0]


def test_broker_on_a_port_in_use_is_one_line(broker: LocalBroker) -> None:
    out = subprocess.run(
        [*CLI, "broker", "--port", str(broker.port)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{broker.port} (Address already in use): stop what "
        "uses the port or pick another (--port)"
    ]
