"""End to end on the real broker and chDB: producer → Tansu → worker → ClickHouse."""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from decision_audit import AuditProducer
from decision_audit.contract import default_codec
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.loop import Worker
from decision_audit.worker.settings import WorkerSettings
from tests.helpers import consume_all, count, craft_chain, run_worker, send_raw

pytestmark = pytest.mark.integration

AWKWARD_INPUTS: list[dict[str, Any]] = [
    {},
    {"none": None, "t": True, "f": False, "empty": "", "zero": 0, "neg_zero": -0.0},
    {"unicode": "héllo wörld ☃ 😀 漢字 مرحبا e\u0301", "emoji_key_😀": "v"},
    {
        "big": 2**63 + 1,
        "huge": 10**30,
        "neg": -(2**70),
        "tiny": 5e-324,
        "max": 1.7976931348623157e308,
    },
    {"pi": math.pi, "third": 1 / 3, "sci": 6.02214076e23},
    {"nested": {"a": {"b": {"c": [1, [2, [3, {"d": None}]], {"e": []}]}}}},
    {"deep": json.loads("[" * 60 + "1" + "]" * 60)},
    {"list": [1, "two", 3.0, None, True, {"k": "v"}, []]},
    {'quo"te': "back\\slash", "new\nline": "tab\t", "dot.key": "nul\x00char"},
    {"long": "x" * 50_000},
]
PREDICTIONS: list[Any] = ["approve", 0, 1.5, True, ["a", "b"], {"label": "x", "p": [0.1, 0.9]}, ""]


@pytest.mark.parametrize("parse_in_clickhouse", [True, False], ids=["clickhouse", "python"])
def test_round_trip_is_faithful(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, parse_in_clickhouse: bool
) -> None:
    worker_settings = worker_settings.model_copy(
        update={"parse_in_clickhouse": parse_in_clickhouse}
    )
    logged: dict[str, tuple[dict[str, Any], Any]] = {}
    when = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    with AuditProducer(
        broker.bootstrap_servers, producer_id="rt", topic=worker_settings.topic
    ) as p:
        for i, inputs in enumerate(AWKWARD_INPUTS):
            for pred in PREDICTIONS:
                eid = p.log_decision(
                    "awkward",
                    "v1",
                    inputs,
                    pred,
                    score=0.25 if i % 2 else None,
                    request_id=f"r-{len(logged)}",
                    tags={"i": str(i), "ключ": "значение"},
                    occurred_at=when,
                )
                logged[eid] = (inputs, pred)
        assert p.flush(10) == 0
    stats = run_worker(worker_settings, ch)
    assert stats.inserted == len(logged) and stats.quarantined_total == 0

    db = worker_settings.database
    rows = ch.query(
        f"SELECT toString(event_id), inputs, prediction, prediction_is_json, occurred_at, tags, "
        f"score, seq FROM {db}.decisions"
    ).result_rows
    assert len(rows) == len(logged)
    seqs = sorted(r[7] for r in rows)
    assert seqs == list(range(1, len(logged) + 1))
    for eid, inputs_json, pred, is_json, occurred, tags, _score, _seq in rows:
        inputs, expected_pred = logged[eid]
        assert json.loads(inputs_json) == inputs
        assert (json.loads(pred) if is_json else pred) == expected_pred
        assert type(json.loads(pred) if is_json else pred) is type(expected_pred)
        assert occurred == when
        assert tags["ключ"] == "значение"


def test_schema_v1_events_are_read_as_the_latest_version(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings
) -> None:
    codec = default_codec()
    v1 = codec.registry.get("decision_event", 1)
    latest = codec.registry.latest("decision_event")
    assert latest.version == 4
    bs, topic = broker.bootstrap_servers, worker_settings.topic
    with AuditProducer(bs, producer_id="old", topic=topic, schema_version=1) as old:
        old_id = old.log_decision("m", "1", {"a": 1}, "yes", code_commit="abc123")
    with AuditProducer(bs, producer_id="new", topic=topic) as new:
        new_id = new.log_decision("m", "1", {"a": 2}, "no", code_commit="abc123")
    run_worker(worker_settings, ch)
    rows = dict(
        (r[0], r[1:])
        for r in ch.query(
            f"SELECT toString(event_id), schema_fingerprint, code_commit, inputs "
            f"FROM {worker_settings.database}.decisions"
        ).result_rows
    )
    assert rows[old_id] == (v1.fingerprint_int, None, '{"a":1}')  # v1 has no code_commit field
    assert rows[new_id] == (latest.fingerprint_int, "abc123", '{"a":2}')


