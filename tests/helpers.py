"""Test helpers: crafting wire messages by hand and reading what the pipeline stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from confluent_kafka import Consumer, Producer

from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract import chain_hash, default_codec, genesis_hash, uuid7
from decision_audit.contract.fields import DECISION_EVENT, OUTCOME, REVIEW
from decision_audit.contract.models import utc_now
from decision_audit.worker.loop import Worker, WorkerStats
from decision_audit.worker.settings import WorkerSettings


class Broker(Protocol):
    """What tests use of a broker: ``KafkaBroker`` and ``LocalBroker`` (Tansu) both are one."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def start(self, timeout: float = ...) -> Any: ...
    def stop(self, timeout: float = ...) -> None: ...
    def kill(self) -> None: ...
    def log_tail(self, lines: int = ...) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...


BrokerFactory = Callable[..., Broker]
"""``broker_factory(port=None, kind=None)``: a started broker of its own for one test."""


def event_record(
    producer_id: str, epoch: int, seq: int, prev_hash: bytes, **fields: Any
) -> dict[str, Any]:
    # Every declared field; the optional ones not named here keep their default (None).
    rec: dict[str, Any] = {f.name: f.default for f in DECISION_EVENT}
    rec.update(
        event_id=str(uuid7()),
        occurred_at=utc_now(),
        model_name="m",
        model_version="1",
        inputs=json.dumps({"x": seq}),
        prediction="yes",
        prediction_is_json=False,
        tags={},
        producer_id=producer_id,
        producer_epoch=epoch,
        seq=seq,
        prev_hash=prev_hash,
    )
    rec.update(fields)
    return rec


def outcome_record(
    producer_id: str, epoch: int, seq: int, prev_hash: bytes, **fields: Any
) -> dict[str, Any]:
    """An ``outcome`` record (every declared field) of the chain ``producer_id``."""
    now = utc_now()
    rec: dict[str, Any] = {f.name: f.default for f in OUTCOME}
    rec.update(
        event_id=str(uuid7()),
        occurred_at=now,
        decision_id="r-1",
        actual="yes",
        actual_is_json=False,
        observed_at=now,
        producer_id=producer_id,
        producer_epoch=epoch,
        seq=seq,
        prev_hash=prev_hash,
    )
    rec.update(fields)
    return rec


def review_record(
    producer_id: str, epoch: int, seq: int, prev_hash: bytes, **fields: Any
) -> dict[str, Any]:
    """A ``review`` record (every declared field) of the chain ``producer_id``."""
    rec: dict[str, Any] = {f.name: f.default for f in REVIEW}
    rec.update(
        event_id=str(uuid7()),
        occurred_at=utc_now(),
        decision_id="r-1",
        reviewer="j.doe",
        verdict="confirm",
        final_decision_is_json=False,
        producer_id=producer_id,
        producer_epoch=epoch,
        seq=seq,
        prev_hash=prev_hash,
    )
    rec.update(fields)
    return rec


RECORDS = {"decision_event": event_record, "outcome": outcome_record, "review": review_record}
"""a record builder per chained kind (model events: decision_audit.producer.lifecycle)"""


def craft_chain(
    producer_id: str, count: int, epoch: int = 1, record: str = "decision_event", **fields: Any
) -> list[tuple[bytes, bytes]]:
    """``count`` valid chained messages of ``record`` as ``(value, event_hash)``."""
    codec = default_codec()
    schema = codec.registry.latest(record)
    build = RECORDS[record]
    prev = genesis_hash(producer_id, epoch)
    out = []
    for seq in range(1, count + 1):
        body = codec.encode_body(schema, build(producer_id, epoch, seq, prev, **fields))
        h = chain_hash(prev, body)
        out.append((codec.frame(schema, body), h))
        prev = h
    return out


def send_raw(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]],
) -> None:
    """Produce ``(key, value, headers)`` exactly as given; fail unless the broker took each."""
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 20_000_000})
    refused: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            refused.append(str(err))

    for key, value, headers in messages:
        p.produce(topic, value, key, headers=headers, on_delivery=delivered)
    assert p.flush(15) == 0
    p.close()
    assert not refused, f"the broker refused {len(refused)} message(s): {refused[:3]}"


def run_worker(settings: WorkerSettings, client: Any, **overrides: Any) -> WorkerStats:
    s = settings.model_copy(update=overrides) if overrides else settings
    return Worker(s, client=client).run()


def count(client: Any, sql: str, **params: Any) -> int:
    return int(client.query(sql, parameters=params or None).result_rows[0][0])


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[Any]:
    """Read ``expect`` messages of ``topic`` from the start (assign(), no group wait)."""
    from confluent_kafka import TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    meta = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
    import time

    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                out.append(m)
    c.close()
    return out


def migrated_database(ch: Any) -> Iterator[str]:
    """A fresh database with every migration applied (for a fixture), dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    migrate(ch, name)
    yield name
    ch.command(f"DROP DATABASE IF EXISTS {name}")


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's log end offset, asked of the broker (ListOffsets "latest").

    Correct on Apache Kafka; Tansu answers the start of the last batch (README, "Operating
    the worker": the consumer lag metric and ``--broker-workarounds``).
    """
    from confluent_kafka import TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"offsets-{uuid.uuid4().hex[:8]}"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(partitions)
        }
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001: none), read with a consumer's offset
    fetch, which retries "coordinator load in progress" (the admin call's answer to it crashes
    librdkafka 2.16: confluentinc/librdkafka#5040). The reader does not join the group."""
    from confluent_kafka import TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()
