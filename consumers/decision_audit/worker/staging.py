"""Where ClickHouse parses and checks a batch of decision events (the worker's fast path).

Decoding an event with fastavro costs the worker ~15-25 µs of Python; ClickHouse's Avro
reader parses the same event in ~2 µs. So for each message of the decisions topic the
worker does in Python only what needs no decoding — the header, the key, the claimed hash,
``prev_hash`` (the last 32 bytes of every decision body) and ``event_id`` (its first field)
— and frames the message as one record of an in-memory Avro object container file::

    _idx, _raw (the whole message), _hash (claimed), _partition, _offset, _pid (the key),
    _hdr (the message's 10-byte header), <the event's own fields, as its writer wrote them>,
    _end

(``_hdr`` and the fields are the message itself, written once more as it came.)

ClickHouse reads that file into a temporary table. One query then returns, per event, the
``seq`` and ``producer_epoch`` the chain tracker needs and the first check it fails: the
claimed hash against SHA-256(prev_hash || body), the field checks of
:class:`.checks.EventVerifier`, and cross-checks that its reading agrees with the
worker's (same key, ``prev_hash`` and event id; ``_end`` equal to a random per-batch nonce,
which a body longer than its fields would misplace, so ClickHouse consumed exactly the bytes
that were hashed). Events the chains accept are copied into ``decisions`` with
``INSERT … SELECT``. Anything ClickHouse flags, or cannot parse at all, is checked again by
the Python verifier, which names the rejection's reason as it always did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from decision_audit.contract.avro_writer import SMALL_LONGS, encode_long
from decision_audit.contract.codec import HEADER_SIZE, MAGIC
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.fields import DECISION_EVENT, Check, Field, sql_literal
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import Reason
from decision_audit.contract.rules import MAX_FUTURE_SKEW, MIN_TIME_SQL, UUID_SQL_PATTERN
from decision_audit.contract.schemas import SchemaRegistry, ShippedSchema
from decision_audit.worker.checks import Headers, StagedEvent, header_value
from decision_audit.worker.store import DECISION_COLUMNS

STAGING_TABLE = "decision_audit_staging"
KEEP_TABLE = "decision_audit_staging_keep"
_NONCE_SIZE = 16
_EVENT_ID_FIELD = b"\x48"  # Avro length prefix of a 36-character string (zigzag 72)
_MIN_SIZE = HEADER_SIZE + 1 + 36 + 32

_FRAME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_idx", "UInt32"),
    ("_raw", "String"),
    ("_hash", "FixedString(32)"),
    ("_partition", "UInt32"),
    ("_offset", "UInt64"),
    ("_pid", "String"),
    ("_hdr", f"FixedString({HEADER_SIZE})"),
)
# The latest decision_event fields, as ClickHouse's Avro reader reads them (integers signed,
# so that a negative seq or epoch is seen, not wrapped).
EVENT_COLUMNS: tuple[tuple[str, str], ...] = tuple((f.name, f.staged) for f in DECISION_EVENT)
# A field an older writer lacks is read as the column's DEFAULT (else the type's zero): the
# field's Avro default, where that is not the zero (status 'ok').
_DEFAULTS = {f.name: f" DEFAULT {sql_literal(f.default)}" for f in DECISION_EVENT if f.default}
_COLUMNS = (*_FRAME_COLUMNS, *EVENT_COLUMNS, ("_end", f"FixedString({_NONCE_SIZE})"))
COLUMN_NAMES = [name for name, _ in _COLUMNS]


def _select(f: Field) -> str:
    """How a ``decisions`` column is filled from the staged field (converted where its type
    differs by more than what an insert converts by itself)."""
    (column,) = f.columns
    if column.type == "UUID":
        return f"toUUID({f.name})"
    if column.type == "UInt64" and f.staged == "Int64":
        return f"toUInt64({f.name})"
    return f.name


# How each decisions column is filled from the staging table.
_SELECT = {
    **{f.name: _select(f) for f in DECISION_EVENT},
    "event_hash": "_hash",
    "schema_fingerprint": "reinterpretAsUInt64(substring(_hdr, 3, 8))",
    "raw": "_raw",
    "kafka_partition": "_partition",
    "kafka_offset": "_offset",
}
_INSERT_SELECT = ", ".join(_SELECT[name] for name in DECISION_COLUMNS)


class Flag(StrEnum):
    """What the staging query flags an event for: the first check it fails, in this order.

    Not a quarantine reason: a flagged event is checked again by the Python verifier, which
    names the reason (``.reason``, the one it gives). Two checks are stricter than the
    contract, so the Python verifier may accept what they flag: ``inputs`` (an object after
    whitespace) and ``prev_hash`` (the fast path's reading of the body, not a rule of it).
    """

    reason: Reason

    def __new__(cls, value: str, reason: Reason = Reason.INVALID_EVENT) -> Flag:
        member = str.__new__(cls, value)
        member._value_ = value
        member.reason = reason
        return member

    FRAMING = "framing", Reason.MALFORMED_AVRO
    """ClickHouse did not read exactly the hashed bytes (the per-batch nonce is misplaced)"""
    HASH = "hash", Reason.HASH_MISMATCH
    """SHA-256(prev_hash || body) differs from the claimed hash"""
    KEY = "key", Reason.KEY_MISMATCH
    """the message key is not the producer_id"""
    PREV_HASH = "prev_hash", Reason.MALFORMED_AVRO
    """ClickHouse's prev_hash is not the body's last 32 bytes"""
    EVENT_ID = "event_id", Reason.INVALID_EVENT
    """ClickHouse's event_id is not the body's first field, or not a canonical UUID"""
    SEQ = "seq", Reason.INVALID_EVENT
    """seq below 1 or a negative epoch"""
    NOT_FINITE = "not_finite", Reason.INVALID_EVENT
    """a number that is NaN or infinite"""
    MODEL = "model", Reason.INVALID_EVENT
    """a field that must not be empty is (model_name, model_version)"""
    VALUE = "value", Reason.INVALID_EVENT
    """a field outside its declared values (status)"""
    REQUIRED = "required", Reason.INVALID_EVENT
    """a field another requires is missing (the prediction of an ok decision)"""
    LENGTH = "length", Reason.INVALID_EVENT
    """text longer than the contract allows (error_type, error_message)"""
    INPUTS = "inputs", Reason.INVALID_EVENT
    """inputs is not plainly a JSON object"""
    TIMESTAMP = "timestamp", Reason.INVALID_TIMESTAMP
    """occurred_at is implausible"""
    UTF8 = "utf8", Reason.MALFORMED_AVRO
    """text that is not valid UTF-8 (fastavro cannot decode it)"""
    UNATTESTED = "unattested", Reason.UNATTESTED
    """unsigned chain while signatures are required"""
    UNKNOWN_KEY = "unknown_key", Reason.UNKNOWN_KEY
    """signed with a key that is not known"""


# The flag of each field check declared in decision_audit.contract.fields.
_FIELD_FLAGS: dict[Check, Flag] = {
    Check.POSITIVE: Flag.SEQ,
    Check.NON_NEGATIVE: Flag.SEQ,
    Check.UUID: Flag.EVENT_ID,
    Check.FINITE: Flag.NOT_FINITE,
    Check.NON_EMPTY: Flag.MODEL,
    Check.JSON_OBJECT: Flag.INPUTS,
    Check.PLAUSIBLE_TIME: Flag.TIMESTAMP,
    Check.UTF8: Flag.UTF8,
    Check.ONE_OF: Flag.VALUE,
    Check.REQUIRED_WHEN: Flag.REQUIRED,
    Check.MAX_LENGTH: Flag.LENGTH,
}


def _violation(f: Field, check: Check) -> str:
    """The SQL condition of ``f`` failing ``check``."""
    c = f.name
    if check is Check.POSITIVE:
        return f"{c} < 1"
    if check is Check.NON_NEGATIVE:
        return f"{c} < 0"
    if check is Check.UUID:
        return f"NOT match({c}, '{UUID_SQL_PATTERN}')"
    if check is Check.FINITE:
        return f"NOT isFinite(ifNull({c}, 0))"
    if check is Check.NON_EMPTY:
        return f"{c} = ''"
    if check is Check.JSON_OBJECT:
        # A valid JSON text that starts with '{' is an object: one parse, not two (an object
        # after whitespace is flagged, and the Python verifier judges it).
        return f"NOT (startsWith({c}, '{{') AND isValidJSON({c}))"
    if check is Check.PLAUSIBLE_TIME:
        return f"{c} < {MIN_TIME_SQL} OR {c} > now64(3, 'UTC') + toIntervalSecond({{skew:UInt32}})"
    if check is Check.UTF8:
        if f.staged.startswith("Map("):
            return f"NOT arrayAll(s -> isValidUTF8(s), arrayConcat(mapKeys({c}), mapValues({c})))"
        return f"NOT isValidUTF8(ifNull({c}, ''))"
    if check is Check.ONE_OF:
        return f"NOT has([{', '.join(map(sql_literal, f.values))}], {c})"
    if check is Check.REQUIRED_WHEN and f.required_when is not None:
        other, when = f.required_when
        return f"{c} IS NULL AND has([{', '.join(map(sql_literal, when))}], {other})"
    if check is Check.MAX_LENGTH and f.max_length is not None:
        # Code points, as Python's len(): invalid UTF-8 is flagged by its own check first.
        return f"lengthUTF8(ifNull({c}, '')) > {f.max_length}"
    raise ValueError(f"no SQL for {check}")


_SMALL = SMALL_LONGS  # indexes, sizes and partitions, looked up


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 8192 else encode_long(n)


def _string(s: bytes) -> bytes:
    return _long(len(s)) + s


def _check_sql(keyring: KeyRing, require_signed: bool) -> str:
    """The first check each staged event fails ('' when none), in ``_idx`` order."""
    failed: dict[Flag, list[str]] = {flag: [] for flag in Flag}
    # Cross-checks: ClickHouse read the bytes that were hashed, as the worker framed them.
    failed[Flag.FRAMING].append("_end != unhex({nonce:String})")
    failed[Flag.HASH].append(
        f"_hash != SHA256(concat(prev_hash, substring(_raw, {HEADER_SIZE + 1})))"
    )
    failed[Flag.KEY].append("producer_id != _pid")
    failed[Flag.PREV_HASH].append("prev_hash != substring(_raw, length(_raw) - 31)")
    failed[Flag.EVENT_ID].append(f"event_id != substring(_raw, {HEADER_SIZE + 2}, 36)")
    # The field checks (decision_audit.contract.fields).
    for f in DECISION_EVENT:
        for check in f.checks:
            failed[_FIELD_FLAGS[check]].append(_violation(f, check))
    if require_signed:
        failed[Flag.UNATTESTED].append("key_id IS NULL")
    if keyring:
        failed[Flag.UNKNOWN_KEY].append(
            "key_id IS NOT NULL AND NOT has({keys:Array(String)}, key_id)"
        )
    branches = "".join(
        f"{' OR '.join(conditions)}, '{flag}', "
        for flag, conditions in failed.items()
        if conditions
    )
    return (
        f"SELECT _idx, seq, producer_epoch, multiIf({branches}'') AS problem "
        f"FROM {STAGING_TABLE} ORDER BY _idx"
    )


@dataclass
class _Container:
    """The object container file of one writer schema: its header and one block per event."""

    header: bytes
    blocks: list[bytes] = field(default_factory=list)


class StagingMismatch(DecisionAuditError, RuntimeError):
    """ClickHouse returned other rows than were staged (not a store failure: check in Python)."""


class Stager:
    """Frames a batch's decision events for ClickHouse, checks them there, selects the kept."""

    def __init__(
        self,
        client: Any,
        registry: SchemaRegistry,
        *,
        max_event_bytes: int,
        keyring: KeyRing,
        require_signed: bool,
        max_future_skew_seconds: int = int(MAX_FUTURE_SKEW.total_seconds()),
    ) -> None:
        self.client = client
        self._max_bytes = max_event_bytes
        self._writers = {s.fingerprint: s for s in registry if s.name == "decision_event"}
        self._sql = _check_sql(keyring, require_signed)
        self._params: dict[str, Any] = {"skew": max_future_skew_seconds}
        if keyring:
            self._params["keys"] = sorted(keyring.key_ids)
        self._pids: dict[bytes, tuple[str, bytes] | None] = {}
        self._containers: dict[bytes, _Container] = {}
        self._events: list[StagedEvent] = []
        self._nonce = b""
        self._sync = b""
        self.reset()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def events(self) -> list[StagedEvent]:
        """The staged events, in ``_idx`` order."""
        return self._events

    def reset(self) -> None:
        """Start a new batch (a fresh nonce, nothing staged)."""
        self._nonce = os.urandom(_NONCE_SIZE)
        self._sync = os.urandom(16)
        self._containers = {}
        self._events = []

    def screen(
        self, value: bytes | None, key: bytes | None, headers: Headers, partition: int, offset: int
    ) -> StagedEvent | None:
        """Take a decision event into the batch, or None: the Python verifier must check it.

        Only what needs no decoding is checked here; the event's fields are checked by
        :meth:`stage`.
        """
        if (
            not value
            or len(value) > self._max_bytes
            or len(value) < _MIN_SIZE
            or value[:2] != MAGIC
            or key is None
            or value[HEADER_SIZE : HEADER_SIZE + 1] != _EVENT_ID_FIELD
        ):
            return None
        fp = value[2:HEADER_SIZE]
        container = self._containers.get(fp)
        if container is None:
            writer = self._writers.get(fp)
            if writer is None:
                return None
            container = self._containers[fp] = self._container(writer)
        claimed = header_value(headers, EVENT_HASH_HEADER)
        if claimed is None or len(claimed) != 32:
            return None
        pid = self._pids.get(key)
        if pid is None:
            if key in self._pids:
                return None
            pid = self._pids[key] = self._producer_id(key)
            if pid is None:
                return None
        # The record is written as pieces joined once per batch, the message twice: as
        # ``_raw``, and as ``_hdr`` followed by the fields. The claimed hash is checked by
        # ClickHouse (SHA-256 of prev_hash and the body).
        idx = len(self._events)
        size = len(value)
        small = _SMALL
        head = small[idx] if idx < 8192 else encode_long(idx)
        head += small[size] if size < 8192 else encode_long(size)
        where = small[partition] if partition < 8192 else encode_long(partition)
        if offset < 8192:
            where += small[offset]
        elif offset < 0x100000:  # zigzag fits 3 bytes: most offsets of a young topic
            z = offset << 1
            where += bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
        else:
            where += encode_long(offset)
        where += pid[1]
        record_size = 2 * size + 32 + _NONCE_SIZE + len(head) + len(where)
        container.blocks += (
            b"\x02",
            _long(record_size),
            head,
            value,
            claimed,
            where,
            value,
            self._nonce,
            self._sync,
        )
        record_fields = {
            "producer_id": pid[0],
            "event_id": value[HEADER_SIZE + 1 : HEADER_SIZE + 37].decode("latin-1"),
            "prev_hash": value[-32:],
        }
        event = StagedEvent(record_fields, claimed, idx)
        self._events.append(event)
        return event

    def stage(self) -> dict[int, str]:
        """Load the batch into ClickHouse; ``{_idx: Flag}`` of the events it flags.

        Fills in ``seq`` and ``producer_epoch`` of every staged event. Raises what the store
        raises (ClickHouse cannot parse the batch, or is failing), or
        :class:`StagingMismatch`.
        """
        c = self.client
        self._prepare_table()
        for container in self._containers.values():
            if container.blocks:
                c.raw_insert(
                    STAGING_TABLE,
                    COLUMN_NAMES,
                    insert_block=b"".join((container.header, *container.blocks)),
                    fmt="Avro",
                    settings={"input_format_avro_allow_missing_fields": 1},
                )
        result = c.query(self._sql, parameters={**self._params, "nonce": self._nonce.hex()})
        columns = result.result_columns or [[], [], [], []]
        idx, seq, epoch, problem = (list(col) for col in columns)
        if idx != list(range(len(self._events))):
            raise StagingMismatch(
                f"staged {len(self._events)} events, ClickHouse returned {len(idx)} rows"
            )
        flagged: dict[int, str] = {}
        for event, s, e, p in zip(self._events, seq, epoch, problem, strict=True):
            event.record["seq"] = s
            event.record["producer_epoch"] = e
            if p:
                flagged[event.index] = Flag(p)
        return flagged

    def selection(self, accepted: list[int], staged: int) -> str:
        """The ``SELECT`` of the accepted events (by ``_idx``, of ``staged``) as decisions rows.

        Columns in :data:`.store.DECISION_COLUMNS` order, for :meth:`.store.Store.copy_staged`;
        a subset is kept by ``_idx`` in a second temporary table, filled here.
        """
        c = self.client
        where = ""
        if len(accepted) != staged:
            c.command(f"CREATE TEMPORARY TABLE IF NOT EXISTS {KEEP_TABLE} (_idx UInt32)")
            c.command(f"TRUNCATE TABLE {KEEP_TABLE}")
            c.insert(KEEP_TABLE, [accepted], column_names=["_idx"], column_oriented=True)
            where = f" WHERE _idx IN {KEEP_TABLE}"
        return f"SELECT {_INSERT_SELECT} FROM {STAGING_TABLE}{where}"

    # -- internals ----------------------------------------------------------------------------

    def _prepare_table(self) -> None:
        # A temporary table lives in the client's session: each worker has its own, and a
        # server-side session that expired takes it along (hence IF NOT EXISTS every batch).
        c = self.client
        columns = ", ".join(f"{name} {type_}{_DEFAULTS.get(name, '')}" for name, type_ in _COLUMNS)
        c.command(f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} ({columns})")
        c.command(f"TRUNCATE TABLE {STAGING_TABLE}")

    def _container(self, writer: ShippedSchema) -> _Container:
        definition = writer.definition
        schema = {
            "type": "record",
            "name": "StagedDecision",
            "namespace": definition.get("namespace", "io.decision_audit"),
            "fields": [
                {"name": "_idx", "type": "long"},
                {"name": "_raw", "type": "bytes"},
                {"name": "_hash", "type": {"type": "fixed", "name": "StagedHash", "size": 32}},
                {"name": "_partition", "type": "long"},
                {"name": "_offset", "type": "long"},
                {"name": "_pid", "type": "string"},
                {
                    "name": "_hdr",
                    "type": {"type": "fixed", "name": "StagedHeader", "size": HEADER_SIZE},
                },
                *definition["fields"],
                {
                    "name": "_end",
                    "type": {"type": "fixed", "name": "StagedEnd", "size": _NONCE_SIZE},
                },
            ],
        }
        meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
        header = bytearray(b"Obj\x01")
        header += _long(len(meta))
        for k, v in meta.items():
            header += _string(k.encode()) + _string(v)
        header += b"\x00" + self._sync
        return _Container(bytes(header))

    @staticmethod
    def _producer_id(key: bytes) -> tuple[str, bytes] | None:
        try:
            return key.decode("utf-8"), _string(key)
        except UnicodeDecodeError:
            return None
