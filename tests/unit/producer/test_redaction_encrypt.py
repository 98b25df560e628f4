"""The ``encrypt`` redaction action: which values it encrypts, under whose key, and what it
refuses before anything is sent."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from decision_audit import AuditProducer
from decision_audit.contract.sealing import (
    EncryptedValue,
    SealedKey,
    generate_keystore_keypair,
    is_encrypted,
    load_keystore_private_key,
    open_sealed_key,
    subject_hash,
)
from decision_audit.producer.redaction import RedactionPolicy, Redactor
from decision_audit.producer.sealing import EventBox, KeystoreSealer

SECRET = b"s" * 32
EVENT = "01a2f000-0000-7000-8000-000000000001"


def policy(*rules: dict[str, Any], subject: str | None = "who.id") -> RedactionPolicy:
    return RedactionPolicy.model_validate(
        {"id": "pii", "version": 1, "subject": subject, "rules": list(rules)}
    )


ID_HASHED = {"path": "who.id", "action": "hash"}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keystore_keypair(tmp_path, "ks-1")


@pytest.fixture
def sealer(keys: tuple[Path, Path]) -> KeystoreSealer:
    return KeystoreSealer(keys[1])


def _open(keys: tuple[Path, Path], box: EventBox, value: Any) -> Any:
    key = load_keystore_private_key(keys[0])[1]
    sealed = SealedKey(
        box.event_id,
        box.subject_hash,
        box.keystore_key_id,
        box.ephemeral_key,
        box.nonce,
        box.sealed_key,
    )
    return EncryptedValue.parse(value).decrypt(open_sealed_key(key, sealed), box.event_id)


def test_encrypt_rules_encrypt_their_values_under_the_subjects_key(
    keys: tuple[Path, Path], sealer: KeystoreSealer
) -> None:
    r = policy(
        ID_HASHED,
        {"path": "who.name", "action": "encrypt"},
        {"path": "contacts.*.email", "action": "encrypt"},
        {"path": "notes", "action": "drop"},
    ).compile(SECRET)
    inputs = {
        "who": {"id": "u-42", "name": {"first": "Jane", "last": "Doe"}},
        "contacts": [{"email": "j@x.org", "kind": "home"}, {"kind": "none"}],
        "notes": "x",
        "income": 5,
    }
    before = copy.deepcopy(inputs)
    out, box = r.seal(inputs, sealer, EVENT)
    assert inputs == before  # never mutated
    assert box is not None and box.subject_hash == subject_hash(SECRET, "u-42")
    assert out["who"]["id"] == "hmac-sha256:" + box.subject_hash  # joinable with the store
    assert is_encrypted(out["who"]["name"]) and is_encrypted(out["contacts"][0]["email"])
    assert out["contacts"][1] == {"kind": "none"} and out["income"] == 5 and "notes" not in out
    assert "Jane" not in json.dumps(out) and "j@x.org" not in json.dumps(out)
    assert _open(keys, box, out["who"]["name"]) == {"first": "Jane", "last": "Doe"}
    assert _open(keys, box, out["contacts"][0]["email"]) == "j@x.org"


def test_an_explicit_subject_id_wins_and_no_value_to_encrypt_needs_no_subject(
    sealer: KeystoreSealer,
) -> None:
    r = policy(ID_HASHED, {"path": "who.name", "action": "encrypt"}).compile(SECRET)
    _, box = r.seal({"who": {"id": "a", "name": "n"}}, sealer, EVENT, subject_id="b")
    assert box is not None and box.subject_hash == subject_hash(SECRET, "b")
    # Ids are compared as text: `erase --subject 42` finds the subject of an integer 42.
    _, box = r.seal({"who": {"id": 42, "name": "n"}}, sealer, EVENT)
    assert box is not None and box.subject_hash == subject_hash(SECRET, "42")
    out, box = r.seal({"income": 1}, sealer, EVENT)
    assert (out, box) == ({"income": 1}, None)
    # Without a subject path the id comes from the call.
    bare = policy({"path": "name", "action": "encrypt"}, subject=None).compile(SECRET)
    _, box = bare.seal({"name": "n"}, sealer, EVENT, subject_id="c")
    assert box is not None and box.subject_hash == subject_hash(SECRET, "c")


@pytest.mark.parametrize(
    ("inputs", "subject", "message"),
    [
        ({"who": {"name": "n"}}, None, "subject path 'who.id' is absent.*subject_id="),
        ({"who": {"id": True, "name": "n"}}, None, "holds True, not a subject id"),
        ({"who": {"id": "", "name": "n"}}, None, "not a subject id"),
        ({"who": {"id": [1], "name": "n"}}, None, "not a subject id"),
        ({"who": {"id": "a", "name": "n"}}, "", "subject_id must be a non-empty string"),
    ],
)
def test_a_value_to_encrypt_without_a_subject_is_refused_by_name(
    sealer: KeystoreSealer, inputs: dict[str, Any], subject: str | None, message: str
) -> None:
    r = policy(ID_HASHED, {"path": "who.name", "action": "encrypt"}).compile(SECRET)
    with pytest.raises(ValueError, match=message):
        r.seal(inputs, sealer, EVENT, subject_id=subject)
    bare = policy({"path": "name", "action": "encrypt"}, subject=None).compile(SECRET)
    with pytest.raises(ValueError, match="pass subject_id= to log_decision"):
        bare.seal({"name": "n"}, sealer, EVENT)


def test_apply_without_a_key_store_refuses_to_write_the_value_in_the_clear() -> None:
    r = policy(ID_HASHED, {"path": "who.name", "action": "encrypt"}).compile(SECRET)
    assert r.encrypts
    with pytest.raises(ValueError, match="keystore_public_key"):
        r.apply({"who": {"id": 1, "name": "n"}})
    assert r.apply({"income": 1}) == {"income": 1}  # nothing to encrypt: nothing to refuse
    assert not policy(ID_HASHED, subject=None).compile(SECRET).encrypts


@pytest.mark.parametrize(
    ("rules", "subject", "message"),
    [
        ([{"path": "who.name", "action": "encrypt"}], "who.id", "stored in the clear"),
        ([ID_HASHED, {"path": "n", "action": "encrypt"}], "who.*", "no empty or '\\*'"),
        ([ID_HASHED], "who.id", "only used by encrypt rules"),
        ([{"path": "a", "action": "encrypt", "replacement": "x"}], None, "only valid with"),
    ],
)
def test_policies_that_would_leak_the_subject_are_refused(
    rules: list[dict[str, Any]], subject: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(*rules, subject=subject)


def test_the_subject_may_be_covered_by_a_wider_or_wildcard_rule() -> None:
    policy({"path": "who", "action": "encrypt"})  # the whole object, id included
    policy({"path": "*.id", "action": "drop"}, {"path": "x", "action": "encrypt"})


def test_encrypt_needs_the_secret_and_loses_to_stricter_rules(sealer: KeystoreSealer) -> None:
    with pytest.raises(ValueError, match="need a non-empty HMAC secret"):
        Redactor(policy(ID_HASHED, {"path": "who.name", "action": "encrypt"}))
    r = policy(
        ID_HASHED,
        {"path": "a.*.x", "action": "hash"},
        {"path": "a.b.x", "action": "encrypt"},
        {"path": "a.c.x", "action": "encrypt"},
        {"path": "a.c", "action": "mask"},
    ).compile(SECRET)
    out, box = r.seal({"who": {"id": 1}, "a": {"b": {"x": 1}, "c": {"x": 2}}}, sealer, EVENT)
    assert out["a"]["b"]["x"].startswith("hmac-sha256:")  # hash over encrypt
    assert out["a"]["c"] == "***"  # a rule on the whole value wins
    assert box is None


def test_the_producer_needs_the_key_store_key_and_checks_before_sending(
    keys: tuple[Path, Path],
) -> None:
    p = policy(ID_HASHED, {"path": "who.name", "action": "encrypt"})
    with pytest.raises(ValueError, match="keystore_public_key"):
        AuditProducer("127.0.0.1:1", producer_id="unit", redaction=p, redaction_secret="s")
    producer = AuditProducer(
        "127.0.0.1:1",
        producer_id="unit",
        redaction=p,
        redaction_secret="s",
        keystore_public_key=keys[1],
        message_timeout_ms=100,
    )
    try:
        with pytest.raises(ValueError, match=r"subject path 'who\.id' is absent"):
            producer.log_decision("m", "1", {"who": {"name": "n"}}, "yes")
        assert producer.last_seq == 0 and producer.stats.logged == 0
    finally:
        producer.close(timeout=0.5)
