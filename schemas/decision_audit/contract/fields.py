"""Each record kind's fields, declared once.

A field is declared with its Avro type (as in the latest ``.avsc``), the ClickHouse column(s)
of the sink table it is stored in, the checks the worker's staging query makes of it, and
whether ``verify`` compares the stored column with the original bytes and ``trace`` shows
it. From these the worker derives its sink column lists and its staging table and checks,
``verify`` the columns it compares and ``trace`` the fields it prints.

Adding a field is a change to its ``.avsc`` (a new version), a migration and this
declaration; tests/unit/contract/test_fields.py and tests/integration/test_contract.py
fail, naming what is missing where, until the three agree. A new chained record kind is a
:class:`RecordKind` with a ``chain`` (its chain-id suffix and checkpoint table) in
:data:`CHAINED_KINDS`: the worker, ``verify`` and the contract tests take it from there.
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
    ONE_OF = "one of the field's declared values (Field.values)"
    REQUIRED_WHEN = "present when another field has one of the named values (Field.required_when)"
    MAX_LENGTH = "at most Field.max_length characters (when present)"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a sink table."""

    name: str
    type: str
    """its ClickHouse type, as ``system.columns`` shows it"""
    written: bool = True
    """False when the table's DEFAULT fills it (``ingested_at``)"""
    default: str | None = None
    """the table's DEFAULT expression: of an unwritten column, or of a written one what rows
    stored before the column existed read (the field's Avro default, as SQL)"""


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
    values: tuple[str, ...] = ()
    """``Check.ONE_OF``: the values the field may take"""
    required_when: tuple[str, tuple[str, ...]] | None = None
    """``Check.REQUIRED_WHEN``: ``(other field, its values)`` under which this one is not null"""
    default: Any = None
    """the ``.avsc`` default when it is not the type's zero (null, false, empty): what a record
    of an older writer without the field reads; None otherwise"""
    max_length: int | None = None
    """``Check.MAX_LENGTH``: the most characters (code points) the text may have"""

    @property
    def staged(self) -> str:
        """The ClickHouse type ClickHouse's Avro input format reads this field into."""
        return staging_type(self.avro)


@dataclass(frozen=True, slots=True)
class Chain:
    """How a chained record kind's chains are named and where their checkpoints are stored."""

    suffix: str
    """appended to the serving producer's id to name the chain ('' for decisions)"""
    checkpoints: str
    """the table of the chains' signed checkpoints"""


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
    chain: Chain | None = None
    """for an event on a hash chain (not a checkpoint): how its chains are named and signed"""

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
        """The fields checked for ``check`` (by the staging query and the Python verifier)."""
        return tuple(f.name for f in self.fields if check in f.checks)

    @property
    def table(self) -> str:
        """The (first) sink table."""
        return self.tables[0]

    @property
    def chain_suffix(self) -> str:
        """What a serving producer's id is suffixed with to name its chains of this kind."""
        if self.chain is None:
            raise ValueError(f"{self.schema} records are not on a hash chain")
        return self.chain.suffix

    def chain_id(self, producer_id: str) -> str:
        """The id of the chain of this kind a serving producer writes."""
        return producer_id + self.chain_suffix

    @property
    def compared(self) -> tuple[str, ...]:
        """The fields ``verify`` compares with the original bytes, ``event_id`` first."""
        return tuple(f.name for f in self.fields if f.compared)


