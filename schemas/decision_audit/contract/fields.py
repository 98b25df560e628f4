"""Each record kind's fields, declared once.

A field is declared with its Avro type (as in the latest ``.avsc``), the ClickHouse column(s)
of the sink table it is stored in, the checks the worker's staging query makes of it, and
whether ``verify`` compares the stored column with the original bytes and ``trace`` shows
it. From these the worker derives its sink column lists and its staging table and checks,
``verify`` the columns it compares and ``trace`` the fields it prints.

Adding a field is a change to its ``.avsc`` (a new version), a migration and this
declaration; tests/unit/contract/test_fields.py and tests/integration/test_contract_tables.py
fail, naming what is missing where, until the three agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

AvroType = Any
"""A field's ``type`` as written in the ``.avsc`` (JSON: a name, a list or an object)."""


class Check(Enum):
    """What the staging query checks of a decision field's value (the Python verifier too)."""

    POSITIVE = "at least 1"
    NON_NEGATIVE = "not negative"
    UUID = "the canonical text of a UUID (decision_audit.contract.rules.UUID_PATTERN)"
    FINITE = "a number, not NaN or infinite (when present)"
    NON_EMPTY = "not empty"
    JSON_OBJECT = "the JSON text of an object"
    PLAUSIBLE_TIME = "after MIN_TIME and before now + the allowed skew (contract.rules)"
    UTF8 = "valid UTF-8 (text, or a map's keys and values)"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a sink table."""

    name: str
    type: str
    """its ClickHouse type, as ``system.columns`` shows it"""
    written: bool = True
    """False when the table's DEFAULT fills it (``ingested_at``)"""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an Avro record and where it is stored."""

    name: str
    avro: AvroType
    columns: tuple[Column, ...]
    """the sink table's columns holding it: usually one of the same name"""
    checks: tuple[Check, ...] = ()
    """what the worker's staging query checks (decision events only)"""
    compared: bool = False
    """``verify`` (and ``trace``) compare the stored column with the original bytes"""
    traced: bool = False
    """``trace`` shows it"""

    @property
    def staged(self) -> str:
        """The ClickHouse type ClickHouse's Avro input format reads this field into."""
        return staging_type(self.avro)


