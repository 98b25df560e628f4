"""Crypto-shredding, the contract: how encrypted input fields and their sealed data keys are
written, and how a holder of the key store's private key opens them.

A producer whose redaction policy has ``encrypt`` rules encrypts those input values under a
fresh random 256-bit *data key* per event, and *seals* the data key to the key store's X25519
public key. The encrypted value takes the place of the plain one in ``inputs`` (so the hash
chain covers the ciphertext); the sealed data key travels on its own topic, is filed in the
``subject_keys`` table under the keyed hash of the data subject's id, and nowhere else.
Erasing a subject deletes its rows there: without the data key the ciphertext, still in Kafka
and ClickHouse, opens for nobody, and ``verify`` is unchanged.

The construction, for a reader in another language:

* **Subject hash** ``sub``: lowercase hex of HMAC-SHA256(secret, UTF-8 JSON of the subject
  id as a string), the secret being the producers' redaction secret. It equals what a
  ``hash`` rule writes for that string (without its ``hmac-sha256:`` prefix).
* **Encrypted value**: the JSON object ``{"$enc": "aes-256-gcm", "kid": KEYSTORE_KEY_ID,
  "sub": SUB, "iv": B64(12-byte nonce), "ct": B64(ciphertext || 16-byte tag)}``, where the
  plaintext is the canonical JSON of the value (sorted keys, compact, UTF-8) and the AAD is
  ``"decision-audit/enc/v1" 0x00 EVENT_ID 0x00 SUB`` (ASCII). B64 is standard base64, padded.
* **Sealing** (an ECIES box, amortised over a session): the producer draws an ephemeral X25519
  key pair ``e``, computes ``shared = X25519(e, K)`` with the key store's public key ``K`` and
  ``kek = HKDF-SHA256(ikm=shared, salt=e.pub || K, info="decision-audit/keystore/v1",
  length=32)``. Each data key is sealed as ``AES-256-GCM(kek, nonce, data_key, AAD)`` with a
  random 12-byte nonce and AAD ``"decision-audit/key/v1" 0x00 EVENT_ID 0x00 SUB 0x00 KID``.
  A producer keeps one ephemeral key for up to 2^20 seals, then draws another; each sealed
  key record carries ``e.pub`` (32 raw bytes), the nonce and the 48 sealed bytes.
* **Opening**: ``kek`` again from ``X25519(k, e.pub)`` with the private key ``k``, then
  AES-256-GCM decryption of the sealed key and of the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from decision_audit.contract.errors import DecisionAuditError

ENC_MARK: Final = "$enc"
ALGORITHM: Final = "aes-256-gcm"
KEK_INFO: Final = b"decision-audit/keystore/v1"
FIELD_AAD: Final = b"decision-audit/enc/v1"
KEY_AAD: Final = b"decision-audit/key/v1"
NONCE_BYTES: Final = 12
DATA_KEY_BYTES: Final = 32
PRIVATE_SUFFIX: Final = ".key"
PUBLIC_SUFFIX: Final = ".pub"
KEY_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUBJECT_HASH_RE: Final = re.compile(r"^[0-9a-f]{64}$")


class SealingError(DecisionAuditError, ValueError):
    """A key file, sealed key or encrypted value that cannot be used; the message says why."""


class UnsealFailed(DecisionAuditError, RuntimeError):
    """A sealed key or encrypted value does not open with the key given (wrong key, or the
    bytes were altered)."""


def subject_hash(secret: bytes, subject_id: str) -> str:
    """The keyed hash a subject's keys are filed under (hex); the id itself is never stored."""
    if not secret:
        raise SealingError("the subject hash needs the producers' non-empty redaction secret")
    data = json.dumps(subject_id, ensure_ascii=False).encode()
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def field_aad(event_id: str, sub: str) -> bytes:
    return b"\x00".join((FIELD_AAD, event_id.encode(), sub.encode()))


def key_aad(event_id: str, sub: str, keystore_key_id: str) -> bytes:
    return b"\x00".join((KEY_AAD, event_id.encode(), sub.encode(), keystore_key_id.encode()))


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def derive_kek(shared: bytes, ephemeral_public: bytes, keystore_public: bytes) -> bytes:
    """The key-encryption key of a sealing session (HKDF-SHA256 over the X25519 secret)."""
    hkdf = HKDF(hashes.SHA256(), 32, salt=ephemeral_public + keystore_public, info=KEK_INFO)
    return hkdf.derive(shared)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_encrypted(value: Any) -> bool:
    """True for an encrypted input value (an object with ``"$enc"``)."""
    return isinstance(value, dict) and ENC_MARK in value


