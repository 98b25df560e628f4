"""Per-message checks: decode, schema, hash and field sanity. Returns an event or a rejection."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.codec import CodecError, DecodedRecord, SingleObjectCodec
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.lineage import model_event_problem

EVENT_HASH_HEADER = "da-event-hash"

# Stable reason codes for quarantine rows, DLQ headers and metrics.
REASONS: dict[str, str] = {
    "empty_value": "message has no value",
    "oversized": "message larger than max_event_bytes",
    "bad_magic": "not Avro single-object encoding",
    "unknown_schema": "writer schema fingerprint is not one of the shipped schemas",
    "malformed_avro": "body does not decode with its writer schema",
    "unexpected_record": "a record type this topic does not carry",
    "missing_hash": "no da-event-hash header",
    "hash_mismatch": "SHA-256(prev_hash || body) differs from the da-event-hash header",
    "key_mismatch": "message key is not the event's producer_id",
    "invalid_event": "decoded fields violate the event contract",
    "invalid_timestamp": "occurred_at is implausibly far in the past or future",
    "unattested": "event of an unsigned chain while the worker requires signatures",
    "unknown_key": "signed with a key id that is not among the worker's --keys",
    "bad_signature": "checkpoint signature does not verify with its key",
    "checkpoint_mismatch": "checkpoint head differs from the stored event at that seq",
    "chain_break": "prev_hash is not the hash of the chain's previous event",
    "chain_fork": "a seq already stored with different content",
    "late_event": "a seq below the chain head that was never stored (a recorded gap)",
}

_MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
# The canonical text form only (what producers write); cheaper than building a uuid.UUID.
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be trusted. ``reason`` is one of :data:`REASONS`."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    decoded: DecodedRecord
    event_hash: bytes

    @property
    def record(self) -> dict[str, Any]:
        return self.decoded.record


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    decoded: DecodedRecord
    signature_verified: bool
    """True when checked against a known key; False when the worker has no keys"""

    @property
    def record(self) -> dict[str, Any]:
        return self.decoded.record


@dataclass(slots=True)
class StagedEvent:
    """A decision event whose fields ClickHouse parses and checks (:mod:`.staging`).

    ``record`` holds only what the chain tracker reads: ``producer_id``, ``event_id`` and
    ``prev_hash`` from the message, ``seq`` and ``producer_epoch`` once staged.
    """

    record: dict[str, Any]
    event_hash: bytes
    index: int
    """the event's ``_idx`` in the staging table"""


Headers = list[tuple[str, str | bytes | None]] | None


def header_value(headers: Headers, name: str) -> bytes | None:
    """The value of the first header called ``name``, as bytes."""
    if headers:
        for key, value in headers:
            if key == name:
                return value.encode() if isinstance(value, str) else value
    return None


