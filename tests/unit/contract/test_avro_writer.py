"""The compiled Avro writer writes exactly what fastavro writes, and refuses what it refuses."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from decision_audit.contract import genesis_hash
from decision_audit.contract.avro_writer import compile_writer, encode_long
from decision_audit.contract.schemas import shipped_schemas
from tests.helpers import event_record


def fastavro_body(parsed: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


AWKWARD: list[dict[str, Any]] = [
    {},
    {"score": 0.0, "latency_ms": -0.0, "seq": 2**62, "producer_epoch": 0},
    {"score": math.inf, "tags": {"ünï": "cødé ☃", "": ""}, "request_id": ""},
    {"occurred_at": datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)},
    {"occurred_at": datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=-7)))},
    {"inputs": "x" * 100_000, "explanation": "é" * 300, "key_id": "k"},
    {"seq": 1, "producer_epoch": 2**63 - 1, "latency_ms": 1e-300},
]


@pytest.mark.parametrize("fields", AWKWARD)
def test_decision_event_bytes_equal_fastavro(fields: dict[str, Any]) -> None:
    for schema in shipped_schemas():
        if schema.name != "decision_event":
            continue
        names = {f["name"] for f in schema.parsed["fields"]}
        full = {**event_record("p-ü", 7, 3, genesis_hash("p-ü", 7)), **fields}
        rec = {k: v for k, v in full.items() if k in names}
        assert compile_writer(schema.parsed)(rec) == fastavro_body(schema.parsed, rec)


def test_fields_left_out_take_their_defaults() -> None:
    schema = shipped_schemas().latest("decision_event")
    rec = event_record("p", 1, 1, genesis_hash("p", 1))
    with_defaults = {f["name"] for f in schema.parsed["fields"] if "default" in f}
    assert {"tags", "key_id", "explanation"} <= with_defaults
    for name in ("tags", "key_id", "explanation"):
        rec.pop(name)
    assert compile_writer(schema.parsed)(rec) == fastavro_body(schema.parsed, rec)


def test_every_shipped_schema_compiles_to_the_fast_path() -> None:
    for schema in shipped_schemas():
        write = compile_writer(schema.parsed)
        assert write.__name__ == "fast", schema.name


def test_generic_types_match_fastavro() -> None:
    parsed = parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [
                {"name": "a", "type": {"type": "array", "items": "long"}},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
                {"name": "f", "type": "float"},
                {"name": "b", "type": ["bytes", "null"]},
                {"name": "d", "type": "string", "default": "dflt"},
            ],
        }
    )
    for rec in (
        {"a": [], "e": "x", "f": 1.5, "b": None},
        {"a": [-1, 0, 1, -(2**63)], "e": "y", "f": -0.25, "b": b"\x00\xff", "d": "z"},
    ):
        assert compile_writer(parsed)(rec) == fastavro_body(parsed, rec)


def test_unsupported_schemas_fall_back_to_fastavro() -> None:
    parsed = parse_schema(
        {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}
    )
    write = compile_writer(parsed)
    assert write.__name__ == "slow"
    assert write({"u": "s"}) == fastavro_body(parsed, {"u": "s"})


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"seq": "1"}, TypeError),
        ({"model_name": None}, TypeError),
        ({"prev_hash": b"short"}, ValueError),
        ({"occurred_at": datetime(2026, 1, 1)}, ValueError),  # naive
    ],
)
def test_bad_records_raise(fields: dict[str, Any], error: type[Exception]) -> None:
    schema = shipped_schemas().latest("decision_event")
    clean = event_record("p", 1, 1, genesis_hash("p", 1))
    with pytest.raises(error, match=f"field '{next(iter(fields))}'"):
        compile_writer(schema.parsed)({**clean, **fields})
    missing = dict(clean)
    del missing["seq"]
    with pytest.raises(ValueError, match="seq"):
        compile_writer(schema.parsed)(missing)


def test_long_encoding_matches_fastavro_at_every_size() -> None:
    values = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2**20, -(2**20), 2**21, 2**28]
    values += [s * (2**k + d) for k in range(6, 64) for d in (-1, 0, 1) for s in (1, -1)]
    values = [n for n in values if -(2**63) <= n < 2**63]
    values += [1_763_900_000_123, 1_700_000_000_000_000, -(2**63), 2**63 - 1]
    for n in values * 2:  # the second round reads the cached encodings
        buf = io.BytesIO()
        schemaless_writer(buf, "long", n)
        assert encode_long(n) == buf.getvalue(), n
