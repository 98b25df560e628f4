"""Sealing data keys to the key store, and opening them: the construction the contract states
(decision_audit.contract.sealing), the producer's session sealer, and what a wrong key or an
altered byte does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from decision_audit.contract.sealing import (
    EncryptedValue,
    SealedKey,
    SealingError,
    UnsealFailed,
    generate_keystore_keypair,
    load_keystore_private_key,
    load_keystore_public_key,
    open_sealed_key,
    subject_hash,
)
from decision_audit.producer import sealing
from decision_audit.producer.redaction import RedactionPolicy
from decision_audit.producer.sealing import EventBox, KeystoreSealer
from decision_audit.producer.signing import generate_keypair

EVENT = "01a2f000-0000-7000-8000-000000000001"
SUB = "ab" * 32


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keystore_keypair(tmp_path, "ks-1")


def _sealed(box: EventBox) -> SealedKey:
    return SealedKey(
        box.event_id,
        box.subject_hash,
        box.keystore_key_id,
        box.ephemeral_key,
        box.nonce,
        box.sealed_key,
    )


def test_a_sealed_key_opens_with_the_private_key_and_decrypts_the_value(
    keys: tuple[Path, Path],
) -> None:
    private, public = keys
    box = KeystoreSealer(public).begin(EVENT, SUB)
    enc = box.encrypt(json.dumps({"name": "Jane"}).encode())
    assert set(enc) == {"$enc", "kid", "sub", "iv", "ct"}
    assert (enc["$enc"], enc["kid"], enc["sub"]) == ("aes-256-gcm", "ks-1", SUB)
    assert len(base64.b64decode(enc["iv"])) == 12
    assert "Jane" not in json.dumps(enc)
    kid, key = load_keystore_private_key(private)
    assert kid == "ks-1"
    data_key = open_sealed_key(key, _sealed(box))
    assert len(data_key) == 32
    assert EncryptedValue.parse(enc).decrypt(data_key, EVENT) == {"name": "Jane"}


def test_the_construction_is_the_one_the_contract_writes_down(keys: tuple[Path, Path]) -> None:
    """Rebuilt from the primitives, as a verifier in another language would."""
    private, public = keys
    box = KeystoreSealer(public).begin(EVENT, SUB)
    enc = box.encrypt(b'"Jane"')
    k = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(k, X25519PrivateKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    shared = k.exchange(X25519PublicKey.from_public_bytes(box.ephemeral_key))
    kek = HKDF(
        hashes.SHA256(),
        32,
        salt=box.ephemeral_key + k.public_key().public_bytes(*raw),
        info=b"decision-audit/keystore/v1",
    ).derive(shared)
    key_aad = b"decision-audit/key/v1\x00" + EVENT.encode() + b"\x00" + SUB.encode() + b"\x00ks-1"
    data_key = AESGCM(kek).decrypt(box.nonce, box.sealed_key, key_aad)
    field_aad = b"decision-audit/enc/v1\x00" + EVENT.encode() + b"\x00" + SUB.encode()
    plain = AESGCM(data_key).decrypt(
        base64.b64decode(enc["iv"]), base64.b64decode(enc["ct"]), field_aad
    )
    assert plain == b'"Jane"'
    assert len(box.sealed_key) == 48 and len(box.ephemeral_key) == 32 and len(box.nonce) == 12


def test_another_key_stores_key_or_an_altered_byte_opens_nothing(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    box = KeystoreSealer(public).begin(EVENT, SUB)
    enc = EncryptedValue.parse(box.encrypt(b"1"))
    other, _ = generate_keystore_keypair(tmp_path / "other", "ks-1")
    with pytest.raises(UnsealFailed, match="does not open"):
        open_sealed_key(load_keystore_private_key(other)[1], _sealed(box))
    key = load_keystore_private_key(private)[1]
    sealed = _sealed(box)
    flipped = bytes([sealed.sealed_key[0] ^ 1]) + sealed.sealed_key[1:]
    for altered in (
        replace(sealed, sealed_key=flipped),
        replace(sealed, event_id=EVENT.replace("1", "2")),  # bound to its event
        replace(sealed, subject_hash="cd" * 32),  # ... its subject
        replace(sealed, keystore_key_id="ks-2"),  # ... and the key store key
    ):
        with pytest.raises(UnsealFailed):
            open_sealed_key(key, altered)
    data_key = open_sealed_key(key, sealed)
    with pytest.raises(UnsealFailed):
        enc.decrypt(data_key, "01a2f000-0000-7000-8000-000000000002")
    with pytest.raises(UnsealFailed):
        replace(enc, ciphertext=b"\x00" + enc.ciphertext[1:]).decrypt(data_key, EVENT)


def test_every_event_has_its_own_data_key_and_sessions_renew(
    keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = keys
    monkeypatch.setattr(sealing, "SEALS_PER_SESSION", 3)
    sealer = KeystoreSealer(public)
    boxes = [sealer.begin(f"01a2f000-0000-7000-8000-00000000000{i}", SUB) for i in range(7)]
    assert len({b.ephemeral_key for b in boxes}) == 3  # 3 + 3 + 1
    key = load_keystore_private_key(private)[1]
    data_keys = {open_sealed_key(key, _sealed(b)) for b in boxes}
    assert len(data_keys) == 7
    assert len({b.nonce for b in boxes}) == 7


def test_the_subject_hash_is_what_a_hash_rule_writes_for_the_id() -> None:
    secret = b"s" * 32
    expected = hmac.new(secret, b'"s-42"', hashlib.sha256).hexdigest()
    assert subject_hash(secret, "s-42") == expected
    redactor = RedactionPolicy(id="p", version=1).compile(secret)
    assert redactor.hash_value("s-42") == "hmac-sha256:" + expected
    assert redactor.subject_hash("s-42") == expected
    assert subject_hash(secret, "Zoë") == redactor.subject_hash("Zoë")
    with pytest.raises(SealingError, match="secret"):
        subject_hash(b"", "s-42")


def test_key_files_that_are_not_the_key_stores_are_refused_by_name(tmp_path: Path) -> None:
    signing_key, signing_pub = generate_keypair(tmp_path, "signer")
    with pytest.raises(SealingError, match="not an X25519 public key"):
        load_keystore_public_key(signing_pub)
    with pytest.raises(SealingError, match="not an X25519 private key"):
        load_keystore_private_key(signing_key)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("nope")
    with pytest.raises(SealingError, match="not a PEM public key"):
        KeystoreSealer(garbage)
    with pytest.raises(SealingError, match="cannot read key store key"):
        load_keystore_private_key(tmp_path / "absent.key")
    generate_keystore_keypair(tmp_path / "k", "ks")
    with pytest.raises(FileExistsError):
        generate_keystore_keypair(tmp_path / "k", "ks")
    with pytest.raises(SealingError, match="key id"):
        generate_keystore_keypair(tmp_path, "../escape")
    assert (tmp_path / "k" / "ks.key").stat().st_mode & 0o777 == 0o600


def test_a_malformed_encrypted_value_is_named() -> None:
    with pytest.raises(SealingError, match="not an encrypted value"):
        EncryptedValue.parse({"a": 1})
    with pytest.raises(SealingError, match="unknown encryption"):
        EncryptedValue.parse({"$enc": "rot13"})
    with pytest.raises(SealingError, match="malformed"):
        EncryptedValue.parse({"$enc": "aes-256-gcm", "kid": "k", "sub": SUB, "iv": "!"})
    with pytest.raises(SealingError, match="malformed"):
        EncryptedValue.parse(
            {"$enc": "aes-256-gcm", "kid": "k", "sub": "x", "iv": "AAAAAAAAAAAAAAAA", "ct": ""}
        )
