"""The chain writer: links, hashes, checkpoints, and what a drop or a bad event leaves behind.

Messages are read back exactly as they were enqueued: a spooled delivery whose broker is
unreachable keeps them, in order, in its spool once closed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from decision_audit import DeliveryProblem, ProducerSettings, ProducerStats
from decision_audit.contract import chain_hash, default_codec, genesis_hash, uuid7
from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.lineage import Reference
from decision_audit.contract.models import decision_record
from decision_audit.devtools.tansu_broker import free_port
from decision_audit.producer.audit_producer import make_delivery
from decision_audit.producer.chain import EVENT_HASH_HEADER, ChainState, ChainWriter
from decision_audit.producer.delivery import Delivery
from decision_audit.producer.lifecycle import model_event_record
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.producer.spool import Spool, SpoolRecord

CODEC = default_codec()


@dataclass
class Rig:
    writer: ChainWriter
    delivery: Delivery
    stats: ProducerStats
    problems: list[DeliveryProblem]
    spool_dir: Path | None

    def sent(self) -> list[SpoolRecord]:
        """Close the delivery and return what it kept, in the order it was enqueued."""
        assert self.spool_dir is not None
        self.delivery.close(0.2)
        with Spool(self.spool_dir, 1 << 30) as spool:
            out: list[SpoolRecord] = []
            while got := spool.read(1000, 1 << 30):
                out += [r for r, _, _ in got]
            return out


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "unit")
    return tmp_path / "keys"


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.delivery.close(0)


def _rig(
    rigs: list[Rig],
    chain_id: str,
    *,
    spool_dir: Path | None = None,
    conf: dict[str, Any] | None = None,
    record: str = "decision_event",
    **kw: Any,
) -> Rig:
    settings = ProducerSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", producer_id="unit", spool_dir=spool_dir
    )
    c = settings.kafka_config()
    c.update(conf or {})
    c["logger"] = logging.getLogger("decision_audit.kafka")
    stats, problems = ProducerStats(), list[DeliveryProblem]()
    delivery = make_delivery(settings, c, stats, problems.append)
    writer = ChainWriter(
        ChainState.new(chain_id),
        "t",
        CODEC.registry.latest(record),
        CODEC,
        delivery,
        stats,
        problems.append,
        max_message_bytes=settings.max_message_bytes,
        **kw,
    )
    rig = Rig(writer, delivery, stats, problems, spool_dir)
    if spool_dir is None:  # a spooled rig is closed by sent()
        rigs.append(rig)
    return rig


def _decision(i: int, **fields: Any) -> dict[str, Any]:
    return decision_record(
        event_id=str(uuid7()),
        occurred_at=1_700_000_000_000 + i,
        model_name="m",
        model_version="1",
        inputs={"i": i, **fields},
        prediction="yes",
    )


def test_events_are_linked_hashed_and_keyed_by_their_chain(rigs: list[Rig], tmp_path: Path) -> None:
    rig = _rig(rigs, "unit", spool_dir=tmp_path / "spool")
    for i in range(3):
        rig.writer.write(_decision(i))
    chain = rig.writer.chain
    assert chain.seq == 3 and rig.stats.logged == 3
    prev = genesis_hash("unit", chain.epoch)
    for seq, msg in enumerate(rig.sent(), 1):
        assert (msg.topic, msg.key) == ("t", b"unit")
        decoded = CODEC.decode(msg.value or b"")
        rec = decoded.record
        assert (rec["producer_id"], rec["producer_epoch"], rec["seq"]) == ("unit", chain.epoch, seq)
        assert rec["prev_hash"] == prev and rec["key_id"] is None
        prev = chain_hash(prev, decoded.body)
        assert msg.headers == ((EVENT_HASH_HEADER, prev),)
    assert chain.head == prev


def test_model_events_get_a_signed_checkpoint_right_behind_each(
    rigs: list[Rig], tmp_path: Path, keys: Path
) -> None:
    rig = _rig(
        rigs,
        "unit/model-events",
        spool_dir=tmp_path / "spool",
        record="model_event",
        signer=Signer(keys / "unit.key"),
        what="model event",
    )
    for v in ("1", "2"):
        rig.writer.write(
            model_event_record("register", Reference.model_version("m", v), actor="ci")
        )
    assert (rig.stats.logged, rig.stats.checkpoints, rig.problems) == (2, 2, [])
    assert rig.writer.checkpointed_seq == 2
    assert not rig.writer.checkpoint()  # nothing new since the last one
    sent = [CODEC.decode(m.value or b"") for m in rig.sent()]
    assert [(d.writer.name, d.record["seq"]) for d in sent] == [
        ("model_event", 1),
        ("checkpoint", 1),
        ("model_event", 2),
        ("checkpoint", 2),
    ]
    ring, epoch = KeyRing.load(keys), rig.writer.chain.epoch
    head = genesis_hash("unit/model-events", epoch)
    for event, cp in zip(sent[::2], sent[1::2], strict=True):
        assert event.record["key_id"] == "unit"
        head = chain_hash(head, event.body)
        c = cp.record
        assert (c["producer_id"], c["chain_head"], c["key_id"]) == (
            "unit/model-events",
            head,
            "unit",
        )
        message = checkpoint_message(c["producer_id"], c["producer_epoch"], c["seq"], head)
        assert ring.verify("unit", c["signature"], message)


def test_decision_checkpoints_are_signed_when_due(
    rigs: list[Rig], tmp_path: Path, keys: Path
) -> None:
    due = threading.Event()
    rig = _rig(
        rigs,
        "unit",
        spool_dir=tmp_path / "spool",
        signer=Signer(keys / "unit.key"),
        checkpoint_every=3,
        checkpoint_due=due,
    )
    for i in range(2):
        rig.writer.write(_decision(i))
    assert not due.is_set()
    rig.writer.write(_decision(2))
    assert due.is_set() and rig.stats.checkpoints == 0  # the background thread's job
    assert rig.writer.checkpoint(wait=False)
    assert not rig.writer.checkpoint()  # nothing new
    rig.writer.write(_decision(3))
    assert rig.writer.checkpoint()  # the tail, as close() does
    assert rig.stats.checkpoints == 2
    names = [(d.writer.name, d.record["seq"]) for d in map(CODEC.decode, _values(rig.sent()))]
    assert names == [
        ("decision_event", 1),
        ("decision_event", 2),
        ("decision_event", 3),
        ("checkpoint", 3),
        ("decision_event", 4),
        ("checkpoint", 4),
    ]


def _values(sent: list[SpoolRecord]) -> list[bytes]:
    return [m.value or b"" for m in sent]


def test_checkpoint_gives_up_when_the_chain_is_busy_unless_told_to_wait(
    rigs: list[Rig], keys: Path
) -> None:
    rig = _rig(rigs, "unit", signer=Signer(keys / "unit.key"), checkpoint_due=threading.Event())
    rig.writer.write(_decision(0))
    lock = rig.writer._lock
    with lock:  # a write blocked on a full spool holds it
        assert not rig.writer.checkpoint(wait=False)
    assert rig.writer.checkpoint(wait=True)


def test_a_dropped_event_leaves_no_gap(rigs: list[Rig]) -> None:
    rig = _rig(rigs, "unit", conf={"queue.buffering.max.messages": 1})
    rig.writer.write(_decision(0))
    head = rig.writer.chain.head
    rig.writer.write(_decision(1))  # the client's queue is full: dropped, counted, reported
    assert (rig.writer.chain.seq, rig.writer.chain.head) == (1, head)
    assert (rig.stats.logged, rig.stats.dropped) == (1, 1)
    assert [(p.kind, p.producer_id, p.seq) for p in rig.problems] == [("dropped", "unit", 2)]
    assert "local queue full" in rig.problems[0].reason
    rig.writer.write(_decision(2))
    assert rig.problems[-1].seq == 2  # the next try gets the same seq


def test_a_bad_event_raises_before_anything_is_sent(rigs: list[Rig], tmp_path: Path) -> None:
    rig = _rig(rigs, "unit", spool_dir=tmp_path / "spool")
    with pytest.raises(ValueError, match=r"event is \d+ bytes, over max_message_bytes=1000000"):
        rig.writer.write(_decision(0, blob="x" * 1_100_000))
    bad = _decision(1)
    bad["score"] = "high"
    with pytest.raises(ValueError, match="event cannot be encoded as Avro"):
        rig.writer.write(bad)
    assert (rig.writer.chain.seq, rig.stats.logged, rig.stats.dropped) == (0, 0, 0)
    assert rig.sent() == []