@pytest.mark.parametrize("parse_in_clickhouse", [True, False], ids=["clickhouse", "python"])
def test_bad_messages_go_to_quarantine_and_dlq(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, parse_in_clickhouse: bool
) -> None:
    worker_settings = worker_settings.model_copy(
        update={"parse_in_clickhouse": parse_in_clickhouse}
    )
    good = craft_chain("crafted", 3)
    (v1, h1), (v2, h2), (v3, h3) = good
    tampered = bytearray(v2)
    tampered[-40] ^= 0x01  # a bit flip in the body; the hash header still claims the original
    hdr = "da-event-hash"
    send_raw(
        broker.bootstrap_servers,
        worker_settings.topic,
        [
            (b"crafted", v1, [(hdr, h1)]),
            (b"junk", b"\x00\x01 random bytes", None),
            (b"crafted", bytes(tampered), [(hdr, h2)]),
            (b"crafted", v3[:-5], [(hdr, h3)]),  # truncated Avro
            (b"crafted", v3, None),  # no hash header
            (None, v3, [(hdr, h3)]),  # null key
            (b"crafted", v3, [(hdr, h3)]),
        ],
    )
    stats = run_worker(worker_settings, ch)
    db = worker_settings.database
    assert stats.inserted == 2
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 2
    reasons = dict(
        ch.query(f"SELECT reason, count() FROM {db}.quarantine GROUP BY reason").result_rows
    )
    assert reasons == {
        "bad_magic": 1,
        "hash_mismatch": 1,
        "malformed_avro": 1,
        "missing_hash": 1,
        "key_mismatch": 1,
    }
    raw = ch.query(
        f"SELECT raw FROM {db}.quarantine WHERE reason = 'hash_mismatch'",
        column_formats={"raw": "bytes"},
    )
    assert raw.result_rows[0][0] == bytes(tampered)  # kept byte for byte
    dlq = consume_all(broker.bootstrap_servers, worker_settings.dlq_topic, expect=5)
    assert sorted(dict(m.headers())["da-reason"].decode() for m in dlq) == sorted(
        ["bad_magic", "hash_mismatch", "malformed_avro", "missing_hash", "key_mismatch"]
    )


def test_redelivered_events_are_stored_once(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings
) -> None:
    msgs = craft_chain("dup", 50)
    hdr = "da-event-hash"
    batch = [(b"dup", v, [(hdr, h)]) for v, h in msgs]
    send_raw(broker.bootstrap_servers, worker_settings.topic, batch + batch[10:20])
    stats = run_worker(worker_settings, ch)
    db = worker_settings.database
    assert (stats.inserted, stats.duplicates) == (50, 10)
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 50

    # A second group replays the whole topic: the stored watermarks drop every event.
    again = run_worker(worker_settings, ch, group=worker_settings.group + "-replay")
    assert (again.inserted, again.duplicates) == (0, 60)
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 50


