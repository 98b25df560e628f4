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

    ``ids`` holds every event id the producers accepted; ``wait()`` asserts the broker
    acknowledged each of them. With ``hold_at`` the load pauses after that many events until
    :meth:`release`, so a test can be sure it is still running at a given step however slow
    the machine is.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        events: int,
        producers: int,
        rate: float | None = None,
        hold_at: int | None = None,
    ) -> None:
        self.ids: list[str] = []
        self._producers = [
            AuditProducer(bootstrap, producer_id=f"{topic}-p{i}", topic=topic, enqueue_timeout=10.0)
            for i in range(producers)
        ]
        self._events = events
        self._rate = rate
        self._error: BaseException | None = None
        self._hold_at = hold_at
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = time.monotonic()
            n = len(self._producers)
            for i in range(self._events):
                if i == self._hold_at:
                    if not self._released.wait(300):
                        raise AssertionError("the load was never released")
                    if self._rate:  # go on at the rate, not in a burst to catch up
                        started = time.monotonic() - i / self._rate
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

    def release(self) -> None:
        """Let a held load go on."""
        self._released.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float = 120) -> list[str]:
        """Join, close the producers and check every event was acknowledged; the ids."""
        self._released.set()
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


def missing_on_topic(bootstrap: str, topic: str, ids: list[str], timeout: float = 60.0) -> str:
    """Which of ``ids`` the topic lacks, each with its chain and seq and its neighbours' offsets:
    the evidence to look for when a log end falls short of what the producers were told."""
    from decision_audit.contract.codec import default_codec
    from tests.helpers import consume_all

    msgs = consume_all(bootstrap, topic, len(ids), timeout)
    codec = default_codec()
    on_topic: dict[str, tuple[str, int, int, int]] = {}
    for m in msgs:
        r = codec.decode(m.value()).record
        on_topic[str(r["event_id"])] = (r["producer_id"], r["seq"], m.partition(), m.offset())
    missing = [i for i in ids if i not in on_topic]
    seqs: dict[str, list[int]] = {}
    for pid, seq, _, _ in on_topic.values():
        seqs.setdefault(pid, []).append(seq)
    gaps = {pid: [s for s in range(1, max(ss) + 1) if s not in set(ss)] for pid, ss in seqs.items()}
    return (
        f"{len(msgs)} of {len(ids)} events on {topic}; missing ids {missing[:10]}; "
        f"seq gaps per chain { ({p: g[:10] for p, g in gaps.items() if g}) }; "
        f"highest seq per chain { ({p: max(ss) for p, ss in seqs.items()}) }"
    )
