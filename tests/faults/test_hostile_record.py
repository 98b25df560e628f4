"""Hostile outcomes, reviews and failed inferences beside valid ones: each quarantined with its
reason, the valid ones stored, and an outcome or review naming an unknown decision kept."""

from __future__ import annotations

import io
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.fields import MAX_ERROR_MESSAGE, MAX_NAME
from decision_audit.contract.lineage import Reference
from decision_audit.contract.schemas import avro_fingerprint
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.lifecycle import model_event_record
from decision_audit.worker.dlq import REASON_HEADER
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import RECORDS, consume_all, count, craft_chain, run_worker, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]

Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]
HASH = "da-event-hash"
LONG = "x" * 200_000
"""Free text far past the contract's limits (MAX_REASON, MAX_FOLLOW_UP_VALUE…), well within
max_event_bytes: quarantined for what it says, not for its size."""


def _one(kind: str, chain: str, **fields: Any) -> Raw:
    """A well-formed, correctly hashed first record of ``chain`` (its content may be hostile)."""
    codec = default_codec()
    schema = codec.registry.latest(kind)
    prev = genesis_hash(chain, 1)
    body = codec.encode_body(schema, RECORDS[kind](chain, 1, 1, prev, **fields))
    return chain.encode(), codec.frame(schema, body), [(HASH, chain_hash(prev, body))]


def _retyped(kind: str, chain: str, field: str, avro_type: Any, value: Any) -> Raw:
    """A record whose ``field`` is written with another Avro type under the shipped schema's
    fingerprint: the body does not decode as the schema says (wrong types)."""
    codec = default_codec()
    shipped = codec.registry.latest(kind)
    definition = {
        **shipped.definition,
        "fields": [
            {**f, "type": avro_type} if f["name"] == field else f
            for f in shipped.definition["fields"]
        ],
    }
    prev = genesis_hash(chain, 1)
    build = _model_event_record if kind == "model_event" else RECORDS[kind]
    rec = {**build(chain, 1, 1, prev), field: value}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(definition), rec)
    body = buf.getvalue()
    return chain.encode(), codec.frame(shipped, body), [(HASH, chain_hash(prev, body))]


def _quarantined(ch: Any, db: str) -> Counter[str]:
    """How many messages the quarantine holds per reason."""
    rows = ch.query(f"SELECT reason, count() FROM {db}.quarantine GROUP BY 1").result_rows
    return Counter({str(r): int(n) for r, n in rows})