def sql_literal(value: str | bool | float) -> str:
    """A ClickHouse literal of an Avro default (the text ``system.columns`` shows it as)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


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


STATUSES = ("ok", "error", "timeout", "rejected", "fallback")
"""A decision's ``status``: the model answered (``ok``); the inference raised (``error``), ran
out of time (``timeout``) or was refused (``rejected``, e.g. inputs out of its domain); or a
fallback answered in its place (``fallback``, its answer in ``prediction``)."""

MAX_NAME = 512
"""The longest name (characters): a model's name and version, a failure's ``error_type``."""

MAX_ERROR_MESSAGE = 8192
"""The longest ``error_message`` of a failed inference (characters)."""

MAX_REASON = 8192
"""The longest review ``reason`` (characters)."""

MAX_FOLLOW_UP_VALUE = 65536
"""The longest outcome ``actual`` or review ``final_decision`` as stored (characters: the label,
or the JSON text of any other value)."""

VERDICTS = ("confirm", "override", "escalate")
"""A review's ``verdict``: the reviewer kept the decision, replaced it (``final_decision``), or
passed it on to someone else."""


def _field(
    name: str,
    avro: AvroType,
    column: str,
    *checks: Check,
    compared: bool = False,
    traced: bool = False,
    **more: Any,
) -> Field:
    return Field(name, avro, (Column(name, column),), checks, compared, traced, **more)


def _compared(
    name: str, avro: AvroType, column: str, *checks: Check, traced: bool = False, **more: Any
) -> Field:
    return _field(name, avro, column, *checks, compared=True, traced=traced, **more)


def _text(
    name: str, avro: AvroType, column: str, max_length: int, *checks: Check, **more: Any
) -> Field:
    """A compared, traced free-text field of at most ``max_length`` characters."""
    return _compared(
        name, avro, column, *checks, Check.MAX_LENGTH, traced=True, max_length=max_length, **more
    )


def _integrity(*, checked: bool) -> tuple[Field, ...]:
    """The integrity block every chained record ends with (``prev_hash`` last)."""
    utf8 = (Check.UTF8,) if checked else ()
    return (
        _compared("key_id", OPTIONAL_STRING, LOW_OPTIONAL, *utf8, traced=True),
        _compared("producer_id", STRING, LOW_TEXT, *utf8, traced=True),
        _compared("producer_epoch", "long", "UInt64", Check.NON_NEGATIVE, traced=True),
        # Not compared as a column: a seq that differs from the bytes is a reordered row.
        _field("seq", "long", "UInt64", Check.POSITIVE, traced=True),
        _compared("prev_hash", SHA256, HASH),
    )


_INGESTED_AT = Column("ingested_at", TIME, written=False, default="now64(3)")
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
        _compared("event_id", STRING, "UUID", Check.UUID, traced=True),
        _compared("occurred_at", TIMESTAMP_MILLIS, TIME, Check.PLAUSIBLE_TIME, traced=True),
        _compared("model_name", STRING, LOW_TEXT, Check.NON_EMPTY, Check.UTF8, traced=True),
        _compared("model_version", STRING, LOW_TEXT, Check.NON_EMPTY, Check.UTF8, traced=True),
        _compared("deployment_id", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("request_id", OPTIONAL_STRING, "Nullable(String)", Check.UTF8, traced=True),
        _compared("inputs", STRING, "String", Check.JSON_OBJECT),
        _compared(
            "prediction",
            OPTIONAL_STRING,
            "Nullable(String)",
            Check.UTF8,
            Check.REQUIRED_WHEN,
            traced=True,
            required_when=("status", ("ok",)),
        ),
        _compared("prediction_is_json", "boolean", "Bool", traced=True),
        Field(
            "status",
            STRING,
            (Column("status", LOW_TEXT, default=sql_literal("ok")),),
            (Check.ONE_OF,),
            compared=True,
            traced=True,
            values=STATUSES,
            default="ok",
        ),
        _text("error_type", OPTIONAL_STRING, LOW_OPTIONAL, MAX_NAME, Check.UTF8),
        _text("error_message", OPTIONAL_STRING, "Nullable(String)", MAX_ERROR_MESSAGE, Check.UTF8),
        _compared("score", OPTIONAL_DOUBLE, "Nullable(Float64)", Check.FINITE, traced=True),
        _compared("explanation", OPTIONAL_STRING, "Nullable(String)", Check.UTF8),
        _compared("run_id", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("dataset_version", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("code_commit", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("environment_hash", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("actor", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8, traced=True),
        _compared("latency_ms", OPTIONAL_DOUBLE, "Nullable(Float64)", Check.FINITE, traced=True),
        _compared("tags", STRING_MAP, TAG_MAP, Check.UTF8),
        _compared("redaction_policy", OPTIONAL_STRING, LOW_OPTIONAL, Check.UTF8),
        *_integrity(checked=True),
    ),
    _CHAINED,
    Chain("", "checkpoints"),
)
"""A model decision (the latest ``decision_event.vN.avsc``), stored in ``decisions``."""

MODEL_EVENT = RecordKind(
    "model_event",
    ("model_events",),
    (
        _compared("event_id", STRING, "UUID"),
        _compared("occurred_at", TIMESTAMP_MILLIS, TIME),
        _compared("action", STRING, LOW_TEXT),
        _compared("actor", STRING, "String"),
        Field(
            "subject", REFERENCE, (Column("subject_type", LOW_TEXT), Column("subject_id", "String"))
        ),
        _field(
            "related",
            {"type": "array", "items": "Reference"},
            "Array(Tuple(type LowCardinality(String), id String))",
        ),
        _compared("metadata", STRING, "String", default="{}"),
        _compared("key_id", OPTIONAL_STRING, LOW_OPTIONAL),
        _compared("producer_id", STRING, LOW_TEXT),
        _compared("producer_epoch", "long", "UInt64"),
        _field("seq", "long", "UInt64"),
        _compared("prev_hash", SHA256, HASH),
    ),
    _CHAINED,
    Chain("/model-events", "model_event_checkpoints"),
)
"""A model-lifecycle event (the latest ``model_event.vN.avsc``), stored in ``model_events``;
its fields are checked by :class:`decision_audit.contract.lineage.ModelEventRecord`."""

OUTCOME = RecordKind(
    "outcome",
    ("outcomes",),
    (
        _compared("event_id", STRING, "UUID", Check.UUID, traced=True),
        _compared("occurred_at", TIMESTAMP_MILLIS, TIME, Check.PLAUSIBLE_TIME, traced=True),
        _compared("decision_id", STRING, "String", Check.NON_EMPTY, traced=True),
        _text("actual", STRING, "String", MAX_FOLLOW_UP_VALUE),
        _compared("actual_is_json", "boolean", "Bool", traced=True),
        _compared("observed_at", TIMESTAMP_MILLIS, TIME, Check.PLAUSIBLE_TIME, traced=True),
        _compared("source", OPTIONAL_STRING, LOW_OPTIONAL, traced=True),
        _compared("actor", OPTIONAL_STRING, LOW_OPTIONAL, traced=True),
        _compared("redaction_policy", OPTIONAL_STRING, LOW_OPTIONAL),
        *_integrity(checked=False),
    ),
    _CHAINED,
    Chain("/outcomes", "outcome_checkpoints"),
)
"""The ground truth of a decision, known later (the latest ``outcome.vN.avsc``), stored in
``outcomes``."""

REVIEW = RecordKind(
    "review",
    ("reviews",),
    (
        _compared("event_id", STRING, "UUID", Check.UUID, traced=True),
        _compared("occurred_at", TIMESTAMP_MILLIS, TIME, Check.PLAUSIBLE_TIME, traced=True),
        _compared("decision_id", STRING, "String", Check.NON_EMPTY, traced=True),
        _compared("reviewer", STRING, LOW_TEXT, Check.NON_EMPTY, traced=True),
        _compared("verdict", STRING, LOW_TEXT, Check.ONE_OF, traced=True, values=VERDICTS),
        _text(
            "final_decision",
            OPTIONAL_STRING,
            "Nullable(String)",
            MAX_FOLLOW_UP_VALUE,
            Check.REQUIRED_WHEN,
            required_when=("verdict", ("override",)),
        ),
        _compared("final_decision_is_json", "boolean", "Bool", traced=True),
        _text("reason", OPTIONAL_STRING, "Nullable(String)", MAX_REASON),
        _compared("redaction_policy", OPTIONAL_STRING, LOW_OPTIONAL),
        *_integrity(checked=False),
    ),
    _CHAINED,
    Chain("/reviews", "review_checkpoints"),
)
"""A person's review of a decision (the latest ``review.vN.avsc``), stored in ``reviews``."""

