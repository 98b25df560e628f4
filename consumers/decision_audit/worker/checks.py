"""Per-message checks: decode, schema, hash and field sanity. Returns an event or a rejection."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.codec import CodecError, DecodedRecord, SingleObjectCodec
from decision_audit.contract.fields import DECISION_EVENT, Check, RecordKind, chained_kind
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.lineage import model_event_problem
from decision_audit.contract.reasons import Reason
from decision_audit.contract.rules import MAX_FUTURE_SKEW, MIN_TIME, UUID_RE

__all__ = [
    "EVENT_HASH_HEADER",
    "EventVerifier",
    "Headers",
    "Rejection",
    "StagedEvent",
    "VerifiedCheckpoint",
    "VerifiedEvent",
    "header_value",
]

# The fields the field checks cover (decision_audit.contract.fields), in declaration order.
_FINITE = DECISION_EVENT.with_check(Check.FINITE)
_NON_EMPTY = DECISION_EVENT.with_check(Check.NON_EMPTY)
_ONE_OF = tuple((f.name, frozenset(f.values)) for f in DECISION_EVENT if Check.ONE_OF in f.checks)
_REQUIRED_WHEN = tuple(
    (f.name, *f.required_when)
    for f in DECISION_EVENT
    if Check.REQUIRED_WHEN in f.checks and f.required_when is not None
)
_MAX_LENGTH = tuple(
    (f.name, f.max_length)
    for f in DECISION_EVENT
    if Check.MAX_LENGTH in f.checks and f.max_length is not None
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be trusted."""

    reason: Reason
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
    """Checks one Kafka message of a chained record kind's topic (decisions by default)."""

    def __init__(
        self,
        codec: SingleObjectCodec,
        *,
        max_event_bytes: int,
        keyring: KeyRing | None = None,
        require_signed: bool = False,
        max_future_skew: timedelta = MAX_FUTURE_SKEW,
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
        size: int | None = None,
    ) -> VerifiedEvent | VerifiedCheckpoint | Rejection:
        """Check one message that should carry a ``record`` (or a checkpoint of its chain).

        ``size``: the message's size as received, when ``value`` is that message re-framed
        (Confluent framing read as single-object encoding is 5 bytes longer).
        """
        if not value:
            return Rejection(Reason.EMPTY_VALUE, "message value is empty or null")
        if size is None:
            size = len(value)
        if size > self._max_bytes:
            return Rejection(Reason.OVERSIZED, f"{size} bytes > max_event_bytes={self._max_bytes}")
        try:
            decoded = self._codec.decode(value)
        except CodecError as exc:
            return Rejection(exc.reason, exc.detail)
        if decoded.writer.name == "checkpoint":
            return self._check_checkpoint(decoded, key)
        if decoded.writer.name != record:
            return Rejection(
                Reason.UNEXPECTED_RECORD,
                f"record {decoded.writer.name!r} where {record!r} is expected",
            )
        rec = decoded.record
        claimed = header_value(headers, EVENT_HASH_HEADER)
        if claimed is None:
            return Rejection(Reason.MISSING_HASH, f"no {EVENT_HASH_HEADER} header")
        event_hash = chain_hash(rec["prev_hash"], decoded.body)
        if claimed != event_hash:
            return Rejection(
                Reason.HASH_MISMATCH,
                f"header {claimed.hex()[:16]}… != computed {event_hash.hex()[:16]}… "
                f"(producer {rec['producer_id']!r} seq {rec['seq']})",
            )
        if key is None or key != rec["producer_id"].encode():
            return Rejection(
                Reason.KEY_MISMATCH, f"key {key!r} != producer_id {rec['producer_id']!r}"
            )
        key_id = rec.get("key_id")
        if key_id is None and self._require_signed:
            return Rejection(
                Reason.UNATTESTED, f"producer {rec['producer_id']!r} signs no checkpoints"
            )
        if key_id is not None and self._keyring and key_id not in self._keyring:
            return Rejection(Reason.UNKNOWN_KEY, f"key id {key_id!r} is not a known public key")
        if record == "decision_event":
            problem = self._field_problem(rec)
        elif record == "model_event":
            problem = _model_problem(rec)
        else:
            problem = declared_problem(chained_kind(record), rec, self._max_future_skew)
        if problem is not None:
            return problem
        return VerifiedEvent(decoded, event_hash)

    def _check_checkpoint(
        self, decoded: DecodedRecord, key: bytes | None
    ) -> VerifiedCheckpoint | Rejection:
        rec = decoded.record
        if key is None or key != rec["producer_id"].encode():
            return Rejection(
                Reason.KEY_MISMATCH, f"key {key!r} != producer_id {rec['producer_id']!r}"
            )
        if rec["seq"] < 1 or len(rec["chain_head"]) != 32:
            return Rejection(Reason.INVALID_EVENT, f"checkpoint seq={rec['seq']}")
        if not self._keyring:
            return VerifiedCheckpoint(decoded, signature_verified=False)
        if rec["key_id"] not in self._keyring:
            return Rejection(
                Reason.UNKNOWN_KEY, f"checkpoint key id {rec['key_id']!r} is not known"
            )
        message = checkpoint_message(
            rec["producer_id"], rec["producer_epoch"], rec["seq"], rec["chain_head"]
        )
        if not self._keyring.verify(rec["key_id"], rec["signature"], message):
            return Rejection(
                Reason.BAD_SIGNATURE,
                f"checkpoint {rec['producer_id']!r}/{rec['producer_epoch']} seq {rec['seq']} "
                f"does not verify with key {rec['key_id']!r}",
            )
        return VerifiedCheckpoint(decoded, signature_verified=True)

    def _field_problem(self, rec: dict[str, Any]) -> Rejection | None:
        if rec["seq"] < 1 or rec["producer_epoch"] < 0:
            return Rejection(
                Reason.INVALID_EVENT, f"seq={rec['seq']} epoch={rec['producer_epoch']}"
            )
        if not UUID_RE.match(rec["event_id"]):
            return Rejection(
                Reason.INVALID_EVENT, f"event_id {rec['event_id'][:64]!r} is not a lowercase UUID"
            )
        for name in _FINITE:
            v = rec[name]
            if v is not None and not math.isfinite(v):
                return Rejection(Reason.INVALID_EVENT, f"{name} is {v}")
        for name in _NON_EMPTY:
            if not rec[name]:
                return Rejection(Reason.INVALID_EVENT, f"empty {name}")
        for name, values in _ONE_OF:
            if rec[name] not in values:
                return _not_one_of(name, rec[name], values)
        for name, other, when in _REQUIRED_WHEN:
            if rec[name] is None and rec[other] in when:
                return _required(name, other, rec[other])
        for name, most in _MAX_LENGTH:
            v = rec[name]
            if v is not None and len(v) > most:
                return _too_long(name, len(v), most)
        try:
            inputs = orjson.loads(rec["inputs"])  # strict JSON: no NaN, bounded nesting
        except RecursionError:
            return Rejection(Reason.INVALID_EVENT, "inputs nest too deeply to check")
        except ValueError as exc:
            return Rejection(Reason.INVALID_EVENT, f"inputs is not JSON: {exc}")
        if not isinstance(inputs, dict):
            return Rejection(Reason.INVALID_EVENT, "inputs is not a JSON object")
        ts = rec["occurred_at"]
        if ts < MIN_TIME or ts > datetime.now(UTC) + self._max_future_skew:
            return Rejection(Reason.INVALID_TIMESTAMP, f"occurred_at={ts.isoformat()}")
        return None


