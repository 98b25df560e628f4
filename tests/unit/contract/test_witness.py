"""The witness statement's bytes: canonical, round-trip, and refused when not."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from decision_audit.contract.witness import (
    GENESIS,
    ChainSet,
    Statement,
    WitnessedChain,
    WitnessFormatError,
    complete_restatements,
    decode,
    delta_statements,
    envelope,
    full_statements,
    latest_restatement,
    open_envelope,
    set_digest,
    statement_hash,
    undo,
)

AT = datetime(2026, 1, 1, 0, 0, 5, 123000, tzinfo=UTC)


CHAINS = (
    WitnessedChain("review", "p/reviews", 2, 7, b"\x02" * 32, AT),
    WitnessedChain("decision_event", "p", 1, 42, b"\x01" * 32, AT),
)


def _statement(version: int = 2) -> Statement:
    if version == 1:
        return Statement("worker-a", 3, GENESIS, AT, CHAINS, version=1)
    return Statement("worker-a", 3, GENESIS, AT, CHAINS, 5, set_digest(CHAINS))


def test_statements_round_trip_through_their_canonical_bytes() -> None:
    data = _statement().encode()
    assert data.startswith(b'{"chains":[{"epoch":1,"first_seen":"2026-01-01T00:00:05.123Z"')
    st = decode(data)
    assert st.encode() == data
    assert [c.kind for c in st.chains] == ["decision_event", "review"]  # sorted by kind, chain
    assert open_envelope(envelope(data, b"sig")) == (data, b"sig")
    assert (st.version, st.total, st.digest) == (3, 5, set_digest(CHAINS))
    assert b'"digest":"' in data and b'"total":5,' in data and b'"version":3,' in data


def test_version_1_statements_are_still_read() -> None:
    data = _statement(version=1).encode()
    assert b"digest" not in data and b'"version":1,' in data
    st = decode(data)
    assert st.version == 1 and st.encode() == data and len(st.chains) == 2


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"type":"other","version":1}',
        _statement().encode().replace(b'"seq":3', b'"seq": 3'),  # not canonical
        _statement().encode().replace(b'"prev_hash":"' + b"0" * 64, b'"prev_hash":"' + b"0" * 62),
        _statement().encode().replace(b'"version":3', b'"version":4'),
        _statement(version=1).encode().replace(b'"version":1', b'"version":2'),  # no digest
        Statement("w", 1, GENESIS, AT, (CHAINS[0], CHAINS[0])).encode(),  # a chain twice
    ],
)
def test_anything_else_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(WitnessFormatError):
        decode(data)


def test_the_digest_is_of_the_set_whatever_the_order_it_was_built_in() -> None:
    chains = [
        WitnessedChain("decision_event", f"p{i}", i, i, bytes([i]) * 32, AT) for i in range(50)
    ]
    built = ChainSet()
    for c in reversed(chains):
        built.put(c)
    assert built.digest() == set_digest(chains) == ChainSet(chains).digest()
    moved = ChainSet(chains)
    moved.put(WitnessedChain("decision_event", "p3", 3, 4, bytes([3]) * 32, AT))
    assert moved.digest() != set_digest(chains)


def test_changes_too_big_for_one_message_are_split_over_linked_statements() -> None:
    chains = ChainSet([CHAINS[0]])
    before = chains.digest()
    changed = [WitnessedChain("decision_event", f"p{i}", i, 1, bytes(32), AT) for i in range(40)]
    out = list(delta_statements("w", 2, b"\x07" * 32, AT, chains, changed, max_bytes=4_000))
    assert len(out) > 2
    assert all(len(envelope(d, bytes(64))) <= 4_000 for _, d, _ in out)
    assert [st.seq for st, _, _ in out] == list(range(2, 2 + len(out)))
    assert out[0][0].prev_hash == b"\x07" * 32
    for (_, prev, _), (st, _, _) in itertools.pairwise(out):
        assert st.prev_hash == statement_hash(prev)
    assert sorted(c.producer_id for st, _, _ in out for c in st.chains) == sorted(
        c.producer_id for c in changed
    )
    assert out[-1][0].total == 41 and out[-1][0].digest == set_digest([CHAINS[0], *changed])
    for _, _, replaced in reversed(out):  # none written: the set is as it was
        undo(chains, replaced)
    assert len(chains) == 1 and chains.digest() == before


def test_a_full_restatement_is_split_over_parts_that_commit_to_the_whole_set() -> None:
    chains = ChainSet(
        WitnessedChain("decision_event", f"p{i}", i, 3, bytes([i]) * 32, AT) for i in range(30)
    )
    before = chains.digest()
    moved = WitnessedChain("decision_event", "p4", 4, 9, b"\x09" * 32, AT)
    new = WitnessedChain("review", "q", 1, 1, b"\x05" * 32, AT)
    out = list(full_statements("w", 8, b"\x07" * 32, AT, chains, [moved, new], max_bytes=3_000))
    n = len(out)
    assert n > 2 and all(len(envelope(d, bytes(64))) <= 3_000 for _, d, _ in out)
    assert [(st.seq, st.full, st.version) for st, _, _ in out] == [
        (8 + i, (i + 1, n), 3) for i in range(n)
    ]
    for (_, prev, _), (st, _, _) in itertools.pairwise(out):
        assert st.prev_hash == statement_hash(prev)
    listed = [c for st, _, _ in out for c in st.chains]
    assert len(listed) == 31 and ChainSet(listed).digest() == chains.digest()
    assert {(st.total, st.digest) for st, _, _ in out} == {(31, set_digest(listed))}
    assert moved in listed and new in listed
    assert all(decode(d) == st for st, d, _ in out)
    assert b'"full":{"of":' + str(n).encode() + b',"part":1}' in out[0][1]
    for _, _, replaced in reversed(out):  # none written: the set is as it was
        undo(chains, replaced)
    assert len(chains) == 30 and chains.digest() == before


def test_version_2_statements_are_still_read() -> None:
    data = replace(_statement(), version=2).encode()
    assert b'"version":2,' in data
    st = decode(data)
    assert (st.version, st.full, st.marker) == (2, None, (0, 0)) and st.encode() == data


@pytest.mark.parametrize(
    "data",
    [
        replace(_statement(), full=(1, 2)).encode().replace(b'"version":3', b'"version":2'),
        replace(_statement(), full=(3, 2)).encode(),
        replace(_statement(), full=(0, 2)).encode(),
    ],
)
def test_a_restatement_marker_is_version_3_and_a_part_within_its_count(data: bytes) -> None:
    with pytest.raises(WitnessFormatError):
        decode(data)


def test_the_latest_complete_restatement_is_found_and_an_incomplete_one_skipped() -> None:
    delta = (0, 0)
    # 1: v1 (one part); 2-4: parts 1..3 of 3; 5: a delta; 6-7: parts 1..2 of 3 (the worker
    # stopped before the last part); 8: a delta
    markers = {1: (1, 1), 2: (1, 3), 3: (2, 3), 4: (3, 3), 5: delta, 6: (1, 3), 7: (2, 3)}
    markers[8] = delta
    assert complete_restatements(markers) == [(1, 1), (2, 4)]
    assert latest_restatement(markers, 0) == 2
    # A last part whose first parts were deleted does not count either.
    gapped = {**markers, 9: (1, 2), 11: (2, 2)}
    assert latest_restatement(gapped, 0) == 2
    # Reading back from the end: parts 2..4 alone cannot tell yet, 2..11 can.
    assert latest_restatement({s: m for s, m in markers.items() if s > 2}, 2) is None
    assert latest_restatement({s: m for s, m in markers.items() if s > 1}, 1) == 2
    assert latest_restatement({5: delta, 8: delta}, 4) is None
    assert latest_restatement({1: delta, 2: delta}, 0) == 0
