"""The link walker verify and trace share: what it finds, in a chain built in memory."""

from __future__ import annotations

import hashlib

from decision_audit.audit.chain_walk import ChainRow, ChainWalk, Fault, Finding
from decision_audit.contract import genesis_hash


def _chain(n: int, pid: str = "p", epoch: int = 1) -> list[ChainRow]:
    prev = genesis_hash(pid, epoch)
    rows = []
    for seq in range(1, n + 1):
        h = hashlib.sha256(prev + bytes([seq])).digest()
        rows.append(ChainRow(seq, f"e{seq}", prev, h))
        prev = h
    return rows


def _walk(rows: list[ChainRow], **kwargs: object) -> tuple[ChainWalk, list[Finding]]:
    walk = ChainWalk("p", 1, **kwargs)  # type: ignore[arg-type]
    found = [f for row in rows for f in walk.step(row)]
    end = walk.end()
    return walk, found if end is None else [*found, end]


def _faults(found: list[Finding]) -> list[tuple[Fault, int, int]]:
    return [(f.fault, f.first, f.last) for f in found]


def test_a_sound_chain_is_attested_up_to_its_last_signed_head() -> None:
    rows = _chain(10)
    walk, found = _walk(rows, signed_heads={4: rows[3].event_hash, 8: rows[7].event_hash})
    assert found == []
    assert (walk.first_seq, walk.last_seq, walk.attested_to, walk.expected) == (1, 10, 8, 11)


def test_gaps_repeats_breaks_and_a_wrong_genesis_are_found_where_they_are() -> None:
    rows = _chain(8)
    off = ChainRow(1, "e1", b"\x00" * 32, rows[0].event_hash)
    broken = ChainRow(6, "e6", b"\x01" * 32, rows[5].event_hash)
    repeat = ChainRow(3, "x3", rows[1].event_hash, b"\x02" * 32)
    _, found = _walk([off, rows[1], rows[2], repeat, rows[4], broken, rows[6], rows[7]])
    assert _faults(found) == [
        (Fault.OFF_GENESIS, 1, 1),
        (Fault.REPEATED, 3, 3),
        (Fault.MISSING, 4, 4),
        (Fault.BREAK, 6, 6),  # (its own hash is the original's: seq 7 links to it)
    ]
    assert [(f.prev.event_id if f.prev else None) for f in found] == [None, "e3", "e3", "e5"]
    assert found[1].row is repeat  # the first event of a seq is the one the chain continues from


def test_what_is_missing_at_either_end() -> None:
    rows = _chain(10)
    _, found = _walk(rows[3:7], signed_heads={10: rows[9].event_hash})
    assert _faults(found) == [(Fault.MISSING, 1, 3), (Fault.MISSING, 8, 10)]
    assert found[0].prev is None and found[1].row is None


def test_a_signed_head_that_names_another_event() -> None:
    rows = _chain(5)
    walk, found = _walk(rows, signed_heads={2: rows[1].event_hash, 4: b"\x03" * 32})
    assert _faults(found) == [(Fault.HEAD_MISMATCH, 4, 4)]
    assert walk.attested_to == 2


def test_a_walk_from_the_middle_takes_its_first_event_on_trust() -> None:
    rows = _chain(6)
    tampered = ChainRow(3, "e3", b"\x04" * 32, rows[2].event_hash)
    _, found = _walk([tampered, *rows[3:]], start=3)
    assert found == []
    _, found = _walk(rows[3:], start=3)
    assert _faults(found) == [(Fault.MISSING, 3, 3)]
