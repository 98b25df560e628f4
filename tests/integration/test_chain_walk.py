"""`verify` and `trace` walk the same chain links (audit/chain_walk.py): tampered chains in chDB.

Each case stores a hand-made chain (10 events, signed checkpoints at seq 5 and 10) with one
tampering and checks what ``verify`` reports and what ``trace`` says of the decisions around
it: a deleted row, a broken link, a first event off its genesis, a duplicated seq, a
checkpoint naming another head, a row whose original bytes were replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from decision_audit.audit.trace import Tracer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.keys import KeyRing
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.worker.checks import EventVerifier, VerifiedEvent
from decision_audit.worker.store import DecisionColumns, Store
from tests.helpers import event_record

pytestmark = pytest.mark.integration

PID, EPOCH = "walk", 3
Event = tuple[dict[str, Any], bytes, bytes]
"""``(record, message, event_hash)``"""


def _encode(rec: dict[str, Any]) -> tuple[bytes, bytes]:
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    body = codec.encode_body(schema, rec)
    return codec.frame(schema, body), chain_hash(rec["prev_hash"], body)


def _chain(n: int = 10) -> list[Event]:
    prev = genesis_hash(PID, EPOCH)
    out = []
    for seq in range(1, n + 1):
        rec = event_record(
            PID, EPOCH, seq, prev, occurred_at=datetime(2025, 1, 1, tzinfo=UTC), key_id="walk"
        )
        value, h = _encode(rec)
        out.append((rec, value, h))
        prev = h
    return out


def _reencoded(event: Event, **fields: Any) -> Event:
    rec = {**event[0], **fields}
    return (rec, *_encode(rec))


def _store(ch: Any, db: str, events: list[Event], heads: dict[int, bytes], keys: Path) -> None:
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000)
    columns = DecisionColumns()
    for i, (_rec, value, h) in enumerate(events):
        checked = verifier.check(value, PID.encode(), [(EVENT_HASH_HEADER, h)])
        assert isinstance(checked, VerifiedEvent)
        columns.append(checked, value, 0, i)
    sink = Store(ch, db)
    sink.insert_decisions(columns, "walk")
    signer = Signer(keys / "walk.key")
    rows = [
        [
            PID,
            EPOCH,
            seq,
            head,
            "walk",
            "ed25519",
            signer.sign(checkpoint_message(PID, EPOCH, seq, head)),
            datetime(2025, 1, 1, tzinfo=UTC),
            True,
            b"",
            0,
            100 + seq,
        ]
        for seq, head in heads.items()
    ]
    sink.insert_checkpoints(rows, "walk")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path, "walk")
    return tmp_path


def _problems(ch: Any, db: str, keys: Path) -> list[tuple[str, int | None, str, int]]:
    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    return [(p.kind, p.seq, p.detail, len(p.event_ids)) for c in report.chains for p in c.problems]


def _trace(ch: Any, db: str, keys: Path, event: Event) -> dict[str, Any]:
    integrity = Tracer(ch, db, KeyRing.load(keys)).trace(event[0]["event_id"]).integrity
    return {
        "ok": integrity.ok,
        "hash": integrity.hash_ok,
        "columns": integrity.columns_ok,
        "link": integrity.link_ok,
        "cp": (integrity.checkpoint_seq, integrity.checkpoint_ok),
        "problems": integrity.problems,
    }


def _heads(events: list[Event]) -> dict[int, bytes]:
    return {5: events[4][2], 10: events[9][2]}


def test_a_clean_chain(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    _store(ch, database, events, _heads(events), keys)
    assert _problems(ch, database, keys) == []
    report = TrailVerifier(ch, database, KeyRing.load(keys)).run()
    assert [(c.first_seq, c.last_seq, c.attested_to) for c in report.chains] == [(1, 10, 10)]
    for seq, cp in ((1, 5), (3, 5), (5, 5), (6, 10), (10, 10)):
        t = _trace(ch, database, keys, events[seq - 1])
        assert t == {
            "ok": True,
            "hash": True,
            "columns": True,
            "link": True,
            "cp": (cp, True),
            "problems": [],
        }


def test_a_deleted_row(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    heads = _heads(events)
    _store(ch, database, [e for e in events if e[0]["seq"] != 4], heads, keys)
    assert _problems(ch, database, keys) == [("deleted_rows", 4, "seq 4..4 missing", 2)]
    before = _trace(ch, database, keys, events[2])
    assert before["link"] and not before["ok"]
    assert before["cp"] == (5, False)
    assert before["problems"] == ["seq 4..4 missing before checkpoint"]
    after = _trace(ch, database, keys, events[4])
    assert not after["link"] and after["cp"] == (5, True)
    assert after["problems"] == [f"chain link missing: seq 4 of {PID}/{EPOCH} is not stored"]


def test_deleted_rows_at_the_start_and_the_end(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    _store(ch, database, events[2:8], _heads(events), keys)
    assert _problems(ch, database, keys) == [
        ("deleted_rows", 1, "seq 1..2 missing", 0),
        (
            "deleted_rows",
            9,
            "checkpoint at seq 10 attests events up to there; stored chain ends at 8",
            0,
        ),
        ("missing_checkpoint", 6, "seq 6..8 covered by no valid checkpoint", 0),
    ]
    t = _trace(ch, database, keys, events[6])
    assert t["cp"] == (10, False) and t["link"]
    assert t["problems"] == ["seq 9..10 missing before checkpoint"]


def test_a_broken_link(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    heads = _heads(events)
    events[5] = _reencoded(events[5], prev_hash=b"\x01" * 32)  # seq 6 links elsewhere
    _store(ch, database, events, heads, keys)
    # seq 7 still names the original seq 6: the replaced one breaks two links.
    assert _problems(ch, database, keys) == [
        ("chain_break", 6, "prev_hash of seq 6 is not the hash of seq 5", 2),
        ("chain_break", 7, "prev_hash of seq 7 is not the hash of seq 6", 2),
    ]
    t = _trace(ch, database, keys, events[5])
    assert t["hash"] and t["columns"] and not t["link"] and t["cp"] == (10, False)
    assert t["problems"] == [
        f"prev_hash is not the hash of seq 5 of {PID}/{EPOCH}",
        "seq 7: hash or link broken between decision and checkpoint",
    ]
    t = _trace(ch, database, keys, events[6])
    assert not t["link"] and t["cp"] == (10, True)
    assert t["problems"] == [f"prev_hash is not the hash of seq 6 of {PID}/{EPOCH}"]
    assert _trace(ch, database, keys, events[3])["ok"]  # covered by checkpoint 5


def test_a_first_event_off_its_genesis(ch: Any, database: str, keys: Path) -> None:
    events = _chain(3)
    events[0] = _reencoded(events[0], prev_hash=b"\x02" * 32)
    _store(ch, database, events, {}, keys)
    assert _problems(ch, database, keys) == [
        ("chain_break", 1, "first event does not link to the chain's genesis", 1),
        ("chain_break", 2, "prev_hash of seq 2 is not the hash of seq 1", 2),
        ("missing_checkpoint", 1, "seq 1..3 covered by no valid checkpoint", 0),
    ]
    t = _trace(ch, database, keys, events[0])
    assert not t["link"] and t["problems"] == ["seq 1 does not link to its chain's genesis"]


def test_a_duplicated_seq(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    heads = _heads(events)
    forged = _reencoded(events[6], event_id="01900000-0000-7000-8000-000000000001")
    _store(ch, database, [*events, forged], heads, keys)
    # The forged event's id sorts first: the walk keeps it, and seq 8 does not link to it.
    assert _problems(ch, database, keys) == [
        ("inserted_row", 7, "two events claim seq 7", 2),
        ("chain_break", 8, "prev_hash of seq 8 is not the hash of seq 7", 2),
    ]
    t = _trace(ch, database, keys, events[5])
    assert t["link"] and t["cp"] == (10, False)
    assert t["problems"] == ["seq 7: two events claim it between decision and checkpoint"]


def test_a_checkpoint_naming_another_head(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    heads = {**_heads(events), 5: b"\x03" * 32}
    _store(ch, database, events, heads, keys)
    assert _problems(ch, database, keys) == [
        ("checkpoint_mismatch", 5, "signed head differs from the stored event's hash", 1)
    ]
    t = _trace(ch, database, keys, events[2])
    assert t["cp"] == (5, False) and t["link"]
    assert t["problems"] == ["checkpoint 5 names another chain head"]


def test_replaced_original_bytes(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    heads = _heads(events)
    _store(ch, database, events, heads, keys)
    # The stored raw bytes of seq 3 now say another prediction; its columns are unchanged.
    raw = _reencoded(events[2], prediction="forged")[1]
    ch.command(
        f"ALTER TABLE {database}.decisions UPDATE raw = {{raw:String}} WHERE seq = 3",
        parameters={"raw": raw},
        settings={"mutations_sync": 2},
    )
    kinds = [(k, s) for k, s, _, _ in _problems(ch, database, keys)]
    assert kinds == [("altered_row", 3), ("altered_row", 3), ("chain_break", 4)]
    t = _trace(ch, database, keys, events[2])
    assert not t["hash"] and not t["columns"] and t["cp"] == (5, False)
    t = _trace(ch, database, keys, events[1])
    assert t["link"] and t["cp"] == (5, False)
    assert t["problems"] == ["seq 3: hash or link broken between decision and checkpoint"]
    # The next decision's link is to the original seq 3, not to what is stored now.
    t = _trace(ch, database, keys, events[3])
    assert not t["link"] and t["cp"] == (5, True)
    assert t["problems"] == ["seq 3: stored event_hash differs from SHA-256(prev_hash || raw body)"]


def test_an_altered_event_hash_column(ch: Any, database: str, keys: Path) -> None:
    events = _chain()
    _store(ch, database, events, _heads(events), keys)
    ch.command(
        f"ALTER TABLE {database}.decisions UPDATE event_hash = unhex(repeat('ab', 32)) "
        "WHERE seq = 3",
        settings={"mutations_sync": 2},
    )
    assert _problems(ch, database, keys) == [
        ("altered_row", 3, "event_hash differs from SHA-256 of raw", 1)
    ]
    t = _trace(ch, database, keys, events[2])
    assert not t["hash"] and t["link"] and t["cp"] == (5, False)
    t = _trace(ch, database, keys, events[3])
    assert not t["link"] and t["cp"] == (5, True) and t["hash"]
