"""The worker's fast path: ClickHouse parses and checks decision events.

Against real chDB: what the fast path stores is column for column what the Python path
stores; every event the Python verifier rejects is flagged by ClickHouse (so the worker checks
it again in Python and quarantines it with its reason); a batch ClickHouse cannot parse
raises, and the worker falls back to Python.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import Reason
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.checks import EVENT_HASH_HEADER, EventVerifier, Rejection, VerifiedEvent
from decision_audit.worker.rows import QuarantineRow
from decision_audit.worker.staging import EVENT_COLUMNS, Stager
from decision_audit.worker.store import DecisionColumns, Store
from tests.helpers import event_record, migrated_database

pytestmark = pytest.mark.integration

Message = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]


def _message(
    producer_id: str, rec: dict[str, Any], version: int | None = None, *, tail: bytes = b""
) -> Message:
    """A wire message of ``rec``; ``tail`` is appended to the body before hashing."""
    codec = default_codec()
    reg = codec.registry
    schema = reg.latest("decision_event") if version is None else reg.get("decision_event", version)
    body = codec.encode_body(schema, rec) + tail
    h = chain_hash(rec["prev_hash"], body)
    return codec.frame(schema, body), producer_id.encode(), [(EVENT_HASH_HEADER, h)]


def _chain(producer_id: str, count: int, version: int | None = None, **fields: Any) -> list[Any]:
    prev = genesis_hash(producer_id, 7)
    out = []
    for seq in range(1, count + 1):
        rec = event_record(producer_id, 7, seq, prev, **fields)
        if version == 1:
            for name in ("code_commit", "environment_hash", "redaction_policy", "key_id"):
                rec.pop(name)
        msg = _message(producer_id, rec, version)
        out.append(msg)
        prev = chain_hash(prev, msg[0][10:])
    return out


def _stager(ch: Any, keyring: KeyRing | None = None, require_signed: bool = False) -> Stager:
    return Stager(
        ch,
        default_codec().registry,
        max_event_bytes=1_000_000,
        keyring=keyring or KeyRing(),
        require_signed=require_signed,
    )


@pytest.fixture
def second_database(ch: Any) -> Iterator[str]:
    yield from migrated_database(ch)


def test_staging_columns_are_the_latest_event_fields() -> None:
    latest = default_codec().registry.latest("decision_event")
    assert [name for name, _ in EVENT_COLUMNS] == [f["name"] for f in latest.definition["fields"]]


def test_staged_rows_equal_what_the_python_path_stores(
    ch: Any, database: str, second_database: str
) -> None:
    rich = {
        "inputs": json.dumps({"naïve": "日本", "n": [1, 2.5, None, True], "d": {"e": {}}}),
        "score": 0.125,
        "latency_ms": 3.5,
        "deployment_id": "dep-1",
        "request_id": "req",
        "tags": {"region": "eu", "ünï": "ß"},
        "explanation": json.dumps({"shap": [0.1, -0.2]}),
        "actor": "svc",
        "prediction": "approve ✓",
        "code_commit": "abc123",
        "redaction_policy": "p@2",
    }
    failed = {"prediction": None, "status": "timeout", "error_type": "TimeoutError",
              "error_message": "no answer in 250 ms ✗"}  # fmt: skip
    messages = [
        *_chain("stage-a", 40, **rich),
        *_chain("stage-old", 25, version=1),
        *_chain("stage-failed", 5, **failed),
    ]
    stager = _stager(ch)
    staged = [stager.screen(v, k, h, 3, 1000 + i) for i, (v, k, h) in enumerate(messages)]
    assert all(s is not None for s in staged)
    assert stager.stage() == {}
    assert [(s.record["seq"], s.record["producer_epoch"]) for s in staged if s] == [
        *((n, 7) for n in range(1, 41)),
        *((n, 7) for n in range(1, 26)),
        *((n, 7) for n in range(1, 6)),
    ]
    accepted = [s.index for s in staged if s]
    Store(ch, database).copy_staged(stager.selection(accepted, len(stager)), "tok")

    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    columns = DecisionColumns()
    for i, (v, k, h) in enumerate(messages):
        checked = verifier.check(v, k, h)
        assert isinstance(checked, VerifiedEvent)
        columns.append(checked, v, 3, 1000 + i)
    Store(ch, second_database).insert_decisions(columns, "tok")

    def rows(db: str) -> list[tuple[Any, ...]]:
        return ch.query(
            f"SELECT * EXCEPT ingested_at FROM {db}.decisions ORDER BY producer_id, seq"
        ).result_rows

    fast, slow = rows(database), rows(second_database)
    assert len(fast) == 70 and fast == slow
    # v1 events read status 'ok' (the Avro default), not the column type's ''.
    statuses = ch.query(
        "SELECT producer_id, status, count(), countIf(prediction IS NULL) "
        f"FROM {database}.decisions GROUP BY ALL ORDER BY producer_id"
    ).result_rows
    assert statuses == [("stage-a", "ok", 40, 0), ("stage-failed", "timeout", 5, 5),
                        ("stage-old", "ok", 25, 0)]  # fmt: skip


def _flagged_cases(keyring_dir: Path) -> dict[str, Message]:
    """One event per check, each passing the cheap checks made before staging."""
    pid = "stage-bad"
    prev = genesis_hash(pid, 7)

    def rec(**fields: Any) -> dict[str, Any]:
        return event_record(pid, 7, 1, prev, **fields)

    def raw_replace(msg: Message, old: bytes, new: bytes) -> Message:
        body = msg[0][10:].replace(old, new)
        return msg[0][:10] + body, msg[1], [(EVENT_HASH_HEADER, chain_hash(prev, body))]

    upper = str(uuid.uuid4()).upper()
    plain = _message(pid, rec())
    return {
        "not_finite": _message(pid, rec(score=float("nan"))),
        "not_finite_latency": _message(pid, rec(latency_ms=float("inf"))),
        "inputs": _message(pid, rec(inputs="[1, 2]")),
        "inputs_text": _message(pid, rec(inputs="{not json")),
        "model": _message(pid, rec(model_name="")),
        "event_id": _message(pid, rec(event_id=upper)),
        "seq": _message(pid, event_record(pid, 7, 0, prev)),
        "timestamp": _message(pid, rec(occurred_at=datetime(1990, 1, 1, tzinfo=UTC))),
        "future": _message(pid, rec(occurred_at=datetime(2999, 1, 1, tzinfo=UTC))),
        "utf8": raw_replace(_message(pid, rec(model_version="VVVV")), b"VVVV", b"V\xff\xfeV"),
        "utf8_tags": raw_replace(_message(pid, rec(tags={"k": "TTTT"})), b"TTTT", b"\xc3(TT"),
        "framing": _message(pid, rec(), tail=prev),  # trailing bytes that end like a body
        "key": (plain[0], b"someone-else", plain[2]),
        "hash": (plain[0][:-40] + bytes([plain[0][-40] ^ 1]) + plain[0][-39:], *plain[1:]),
        "unknown_key": _message(pid, rec(key_id="not-a-known-key")),
        "value": _message(pid, rec(status="exploded")),
        "required": _message(pid, rec(prediction=None)),  # an ok decision needs a prediction
    }


def test_clickhouse_flags_every_event_the_verifier_rejects(ch: Any, tmp_path: Path) -> None:
    generate_keypair(tmp_path, "known")
    keyring = KeyRing.load(tmp_path)
    cases = _flagged_cases(tmp_path)
    good = _chain("stage-good", 3)
    stager = _stager(ch, keyring)
    names = [*cases, "good1", "good2", "good3"]
    messages = [*cases.values(), *good]
    staged = [stager.screen(v, k, h, 0, i) for i, (v, k, h) in enumerate(messages)]
    unstaged = [n for n, s in zip(names, staged, strict=True) if s is None]
    assert not unstaged, unstaged
    flagged = stager.stage()
    by_name = {names[i]: code for i, code in flagged.items()}
    assert set(by_name) == set(cases)
    assert by_name["framing"] == "framing" and by_name["key"] == "key"
    assert by_name["hash"] == "hash"
    assert by_name["seq"] == "seq" and by_name["unknown_key"] == "unknown_key"
    assert by_name["utf8"] == by_name["utf8_tags"] == "utf8"
    assert by_name["not_finite"] == by_name["not_finite_latency"] == "not_finite"
    assert by_name["inputs"] == by_name["inputs_text"] == "inputs"
    assert by_name["timestamp"] == by_name["future"] == "timestamp"
    assert by_name["value"] == "value" and by_name["required"] == "required"
    # The worker checks flagged events again in Python: each one is rejected there too.
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000, keyring=keyring)
    for name, (v, k, h) in cases.items():
        assert isinstance(verifier.check(v, k, h), Rejection), name


def test_an_object_after_whitespace_is_flagged_and_then_accepted_in_python(ch: Any) -> None:
    # ClickHouse's inputs check is "starts with '{' and is valid JSON", stricter than JSON:
    # what it cannot vouch for goes to the Python verifier, which accepts it.
    (v, k, h), *_ = _chain("stage-ws", 1, inputs=' \n{"a": 1}')
    stager = _stager(ch)
    assert stager.screen(v, k, h, 0, 0) is not None
    assert stager.stage() == {0: "inputs"}
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    assert isinstance(verifier.check(v, k, h), VerifiedEvent)


def test_unsigned_events_are_flagged_in_strict_mode(ch: Any) -> None:
    stager = _stager(ch, require_signed=True)
    for i, (v, k, h) in enumerate(_chain("stage-unsigned", 2)):
        assert stager.screen(v, k, h, 0, i) is not None
    assert stager.stage() == {0: "unattested", 1: "unattested"}


def test_only_the_accepted_events_are_copied(ch: Any, database: str) -> None:
    messages = _chain("stage-keep", 10)
    stager = _stager(ch)
    for i, (v, k, h) in enumerate(messages):
        stager.screen(v, k, h, 0, i)
    assert stager.stage() == {}
    Store(ch, database).copy_staged(stager.selection([1, 4, 5], len(stager)), "keep")
    stored = ch.query(f"SELECT seq FROM {database}.decisions ORDER BY seq").result_rows
    assert [s for (s,) in stored] == [2, 5, 6]


class _Sent:
    """The real chDB client, noting each command's statement and each insert's settings."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.commands: list[str] = []
        self.inserts: dict[str, dict[str, Any]] = {}

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.commands.append(sql)
        return self.client.command(sql, *args, **kwargs)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        self.inserts[table.rsplit(".", 1)[-1]] = kwargs.get("settings") or {}
        return self.client.insert(table, *args, **kwargs)


