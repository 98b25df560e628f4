"""Both delivery modes, driven directly with a real librdkafka client.

Without a broker the client points at a loopback port nothing listens on, so every message it
takes stays queued (or times out, when a test says so); the background thread is the test
itself, calling ``service``. Where a test counts the client's queue it points at a port that
accepts connections and never answers instead: the client then reports no connection errors,
which its queue length would count too. What needs a broker (acknowledgements, replay) is
marked ``integration`` and uses the session's Tansu broker.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from decision_audit import DeliveryProblem, ProducerSettings, ProducerStats
from decision_audit.devtools.tansu_broker import LocalBroker, free_port
from decision_audit.producer.audit_producer import make_delivery
from decision_audit.producer.delivery import Delivery
from decision_audit.producer.direct_delivery import DirectDelivery
from decision_audit.producer.spool import Spool, SpoolFull, SpoolLocked, SpoolRecord
from decision_audit.producer.spooled_delivery import SpooledDelivery
from decision_audit.worker.topics import ensure_topics
from tests.helpers import consume_all


def _record(i: int, size: int = 100, key: bytes = b"unit") -> SpoolRecord:
    value = f"{i:06d}".encode() + b"x" * max(0, size - 6)
    return SpoolRecord("t", key, value, (("da-event-hash", b"h" * 32),))


def _index(r: SpoolRecord | Any) -> int:
    value = r.value if isinstance(r, SpoolRecord) else r.value()
    return int((value or b"")[:6])


@dataclass
class Rig:
    """One delivery, its counters, the problems it reported and the conf it was given."""

    delivery: Delivery
    stats: ProducerStats
    problems: list[DeliveryProblem]
    conf: dict[str, Any]
    closed: bool = False
    sent: list[int] = field(default_factory=list)

    def send(self, i: int, *, size: int = 100, key: bytes = b"unit", **kw: Any) -> str | None:
        problem = self.delivery.send(_record(i, size, key), i + 1, **kw)
        if problem is None:
            self.sent.append(i)
        return problem

    def tick_until(self, cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Run the background thread's ticks until ``cond`` holds."""
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.stats}"
            self.delivery.service(0.02)

    def close(self, timeout: float = 0.2) -> int:
        self.closed = True
        return self.delivery.close(timeout)


Make = Callable[..., Rig]


