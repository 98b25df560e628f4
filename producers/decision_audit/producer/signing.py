"""Ed25519 keys for checkpoint signatures (needs the ``cryptography`` package)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


def _crypto() -> tuple[Any, Any]:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "signed checkpoints need the cryptography package: "
            "pip install 'decision-audit[signing]'"
        ) from exc
    return serialization, ed25519


class Signer:
    """Signs checkpoint messages with an Ed25519 private key read from a PEM file.

    The key id defaults to the file name without ``.key`` (as ``keygen`` writes it).
    """

    def __init__(self, private_key_path: str | os.PathLike[str], key_id: str | None = None) -> None:
        serialization, ed25519 = _crypto()
        path = Path(private_key_path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load signing key {path}: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key (use decision-audit keygen)")
        self._key = key
        self.key_id = key_id or path.name.removesuffix(PRIVATE_SUFFIX)
        if not KEY_ID_RE.match(self.key_id):
            raise ValueError(f"key id {self.key_id!r} must match {KEY_ID_RE.pattern}")

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self._key.sign(message)
        return signature


def key_files(path: Path) -> list[Path]:
    """``path`` itself, or for a directory its ``KEY_ID.key`` files in name order."""
    return sorted(path.glob(f"*{PRIVATE_SUFFIX}")) if path.is_dir() else [path]


def generate_keypair(out_dir: str | os.PathLike[str], key_id: str) -> tuple[Path, Path]:
    """Write ``KEY_ID.key`` (private, mode 0600) and ``KEY_ID.pub`` into ``out_dir``."""
    if not KEY_ID_RE.match(key_id):
        raise ValueError(f"key id {key_id!r} must match {KEY_ID_RE.pattern}")
    serialization, ed25519 = _crypto()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{key_id}{PRIVATE_SUFFIX}", out / f"{key_id}{PUBLIC_SUFFIX}"
    if private.exists() or public.exists():
        raise FileExistsError(f"{private} or {public} already exists; pick another --key-id")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
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