def test_every_store_insert_waits_for_a_distributed_table_to_store_it(
    ch: Any, database: str
) -> None:
    # Offsets are committed after the insert returns: through a Distributed table (a cluster)
    # the rows are only stored by then with distributed_foreground_insert = 1; one node
    # (chDB here) accepts the setting and stores the rows.
    messages = _chain("stage-fg", 4)
    stager = _stager(ch)
    for i, (v, k, h) in enumerate(messages):
        stager.screen(v, k, h, 0, i)
    assert stager.stage() == {}
    sent = _Sent(ch)
    store = Store(sent, database)
    store.copy_staged(stager.selection([0, 1], len(stager)), "fg")
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    columns = DecisionColumns()
    for i, (v, k, h) in enumerate(messages[2:], start=2):
        checked = verifier.check(v, k, h)
        assert isinstance(checked, VerifiedEvent)
        columns.append(checked, v, 0, i)
    store.insert_decisions(columns, "fg2")
    store.insert_incidents([["gap", "stage-fg", 7, 5, 6, "test", 0, 9]], "fg")
    rejection = Rejection(Reason.EMPTY_VALUE, "")
    store.insert_quarantine([QuarantineRow("t", 0, 10, None, rejection, b"")], "fg")

    (copy,) = [c for c in sent.commands if c.startswith("INSERT")]
    assert "distributed_foreground_insert = 1" in copy
    assert set(sent.inserts) == {"decisions", "incidents", "quarantine"}
    for table, settings in sent.inserts.items():
        assert settings.get("distributed_foreground_insert") == 1, table
    stored = ch.query(f"SELECT seq FROM {database}.decisions ORDER BY seq").result_rows
    assert [s for (s,) in stored] == [1, 2, 3, 4]
    for table in ("incidents", "quarantine"):
        assert ch.command(f"SELECT count() FROM {database}.{table}") == 1, table