class _Hostile:
    """Hostile messages gathered with the quarantine reason each must get."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.out: list[Raw] = []
        self.expect: Counter[str] = Counter()

    def add(self, reason: str, messages: list[Raw]) -> None:
        self.out.extend(messages)
        self.expect[reason] += len(messages)

    def chain(self, name: str, i: int) -> str:
        return f"h-{name}-{i}{self.suffix}"


def _hostile(kind: str, suffix: str) -> tuple[list[Raw], Counter[str]]:
    h = _Hostile(suffix)
    add, chain, out, expect = h.add, h.chain, h.out, h.expect

    add("bad_magic", [(b"x", b"\x00" + os.urandom(40), None) for _ in range(20)])
    add("empty_value", [(b"x", b"", None) for _ in range(5)])
    _, big, big_h = _one(kind, chain("big", 0))
    add("oversized", [(chain("big", 0).encode(), big + b"\x00" * (2 << 20), big_h)])
    good = [_one(kind, chain("cut", i)) for i in range(20)]
    add("malformed_avro", [(k, v[:-7], h) for k, v, h in good if v])
    foreign = fastavro.parse_schema(
        {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
    )
    add("unknown_schema", [(b"f", b"\xc3\x01" + avro_fingerprint(foreign) + b"\x02", None)])
    # A decision (or a model event) on this kind's topic.
    add("unexpected_record", [_one("decision_event", f"h-dec-{i}") for i in range(10)])
    # Wrong types: a number where text belongs, text where a timestamp belongs.
    add(
        "malformed_avro",
        [_retyped(kind, chain("type", i), "decision_id", "long", 42) for i in range(5)]
        + [_retyped(kind, chain("ts", i), "occurred_at", "string", "yesterday") for i in range(5)],
    )
    # Bad references, bad ids, bad times, a chain not named for this kind.
    add("invalid_event", [_one(kind, chain("noref", i), decision_id="") for i in range(10)])
    add("invalid_event", [_one(kind, chain("eid", i), event_id="nope") for i in range(5)])
    add("invalid_event", [_one(kind, f"h-misnamed-{i}") for i in range(5)])
    old = datetime(1980, 1, 1, tzinfo=UTC)
    add("invalid_timestamp", [_one(kind, chain("old", i), occurred_at=old) for i in range(5)])
    add("missing_hash", [(k, v, None) for k, v, _ in (_one(kind, chain("nh", 0)),)])
    add(
        "hash_mismatch",
        [(k, v, [(HASH, os.urandom(32))]) for k, v, _ in (_one(kind, chain("bh", 0)),)],
    )
    add("key_mismatch", [(b"other", v, h) for _, v, h in (_one(kind, chain("key", 0)),)])
    if kind == "review":
        add("invalid_event", [_one(kind, chain("verdict", i), verdict="veto") for i in range(10)])
        add(
            "invalid_event",
            [_one(kind, chain("nofinal", i), verdict="override") for i in range(10)],
        )
        add("invalid_event", [_one(kind, chain("noone", i), reviewer="") for i in range(5)])
        # Free text past the contract's limits (contract.fields), straight to Kafka.
        add("invalid_event", [_one(kind, chain("long", i), reason=LONG) for i in range(3)])
        add(
            "invalid_event",
            [
                _one(kind, chain("longfinal", i), verdict="override", final_decision=LONG)
                for i in range(3)
            ],
        )
    else:
        add("invalid_timestamp", [_one(kind, chain("obs", 0), observed_at=old)])
        add("invalid_event", [_one(kind, chain("long", i), actual=LONG) for i in range(3)])
    return out, expect


@pytest.mark.parametrize(("kind", "suffix"), [("outcome", "/outcomes"), ("review", "/reviews")])
def test_hostile_records_are_quarantined_and_valid_ones_stored(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any, kind: str, suffix: str
) -> None:
    topic = f"{worker_settings.topic}-{kind}s"
    ensure_topics(broker.bootstrap_servers, {topic: 2})
    s = worker_settings.model_copy(update={f"{kind}s_topic": topic})
    hostile, expect = _hostile(kind, suffix)
    valid = craft_chain(f"valid{suffix}", 30, record=kind)
    orphan = craft_chain(f"orphan{suffix}", 3, record=kind, decision_id="req-that-never-was")
    send_raw(broker.bootstrap_servers, topic, [(f"valid{suffix}".encode(), v, [(HASH, h)])
                                               for v, h in valid[:15]])  # fmt: skip
    send_raw(broker.bootstrap_servers, topic, hostile)
    send_raw(
        broker.bootstrap_servers,
        topic,
        [(f"valid{suffix}".encode(), v, [(HASH, h)]) for v, h in valid[15:]]
        + [(f"orphan{suffix}".encode(), v, [(HASH, h)]) for v, h in orphan],
    )
    stats = run_worker(s, ch)

    db, table = s.database, f"{kind}s"
    assert stats.consumed == len(hostile) + 33
    assert count(ch, f"SELECT count() FROM {db}.{table}") == 33
    reasons = _quarantined(ch, db)
    assert reasons == expect
    assert dict(stats.quarantined) == dict(expect)
    too_long = count(
        ch, f"SELECT count() FROM {db}.quarantine WHERE detail LIKE '% characters, more than %'"
    )
    assert too_long == (6 if kind == "review" else 3)
    # A record naming an unknown decision is kept, and flagged (as are the valid ones, whose
    # crafted decision_id "r-1" names no decision either).
    flagged = ch.query(
        f"SELECT producer_id, count() FROM {db}.incidents FINAL "
        "WHERE kind = 'unknown_decision' GROUP BY 1 ORDER BY 1"
    ).result_rows
    assert flagged == [(f"orphan{suffix}", 3), (f"valid{suffix}", 30)]
    dlq = consume_all(broker.bootstrap_servers, s.dlq_topic, len(hostile), timeout=60)
    assert Counter(dict(m.headers())[REASON_HEADER].decode() for m in dlq) == expect


@pytest.mark.parametrize("parse_in_clickhouse", [True, False], ids=["clickhouse", "python"])
def test_hostile_failed_inferences_are_quarantined(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any, parse_in_clickhouse: bool
) -> None:
    s = worker_settings.model_copy(update={"parse_in_clickhouse": parse_in_clickhouse})
    bad = [
        *(_one("decision_event", f"st-{i}", status="exploded") for i in range(10)),
        *(_one("decision_event", f"np-{i}", prediction=None) for i in range(10)),  # ok, no answer
    ]
    failed = {"status": "error", "prediction": None}
    long = [
        *(_one("decision_event", f"lm-{i}", **failed, error_message=LONG) for i in range(5)),
        *(_one("decision_event", f"lt-{i}", **failed, error_type=LONG) for i in range(5)),
    ]
    # At the limits exactly: stored.
    most = {"error_type": "E" * MAX_NAME, "error_message": "é" * MAX_ERROR_MESSAGE}
    good = [_one("decision_event", f"fail-{i}", **failed, error_type="E") for i in range(10)]
    good += [_one("decision_event", f"most-{i}", **failed, **most) for i in range(2)]
    send_raw(broker.bootstrap_servers, s.topic, bad + long + good)
    stats = run_worker(s, ch)
    assert stats.inserted == 12 and dict(stats.quarantined) == {"invalid_event": 30}
    details = [r[0] for r in ch.query(f"SELECT detail FROM {s.database}.quarantine").result_rows]
    assert sum("status 'exploded' is not one of" in d for d in details) == 10
    assert sum("prediction is missing, which status 'ok' requires" in d for d in details) == 10
    too_long = f"has {len(LONG)} characters, more than"
    assert sum(d.startswith(f"error_message {too_long} {MAX_ERROR_MESSAGE}") for d in details) == 5
    assert sum(d.startswith(f"error_type {too_long} {MAX_NAME}") for d in details) == 5


def _model_event_record(chain: str, epoch: int, seq: int, prev: bytes) -> dict[str, Any]:
    """A register event of ``chain``, with its integrity fields."""
    return {
        **model_event_record("register", Reference.model_version("m", "1"), actor="ci"),
        "key_id": None,
        "producer_id": chain,
        "producer_epoch": epoch,
        "seq": seq,
        "prev_hash": prev,
    }


def _model_event(chain: str, seq: int = 1, prev: bytes | None = None, **fields: Any) -> Raw:
    """A correctly hashed model event of ``chain`` (a register, unless ``fields`` say else)."""
    codec = default_codec()
    schema = codec.registry.latest("model_event")
    prev = genesis_hash(chain, 1) if prev is None else prev
    rec = {**_model_event_record(chain, 1, seq, prev), **fields}
    body = codec.encode_body(schema, rec)
    return chain.encode(), codec.frame(schema, body), [(HASH, chain_hash(prev, body))]


def test_hostile_model_events_are_quarantined_and_valid_ones_stored(
    broker: LocalBroker, worker_settings: WorkerSettings, ch: Any
) -> None:
    topic = f"{worker_settings.topic}-model-events"
    ensure_topics(broker.bootstrap_servers, {topic: 2})
    s = worker_settings.model_copy(update={"model_events_topic": topic})
    h = _Hostile("/model-events")
    add, chain, out, expect = h.add, h.chain, h.out, h.expect

    _, big, big_h = _model_event(chain("big", 0))
    add("oversized", [(chain("big", 0).encode(), big + b"\x00" * (2 << 20), big_h)])
    spaceship = {"type": "spaceship", "id": "x"}
    add("invalid_event", [_model_event(chain("ref", i), subject=spaceship) for i in range(5)])
    add("invalid_event", [_model_event(chain("act", i), action="explode") for i in range(5)])
    # Details of the wrong type, or too long (contract.lineage.ACTION_DETAILS).
    retrain = {"action": "retrain", "subject": Reference.model_version("m", "2").to_avro()}
    add(
        "invalid_event",
        [_model_event(chain("num", i), **retrain, metadata='{"reason": 42}') for i in range(5)]
        + [
            _model_event(chain("long", i), **retrain, metadata=f'{{"reason": "{LONG}"}}')
            for i in range(3)
        ]
        + [_model_event(chain("meta", i), metadata="[1, 2]") for i in range(3)],
    )
    add("invalid_event", [_model_event(f"h-misnamed-{i}") for i in range(3)])
    add("unexpected_record", [_one("outcome", f"h-out-{i}/outcomes") for i in range(3)])
    add(
        "malformed_avro",
        [_retyped("model_event", chain("type", i), "actor", "long", 7) for i in range(3)],
    )
    valid: list[Raw] = []
    prev = genesis_hash("valid/model-events", 1)
    for seq in range(1, 11):
        key, value, headers = _model_event("valid/model-events", seq, prev)
        assert headers is not None
        valid.append((key, value, headers))
        prev = headers[0][1]
    send_raw(broker.bootstrap_servers, topic, valid[:5] + out + valid[5:])
    stats = run_worker(s, ch)

    db = s.database
    assert stats.consumed == len(out) + 10
    assert count(ch, f"SELECT count() FROM {db}.model_events") == 10
    reasons = _quarantined(ch, db)
    assert reasons == expect and dict(stats.quarantined) == dict(expect)
    details = [r[0] for r in ch.query(f"SELECT detail FROM {db}.quarantine").result_rows]
    assert sum("retrain detail 'reason' is not text" in d for d in details) == 5
    assert sum("retrain detail 'reason' is longer than 4096" in d for d in details) == 3
    assert sum("subject.type" in d for d in details) == 5