@pytest.fixture
def make() -> Iterator[Make]:
    """``make(bootstrap=None, conf={...}, **settings)``: a delivery, by default to nowhere."""
    rigs: list[Rig] = []

    def factory(bootstrap: str | None = None, conf: dict[str, Any] | None = None, **kw: Any) -> Rig:
        settings = ProducerSettings(
            bootstrap_servers=bootstrap or f"127.0.0.1:{free_port()}",
            producer_id="unit",
            **kw,
        )
        c = settings.kafka_config()
        c.update(conf or {})
        c["logger"] = logging.getLogger("decision_audit.kafka")  # as the producer does
        stats, problems = ProducerStats(), list[DeliveryProblem]()
        rig = Rig(make_delivery(settings, c, stats, problems.append), stats, problems, c)
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        if not rig.closed:
            rig.close(0)


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback address that accepts connections (in the kernel's backlog) and never
    answers: for the next 10 s (``api.version.request.timeout.ms``) the client reports
    nothing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def _spooled(spool_dir: Path) -> list[SpoolRecord]:
    with Spool(spool_dir, 1 << 30) as spool:
        out = []
        while got := spool.read(1000, 1 << 30):
            out += [r for r, _, _ in got]
        return out


def test_the_settings_pick_the_mode(make: Make, tmp_path: Path) -> None:
    direct = make()
    assert isinstance(direct.delivery, DirectDelivery)
    assert direct.delivery.direct and direct.delivery.spool is None
    # Without a spool the client reports failures only; delivered comes from its queue.
    assert direct.conf["delivery.report.only.error"] is True
    assert "message.timeout.ms" not in direct.conf

    spooled = make(spool_dir=tmp_path / "spool")
    assert isinstance(spooled.delivery, SpooledDelivery)
    assert spooled.delivery.direct  # healthy until trouble
    assert spooled.delivery.spool is not None and spooled.delivery.spool.dir == tmp_path / "spool"
    assert spooled.conf["message.timeout.ms"] == 0  # the spool's stall detection instead
    assert "delivery.report.only.error" not in spooled.conf
    # A value the user set is kept.
    mine = make(spool_dir=tmp_path / "other", conf={"message.timeout.ms": 60_000})
    assert mine.conf["message.timeout.ms"] == 60_000


# -- direct mode -------------------------------------------------------------------------------


def test_direct_messages_wait_in_the_client_queue(make: Make, silent: str) -> None:
    rig = make(silent)
    assert [rig.send(i) for i in range(5)] == [None] * 5
    assert rig.delivery.undelivered() == 5
    for _ in range(3):
        rig.delivery.service(0.01)
    assert rig.stats.delivered == 0  # worked out from the queue: never ahead of the truth
    assert rig.delivery.flush(0.1) == 5
    assert (rig.stats.failed, rig.stats.dropped, rig.problems) == (0, 0, [])
    assert rig.close(0.1) == 5


def test_direct_drops_what_a_full_queue_will_not_take_within_enqueue_timeout(
    make: Make, silent: str
) -> None:
    rig = make(silent, enqueue_timeout=0.01, conf={"queue.buffering.max.messages": 1})
    assert rig.send(0) is None
    assert rig.send(1) == "local queue full (broker slow or unreachable)"
    assert rig.delivery.direct and rig.delivery.undelivered() == 1
    # Counting the drop is the chain writer's job: the event never joined the chain.
    assert (rig.stats.dropped, rig.problems) == (0, [])


def test_direct_refusal_by_the_client_is_returned(make: Make, silent: str) -> None:
    rig = make(silent, max_message_bytes=1000)  # the client refuses messages over 5,096 bytes
    problem = rig.send(0, size=10_000)
    assert problem is not None and problem.startswith("kafka client refused the event")
    assert rig.delivery.undelivered() == 0


def test_direct_failures_are_counted_and_reported_with_their_chain_and_seq(make: Make) -> None:
    rig = make(conf={"message.timeout.ms": 300})
    rig.send(0)
    rig.send(1)
    rig.send(0, key=b"unit/model-events")
    assert rig.delivery.flush(15) == 0  # timed out: nothing left queued
    assert (rig.stats.failed, rig.stats.delivered) == (3, 0)
    got = sorted((p.kind, p.producer_id, p.seq) for p in rig.problems)
    assert got == [("failed", "unit", 1), ("failed", "unit", 2), ("failed", "unit/model-events", 1)]
    assert rig.close(1) == 0


# -- spooled mode ------------------------------------------------------------------------------


def test_spooled_mode_starts_direct_without_touching_the_disk(make: Make, tmp_path: Path) -> None:
    rig = make(spool_dir=tmp_path / "spool")
    assert [rig.send(i) for i in range(3)] == [None] * 3
    assert rig.delivery.direct and rig.delivery.undelivered() == 3
    assert (rig.stats.spooled, rig.stats.spool_events) == (0, 0)
    assert not list((tmp_path / "spool").glob("*.seg"))


def test_trouble_moves_everything_to_the_spool_in_order(make: Make, tmp_path: Path) -> None:
    rig = make(spool_dir=tmp_path / "spool", spool_after=0.2)
    for i in range(3):  # handed to the client, which cannot reach a broker
        assert rig.send(i) is None
    # All brokers down, or no acknowledgement within spool_after: either is trouble.
    rig.tick_until(lambda: not rig.delivery.direct, "trouble")
    for i in range(3, 6):  # while in trouble: straight to the pending list, in order
        assert rig.send(i) is None
    assert rig.stats.spool_events >= 3
    rig.tick_until(lambda: rig.stats.spooled == 6, "all six to reach the spool")
    assert rig.stats.spool_events == 6 and rig.stats.spool_bytes > 6 * 100
    assert rig.delivery.undelivered() == 6
    assert not rig.delivery.direct  # the spool is not empty
    # Taken back from the client and spooled, never failed nor dropped.
    assert (rig.stats.failed, rig.stats.dropped, rig.problems) == (0, 0, [])
    assert rig.close() == 6
    assert [_index(r) for r in _spooled(tmp_path / "spool")] == list(range(6))


def test_a_full_client_queue_spools_instead_of_dropping(make: Make, tmp_path: Path) -> None:
    rig = make(spool_dir=tmp_path / "spool", conf={"queue.buffering.max.messages": 1})
    assert rig.send(0) is None  # in the client
    assert rig.send(1) is None  # no room within enqueue_timeout: trouble, kept in memory
    assert not rig.delivery.direct
    assert rig.stats.spool_events == 1 and rig.delivery.undelivered() == 2
    # The first one is purged from the client and lands before the second.
    rig.tick_until(lambda: rig.stats.spooled == 2, "both to reach the spool")
    assert (rig.stats.dropped, rig.problems) == (0, [])
    assert rig.close() == 2
    assert [_index(r) for r in _spooled(tmp_path / "spool")] == [0, 1]


def _fill(rig: Rig, **kw: Any) -> str:
    """Send 1 KB messages until one is refused; returns why."""
    for i in range(20):
        problem = rig.send(i, size=1000, **kw)
        if problem is not None:
            return problem
    raise AssertionError(f"the spool never filled: {rig.stats}")


@pytest.mark.parametrize("policy", ["drop", "block", "raise"])
def test_full_spool_policies(make: Make, tmp_path: Path, policy: str) -> None:
    rig = make(
        spool_dir=tmp_path / "spool",
        spool_max_bytes=4096,
        spool_full_policy=policy,
        spool_block_timeout=0.05,
        conf={"queue.buffering.max.messages": 1},
    )
    full = "spool full (4096 bytes)"
    if policy == "raise":
        with pytest.raises(SpoolFull, match=r"spool full \(4096 bytes\)"):
            _fill(rig)
    else:  # block: waited spool_block_timeout for room that never came
        assert _fill(rig) == full
    # The background thread is never blocked nor raised at, whatever the policy.
    assert rig.send(99, size=1000, background=True) == full
    # Room was held back for the one in the client: it comes back and is kept too.
    assert len(rig.sent) >= 2 and rig.sent == list(range(len(rig.sent)))
    rig.tick_until(lambda: rig.stats.spooled == len(rig.sent), "the accepted ones to be spooled")
    assert 0 < rig.stats.spool_bytes <= 4096
    assert (rig.stats.dropped, rig.problems) == (0, [])
    assert rig.close() == len(rig.sent)
    assert [_index(r) for r in _spooled(tmp_path / "spool")] == rig.sent


def test_a_message_no_retry_can_deliver_is_refused_not_spooled(make: Make, tmp_path: Path) -> None:
    rig = make(spool_dir=tmp_path / "spool", max_message_bytes=1000)
    problem = rig.send(0, size=10_000)
    assert problem is not None and problem.startswith("kafka client refused the event")
    assert rig.delivery.direct and rig.stats.spool_events == 0  # it would wedge the spool
    assert rig.send(1) is None


def test_close_keeps_what_is_undelivered_for_the_next_one(make: Make, tmp_path: Path) -> None:
    rig = make(spool_dir=tmp_path / "spool")
    for i in range(4):
        rig.send(i)
    assert rig.delivery.flush(0.1) == 4
    assert rig.close() == 4  # the ones in the client were taken back and spooled
    assert rig.stats.spooled == 4 and rig.stats.spool_events == 4
    after = make(spool_dir=tmp_path / "spool")
    assert after.stats.spool_events == 4 and after.delivery.undelivered() == 4
    with pytest.raises(SpoolLocked):
        make(spool_dir=tmp_path / "spool")
    assert after.close() == 4
    assert [_index(r) for r in _spooled(tmp_path / "spool")] == [0, 1, 2, 3]


# -- with a broker -----------------------------------------------------------------------------


@pytest.mark.integration
def test_direct_delivered_counts_what_the_broker_acknowledged(
    make: Make, broker: LocalBroker
) -> None:
    topic = f"delivery-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {topic: 1})
    rig = make(broker.bootstrap_servers)
    for i in range(50):
        assert rig.delivery.send(_topic(_record(i), topic), i + 1) is None
    assert rig.delivery.flush(15) == 0
    assert (rig.stats.delivered, rig.stats.failed, rig.problems) == (50, 0, [])
    assert rig.close(5) == 0
    assert [_index(m) for m in consume_all(broker.bootstrap_servers, topic, 50)] == list(range(50))


def _topic(r: SpoolRecord, topic: str) -> SpoolRecord:
    return r._replace(topic=topic)


@pytest.mark.integration
def test_a_left_spool_is_replayed_in_order_while_new_messages_go_direct(
    make: Make, broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"delivery-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {topic: 3})
    spool, n = tmp_path / "spool", 40
    offline = make(spool_dir=spool, spool_after=0.2)
    for i in range(n):
        offline.delivery.send(_topic(_record(i, key=b"old"), topic), i + 1)
    offline.tick_until(lambda: offline.stats.spooled == n, "the old chain to be spooled")
    assert offline.close() == n

    rig = make(broker.bootstrap_servers, spool_dir=spool)
    assert rig.stats.spool_events == n and rig.delivery.direct
    for i in range(10):  # its own messages go straight to the broker meanwhile
        assert rig.delivery.send(_topic(_record(i, key=b"new"), topic), i + 1) is None
    rig.tick_until(lambda: rig.stats.spool_events == 0, "the spool to drain")
    assert rig.delivery.flush(15) == 0
    assert rig.delivery.direct
    assert (rig.stats.replayed, rig.stats.delivered) == (n, n + 10)
    assert (rig.stats.failed, rig.stats.dropped, rig.problems) == (0, 0, [])
    assert rig.close(5) == 0
    assert not list(spool.glob("*.seg"))
    got = consume_all(broker.bootstrap_servers, topic, n + 10)
    assert [_index(m) for m in got if m.key() == b"old"] == list(range(n))
    assert [_index(m) for m in got if m.key() == b"new"] == list(range(10))