CHAINED_KINDS = (DECISION_EVENT, MODEL_EVENT, OUTCOME, REVIEW)
"""Every record kind on hash chains: each on its own topic, chain and tables."""

FOLLOW_UPS = (OUTCOME, REVIEW)
"""What follows a decision and names it (``decision_id``: its event id or request id)."""

CHECKPOINT = RecordKind(
    "checkpoint",
    tuple(k.chain.checkpoints for k in CHAINED_KINDS if k.chain is not None),
    (
        _field("producer_id", STRING, LOW_TEXT),
        _field("producer_epoch", "long", "UInt64"),
        _field("seq", "long", "UInt64"),
        _field("chain_head", {"type": "fixed", "name": "ChainHead", "size": 32}, HASH),
        _field("key_id", STRING, LOW_TEXT),
        _field("algorithm", STRING, LOW_TEXT, default="ed25519"),
        _field("signature", "bytes", "String"),
        _field("signed_at", TIMESTAMP_MILLIS, TIME),
    ),
    (Column("signature_verified", "Bool"), *_SOURCE),
)
"""A signed checkpoint of a chain (the latest ``checkpoint.vN.avsc``), stored in the
checkpoint table of its chain's record kind (``checkpoints`` for decision chains)."""

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
        Column("filed_at", TIME, written=False, default="now64(3)"),
    ),
)
"""A decision's sealed data key (the latest ``subject_key.vN.avsc``; contract/sealing.py), filed
in the key store table ``subject_keys``; erasure deletes it."""

RECORD_KINDS = (*CHAINED_KINDS, CHECKPOINT, SUBJECT_KEY)


def chained_kind(schema: str) -> RecordKind:
    """The chained record kind of an ``.avsc`` name (``decision_event``, ``outcome``…)."""
    for kind in CHAINED_KINDS:
        if kind.schema == schema:
            return kind
    raise KeyError(f"no chained record kind {schema!r}")
