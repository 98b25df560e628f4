"""The public keys a worker or ``verify`` trusts, looked up by key id."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_SUFFIX = ".pub"


class KeyRing:
    """Ed25519 public keys from a directory of ``KEY_ID.pub`` PEM files."""

    def __init__(self, keys: dict[str, Ed25519PublicKey] | None = None) -> None:
        self._keys = dict(keys or {})

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None) -> KeyRing:
        if directory is None:
            return cls()
        path = Path(directory)
        if not path.is_dir():
            raise ValueError(f"--keys {path}: not a directory of KEY_ID.pub files")
        keys: dict[str, Ed25519PublicKey] = {}
        for pub in sorted(path.glob(f"*{PUBLIC_SUFFIX}")):
            try:
                key = serialization.load_pem_public_key(pub.read_bytes())
            except ValueError:
                raise ValueError(
                    f"{pub} is not a PEM public key (decision-audit keygen writes one)"
                ) from None
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{pub} is not an Ed25519 public key")
            keys[pub.name.removesuffix(PUBLIC_SUFFIX)] = key
        if not keys:
            raise ValueError(f"--keys {path}: no *.pub files found")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def verify(self, key_id: str, signature: bytes, message: bytes) -> bool:
        """True only for a known key and a valid signature."""
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True