@dataclass(frozen=True, slots=True)
class RecordKind:
    """A record kind: its Avro schema, its sink tables and its fields in ``.avsc`` order."""

    schema: str
    """the ``.avsc`` name (``decision_event`` for ``decision_event.vN.avsc``)"""
    tables: tuple[str, ...]
    """the sink tables, all of the same shape"""
    fields: tuple[Field, ...]
    extra: tuple[Column, ...]
    """the sink table's columns that are not fields of the record (hash, bytes, position…)"""

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.schema} has no field {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The record's field names, in ``.avsc`` order."""
        return tuple(f.name for f in self.fields)

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every column of the sink table: the fields' columns, then the extra ones."""
        return (*(c for f in self.fields for c in f.columns), *self.extra)

    @property
    def written(self) -> tuple[str, ...]:
        """The columns the worker writes, in :attr:`columns` order."""
        return tuple(c.name for c in self.columns if c.written)

    def with_check(self, check: Check) -> tuple[str, ...]:
        """The fields the staging query checks for ``check``."""
        return tuple(f.name for f in self.fields if check in f.checks)


def staging_type(avro: AvroType) -> str:
    """The ClickHouse type an Avro type is read into as written: text stays ``String`` (the
    query checks it is UTF-8), integers stay signed (a negative seq is seen, not wrapped)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) == 1 and len(avro) == 2:
            return f"Nullable({staging_type(branches[0])})"
    elif isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "long" and avro.get("logicalType") == "timestamp-millis":
            return "DateTime64(3, 'UTC')"
        if kind == "map":
            return f"Map(String, {staging_type(avro['values'])})"
        if kind == "fixed":
            return f"FixedString({avro['size']})"
        if isinstance(kind, str) and set(avro) == {"type"}:
            return staging_type(kind)
    elif avro in _PRIMITIVES:
        return _PRIMITIVES[avro]
    raise ValueError(f"no staging type for Avro type {avro!r}")


_PRIMITIVES = {
    "string": "String",
    "bytes": "String",
    "boolean": "Bool",
    "int": "Int32",
    "long": "Int64",
    "float": "Float32",
    "double": "Float64",
}

# -- Avro types, as in the .avsc files ------------------------------------------------------

STRING = "string"
"""the Avro string (a ClickHouse column is ``String``)"""
OPTIONAL_STRING = ["null", "string"]
OPTIONAL_DOUBLE = ["null", "double"]
TIMESTAMP_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
SHA256 = {"type": "fixed", "name": "Sha256", "size": 32}
STRING_MAP = {"type": "map", "values": "string"}
REFERENCE = {
    "type": "record",
    "name": "Reference",
    "fields": [{"name": "type", "type": "string"}, {"name": "id", "type": "string"}],
}

# -- ClickHouse column types ------------------------------------------------------------------

TIME = "DateTime64(3, 'UTC')"
LOW_TEXT = "LowCardinality(String)"
LOW_OPTIONAL = "LowCardinality(Nullable(String))"
HASH = "FixedString(32)"
TAG_MAP = "Map(LowCardinality(String), String)"


def _field(
    name: str,
    avro: AvroType,
    column: str,
    *checks: Check,
    compared: bool = False,
    traced: bool = False,
) -> Field:
    return Field(name, avro, (Column(name, column),), checks, compared, traced)


def _decision(
    name: str, avro: AvroType, column: str, *checks: Check, traced: bool = False
) -> Field:
    return _field(name, avro, column, *checks, compared=True, traced=traced)


_INGESTED_AT = Column("ingested_at", TIME, written=False)
_SOURCE = (
    Column("raw", "String"),
    Column("kafka_partition", "UInt32"),
    Column("kafka_offset", "UInt64"),
    _INGESTED_AT,
)
_CHAINED = (Column("event_hash", HASH), Column("schema_fingerprint", "UInt64"), *_SOURCE)

DECISION_EVENT = RecordKind(
    "decision_event",
    ("decisions",),
    (
        _decision("event_id", STRING, "UUID", Check.UUID, traced=True),
        _decision("occurred_at", TIMESTAMP_MILLIS, TIME, Check.PLAUSIBLE_TIME, traced=True),
        _decision("model_name", STRING, LOW_TEXT, Check.NON_EMPTY, Check.UTF8, traced=True),
        _decision("model_version", STRING, LOW_TEXT, Check.NON_EMPTY, Check.UTF8, traced=True),
        _decision("deployment_id", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("request_id", OPTIONAL_STRING, "Nullable(String)", Check.UTF8, traced=True),
        _decision("inputs", STRING, "String", Check.JSON_OBJECT),
        _decision("prediction", STRING, "String", Check.UTF8, traced=True),
        _decision("prediction_is_json", "boolean", "Bool"),
        _decision("score", OPTIONAL_DOUBLE, "Nullable(Float64)", Check.FINITE, traced=True),
        _decision("explanation", OPTIONAL_STRING, "Nullable(String)", Check.UTF8),
        _decision("run_id", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("dataset_version", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("code_commit", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("environment_hash", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("actor", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("latency_ms", OPTIONAL_DOUBLE, "Nullable(Float64)", Check.FINITE, traced=True),
        _decision("tags", STRING_MAP, TAG_MAP, Check.UTF8),
        _decision("redaction_policy", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8),
        _decision("key_id", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _decision("producer_id", STRING, LOW_TEXT, Check.UTF8, traced=True),
        _decision("producer_epoch", "long", "UInt64", Check.NON_NEGATIVE, traced=True),
        # Not compared as a column: a seq that differs from the bytes is a reordered row.
        _field("seq", "long", "UInt64", Check.POSITIVE, traced=True),
        _decision("prev_hash", SHA256, HASH),
    ),
    _CHAINED,
)
"""A model decision (the latest ``decision_event.vN.avsc``), stored in ``decisions``."""

MODEL_EVENT = RecordKind(
    "model_event",
    ("model_events",),
    (
        _field("event_id", STRING, "UUID"),
        _field("occurred_at", TIMESTAMP_MILLIS, TIME),
        _field("action", STRING, LOW_TEXT),
        _field("actor", STRING, "String"),
        Field(
            "subject", REFERENCE, (Column("subject_type", LOW_TEXT), Column("subject_id", "String"))
        ),
        _field(
            "related",
            {"type": "array", "items": "Reference"},
            "Array(Tuple(type LowCardinality(String), id String))",
        ),
        _field("metadata", STRING, "String"),
        _field("key_id", OPTIONAL_STRING, LOW_OPTIONAL),
        _field("producer_id", STRING, LOW_TEXT),
        _field("producer_epoch", "long", "UInt64"),
        _field("seq", "long", "UInt64"),
        _field("prev_hash", SHA256, HASH),
    ),
    _CHAINED,
)
"""A model-lifecycle event (the latest ``model_event.vN.avsc``), stored in ``model_events``."""

CHECKPOINT = RecordKind(
    "checkpoint",
    ("checkpoints", "model_event_checkpoints"),
    (
        _field("producer_id", STRING, LOW_TEXT),
        _field("producer_epoch", "long", "UInt64"),
        _field("seq", "long", "UInt64"),
        _field("chain_head", {"type": "fixed", "name": "ChainHead", "size": 32}, HASH),
        _field("key_id", STRING, LOW_TEXT),
        _field("algorithm", STRING, LOW_TEXT),
        _field("signature", "bytes", "String"),
        _field("signed_at", TIMESTAMP_MILLIS, TIME),
    ),
    (Column("signature_verified", "Bool"), *_SOURCE),
)
"""A signed checkpoint of a chain (the latest ``checkpoint.vN.avsc``), stored in ``checkpoints``
(decision chains) or ``model_event_checkpoints`` (model-event chains)."""

SUBJECT_KEY = RecordKind(
    "subject_key",
    ("subject_keys",),
    (
        _field("event_id", STRING, "UUID"),
        _field("occurred_at", TIMESTAMP_MILLIS, TIME),
        _field("subject_hash", STRING, "String"),
        _field("keystore_key_id", STRING, LOW_TEXT),
        _field("ephemeral_key", "bytes", "String"),
        _field("nonce", "bytes", "String"),
        _field("sealed_key", "bytes", "String"),
        _field("producer_id", STRING, LOW_TEXT),
    ),
    (
        Column("kafka_partition", "UInt32"),
        Column("kafka_offset", "UInt64"),
        Column("filed_at", TIME, written=False),
    ),
)
"""A decision's sealed data key (the latest ``subject_key.vN.avsc``; contract/sealing.py), filed
in the key store table ``subject_keys``; erasure deletes it."""

RECORD_KINDS = (DECISION_EVENT, MODEL_EVENT, CHECKPOINT, SUBJECT_KEY)
