"""Fault-test helpers: worker processes, their stores, the group's committed offsets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from decision_audit import AuditProducer

CLI = [sys.executable, "-m", "decision_audit.cli.main"]


def start_worker(
    bootstrap: str,
    dsn: str,
    topic: str,
    group: str,
    log: Path,
    *extra: str,
    cli: list[str] = CLI,
) -> subprocess.Popen[bytes]:
    """A ``decision-audit worker`` process; its stderr goes to ``log`` (appended)."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                *cli,
                "worker",
                "--bootstrap-servers",
                bootstrap,
                "--clickhouse-url",
                dsn,
                "--topic",
                topic,
                "--dlq-topic",
                f"{topic}-dlq",
                "--group",
                group,
                "--no-create-topics",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "DECISION_AUDIT_SESSION_TIMEOUT_MS": "2000"},
        )


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` (and the log's tail) on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.05)


def log_has(log: Path, text: str, since: int = 0) -> bool:
    """True when ``text`` occurs in ``log`` after byte ``since``."""
    try:
        with log.open("rb") as f:
            f.seek(since)
            return text.encode() in f.read()
    except FileNotFoundError:
        return False


def query(dsn: str, sql: str) -> list[dict[str, Any]]:
    """Run SQL on a chDB directory in a subprocess (this process may hold another one)."""
    out = subprocess.run(
        [*CLI, "query", "--clickhouse-url", dsn, "--format", "json", sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1: none), from the admin API."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([req])[group].result(10)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


class Load:
    """Real ``AuditProducer``s logging decisions from a background thread, one chain each.

    ``ids`` holds every event id the producers accepted; ``check()`` asserts the broker
    acknowledged each of them.
    """

    def __init__(
        self, bootstrap: str, topic: str, events: int, producers: int, rate: float | None = None
    ) -> None:
        self.ids: list[str] = []
        self._producers = [
            AuditProducer(bootstrap, producer_id=f"{topic}-p{i}", topic=topic, enqueue_timeout=10.0)
            for i in range(producers)
        ]
        self._events = events
        self._rate = rate
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = time.monotonic()
            n = len(self._producers)
            for i in range(self._events):
                p = self._producers[i % n]
                self.ids.append(p.log_decision("m", "1", {"i": i}, "yes", score=i / self._events))
                if self._rate and i % 1000 == 999:
                    ahead = (i + 1) / self._rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            for p in self._producers:
                assert p.flush(60) == 0
        except BaseException as exc:  # surfaced by wait()
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float = 120) -> list[str]:
        """Join, close the producers and check every event was acknowledged; the ids."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "producers did not finish"
        if self._error is not None:
            raise self._error
        for p in self._producers:
            p.close(30)
            st = p.stats
            assert (st.dropped, st.failed) == (0, 0), st
            assert st.delivered == st.logged, st
        assert len(self.ids) == self._events == len(set(self.ids))
        return self.ids
