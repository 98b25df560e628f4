"""The witness statement: a worker's signed, hash-linked record of every chain it has stored.

A statement is canonical JSON (keys sorted, no spaces, UTF-8)::

    {"chains": [{"epoch": 0, "first_seen": "2025-01-01T00:00:00.000Z",
                 "head": "<hex of the event hash at seq>", "kind": "decision_event",
                 "producer_id": "p1", "seq": 42}, ...],
     "prev_hash": "<hex>", "seq": 7, "signed_at": "2025-01-01T00:00:05.000Z",
     "type": "decision-audit/witness", "version": 1, "witness_id": "worker-a"}

``chains`` is sorted by ``(kind, producer_id, epoch)``; ``kind`` is the record kind's ``.avsc``
name. The statement's hash is SHA-256 of those bytes; ``prev_hash`` is the previous statement's
hash (32 zero bytes for ``seq`` 1); the signature is Ed25519 over the same bytes, by the key
whose id is ``witness_id``. On the ``decision-witness`` topic each message (key: the witness
id) is ``{"signature": "<base64>", "statement": "<the statement's text>"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from decision_audit.contract.errors import DecisionAuditError

STATEMENT_TYPE = "decision-audit/witness"
VERSION = 1
GENESIS = bytes(32)
"""``prev_hash`` of a witness's first statement"""

ChainKey = tuple[str, str, int]
"""``(kind, producer_id, producer_epoch)``"""


class WitnessFormatError(DecisionAuditError, ValueError):
    """Bytes that are not a well-formed witness statement (or envelope)."""


@dataclass(frozen=True, slots=True)
class WitnessedChain:
    kind: str
    producer_id: str
    epoch: int
    seq: int
    head: bytes
    first_seen: datetime
    """when this witness first stored an event of the chain"""

    @property
    def key(self) -> ChainKey:
        return (self.kind, self.producer_id, self.epoch)

    @property
    def name(self) -> str:
        return f"{self.producer_id}/{self.epoch}" + (
            "" if self.kind == "decision_event" else f" ({self.kind})"
        )


@dataclass(frozen=True, slots=True)
class Statement:
    witness_id: str
    seq: int
    prev_hash: bytes
    signed_at: datetime
    chains: tuple[WitnessedChain, ...]

    def encode(self) -> bytes:
        """The canonical bytes that are hashed and signed."""
        doc = {
            "type": STATEMENT_TYPE,
            "version": VERSION,
            "witness_id": self.witness_id,
            "seq": self.seq,
            "prev_hash": self.prev_hash.hex(),
            "signed_at": _ts(self.signed_at),
            "chains": [
                {
                    "kind": c.kind,
                    "producer_id": c.producer_id,
                    "epoch": c.epoch,
                    "seq": c.seq,
                    "head": c.head.hex(),
                    "first_seen": _ts(c.first_seen),
                }
                for c in sorted(self.chains, key=lambda c: c.key)
            ],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def statement_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def decode(data: bytes) -> Statement:
    """Parse statement bytes; raises :class:`WitnessFormatError` naming what is wrong."""
    try:
        doc = json.loads(data)
        if doc.get("type") != STATEMENT_TYPE or doc.get("version") != VERSION:
            raise WitnessFormatError(f"not a {STATEMENT_TYPE} v{VERSION} statement")
        chains = tuple(
            WitnessedChain(
                str(c["kind"]),
                str(c["producer_id"]),
                int(c["epoch"]),
                int(c["seq"]),
                _hash(c["head"]),
                _parse_ts(c["first_seen"]),
            )
            for c in doc["chains"]
        )
        st = Statement(
            str(doc["witness_id"]),
            int(doc["seq"]),
            _hash(doc["prev_hash"]),
            _parse_ts(doc["signed_at"]),
            chains,
        )
    except WitnessFormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WitnessFormatError(f"malformed witness statement: {exc!r}") from None
    if st.encode() != data:
        raise WitnessFormatError("witness statement is not in canonical form")
    return st


def envelope(data: bytes, signature: bytes) -> bytes:
    """The ``decision-witness`` topic's message value for a signed statement."""
    return json.dumps(
        {"signature": base64.b64encode(signature).decode(), "statement": data.decode()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def open_envelope(value: bytes) -> tuple[bytes, bytes]:
    """``(statement bytes, signature)`` of a topic message."""
    try:
        doc = json.loads(value)
        return str(doc["statement"]).encode(), base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise WitnessFormatError(f"malformed witness message: {exc!r}") from None


def _hash(value: Any) -> bytes:
    raw = bytes.fromhex(str(value))
    if len(raw) != 32:
        raise WitnessFormatError(f"hash {value!r} is not 32 bytes")
    return raw


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _parse_ts(value: Any) -> datetime:
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
