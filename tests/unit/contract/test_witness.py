"""The witness statement's bytes: canonical, round-trip, and refused when not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from decision_audit.contract.witness import (
    GENESIS,
    Statement,
    WitnessedChain,
    WitnessFormatError,
    decode,
    envelope,
    open_envelope,
)

AT = datetime(2026, 1, 1, 0, 0, 5, 123000, tzinfo=UTC)


def _statement() -> Statement:
    chains = (
        WitnessedChain("review", "p/reviews", 2, 7, b"\x02" * 32, AT),
        WitnessedChain("decision_event", "p", 1, 42, b"\x01" * 32, AT),
    )
    return Statement("worker-a", 3, GENESIS, AT, chains)


def test_statements_round_trip_through_their_canonical_bytes() -> None:
    data = _statement().encode()
    assert data.startswith(b'{"chains":[{"epoch":1,"first_seen":"2026-01-01T00:00:05.123Z"')
    st = decode(data)
    assert st.encode() == data
    assert [c.kind for c in st.chains] == ["decision_event", "review"]  # sorted by kind, chain
    assert open_envelope(envelope(data, b"sig")) == (data, b"sig")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"type":"other","version":1}',
        _statement().encode().replace(b'"seq":3', b'"seq": 3'),  # not canonical
        _statement().encode().replace(b'"prev_hash":"' + b"0" * 64, b'"prev_hash":"' + b"0" * 62),
    ],
)
def test_anything_else_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(WitnessFormatError):
        decode(data)
