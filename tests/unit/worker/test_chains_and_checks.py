"""Pure worker logic: watermarks, batch tokens, verification, settings."""

from __future__ import annotations

import pytest

from decision_audit.contract import default_codec
from decision_audit.contract.hashing import genesis_hash
from decision_audit.worker.chains import ChainTracker, Outcome, Verdict
from decision_audit.worker.checks import EventVerifier, Rejection, VerifiedEvent
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.store import batch_token
from tests.helpers import craft_chain


def test_chain_tracker_judges_links_and_advances_only_on_commit() -> None:
    looked_up: list[set[tuple[str, int]]] = []
    h = [bytes([i]) * 32 for i in range(10)]

    def lookup(chains: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, bytes]]:
        looked_up.append(chains)
        return {("a", 1): (5, h[5])}

    t = ChainTracker(lookup)
    t.prepare([("a", 1), ("b", 1)])
    assert t.accept(("a", 1), 5, h[4], h[5]).outcome is Outcome.DUPLICATE
    assert t.accept(("a", 1), 5, h[4], h[9]).outcome is Outcome.FORK
    assert t.accept(("a", 1), 6, h[9], h[6]).outcome is Outcome.BREAK
    assert t.accept(("a", 1), 6, h[5], h[6]) == Verdict(Outcome.NEW)
    assert t.accept(("a", 1), 6, h[5], h[6]).outcome is Outcome.DUPLICATE  # within the batch
    assert t.accept(("a", 1), 9, h[8], h[9]) == Verdict(Outcome.NEW, gap=(7, 8))
    # A new chain starts from its genesis hash.
    assert t.accept(("b", 1), 1, b"\x00" * 32, h[1]).outcome is Outcome.BREAK
    assert t.accept(("b", 1), 1, genesis_hash("b", 1), h[1]).outcome is Outcome.NEW
    t.abort()  # insert failed: nothing advanced
    assert t.accept(("a", 1), 6, h[5], h[6]).outcome is Outcome.NEW
    t.commit()
    assert t.head(("a", 1)) == (6, h[6])
    t.prepare([("a", 1)])
    assert len(looked_up) == 1  # cached until reset
    t.reset()
    t.prepare([("a", 1)])
    assert len(looked_up) == 2


def test_batch_token_is_deterministic_and_content_bound() -> None:
    def token(*messages: tuple[int, int, bytes | None]) -> str:
        partitions, offsets, values = zip(*messages, strict=True)
        return batch_token("t", partitions, offsets, values)

    a = [(0, 10, b"x"), (0, 11, b"y"), (2, 5, b"z")]
    assert token(*a) == token(*a)
    assert token(*a).startswith("t/0:10-11,2:5-5/")
    assert token((0, 11, b"y"), (0, 10, b"x"), (2, 5, b"z")).startswith("t/0:10-11,2:5-5/")
    # Same offsets, other bytes (e.g. a broker that lost its log): another token.
    assert token(*a) != token((0, 10, b"x"), (0, 11, b"Y"), (2, 5, b"z"))
    # The same bytes split otherwise between the offsets: another token.
    assert token((0, 10, b"xy"), (0, 11, b"")) != token((0, 10, b"x"), (0, 11, b"y"))
    assert token((0, 10, None)) == token((0, 10, b""))


def _verifier(max_bytes: int = 1_000_000) -> EventVerifier:
    return EventVerifier(default_codec(), max_event_bytes=max_bytes)


def test_verifier_accepts_a_valid_message() -> None:
    value, h = craft_chain("p", 1)[0]
    result = _verifier().check(value, b"p", [("da-event-hash", h)])
    assert isinstance(result, VerifiedEvent) and result.event_hash == h


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda v, h, k: (None, h, k), "empty_value"),
        (lambda v, h, k: (v + b"\x00" * 2_000_000, h, k), "oversized"),
        (lambda v, h, k: (v, b"\x00" * 32, k), "hash_mismatch"),
        (lambda v, h, k: (v, h, b"other"), "key_mismatch"),
    ],
)
def test_verifier_rejections(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    value, h = craft_chain("p", 1)[0]
    v, hh, k = mutate(value, h, b"p")
    result = _verifier().check(v, k, [("da-event-hash", hh)])
    assert isinstance(result, Rejection) and result.reason == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"score": float("nan")}, "invalid_event"),
        ({"latency_ms": float("inf")}, "invalid_event"),
        ({"inputs": "{not json"}, "invalid_event"),
        ({"inputs": "[1,2]"}, "invalid_event"),
        ({"event_id": "not-a-uuid"}, "invalid_event"),
        ({"model_name": ""}, "invalid_event"),
    ],
)
def test_verifier_field_contract(fields: dict[str, object], reason: str) -> None:
    value, h = craft_chain("p", 1, **fields)[0]
    result = _verifier().check(value, b"p", [("da-event-hash", h)])
    assert isinstance(result, Rejection) and result.reason == reason, result


def test_verifier_rejects_implausible_timestamps() -> None:
    from datetime import UTC, datetime

    for ts in (datetime(1971, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)):
        value, h = craft_chain("p", 1, occurred_at=ts)[0]
        result = _verifier().check(value, b"p", [("da-event-hash", h)])
        assert isinstance(result, Rejection) and result.reason == "invalid_timestamp"


def test_settings_read_env_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECISION_AUDIT_BATCH_SIZE", "123")
    monkeypatch.setenv("DECISION_AUDIT_TOPIC", "from-env")
    s = WorkerSettings(topic="from-flag")
    assert (s.batch_size, s.topic) == (123, "from-flag")
    conf = s.consumer_config()
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False


def test_events_below_the_head_are_settled_against_the_stored_ones() -> None:
    h = {i: bytes([i]) * 32 for i in range(1, 10)}
    stored = {("a", 1, 2): h[2], ("a", 1, 3): h[3]}
    t = ChainTracker(
        lambda _: {("a", 1): (5, h[5])}, lambda links: {k: stored[k] for k in links if k in stored}
    )
    t.prepare([("a", 1)])
    assert t.accept(("a", 1), 2, h[1], h[2]).outcome is Outcome.BEHIND
    assert t.settle([(("a", 1, 2), h[2]), (("a", 1, 3), h[9]), (("a", 1, 4), h[4])]) == [
        Outcome.DUPLICATE,
        Outcome.FORK,
        Outcome.LATE,
    ]
    assert t.accept(("a", 1), 6, h[5], h[6]).outcome is Outcome.NEW
    assert t.accept(("a", 1), 5, h[4], h[5]).outcome is Outcome.BEHIND
    t.accept(("a", 1), 7, h[6], h[7])
    # Within the batch the tracker remembers what it accepted.
    assert t.accept(("a", 1), 6, h[5], h[6]).outcome is Outcome.DUPLICATE
    assert t.accept(("a", 1), 6, h[5], h[9]).outcome is Outcome.FORK