class _NoTemporaryTables:
    """A real client whose user may not create temporary tables (staging is refused)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def command(self, cmd: str, *args: Any, **kwargs: Any) -> Any:
        if "TEMPORARY TABLE" in cmd:
            raise DatabaseError("Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)")
        return self._real.command(cmd, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_store_that_refuses_staging_gets_every_event_checked_in_python(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings
) -> None:
    good = craft_chain("nostage", 30)
    hdr = "da-event-hash"
    tampered = bytearray(good[5][0])
    tampered[-40] ^= 0x01
    messages = [(b"nostage", v, [(hdr, h)]) for v, h in good]
    messages.insert(6, (b"nostage", bytes(tampered), [(hdr, good[5][1])]))
    send_raw(broker.bootstrap_servers, worker_settings.topic, messages)
    worker = Worker(worker_settings, client=_NoTemporaryTables(ch))
    stats = worker.run()
    assert stats.inserted == 30 and dict(stats.quarantined) == {"hash_mismatch": 1}
    fallbacks = worker.metrics.registry.get_sample_value(
        "decision_audit_worker_staging_fallbacks_total"
    )
    assert fallbacks is not None and fallbacks >= 1
    db = worker_settings.database
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 30


def test_a_worker_that_may_not_create_topics_skips_a_missing_model_events_topic(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"{worker_settings.topic}-never-created"
    s = worker_settings.model_copy(update={"model_events_topic": missing})
    assert not s.create_topics
    good = craft_chain("no-lifecycle", 40)
    send_raw(
        broker.bootstrap_servers,
        s.topic,
        [(b"no-lifecycle", v, [("da-event-hash", h)]) for v, h in good],
    )
    with caplog.at_level(logging.WARNING, logger="decision_audit.worker"):
        stats = Worker(s, client=ch).run()
    assert stats.inserted == 40 and stats.quarantined_total == 0
    warning = [r.getMessage() for r in caplog.records if missing in r.getMessage()]
    assert len(warning) == 1 and "--create-topics" in warning[0]
    assert count(ch, f"SELECT count() FROM {s.database}.decisions") == 40


def test_worker_restart_resumes_without_loss_or_doubles(
    broker: LocalBroker, ch: Any, worker_settings: WorkerSettings
) -> None:
    bs, topic = broker.bootstrap_servers, worker_settings.topic
    with AuditProducer(bs, producer_id="restart", topic=topic) as p:
        ids = {p.log_decision("m", "1", {"i": i}, "y") for i in range(3000)}
    settings = worker_settings.model_copy(update={"batch_size": 500, "exit_when_idle": None})
    first = Worker(settings, client=ch)

    def stop_after_first_batches() -> None:
        while first.stats.inserted < 1000:
            threading.Event().wait(0.01)
        first.stop()

    t = threading.Thread(target=stop_after_first_batches)
    t.start()
    s1 = first.run()
    t.join()
    assert 1000 <= s1.inserted < 3000

    with AuditProducer(bs, producer_id="restart", topic=topic) as p:
        ids |= {p.log_decision("m", "1", {"i": i}, "y") for i in range(2000)}
    s2 = run_worker(worker_settings, ch, batch_size=500)
    db = worker_settings.database
    stored = {r[0] for r in ch.query(f"SELECT toString(event_id) FROM {db}.decisions").result_rows}
    assert stored == ids
    assert count(ch, f"SELECT count() FROM {db}.decisions") == 5000
    assert s1.consumed + s2.consumed == 5000  # resumed from the committed offsets


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_name": ""}, "model_name"),
        ({"inputs": ["not", "a", "dict"]}, "inputs"),
        ({"inputs": {1: "int key"}}, "inputs"),
        ({"inputs": {"x": float("nan")}}, "inputs"),
        ({"inputs": {"x": object()}}, "inputs"),
        ({"score": float("inf")}, "score"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at"),
        ({"tags": {"k": 1}}, "tags"),
        ({"prediction": object()}, "prediction"),
        ({"inputs": {"text": "\ud800 lone surrogate"}}, "Avro"),
    ],
)
def test_bad_arguments_raise_naming_the_field(
    broker: LocalBroker, worker_settings: WorkerSettings, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {
        "model_name": "m",
        "model_version": "1",
        "inputs": {"a": 1},
        "prediction": "yes",
    }
    args.update(kwargs)
    with AuditProducer(
        broker.bootstrap_servers, producer_id="bad", topic=worker_settings.topic
    ) as p:
        with pytest.raises(ValueError, match=field):
            p.log_decision(**args)
        assert (p.stats.logged, p.last_seq) == (0, 0)  # nothing half-written was sent


def test_oversized_event_is_refused_by_producer(
    broker: LocalBroker, worker_settings: WorkerSettings
) -> None:
    with AuditProducer(
        broker.bootstrap_servers, producer_id="big", topic=worker_settings.topic
    ) as p:
        with pytest.raises(ValueError, match="max_message_bytes"):
            p.log_decision("m", "1", {"blob": "x" * 2_000_000}, "y")
        assert p.stats.logged == 0