def _model_problem(rec: dict[str, Any]) -> Rejection | None:
    detail = model_event_problem(rec)
    if detail is not None:
        return Rejection(Reason.INVALID_EVENT, detail)
    ts = rec["occurred_at"]
    if ts < MIN_TIME or ts > datetime.now(UTC) + MAX_FUTURE_SKEW:
        return Rejection(Reason.INVALID_TIMESTAMP, f"occurred_at={ts.isoformat()}")
    return None


def _not_one_of(name: str, value: Any, values: frozenset[str] | tuple[str, ...]) -> Rejection:
    return Rejection(
        Reason.INVALID_EVENT,
        f"{name} {str(value)[:64]!r} is not one of {', '.join(sorted(values))}",
    )


def _too_long(name: str, length: int, most: int) -> Rejection:
    return Rejection(Reason.INVALID_EVENT, f"{name} has {length} characters, more than {most}")


def _required(name: str, other: str, value: Any) -> Rejection:
    return Rejection(Reason.INVALID_EVENT, f"{name} is missing, which {other} {value!r} requires")


def declared_problem(
    kind: RecordKind, rec: dict[str, Any], max_future_skew: timedelta = MAX_FUTURE_SKEW
) -> Rejection | None:
    """The first of ``kind``'s declared field checks (decision_audit.contract.fields) that
    ``rec`` fails, or None. UTF-8 needs no check here: text that is not fails to decode."""
    for f in kind:
        v = rec[f.name]
        for check in f.checks:
            if (check is Check.POSITIVE and v < 1) or (check is Check.NON_NEGATIVE and v < 0):
                return Rejection(Reason.INVALID_EVENT, f"{f.name}={v}")
            if check is Check.UUID and not UUID_RE.match(v):
                return Rejection(
                    Reason.INVALID_EVENT, f"{f.name} {v[:64]!r} is not a lowercase UUID"
                )
            if check is Check.FINITE and v is not None and not math.isfinite(v):
                return Rejection(Reason.INVALID_EVENT, f"{f.name} is {v}")
            if check is Check.NON_EMPTY and not v:
                return Rejection(Reason.INVALID_EVENT, f"empty {f.name}")
            if check is Check.ONE_OF and v not in f.values:
                return _not_one_of(f.name, v, f.values)
            if check is Check.REQUIRED_WHEN and v is None and f.required_when is not None:
                other, when = f.required_when
                if rec[other] in when:
                    return _required(f.name, other, rec[other])
            if (
                check is Check.MAX_LENGTH
                and v is not None
                and f.max_length is not None
                and len(v) > f.max_length
            ):
                return _too_long(f.name, len(v), f.max_length)
            if check is Check.JSON_OBJECT:
                try:
                    if not isinstance(orjson.loads(v), dict):
                        return Rejection(Reason.INVALID_EVENT, f"{f.name} is not a JSON object")
                except (ValueError, RecursionError) as exc:
                    return Rejection(Reason.INVALID_EVENT, f"{f.name} is not JSON: {exc}")
            if check is Check.PLAUSIBLE_TIME and (
                v < MIN_TIME or v > datetime.now(UTC) + max_future_skew
            ):
                return Rejection(Reason.INVALID_TIMESTAMP, f"{f.name}={v.isoformat()}")
    return None
