"""The field declarations (contract/fields.py) agree with the shipped ``.avsc`` files, and what
the worker, ``verify`` and ``trace`` derive from them holds together, for every record kind
(decisions, model events, outcomes, reviews, checkpoints).

The migrated tables are compared in tests/integration/test_contract.py, with
:func:`disagreements` from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from decision_audit.audit import trace, verify
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.fields import (
    CHAINED_KINDS,
    CHECKPOINT,
    DECISION_EVENT,
    FOLLOW_UPS,
    MODEL_EVENT,
    RECORD_KINDS,
    STATUSES,
    VERDICTS,
    Check,
    Field,
    RecordKind,
    sql_literal,
    staging_type,
)
from decision_audit.contract.followups import Verdict
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.models import Status
from decision_audit.contract.reasons import Reason
from decision_audit.worker import staging, store
from decision_audit.worker.checks import EventVerifier, Rejection
from decision_audit.worker.model_events import MODEL_EVENT_COLUMNS
from decision_audit.worker.side_chains import record_row
from tests.helpers import RECORDS

DECLARED = "decision_audit/contract/fields.py"


def disagreements(
    declared: Sequence[tuple[str, Any]], found: Sequence[tuple[str, Any]], where: str, what: str
) -> list[str]:
    """What differs between declared and found ``(name, type)`` pairs, said for people."""
    have, want = dict(found), dict(declared)
    out = []
    for name, type_ in want.items():
        if name not in have:
            out.append(f"{what} {name!r} is declared in {DECLARED} but missing from {where}")
        elif have[name] != type_:
            out.append(f"{what} {name!r}: {DECLARED} says {type_!r}, {where} says {have[name]!r}")
    out += [
        f"{what} {name!r} is in {where} but not declared in {DECLARED}"
        for name in have
        if name not in want
    ]
    return out


def _without_docs(avro: Any) -> Any:
    if isinstance(avro, dict):
        return {k: _without_docs(v) for k, v in avro.items() if k not in ("doc", "default")}
    if isinstance(avro, list):
        return [_without_docs(v) for v in avro]
    return avro


@pytest.mark.parametrize("kind", RECORD_KINDS, ids=lambda k: k.schema)
def test_the_latest_avsc_has_exactly_the_declared_fields(kind: RecordKind) -> None:
    latest = default_codec().registry.latest(kind.schema)
    where = f"{kind.schema}.v{latest.version}.avsc"
    fields = [(f["name"], _without_docs(f["type"])) for f in latest.definition["fields"]]
    problems = disagreements([(f.name, f.avro) for f in kind], fields, where, "field")
    assert not problems, "\n".join(problems)
    assert kind.names == tuple(name for name, _ in fields), f"{where}: fields in another order"


_ZERO: tuple[Any, ...] = (None, False, {}, [])
"""Avro defaults a column of the type reads anyway (nothing to declare)"""


@pytest.mark.parametrize("kind", RECORD_KINDS, ids=lambda k: k.schema)
def test_every_default_an_older_writer_is_read_with_is_declared(kind: RecordKind) -> None:
    latest = default_codec().registry.latest(kind.schema)
    where = f"{kind.schema}.v{latest.version}.avsc"
    for f in latest.definition["fields"]:
        declared = kind.field(f["name"]).default
        given = f.get("default")
        if any(given == z and type(given) is type(z) for z in _ZERO):
            assert declared is None, f"{kind.schema}.{f['name']}: declared default, {where} none"
        else:
            assert declared == given, f"{kind.schema}.{f['name']}: {declared!r} != {given!r}"


def test_a_table_default_of_a_written_column_is_its_fields_avro_default() -> None:
    for kind in RECORD_KINDS:
        for f in kind:
            for c in f.columns:
                if c.written and c.default is not None:
                    assert c.default == sql_literal(f.default), (kind.schema, c.name)


def test_the_declared_value_sets_are_the_models_types() -> None:
    assert get_args(Status) == STATUSES and get_args(Verdict) == VERDICTS
    assert DECISION_EVENT.field("status").values == STATUSES
    assert CHAINED_KINDS[-2:] == FOLLOW_UPS
    assert all(f.required_when is not None for k in RECORD_KINDS for f in k
               if Check.REQUIRED_WHEN in f.checks)  # fmt: skip
    assert all(f.values for k in RECORD_KINDS for f in k if Check.ONE_OF in f.checks)


def test_each_chained_kind_has_its_own_chains_and_checkpoint_table() -> None:
    chains = [k.chain for k in CHAINED_KINDS]
    assert all(c is not None for c in chains) and CHECKPOINT.chain is None
    assert len({c.suffix for c in chains if c}) == len({c.checkpoints for c in chains if c}) == 4
    assert CHECKPOINT.tables == tuple(c.checkpoints for c in chains if c)
    for kind in CHAINED_KINDS:
        assert kind.names[0] == "event_id" and kind.names[-1] == "prev_hash", kind.schema
        assert kind.compared[0] == "event_id" and "seq" not in kind.compared, kind.schema
        assert {"occurred_at", "producer_id", "producer_epoch", "seq"} <= set(kind.names)
    assert set(store.SIDE_TOKENS) == {k.schema for k in CHAINED_KINDS} - {"decision_event"}


def test_disagreements_say_what_is_missing_where() -> None:
    found = disagreements(
        [("a", "String"), ("b", "UInt64"), ("c", "Bool")],
        [("a", "String"), ("b", "UInt32"), ("d", "Bool")],
        "the decisions table",
        "column",
    )
    assert sorted(found) == [
        f"column 'b': {DECLARED} says 'UInt64', the decisions table says 'UInt32'",
        f"column 'c' is declared in {DECLARED} but missing from the decisions table",
        f"column 'd' is in the decisions table but not declared in {DECLARED}",
    ]


def test_the_sink_columns_are_derived_from_the_declaration() -> None:
    # The decision row is the record's fields then the five columns DecisionColumns appends.
    assert all(f.columns[0].name == f.name and len(f.columns) == 1 for f in DECISION_EVENT)
    assert (
        *DECISION_EVENT.names,
        "event_hash",
        "schema_fingerprint",
        "raw",
        "kafka_partition",
        "kafka_offset",
    ) == store.DECISION_COLUMNS
    assert store.CHECKPOINT_COLUMNS[-4:] == (
        "signature_verified",
        "raw",
        "kafka_partition",
        "kafka_offset",
    )
    assert MODEL_EVENT_COLUMNS[4:6] == ("subject_type", "subject_id")
    assert MODEL_EVENT.written == MODEL_EVENT_COLUMNS
    assert "ingested_at" not in store.DECISION_COLUMNS + MODEL_EVENT_COLUMNS
    # Outcomes and reviews: the record's fields then the same five columns.
    for kind in FOLLOW_UPS:
        assert kind.written == (*kind.names, *store.DECISION_COLUMNS[-5:]), kind.schema
        record_row(kind)  # each field is one column of its name
    with pytest.raises(ValueError, match="not one column"):
        record_row(MODEL_EVENT)


def test_the_staging_table_checks_and_copy_are_derived_from_the_declaration() -> None:
    assert tuple((f.name, f.staged) for f in DECISION_EVENT) == staging.EVENT_COLUMNS
    assert dict(staging.EVENT_COLUMNS)["seq"] == "Int64"  # a negative seq is seen
    assert dict(staging.EVENT_COLUMNS)["tags"] == "Map(String, String)"
    assert set(staging._SELECT) == set(store.DECISION_COLUMNS)
    sql = staging._check_sql(staging.KeyRing(), require_signed=False)
    for f in DECISION_EVENT:
        for check in f.checks:
            assert staging._violation(f, check) in sql, (f.name, check)
    assert set(staging._FIELD_FLAGS) == set(Check), "a field check without a staging flag"
    # A field older writers lack is staged as its Avro default, not the type's zero.
    assert staging._DEFAULTS == {"status": " DEFAULT 'ok'"}


def test_verify_and_trace_read_the_declared_columns() -> None:
    assert verify.COMPARED[0] == "event_id"  # read as toString(event_id) apart
    assert set(verify.COMPARED) == set(DECISION_EVENT.names) - {"seq"}
    assert set(trace.DECISION_FIELDS) <= set(DECISION_EVENT.names)
    assert {"event_id", "occurred_at", "prediction", "seq"} <= set(trace.DECISION_FIELDS)


@pytest.mark.parametrize(
    ("avro", "staged"),
    [
        ("string", "String"),
        (["null", "string"], "Nullable(String)"),
        (["null", "double"], "Nullable(Float64)"),
        ("long", "Int64"),
        ("boolean", "Bool"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "DateTime64(3, 'UTC')"),
        ({"type": "map", "values": "string"}, "Map(String, String)"),
        ({"type": "fixed", "name": "X", "size": 32}, "FixedString(32)"),
    ],
)
def test_staging_types(avro: Any, staged: str) -> None:
    assert staging_type(avro) == staged


def test_a_type_clickhouse_cannot_stage_as_is_is_refused() -> None:
    with pytest.raises(ValueError, match="no staging type"):
        staging_type({"type": "array", "items": "string"})


# -- the Python verifier makes every check the staging query makes ------------------------------

_MARK = "ZZZZ"
_VIOLATIONS: dict[Check, Callable[[Field], Any]] = {
    Check.ONE_OF: lambda f: "exploded",
    Check.REQUIRED_WHEN: lambda f: None,
    Check.POSITIVE: lambda f: 0,
    Check.NON_NEGATIVE: lambda f: -1,
    Check.UUID: lambda f: "0190A000-0000-7000-8000-000000000001",
    Check.FINITE: lambda f: float("nan"),
    Check.NON_EMPTY: lambda f: "",
    Check.JSON_OBJECT: lambda f: json.dumps([1, 2]),
    Check.PLAUSIBLE_TIME: lambda f: datetime(1990, 1, 1, tzinfo=UTC),
    # Encoded as a marker that is then replaced by bytes that are not UTF-8.
    Check.UTF8: lambda f: {_MARK: "v"} if f.staged.startswith("Map") else _MARK,
    # Code points, not bytes: one more than the limit, two bytes each.
    Check.MAX_LENGTH: lambda f: "é" * ((f.max_length or 0) + 1),
}


def _checks() -> list[tuple[RecordKind, Field, Check]]:
    return [(k, f, c) for k in (DECISION_EVENT, *FOLLOW_UPS) for f in k for c in f.checks]


def _chained_record(kind: RecordKind, producer: str, prev: bytes, **fields: Any) -> Any:
    rec = RECORDS[kind.schema](producer, 1, 1, prev)
    if kind.schema == "review" and fields.get("final_decision", "") is None:
        rec["verdict"] = "override"  # final_decision is required of an override only
    return {**rec, **fields}


@pytest.mark.parametrize(
    ("kind", "field", "check"), _checks(), ids=lambda x: getattr(x, "name", getattr(x, "schema", x))
)
def test_the_python_verifier_rejects_what_each_declared_check_refuses(
    kind: RecordKind, field: Field, check: Check
) -> None:
    codec = default_codec()
    schema = codec.registry.latest(kind.schema)
    producer = kind.chain_id("p")
    prev = genesis_hash(producer, 1)
    rec = _chained_record(kind, producer, prev, **{field.name: _VIOLATIONS[check](field)})
    body = codec.encode_body(schema, rec)
    if check is Check.UTF8:
        body = body.replace(_MARK.encode(), b"Z\xff\xfeZ")
    result = EventVerifier(codec, max_event_bytes=1_000_000).check(
        codec.frame(schema, body),
        producer.encode(),
        [(EVENT_HASH_HEADER, chain_hash(prev, body))],
        record=kind.schema,
    )
    assert isinstance(result, Rejection), (field.name, check)
    assert result.reason == staging._FIELD_FLAGS[check].reason, result
    assert isinstance(result.reason, Reason)
