"""The field declarations (contract/fields.py) agree with the shipped ``.avsc`` files, and what
the worker, ``verify`` and ``trace`` derive from them holds together.

The migrated tables are compared in tests/integration/test_contract.py, with
:func:`disagreements` from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from decision_audit.audit import trace, verify
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.fields import (
    DECISION_EVENT,
    RECORD_KINDS,
    Check,
    Field,
    RecordKind,
    staging_type,
)
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.reasons import Reason
from decision_audit.worker import staging, store
from decision_audit.worker.checks import EventVerifier, Rejection
from decision_audit.worker.model_events import MODEL_EVENT_COLUMNS
from tests.helpers import event_record

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
    assert "ingested_at" not in store.DECISION_COLUMNS + MODEL_EVENT_COLUMNS


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
    Check.POSITIVE: lambda f: 0,
    Check.NON_NEGATIVE: lambda f: -1,
    Check.UUID: lambda f: "0190A000-0000-7000-8000-000000000001",
    Check.FINITE: lambda f: float("nan"),
    Check.NON_EMPTY: lambda f: "",
    Check.JSON_OBJECT: lambda f: json.dumps([1, 2]),
    Check.PLAUSIBLE_TIME: lambda f: datetime(1990, 1, 1, tzinfo=UTC),
    # Encoded as a marker that is then replaced by bytes that are not UTF-8.
    Check.UTF8: lambda f: {_MARK: "v"} if f.staged.startswith("Map") else _MARK,
}


def _checks() -> list[tuple[Field, Check]]:
    return [(f, c) for f in DECISION_EVENT for c in f.checks]


@pytest.mark.parametrize(("field", "check"), _checks(), ids=lambda x: getattr(x, "name", x))
def test_the_python_verifier_rejects_what_each_declared_check_refuses(
    field: Field, check: Check
) -> None:
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    prev = genesis_hash("p", 1)
    rec = {**event_record("p", 1, 1, prev), field.name: _VIOLATIONS[check](field)}
    body = codec.encode_body(schema, rec)
    if check is Check.UTF8:
        body = body.replace(_MARK.encode(), b"Z\xff\xfeZ")
    result = EventVerifier(codec, max_event_bytes=1_000_000).check(
        codec.frame(schema, body), b"p", [(EVENT_HASH_HEADER, chain_hash(prev, body))]
    )
    assert isinstance(result, Rejection), (field.name, check)
    assert result.reason == staging._FIELD_FLAGS[check].reason, result
    assert isinstance(result.reason, Reason)
