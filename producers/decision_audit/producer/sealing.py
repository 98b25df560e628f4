"""The producer's side of crypto-shredding: a data key per event, sealed to the key store.

:class:`KeystoreSealer` holds the key store's X25519 public key and a sealing session (an
ephemeral key pair and the key-encryption key derived from it, renewed every
:data:`SEALS_PER_SESSION` seals), so sealing an event's data key costs one AES-GCM operation,
not a Diffie-Hellman. :meth:`KeystoreSealer.begin` draws an event's data key and returns its
:class:`EventBox`, which encrypts the event's values and gives the sealed key's record for
the keys topic. Nothing here waits on a network: the key store learns the key from Kafka.
The construction is written down in :mod:`decision_audit.contract.sealing`.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from decision_audit.contract.sealing import (
    ALGORITHM,
    DATA_KEY_BYTES,
    ENC_MARK,
    NONCE_BYTES,
    b64,
    derive_kek,
    field_aad,
    key_aad,
    load_keystore_public_key,
    raw_public,
)

__all__ = ["SEALS_PER_SESSION", "EventBox", "KeystoreSealer"]

SEALS_PER_SESSION: Final = 1 << 20
"""seals under one ephemeral key: random 96-bit nonces stay far from colliding"""


class _Session:
    __slots__ = ("aead", "ephemeral_key", "seals")

    def __init__(self, ephemeral_key: bytes, aead: AESGCM) -> None:
        self.ephemeral_key = ephemeral_key
        self.aead = aead
        self.seals = 0


class KeystoreSealer:
    """Seals per-event data keys to the key store's public key (``KEY_ID.pub``).

    Thread-safe. The key id is the file's name without ``.pub``.
    """

    def __init__(self, public_key_path: str | os.PathLike[str]) -> None:
        self.key_id, key = load_keystore_public_key(public_key_path)
        self._public = key
        self._public_raw = raw_public(key)
        self._lock = threading.Lock()
        self._session = self._new_session()

    def _new_session(self) -> _Session:
        ephemeral = X25519PrivateKey.generate()
        eph_raw = raw_public(ephemeral.public_key())
        kek = derive_kek(ephemeral.exchange(self._public), eph_raw, self._public_raw)
        return _Session(eph_raw, AESGCM(kek))

    def begin(self, event_id: str, subject_hash: str) -> EventBox:
        """A fresh data key for event ``event_id`` of the subject ``subject_hash``, sealed."""
        data_key = os.urandom(DATA_KEY_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        aad = key_aad(event_id, subject_hash, self.key_id)
        with self._lock:
            session = self._session
            session.seals += 1
            if session.seals > SEALS_PER_SESSION:
                session = self._session = self._new_session()
                session.seals = 1
        sealed = session.aead.encrypt(nonce, data_key, aad)
        return EventBox(
            self.key_id, event_id, subject_hash, data_key, session.ephemeral_key, nonce, sealed
        )


class EventBox:
    """One event's data key: encrypts its values, and carries the key sealed for the store."""

    __slots__ = (
        "_aad",
        "_aead",
        "ephemeral_key",
        "event_id",
        "keystore_key_id",
        "nonce",
        "sealed_key",
        "subject_hash",
    )

    def __init__(
        self,
        keystore_key_id: str,
        event_id: str,
        subject_hash: str,
        data_key: bytes,
        ephemeral_key: bytes,
        nonce: bytes,
        sealed_key: bytes,
    ) -> None:
        self.keystore_key_id = keystore_key_id
        self.event_id = event_id
        self.subject_hash = subject_hash
        self.ephemeral_key = ephemeral_key
        self.nonce = nonce
        self.sealed_key = sealed_key
        self._aead = AESGCM(data_key)
        self._aad = field_aad(event_id, subject_hash)

    def encrypt(self, plaintext: bytes) -> dict[str, str]:
        """The encrypted value that replaces a plain one in ``inputs``."""
        iv = os.urandom(NONCE_BYTES)
        return {
            ENC_MARK: ALGORITHM,
            "kid": self.keystore_key_id,
            "sub": self.subject_hash,
            "iv": b64(iv),
            "ct": b64(self._aead.encrypt(iv, plaintext, self._aad)),
        }

    def key_record(self, occurred_at: datetime | int, producer_id: str) -> dict[str, Any]:
        """The ``subject_key`` Avro record of the sealed data key (for the keys topic)."""
        return {
            "event_id": self.event_id,
            "occurred_at": occurred_at,
            "subject_hash": self.subject_hash,
            "keystore_key_id": self.keystore_key_id,
            "ephemeral_key": self.ephemeral_key,
            "nonce": self.nonce,
            "sealed_key": self.sealed_key,
            "producer_id": producer_id,
        }