class EventVerifier:
    """Checks one Kafka message of the decisions topic."""

    def __init__(
        self,
        codec: SingleObjectCodec,
        *,
        max_event_bytes: int,
        keyring: KeyRing | None = None,
        require_signed: bool = False,
        max_future_skew: timedelta = timedelta(days=1),
    ) -> None:
        self._codec = codec
        self._max_bytes = max_event_bytes
        self._keyring = keyring or KeyRing()
        self._require_signed = require_signed
        self._max_future_skew = max_future_skew

    def check(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        *,
        record: str = "decision_event",
    ) -> VerifiedEvent | VerifiedCheckpoint | Rejection:
        """Check one message that should carry a ``record`` (or a checkpoint of its chain)."""
        if not value:
            return Rejection("empty_value", "message value is empty or null")
        if len(value) > self._max_bytes:
            return Rejection("oversized", f"{len(value)} bytes > max_event_bytes={self._max_bytes}")
        try:
            decoded = self._codec.decode(value)
        except CodecError as exc:
            return Rejection(exc.reason, exc.detail)
        if decoded.writer.name == "checkpoint":
            return self._check_checkpoint(decoded, key)
        if decoded.writer.name != record:
            return Rejection(
                "unexpected_record", f"record {decoded.writer.name!r} where {record!r} is expected"
            )
        rec = decoded.record
        claimed = header_value(headers, EVENT_HASH_HEADER)
        if claimed is None:
            return Rejection("missing_hash", f"no {EVENT_HASH_HEADER} header")
        event_hash = chain_hash(rec["prev_hash"], decoded.body)
        if claimed != event_hash:
            return Rejection(
                "hash_mismatch",
                f"header {claimed.hex()[:16]}… != computed {event_hash.hex()[:16]}… "
                f"(producer {rec['producer_id']!r} seq {rec['seq']})",
            )
        if key is None or key != rec["producer_id"].encode():
            return Rejection("key_mismatch", f"key {key!r} != producer_id {rec['producer_id']!r}")
        key_id = rec.get("key_id")
        if key_id is None and self._require_signed:
            return Rejection("unattested", f"producer {rec['producer_id']!r} signs no checkpoints")
        if key_id is not None and self._keyring and key_id not in self._keyring:
            return Rejection("unknown_key", f"key id {key_id!r} is not a known public key")
        problem = self._field_problem(rec) if record == "decision_event" else _model_problem(rec)
        if problem is not None:
            return problem
        return VerifiedEvent(decoded, event_hash)

    def _check_checkpoint(
        self, decoded: DecodedRecord, key: bytes | None
    ) -> VerifiedCheckpoint | Rejection:
        rec = decoded.record
        if key is None or key != rec["producer_id"].encode():
            return Rejection("key_mismatch", f"key {key!r} != producer_id {rec['producer_id']!r}")
        if rec["seq"] < 1 or len(rec["chain_head"]) != 32:
            return Rejection("invalid_event", f"checkpoint seq={rec['seq']}")
        if not self._keyring:
            return VerifiedCheckpoint(decoded, signature_verified=False)
        if rec["key_id"] not in self._keyring:
            return Rejection("unknown_key", f"checkpoint key id {rec['key_id']!r} is not known")
        message = checkpoint_message(
            rec["producer_id"], rec["producer_epoch"], rec["seq"], rec["chain_head"]
        )
        if not self._keyring.verify(rec["key_id"], rec["signature"], message):
            return Rejection(
                "bad_signature",
                f"checkpoint {rec['producer_id']!r}/{rec['producer_epoch']} seq {rec['seq']} "
                f"does not verify with key {rec['key_id']!r}",
            )
        return VerifiedCheckpoint(decoded, signature_verified=True)

    def _field_problem(self, rec: dict[str, Any]) -> Rejection | None:
        if rec["seq"] < 1 or rec["producer_epoch"] < 0:
            return Rejection("invalid_event", f"seq={rec['seq']} epoch={rec['producer_epoch']}")
        if not _UUID_RE.match(rec["event_id"]):
            return Rejection(
                "invalid_event", f"event_id {rec['event_id'][:64]!r} is not a lowercase UUID"
            )
        for name in ("score", "latency_ms"):
            v = rec[name]
            if v is not None and not math.isfinite(v):
                return Rejection("invalid_event", f"{name} is {v}")
        if not rec["model_name"] or not rec["model_version"]:
            return Rejection("invalid_event", "empty model_name or model_version")
        try:
            inputs = orjson.loads(rec["inputs"])  # strict JSON: no NaN, bounded nesting
        except RecursionError:
            return Rejection("invalid_event", "inputs nest too deeply to check")
        except ValueError as exc:
            return Rejection("invalid_event", f"inputs is not JSON: {exc}")
        if not isinstance(inputs, dict):
            return Rejection("invalid_event", "inputs is not a JSON object")
        ts = rec["occurred_at"]
        if ts < _MIN_TIME or ts > datetime.now(UTC) + self._max_future_skew:
            return Rejection("invalid_timestamp", f"occurred_at={ts.isoformat()}")
        return None


def _model_problem(rec: dict[str, Any]) -> Rejection | None:
    detail = model_event_problem(rec)
    if detail is not None:
        return Rejection("invalid_event", detail)
    ts = rec["occurred_at"]
    if ts < _MIN_TIME or ts > datetime.now(UTC) + timedelta(days=1):
        return Rejection("invalid_timestamp", f"occurred_at={ts.isoformat()}")
    return None