@dataclass(frozen=True, slots=True)
class EncryptedValue:
    """An encrypted input value, parsed."""

    keystore_key_id: str
    sub: str
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def parse(cls, value: Any) -> EncryptedValue:
        if not is_encrypted(value):
            raise SealingError("not an encrypted value (no '$enc')")
        if value[ENC_MARK] != ALGORITHM:
            raise SealingError(f"unknown encryption {value[ENC_MARK]!r} (this reader: {ALGORITHM})")
        try:
            out = cls(
                str(value["kid"]),
                str(value["sub"]),
                base64.b64decode(value["iv"], validate=True),
                base64.b64decode(value["ct"], validate=True),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SealingError(f"malformed encrypted value: {exc}") from None
        if len(out.nonce) != NONCE_BYTES or not SUBJECT_HASH_RE.match(out.sub):
            raise SealingError("malformed encrypted value: bad nonce or subject hash")
        return out

    def decrypt(self, data_key: bytes, event_id: str) -> Any:
        """The original value (JSON), or :class:`UnsealFailed`."""
        try:
            plain = AESGCM(data_key).decrypt(
                self.nonce, self.ciphertext, field_aad(event_id, self.sub)
            )
        except InvalidTag:
            raise UnsealFailed(
                f"encrypted value of event {event_id} does not open with its data key"
            ) from None
        return json.loads(plain)


@dataclass(frozen=True, slots=True)
class SealedKey:
    """One event's data key, sealed to the key store's public key (a ``subject_keys`` row)."""

    event_id: str
    subject_hash: str
    keystore_key_id: str
    ephemeral_key: bytes
    nonce: bytes
    sealed_key: bytes


# -- key files ---------------------------------------------------------------------------------


def check_key_id(key_id: str) -> str:
    if not KEY_ID_RE.match(key_id):
        raise SealingError(f"key id {key_id!r} must match {KEY_ID_RE.pattern}")
    return key_id


def generate_keystore_keypair(out_dir: str | os.PathLike[str], key_id: str) -> tuple[Path, Path]:
    """Write the key store's X25519 key pair: ``KEY_ID.key`` (private, PKCS#8 PEM, mode 0600)
    and ``KEY_ID.pub`` (SubjectPublicKeyInfo PEM) into ``out_dir``."""
    check_key_id(key_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{key_id}{PRIVATE_SUFFIX}", out / f"{key_id}{PUBLIC_SUFFIX}"
    if private.exists() or public.exists():
        raise FileExistsError(f"{private} or {public} already exists; pick another --key-id")
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def load_keystore_public_key(path: str | os.PathLike[str]) -> tuple[str, X25519PublicKey]:
    """``(key id, key)`` of a key store public key file (the key id is the file's stem)."""
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as exc:
        raise SealingError(f"cannot read key store public key {p}: {exc.strerror}") from None
    except ValueError:
        raise SealingError(
            f"{p} is not a PEM public key (decision-audit keystore keygen writes one)"
        ) from None
    if not isinstance(key, X25519PublicKey):
        raise SealingError(f"{p} is not an X25519 public key (decision-audit keystore keygen)")
    return check_key_id(p.name.removesuffix(PUBLIC_SUFFIX)), key


def load_keystore_private_key(path: str | os.PathLike[str]) -> tuple[str, X25519PrivateKey]:
    """``(key id, key)`` of the key store's private key file (the key id is the file's stem)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SealingError(
            f"cannot read key store key {p}: {exc.strerror}; pass the KEY_ID.key file "
            "`decision-audit keystore keygen` wrote"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SealingError(
            f"{p} is not an unencrypted PEM private key; pass the KEY_ID.key file "
            "`decision-audit keystore keygen` wrote"
        ) from None
    if not isinstance(key, X25519PrivateKey):
        raise SealingError(f"{p} is not an X25519 private key (decision-audit keystore keygen)")
    return check_key_id(p.name.removesuffix(PRIVATE_SUFFIX)), key


def open_sealed_key(private_key: X25519PrivateKey, sealed: SealedKey) -> bytes:
    """The data key of one event, or :class:`UnsealFailed` (another key store's key, or
    altered bytes)."""
    try:
        ephemeral = X25519PublicKey.from_public_bytes(sealed.ephemeral_key)
        shared = private_key.exchange(ephemeral)
    except ValueError:
        raise UnsealFailed(f"sealed key of event {sealed.event_id}: bad ephemeral key") from None
    kek = derive_kek(shared, sealed.ephemeral_key, raw_public(private_key.public_key()))
    aad = key_aad(sealed.event_id, sealed.subject_hash, sealed.keystore_key_id)
    try:
        return AESGCM(kek).decrypt(sealed.nonce, sealed.sealed_key, aad)
    except InvalidTag:
        raise UnsealFailed(
            f"sealed key of event {sealed.event_id} does not open with this key store key"
        ) from None