def test_partitions_and_offsets_of_every_size_are_stored(ch: Any, database: str) -> None:
    offsets = [5, 8191, 8192, 70_000, 0xFFFFF, 0x100000, 2**40]
    stager = _stager(ch)
    for (v, k, h), offset in zip(_chain("stage-offsets", len(offsets)), offsets, strict=True):
        assert stager.screen(v, k, h, 9000, offset) is not None
    assert stager.stage() == {}
    selection = stager.selection(list(range(len(offsets))), len(offsets))
    Store(ch, database).copy_staged(selection, "offsets")
    rows = ch.query(
        f"SELECT kafka_partition, kafka_offset FROM {database}.decisions "
        "WHERE producer_id = 'stage-offsets' ORDER BY seq"
    ).result_rows
    assert rows == [(9000, o) for o in offsets]


def test_a_batch_clickhouse_cannot_parse_raises(ch: Any) -> None:
    pid = "stage-cut"
    prev = genesis_hash(pid, 7)
    value, key, _ = _message(pid, event_record(pid, 7, 1, prev))
    body = value[10:70] + prev  # cut in the middle, still ending like a body
    stager = _stager(ch)
    headers: Any = [(EVENT_HASH_HEADER, chain_hash(prev, body))]
    assert stager.screen(value[:10] + body, key, headers, 0, 0) is not None
    with pytest.raises(Exception, match=r"(?i)avro|EOF|parse|cannot"):
        stager.stage()


def test_what_cannot_be_staged_is_left_to_the_verifier(ch: Any) -> None:
    (value, key, headers), *_ = _chain("stage-skip", 1)
    stager = _stager(ch)
    assert stager.screen(value, key, None, 0, 0) is None  # no hash header
    assert stager.screen(value, key, [(EVENT_HASH_HEADER, b"short")], 0, 0) is None
    assert stager.screen(value, None, headers, 0, 0) is None  # no key
    assert stager.screen(b"\xc3\x01" + b"\x00" * 8 + value[10:], key, headers, 0, 0) is None
    assert stager.screen(b"not avro at all" * 10, key, headers, 0, 0) is None
    assert stager.screen(value, b"\xff\xfe", headers, 0, 0) is None  # key is not UTF-8
    assert len(stager) == 0
