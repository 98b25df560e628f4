"""One stored row against its original bytes, and the signed checkpoint covering it.

What ``verify`` and ``trace`` both prove of a stored event: its raw bytes decode, its hash
is SHA-256(prev_hash || body) of those bytes, and its columns say what the bytes say
(:func:`row_integrity`); and the checkpoint that covers it carries a signature the trusted
keys accept (:func:`check_signature`, :func:`covering_checkpoint`). Each tool words and
reports the result its own way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.codec import Codec, CodecError, DecodedRecord
from decision_audit.contract.fields import RecordKind
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.keys import KeyRing


@dataclass(frozen=True, slots=True)
class RowIntegrity:
    """What a stored row's original bytes say about it."""

    decoded: DecodedRecord | None
    """None: the raw bytes do not decode (``error`` says why)"""
    error: str = ""
    event_hash: bytes = b""
    """SHA-256(prev_hash || body), recomputed from the bytes"""
    hash_ok: bool = False
    """the stored ``event_hash`` is the recomputed one"""
    seq_ok: bool = False
    """the stored ``seq`` is the bytes' seq"""
    changed: tuple[str, ...] = ()
    """the compared columns whose stored value differs from the bytes', in compared order"""

    @property
    def columns_ok(self) -> bool:
        return self.decoded is not None and self.seq_ok and not self.changed


def row_integrity(codec: Codec, compared: Sequence[str], row: Mapping[str, Any]) -> RowIntegrity:
    """Check ``row`` (its ``raw``, ``event_hash``, ``seq`` and ``compared`` columns, with
    ``event_id`` as a string) against what its raw bytes say."""
    try:
        decoded = codec.decode(bytes(row["raw"]))
    except CodecError as exc:
        return RowIntegrity(None, exc.detail)
    rec = decoded.record
    h = chain_hash(rec["prev_hash"], decoded.body)
    return RowIntegrity(
        decoded,
        event_hash=h,
        hash_ok=h == bytes(row["event_hash"]),
        seq_ok=rec["seq"] == int(row["seq"]),
        changed=tuple(c for c in compared if row[c] != rec[c]),
    )


class Signature(enum.Enum):
    VALID = "the signature verifies with a trusted key"
    UNKNOWN_KEY = "no trusted key has the checkpoint's key id"
    FORGED = "the signature does not verify with the trusted key of that id"


def check_signature(
    keyring: KeyRing,
    producer_id: str,
    producer_epoch: int,
    seq: int,
    head: bytes,
    key_id: str,
    signature: bytes,
) -> Signature:
    """Whether the checkpoint of chain ``producer_id``/``producer_epoch`` at ``seq``, signing
    ``head``, carries a signature that ``keyring`` accepts."""
    if key_id not in keyring:
        return Signature.UNKNOWN_KEY
    msg = checkpoint_message(producer_id, producer_epoch, seq, head)
    return Signature.VALID if keyring.verify(key_id, signature, msg) else Signature.FORGED


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """One stored checkpoint of a chain."""

    producer_id: str
    producer_epoch: int
    seq: int
    head: bytes
    key_id: str
    signature: bytes
    verified_by_worker: bool

    def holds(self, keyring: KeyRing) -> bool | None:
        """Its signature checked with ``keyring`` when that has keys, else as the worker
        checked it (None: the worker did not)."""
        if keyring:
            return (
                check_signature(
                    keyring,
                    self.producer_id,
                    self.producer_epoch,
                    self.seq,
                    self.head,
                    self.key_id,
                    self.signature,
                )
                is Signature.VALID
            )
        return self.verified_by_worker or None


def covering_checkpoint(
    client: Any, database: str, kind: RecordKind, producer_id: str, producer_epoch: int, seq: int
) -> StoredCheckpoint | None:
    """The first stored checkpoint of a ``kind`` chain at or after ``seq``; None when none."""
    assert kind.chain is not None
    found = client.query(
        f"SELECT seq, chain_head, key_id, signature, signature_verified "
        f"FROM {database}.{kind.chain.checkpoints} FINAL "
        "WHERE producer_id = {p:String} AND producer_epoch = {e:UInt64} AND seq >= {s:UInt64} "
        "ORDER BY seq LIMIT 1",
        parameters={"p": producer_id, "e": producer_epoch, "s": seq},
        column_formats={"chain_head": "bytes", "signature": "bytes"},
    ).result_rows
    if not found:
        return None
    cp_seq, head, key_id, signature, verified = found[0]
    return StoredCheckpoint(
        producer_id,
        producer_epoch,
        int(cp_seq),
        bytes(head),
        str(key_id),
        bytes(signature),
        bool(verified),
    )
