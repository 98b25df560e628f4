"""The producer's whole record: failed inferences, outcomes and reviews (no services).

The producer points at a closed port with a spool: what it would have sent stays in the spool,
in order, and is read back and decoded here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from decision_audit import AuditProducer, RedactionPolicy
from decision_audit.contract import default_codec
from decision_audit.contract.fields import MAX_FOLLOW_UP_VALUE, MAX_REASON, OUTCOME, REVIEW
from decision_audit.contract.keys import KeyRing
from decision_audit.devtools.tansu_broker import free_port
from decision_audit.producer.redaction import (
    ELLIPSIS,
    HASH_PREFIX,
    TextRule,
    ValueRule,
    redact_text,
    truncate,
)
from decision_audit.producer.signing import generate_keypair
from decision_audit.producer.spool import Spool

CODEC = default_codec()
Opened = Callable[..., AuditProducer]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opened]:
    made: list[AuditProducer] = []

    def open_(**kw: Any) -> AuditProducer:
        p = AuditProducer(
            f"127.0.0.1:{free_port()}",
            producer_id="unit",
            spool_dir=tmp_path / f"spool-{len(made)}",
            **kw,
        )
        made.append(p)
        return p

    yield open_
    for p in made:
        p.close(0)


def sent(p: AuditProducer) -> list[tuple[str, bytes, dict[str, Any], str]]:
    """Close ``p``; ``(topic, key, record, record kind)`` of everything it enqueued."""
    p.close(0.2)
    assert p.settings.spool_dir is not None
    out = []
    with Spool(p.settings.spool_dir, 1 << 30) as spool:
        while got := spool.read(1000, 1 << 30):
            for r, _, _ in got:
                decoded = CODEC.decode(r.value or b"")
                out.append((r.topic, r.key or b"", decoded.record, decoded.writer.name))
    return out


def test_a_failed_inference_is_a_decision_with_its_status_and_error(opened: Opened) -> None:
    p = opened()
    try:
        raise TimeoutError("no answer in 250 ms")
    except TimeoutError as exc:
        p.log_decision("m", "1", {"a": 1}, status="timeout", error=exc, latency_ms=250.0)
    p.log_decision("m", "1", {"a": 2}, error=ValueError("feature 'age' is missing"))
    p.log_decision("m", "1", {"a": 3}, "decline", status="fallback", error_type="ModelUnavailable")
    p.log_decision("m", "1", {"a": 4}, status="rejected", error_message="out of domain")
    p.log_decision("m", "1", {"a": 5}, "approve")
    got = [
        (r["status"], r["error_type"], r["error_message"], r["prediction"]) for *_, r, _ in sent(p)
    ]
    assert got == [
        ("timeout", "TimeoutError", "no answer in 250 ms", None),
        ("error", "ValueError", "feature 'age' is missing", None),
        ("fallback", "ModelUnavailable", None, "decline"),
        ("rejected", None, "out of domain", None),
        ("ok", None, None, "approve"),
    ]


class _ScoringError(Exception):
    pass


def test_an_error_is_named_by_its_module_and_class(opened: Opened) -> None:
    p = opened()
    p.log_decision("m", "1", {}, error=_ScoringError())
    ((*_, rec, _),) = sent(p)
    assert rec["error_type"] == f"{__name__}._ScoringError" and rec["error_message"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "prediction is required when status is 'ok'"),
        ({"prediction": "y", "status": "ok", "error_type": "X"}, "give a status other than"),
        ({"status": "exploded"}, "status"),
        ({"status": "error", "error_type": ""}, "error_type"),
    ],
)
def test_bad_status_arguments_raise_naming_the_field(
    opened: Opened, kwargs: dict[str, Any], match: str
) -> None:
    p = opened()
    with pytest.raises(ValueError, match=match):
        p.log_decision("m", "1", {"a": 1}, **kwargs)
    assert p.last_seq == 0


def test_an_older_pinned_schema_refuses_a_failed_inference(opened: Opened) -> None:
    p = opened(schema_version=3)
    p.log_decision("m", "1", {}, "y", status="ok")  # a decision v3 can carry
    with pytest.raises(ValueError, match="needs decision_event v4"):
        p.log_decision("m", "1", {}, status="error")
    assert p.last_seq == 1


def test_an_error_message_is_kept_but_cut_without_a_policy(opened: Opened) -> None:
    p = opened()
    p.log_decision("m", "1", {}, error=RuntimeError("x" * 5000))
    ((*_, rec, _),) = sent(p)
    assert len(rec["error_message"]) == 1024 and rec["error_message"].endswith(ELLIPSIS)


@pytest.mark.parametrize(
    ("rule", "expect"),
    [
        ({"action": "keep", "max_chars": 10}, "account 1…"),
        ({"action": "mask"}, "***"),
        ({"action": "mask", "replacement": "[redacted]"}, "[redacted]"),
        ({"action": "drop"}, None),
        ({"action": "hash"}, HASH_PREFIX),
    ],
)
def test_the_policy_says_what_an_error_message_becomes(
    opened: Opened, rule: dict[str, Any], expect: str | None
) -> None:
    policy = RedactionPolicy(id="p", version=1, error_message=TextRule(**rule))
    p = opened(redaction=policy, redaction_secret=b"s3cr3t")
    p.log_decision("m", "1", {}, error=LookupError("account 12345 of jane@example.org"))
    ((*_, rec, _),) = sent(p)
    assert rec["redaction_policy"] == "p@1" and rec["error_type"] == "LookupError"
    if expect == HASH_PREFIX:
        assert rec["error_message"].startswith(HASH_PREFIX) and "jane" not in rec["error_message"]
    else:
        assert rec["error_message"] == expect


@pytest.mark.parametrize(
    ("rules", "reason", "final", "actual"),
    [
        ({}, "called jane@example.org", ("limit 5000", False), ('{"repaid":120.5}', True)),
        (
            {"review_reason": TextRule(action="keep", max_chars=6)},
            "calle…",
            ("limit 5000", False),
            ('{"repaid":120.5}', True),
        ),
        (
            {"review_reason": TextRule(action="mask", replacement="[note]")},
            "[note]",
            ("limit 5000", False),
            ('{"repaid":120.5}', True),
        ),
        ({"review_reason": TextRule(action="drop")}, None, ("limit 5000", False), None),
        (
            {"final_decision": ValueRule(action="mask"),
             "outcome_actual": ValueRule(action="mask")},
            "called jane@example.org",
            ("***", False),
            ("***", False),
        ),
        (
            {"review_reason": TextRule(action="hash"), "final_decision": ValueRule(action="hash"),
             "outcome_actual": ValueRule(action="hash")},
            HASH_PREFIX,
            (HASH_PREFIX, False),
            (HASH_PREFIX, False),
        ),
    ],
)  # fmt: skip
def test_the_policy_says_what_a_review_and_an_outcome_become(
    opened: Opened,
    rules: dict[str, Any],
    reason: str | None,
    final: tuple[str, bool],
    actual: tuple[str, bool] | None,
) -> None:
    policy = RedactionPolicy(id="p", version=2, **rules)
    p = opened(redaction=policy, redaction_secret=b"s3cr3t")
    p.log_review("req-1", "j.doe", "override", final_decision="limit 5000",
                 reason="called jane@example.org")  # fmt: skip
    p.log_outcome("req-1", {"repaid": 120.5})
    got = {kind: rec for *_, rec, kind in sent(p)}
    review, outcome = got["review"], got["outcome"]
    assert review["redaction_policy"] == outcome["redaction_policy"] == "p@2"

    def same(value: str | None, expect: str | None) -> bool:
        if expect == HASH_PREFIX:
            return value is not None and value.startswith(HASH_PREFIX) and "jane" not in value
        return value == expect

    assert same(review["reason"], reason)
    assert same(review["final_decision"], final[0])
    assert review["final_decision_is_json"] is final[1]
    if actual is not None:
        assert same(outcome["actual"], actual[0]) and outcome["actual_is_json"] is actual[1]


def test_hashed_follow_ups_join_and_records_without_a_policy_are_unstamped(
    opened: Opened,
) -> None:
    rule = ValueRule(action="hash")
    policy = RedactionPolicy(id="p", version=1, outcome_actual=rule, final_decision=rule)
    p = opened(redaction=policy, redaction_secret=b"s3cr3t")
    p.log_outcome("a", "decline")
    p.log_outcome("b", "decline")
    p.log_review("a", "j.doe", "override", final_decision="decline")
    outcomes = [r for *_, r, kind in sent(p) if kind != "decision_event"]
    assert len({r.get("actual") or r["final_decision"] for r in outcomes}) == 1
    plain = opened()
    plain.log_outcome("a", "decline")
    plain.log_review("a", "j.doe", "escalate", reason="why")
    assert [r["redaction_policy"] for *_, r, _ in sent(plain)] == [None, None]


def test_follow_up_rules_are_checked() -> None:
    for rule in ({"review_reason": TextRule(action="hash")},
                 {"final_decision": ValueRule(action="hash")},
                 {"outcome_actual": ValueRule(action="hash")}):  # fmt: skip
        with pytest.raises(ValueError, match=f"{next(iter(rule))} need a non-empty HMAC secret"):
            RedactionPolicy(id="p", version=1, **rule).compile()
    with pytest.raises(ValueError, match="Input should be 'keep', 'mask' or 'hash'"):
        ValueRule(action="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replacement is only valid"):
        ValueRule(action="hash", replacement="x")
    assert RedactionPolicy(id="p", version=1).review_reason.max_chars == 8192


def test_follow_ups_past_the_contracts_limits_are_refused(opened: Opened) -> None:
    p = opened()
    with pytest.raises(ValueError, match="actual: 65537 characters as stored, more than the 65536"):
        p.log_outcome("a", "x" * (MAX_FOLLOW_UP_VALUE + 1))
    with pytest.raises(ValueError, match="final_decision: 65538 characters"):
        p.log_review("a", "j.doe", "override", final_decision=["x" * (MAX_FOLLOW_UP_VALUE - 2)])
    with pytest.raises(ValueError, match="at most 8192 characters"):
        p.log_review("a", "j.doe", "escalate", reason="x" * (MAX_REASON + 1))
    p.log_outcome("a", "x" * MAX_FOLLOW_UP_VALUE)
    p.log_review("a", "j.doe", "escalate", reason="é" * MAX_REASON)
    assert [kind for *_, kind in sent(p)] == ["outcome", "review"]


def test_text_rules() -> None:
    assert truncate("abc", 3) == "abc" and truncate("abcd", 3) == "ab" + ELLIPSIS
    assert redact_text(TextRule(), "short") == "short"
    with pytest.raises(ValueError, match="HMAC secret"):
        redact_text(TextRule(action="hash"), "x")
    with pytest.raises(ValueError, match="need a non-empty HMAC secret"):
        RedactionPolicy(id="p", version=1, error_message=TextRule(action="hash")).compile()
    with pytest.raises(ValueError, match="replacement is only valid"):
        TextRule(action="drop", replacement="x")
    with pytest.raises(ValueError, match="less than or equal to 8192"):
        TextRule(max_chars=10_000)


def test_outcomes_and_reviews_go_to_their_own_topics_and_chains(opened: Opened) -> None:
    p = opened(outcomes_topic="o", reviews_topic="r")
    eid = p.log_decision("m", "1", {}, "approve", request_id="req-1")
    p.log_outcome(eid, "default", source="chargebacks", actor="etl")
    p.log_outcome("req-1", 0.25)
    p.log_review(eid, "j.doe", "override", final_decision="decline", reason="income unverified")
    p.log_review("req-1", "a.lee", "confirm")
    p.log_review("req-1", "a.lee", "escalate", reason="second opinion")
    got = sent(p)
    assert [(t, k, kind) for t, k, _, kind in got] == [
        ("decisions", b"unit", "decision_event"),
        ("o", b"unit/outcomes", "outcome"),
        ("o", b"unit/outcomes", "outcome"),
        ("r", b"unit/reviews", "review"),
        ("r", b"unit/reviews", "review"),
        ("r", b"unit/reviews", "review"),
    ]
    o1, o2 = (rec for _, _, rec, kind in got if kind == "outcome")
    assert (o1["decision_id"], o1["actual"], o1["actual_is_json"]) == (eid, "default", False)
    assert (o1["source"], o1["actor"], o1["observed_at"]) == (
        "chargebacks",
        "etl",
        o1["occurred_at"],
    )
    assert (o2["decision_id"], o2["actual"], o2["actual_is_json"]) == ("req-1", "0.25", True)
    assert [o1["seq"], o2["seq"]] == [1, 2] and o1["producer_id"] == OUTCOME.chain_id("unit")
    reviews = [rec for _, _, rec, kind in got if kind == "review"]
    assert [(r["verdict"], r["final_decision"], r["reason"]) for r in reviews] == [
        ("override", "decline", "income unverified"),
        ("confirm", None, None),
        ("escalate", None, "second opinion"),
    ]
    assert {r["producer_id"] for r in reviews} == {REVIEW.chain_id("unit")}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("d", "j.doe", "veto"), {}, "verdict"),
        (("d", "j.doe", "override"), {}, "an override needs final_decision"),
        (("d", "j.doe", "confirm"), {"final_decision": "x"}, "final_decision is for an override"),
        (("", "j.doe", "confirm"), {}, "decision_id"),
        (("d", "", "confirm"), {}, "reviewer"),
        (("d", "j.doe", "confirm"), {"reason": "x" * 9000}, "reason"),
    ],
)
def test_bad_reviews_raise_naming_the_field(
    opened: Opened, args: tuple[str, ...], kwargs: dict[str, Any], match: str
) -> None:
    p = opened()
    with pytest.raises(ValueError, match=match):
        p.log_review(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("", "y"), {}, "decision_id"),
        (("d", float("nan")), {}, "actual"),
        (("d", "y"), {"observed_at": "yesterday"}, "observed_at"),
        (("d", "y"), {"source": "s" * 5000}, "source"),
    ],
)
def test_bad_outcomes_raise_naming_the_field(
    opened: Opened, args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    p = opened()
    with pytest.raises(ValueError, match=match):
        p.log_outcome(*args, **kwargs)


def test_reviews_are_signed_one_by_one_and_outcomes_on_the_cadence(
    opened: Opened, tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "keys", "unit")
    p = opened(signing_key=tmp_path / "keys" / "unit.key", checkpoint_every=1000)
    for i in range(3):
        p.log_outcome(f"r-{i}", "y")
        p.log_review(f"r-{i}", "j.doe", "confirm")
    got = sent(p)  # close() signs the outcomes' head
    kinds = [(k.decode(), kind, rec.get("seq")) for _, k, rec, kind in got]
    reviews = [x for x in kinds if x[0] == "unit/reviews"]
    assert reviews == [
        ("unit/reviews", "review", 1), ("unit/reviews", "checkpoint", 1),
        ("unit/reviews", "review", 2), ("unit/reviews", "checkpoint", 2),
        ("unit/reviews", "review", 3), ("unit/reviews", "checkpoint", 3),
    ]  # fmt: skip
    outcomes = [x for x in kinds if x[0] == "unit/outcomes"]
    assert outcomes[-1] == ("unit/outcomes", "checkpoint", 3) and len(outcomes) == 4
    ring = KeyRing.load(tmp_path / "keys")
    assert (
        all(rec["key_id"] == "unit" for _, _, rec, kind in got if kind == "checkpoint")
        and "unit" in ring
    )
