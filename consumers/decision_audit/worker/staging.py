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
from typing import Any

from decision_audit.contract.avro_writer import SMALL_LONGS, encode_long
from decision_audit.contract.codec import HEADER_SIZE, MAGIC
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.schemas import SchemaRegistry, ShippedSchema
from decision_audit.worker.checks import EVENT_HASH_HEADER, Headers, StagedEvent, header_value
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
# The latest decision_event fields (tests/unit/test_staging.py keeps them in step). Integers
# are signed so that a negative seq or epoch is seen, not wrapped.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "String"),
    ("occurred_at", "DateTime64(3, 'UTC')"),
    ("model_name", "String"),
    ("model_version", "String"),
    ("deployment_id", "Nullable(String)"),
    ("request_id", "Nullable(String)"),
    ("inputs", "String"),
    ("prediction", "String"),
    ("prediction_is_json", "Bool"),
    ("score", "Nullable(Float64)"),
    ("explanation", "Nullable(String)"),
    ("run_id", "Nullable(String)"),
    ("dataset_version", "Nullable(String)"),
    ("code_commit", "Nullable(String)"),
    ("environment_hash", "Nullable(String)"),
    ("actor", "Nullable(String)"),
    ("latency_ms", "Nullable(Float64)"),
    ("tags", "Map(String, String)"),
    ("redaction_policy", "Nullable(String)"),
    ("key_id", "Nullable(String)"),
    ("producer_id", "String"),
    ("producer_epoch", "Int64"),
    ("seq", "Int64"),
    ("prev_hash", "FixedString(32)"),
)
_COLUMNS = (*_FRAME_COLUMNS, *EVENT_COLUMNS, ("_end", f"FixedString({_NONCE_SIZE})"))
COLUMN_NAMES = [name for name, _ in _COLUMNS]

# How each decisions column is filled from the staging table.
_SELECT = {
    **{name: name for name in DECISION_COLUMNS},
    "event_id": "toUUID(event_id)",
    "producer_epoch": "toUInt64(producer_epoch)",
    "seq": "toUInt64(seq)",
    "event_hash": "_hash",
    "schema_fingerprint": "reinterpretAsUInt64(substring(_hdr, 3, 8))",
    "raw": "_raw",
    "kafka_partition": "_partition",
    "kafka_offset": "_offset",
}
_TEXT = (
    "model_name", "model_version", "deployment_id", "request_id", "prediction", "explanation",
    "run_id", "dataset_version", "code_commit", "environment_hash", "actor", "redaction_policy",
    "key_id", "producer_id",
)  # fmt: skip
_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


_SMALL = SMALL_LONGS  # indexes, sizes and partitions, looked up


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 8192 else encode_long(n)


def _string(s: bytes) -> bytes:
    return _long(len(s)) + s


def _check_sql(keyring: KeyRing, require_signed: bool) -> str:
    """The first contract check each staged event fails ('' when none), in ``_idx`` order."""
    text_ok = " AND ".join(f"isValidUTF8(ifNull({c}, ''))" for c in _TEXT)
    key_checks = ""
    if require_signed:
        key_checks += "key_id IS NULL, 'unattested', "
    if keyring:
        key_checks += (
            "key_id IS NOT NULL AND NOT has({keys:Array(String)}, key_id), 'unknown_key', "
        )
    return (
        "SELECT _idx, seq, producer_epoch, multiIf("
        "_end != unhex({nonce:String}), 'framing', "
        f"_hash != SHA256(concat(prev_hash, substring(_raw, {HEADER_SIZE + 1}))), 'hash', "
        "producer_id != _pid, 'key', "
        "prev_hash != substring(_raw, length(_raw) - 31), 'prev_hash', "
        f"event_id != substring(_raw, {HEADER_SIZE + 2}, 36) OR NOT match(event_id, '{_UUID}'), "
        "'event_id', "
        "seq < 1 OR producer_epoch < 0, 'seq', "
        "NOT (isFinite(ifNull(score, 0)) AND isFinite(ifNull(latency_ms, 0))), 'not_finite', "
        "model_name = '' OR model_version = '', 'model', "
        # A valid JSON text that starts with '{' is an object: one parse, not two (an
        # object after whitespace is flagged, and the Python verifier judges it).
        "NOT (startsWith(inputs, '{') AND isValidJSON(inputs)), 'inputs', "
        "occurred_at < toDateTime64('2000-01-01 00:00:00', 3, 'UTC') "
        "OR occurred_at > now64(3, 'UTC') + toIntervalSecond({skew:UInt32}), 'timestamp', "
        f"NOT ({text_ok}), 'utf8', "
        "NOT arrayAll(s -> isValidUTF8(s), arrayConcat(mapKeys(tags), mapValues(tags))), 'utf8', "
        f"{key_checks}'') AS problem "
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
        max_future_skew_seconds: int = 86_400,
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
        """Load the batch into ClickHouse; ``{_idx: failed check}`` of the events it flags.

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
        flagged = {}
        for event, s, e, p in zip(self._events, seq, epoch, problem, strict=True):
            event.record["seq"] = s
            event.record["producer_epoch"] = e
            if p:
                flagged[event.index] = p
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
        select = ", ".join(_SELECT[name] for name in DECISION_COLUMNS)
        return f"SELECT {select} FROM {STAGING_TABLE}{where}"

    # -- internals ----------------------------------------------------------------------------

    def _prepare_table(self) -> None:
        # A temporary table lives in the client's session: each worker has its own, and a
        # server-side session that expired takes it along (hence IF NOT EXISTS every batch).
        c = self.client
        columns = ", ".join(f"{name} {type_}" for name, type_ in _COLUMNS)
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
