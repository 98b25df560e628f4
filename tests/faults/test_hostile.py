"""Thousands of hostile messages beside valid ones: each is quarantined with its reason."""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.schemas import avro_fingerprint
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.dlq import REASON_HEADER
from decision_audit.worker.settings import WorkerSettings
from tests.faults.procs import Load
from tests.helpers import consume_all, count, event_record, run_worker, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]

Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]
HASH = "da-event-hash"
FOREIGN = fastavro.parse_schema(
    {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
)


def _event(producer: str, seq: int = 1, prev: bytes | None = None, **fields: Any) -> Raw:
    """A well-formed, correctly hashed event message (its content may still be hostile)."""
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    prev = genesis_hash(producer, 1) if prev is None else prev
    body = codec.encode_body(schema, event_record(producer, 1, seq, prev, **fields))
    return producer.encode(), codec.frame(schema, body), [(HASH, chain_hash(prev, body))]


def _hostile(rng: random.Random) -> tuple[list[Raw], Counter[str]]:
    """Hostile messages and the reason each must be quarantined for."""
    out: list[Raw] = []
    expect: Counter[str] = Counter()

    def add(reason: str, messages: list[Raw]) -> None:
        out.extend(messages)
        expect[reason] += len(messages)

    add(
        "bad_magic",
        [
            (b"r", bytes([rng.randrange(0xC3)]) + os.urandom(rng.randrange(0, 2000)), None)
            for _ in range(1000)
        ],
    )
    add("empty_value", [(b"e", b"", None)] * 30 + [(b"e", None, None)] * 30)
    good = [_event(f"trunc-{i}") for i in range(400)]
    add("malformed_avro", [(k, v[: rng.randrange(11, len(v))], h) for k, v, h in good if v])
    add(
        "unknown_schema",
        [
            (k, v[:2] + os.urandom(8) + v[10:], h)
            for k, v, h in (_event(f"fp-{i}") for i in range(300))
        ],
    )
    foreign_fp = avro_fingerprint(FOREIGN)
    add(
        "unknown_schema",
        [(b"f", b"\xc3\x01" + foreign_fp + _encode(FOREIGN, {"x": i}), None) for i in range(100)],
    )
    _, big, big_h = _event("huge")
    # Up to 4 MB: a larger one Apache Kafka refuses (message.max.bytes, as in docker-compose.yml).
    add("oversized", [(b"huge", big + b"\x00" * n, big_h) for n in (2 << 20, 3 << 20, 4_000_000)])
    nested = json.dumps({"a": 1})[:-1] + ', "deep": ' + "[" * 60_000 + "]" * 60_000 + "}"
    add("invalid_event", [_event(f"nest-{i}", inputs=nested) for i in range(20)])
    utf8 = [_event(f"utf8-{i}", model_name="XXXX") for i in range(200)]
    add(
        "malformed_avro",
        [(k, v.replace(b"XXXX", b"\xff\xfe\xfd\xfc", 1), h) for k, v, h in utf8 if v],
    )
    bad_numbers = [math.nan, math.inf, -math.inf]
    add(
        "invalid_event",
        [_event(f"nan-{i}", score=bad_numbers[i % 3]) for i in range(120)]
        + [_event(f"lat-{i}", latency_ms=math.nan) for i in range(30)],
    )
    # A failed inference's text past the contract's limits (contract.fields), well within
    # max_event_bytes.
    failed = {"status": "error", "prediction": None}
    add(
        "invalid_event",
        [_event(f"msg-{i}", **failed, error_message="m" * 200_000) for i in range(10)]
        + [_event(f"type-{i}", **failed, error_type="T" * 200_000) for i in range(10)],
    )
    add(
        "invalid_timestamp",
        [_event(f"old-{i}", occurred_at=datetime(1971, 1, 1, tzinfo=UTC)) for i in range(75)]
        + [_event(f"new-{i}", occurred_at=datetime(2900, 1, 1, tzinfo=UTC)) for i in range(75)],
    )
    add("key_mismatch", [(None, v, h) for _, v, h in (_event(f"nokey-{i}") for i in range(100))])
    add(
        "key_mismatch",
        [(b"\xff\xfe", v, h) for _, v, h in (_event(f"badkey-{i}") for i in range(20))],
    )
    add("missing_hash", [(k, v, None) for k, v, _ in (_event(f"nohash-{i}") for i in range(50))])
    add(
        "hash_mismatch",
        [
            (k, v, [(HASH, os.urandom(32))])
            for k, v, _ in (_event(f"badhash-{i}") for i in range(50))
        ],
    )
    return out, expect


def _encode(schema: Any, record: dict[str, Any]) -> bytes:
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _dup_chain() -> tuple[list[Raw], list[str], list[Raw]]:
    """A valid chain, then copies reusing its event ids with other content, then breaks."""
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    producer, prev = "dupchain", genesis_hash("dupchain", 1)
    valid: list[Raw] = []
    ids: list[str] = []
    copies: list[Raw] = []
    for seq in range(1, 51):
        rec = event_record(producer, 1, seq, prev)
        body = codec.encode_body(schema, rec)
        h = chain_hash(prev, body)
        valid.append((producer.encode(), codec.frame(schema, body), [(HASH, h)]))
        ids.append(rec["event_id"])
        forged = codec.encode_body(schema, {**rec, "prediction": "forged"})
        copies.append(
            (producer.encode(), codec.frame(schema, forged), [(HASH, chain_hash(prev, forged))])
        )
        prev = h
    breaks = [_event(producer, seq=51, prev=os.urandom(32)) for _ in range(20)]
    return valid, ids, copies + breaks


def test_hostile_messages_are_quarantined_and_valid_ones_stored(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    rng = random.Random(7)
    s, bs = worker_settings, broker.bootstrap_servers
    hostile, expect = _hostile(rng)
    dup_valid, dup_ids, dup_hostile = _dup_chain()
    expect["chain_fork"] += 50
    expect["chain_break"] += 20
    rng.shuffle(hostile)

    ids = Load(bs, s.topic, 1500, producers=3).start().wait()
    send_raw(bs, s.topic, dup_valid)
    send_raw(bs, s.topic, hostile[: len(hostile) // 2] + dup_hostile)
    ids += Load(bs, s.topic, 1500, producers=3).start().wait()  # new chains, after the storm
    send_raw(bs, s.topic, hostile[len(hostile) // 2 :])
    valid_ids = set(ids) | set(dup_ids)
    total_hostile = len(hostile) + len(dup_hostile)
    assert sum(expect.values()) == total_hostile > 2500

    stats = run_worker(s, ch)

    total = len(valid_ids) + total_hostile
    assert stats.consumed == total
    db = s.database
    stored = {str(r[0]) for r in ch.query(f"SELECT event_id FROM {db}.decisions").result_rows}
    assert stored == valid_ids
    assert count(ch, f"SELECT count() FROM {db}.decisions") == len(valid_ids)
    reasons = Counter(
        {
            r: int(n)
            for r, n in ch.query(
                f"SELECT reason, count() FROM {db}.quarantine GROUP BY 1"
            ).result_rows
        }
    )
    assert reasons == expect
    assert dict(stats.quarantined) == dict(expect)
    dlq = consume_all(bs, s.dlq_topic, total_hostile, timeout=60)
    assert len(dlq) == total_hostile
    dlq_reasons = Counter(dict(m.headers())[REASON_HEADER].decode() for m in dlq)
    assert dlq_reasons == expect
    print(f"\nhostile: {total_hostile} quarantined {dict(expect)}; valid stored {len(stored)}")
