"""Avro binary encoding written as ClickHouse SQL: a stored row, encoded again in the engine.

``verify`` must show that each row's columns say what its original bytes say. Decoding
every ``raw`` in Python costs ~20 µs an event; instead the engine encodes the row's columns
the way the producer's writer did (:func:`body_sql`, per writer schema) and compares the
result with the stored body, byte for byte. Avro's binary encoding of these types is a
function of the values (zigzag varints, length-prefixed text, union branch indexes, an
empty-terminated map), so equal bytes mean the columns decode from ``raw`` exactly; a row
whose bytes differ — or whose writer schema is one this module cannot encode — is decoded
in Python (:mod:`.verify`), which names what differs.

Fields the writer did not have (an older writer version) are read with the latest schema's
defaults, so for those the column must hold the default (:func:`defaults_sql`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from decision_audit.contract.fields import DECISION_EVENT, RecordKind

AvroType = Any


class Unsupported(Exception):
    """A type (or default) this module does not encode; such rows go to Python."""


_MAX_LONG = 2**63


SMALL_VARINTS = "_varints"
"""The alias :data:`SMALL_VARINTS_SQL` must be bound to (``WITH … AS _varints``)."""

SMALL_VARINTS_SQL = (
    "arrayMap(n -> if(n < 128, char(n), char(bitOr(bitAnd(n, 127), 128), bitShiftRight(n, 7))), "
    "range(16384))"
)
"""The encodings of 0..16383 (one or two bytes): string lengths and small longs, looked up."""


def varint(z: str) -> str:
    """The base-128 little-endian bytes of the ``UInt64`` expression ``z`` (any value).

    ``z`` should be a name (an alias): it is repeated some thirty times.
    """
    # Byte i holds bits 7i..7i+6, with the continuation bit when bits remain above; the
    # tenth holds bit 63 alone (no shift by 64 or more: its result is undefined).
    parts = ", ".join(
        [
            *(
                f"bitOr(bitAnd(bitShiftRight({z}, {7 * i}), 127), "
                f"if(bitShiftRight({z}, {7 * (i + 1)}) = 0, 0, 128))"
                for i in range(9)
            ),
            f"bitShiftRight({z}, 63)",
        ]
    )
    size = " + ".join(f"({z} >= {1 << (7 * i)})" for i in range(1, 10))
    return f"if({z} < 16384, {SMALL_VARINTS}[{z} + 1], substring(char({parts}), 1, 1 + {size}))"


MAX_SMALL = 1 << 20
"""What :func:`small_varint` encodes: a length or count below this (the zigzag below 2**21).
Events are at most ``max_event_bytes`` (1 MB by default); a row with a longer text is
checked in Python."""


def small_varint(z: str) -> str:
    """The bytes of the ``UInt64`` expression ``z`` < 2**21 (one to three), compactly."""
    three = (
        f"char(bitOr(bitAnd({z}, 127), 128), bitOr(bitAnd(bitShiftRight({z}, 7), 127), 128), "
        f"bitShiftRight({z}, 14))"
    )
    return f"if({z} < 16384, {SMALL_VARINTS}[{z} + 1], {three})"


def long_sql(x: str, alias: str) -> str:
    """An Avro ``long`` of a non-negative integer expression (zigzag: twice the value);
    ``alias`` names the zigzag value where it is first used (identical expressions may share
    one name)."""
    return varint(alias).replace(alias, f"(bitShiftLeft(toUInt64({x}), 1) AS {alias})", 1)


def _length_sql(s: str, guards: list[str]) -> str:
    """The length prefix of text ``s`` (a row with a text of a MiB or more goes to Python)."""
    guards.append(f"length({s}) < {MAX_SMALL}")
    return small_varint(f"bitShiftLeft(length({s}), 1)")


def string_sql(s: str, guards: list[str]) -> str:
    return f"concat({_length_sql(s, guards)}, {s})"


def _value_sql(avro: AvroType, x: str, guards: list[str], name: str) -> str:
    """The encoding of value ``x`` (not null) of Avro type ``avro``; ``name`` names it."""
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "long" and avro.get("logicalType") == "timestamp-millis":
            ms = f"toUnixTimestamp64Milli({x})"
            guards.append(f"{ms} >= 0")
            return long_sql(ms, f"_z_{name}")
        if kind == "fixed":
            guards.append(f"length({x}) = {avro['size']}")
            return x  # concat keeps a FixedString whole (toString drops trailing zero bytes)
        if kind == "map" and avro.get("values") == "string":
            inner: list[str] = []
            entry = f"concat({string_sql('k_', inner)}, {string_sql('v_', inner)})"
            items = (
                f"arrayStringConcat(arrayMap((k_, v_) -> {entry}, mapKeys({x}), mapValues({x})))"
            )
            guards.append(
                f"arrayAll((k_, v_) -> {' AND '.join(inner)}, mapKeys({x}), mapValues({x}))"
            )
            count = _length_sql(f"mapKeys({x})", guards)
            return f"if(empty({x}), '\\x00', concat({count}, {items}, '\\x00'))"
        if isinstance(kind, str) and set(avro) == {"type"}:
            return _value_sql(kind, x, guards, name)
    elif avro == "string":
        return string_sql(x, guards)
    elif avro == "long":
        guards.append(f"{x} < {_MAX_LONG}")
        return long_sql(x, f"_z_{name}")
    elif avro == "boolean":
        return f"if({x}, '\\x01', '\\x00')"
    elif avro == "double":
        # NaN compares unequal in Python's column check: leave it to Python.
        guards.append(f"NOT isNaN({x})")
        # All eight bytes (reinterpretAsString would drop trailing zero bytes).
        return f"reinterpretAsFixedString(toFloat64({x}))"
    raise Unsupported(json.dumps(avro))


def _field_sql(avro: AvroType, x: str, guards: list[str], name: str = "") -> str:
    name = name or re.sub(r"\W", "_", x)
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(avro) != 2 or len(branches) != 1:
            raise Unsupported(json.dumps(avro))
        inner: list[str] = []
        value = _value_sql(branches[0], f"assumeNotNull({x})", inner, name)
        guards.extend(f"(isNull({x}) OR {g})" for g in inner)
        null_index, value_index = ("\\x00", "\\x02") if avro[0] == "null" else ("\\x02", "\\x00")
        return f"if(isNull({x}), '{null_index}', concat('{value_index}', {value}))"
    return _value_sql(avro, x, guards, name)


def column_value(kind: RecordKind, name: str) -> str:
    """The SQL of field ``name``'s value as the Avro writer had it, from its column."""
    (column,) = kind.field(name).columns
    if column.type == "UUID":
        return f"toString({column.name})"
    return column.name


def body_sql(writer: Mapping[str, Any], kind: RecordKind = DECISION_EVENT) -> tuple[str, list[str]]:
    """``(body, guards)``: the SQL of the Avro body the ``writer`` schema (its ``.avsc``
    definition) makes of a stored row, and the conditions under which that encoding is the
    only one (otherwise the row goes to Python). Raises :class:`Unsupported`."""
    guards: list[str] = []
    pieces = []
    for f in writer["fields"]:
        try:
            kind.field(f["name"])
        except KeyError:
            raise Unsupported(f"writer field {f['name']!r} is not stored") from None
        pieces.append(_field_sql(f["type"], column_value(kind, f["name"]), guards, f["name"]))
    return f"concat({', '.join(pieces)})", guards


def defaults_sql(
    writer: Mapping[str, Any], reader: Mapping[str, Any], kind: RecordKind = DECISION_EVENT
) -> list[str]:
    """Conditions that the columns of the reader's fields the writer lacks hold the default."""
    written = {f["name"] for f in writer["fields"]}
    out = []
    for f in reader["fields"]:
        if f["name"] in written:
            continue
        if "default" not in f:
            raise Unsupported(f"field {f['name']!r} has no default")
        x = column_value(kind, f["name"])
        default = f["default"]
        if default is None:
            out.append(f"isNull({x})")
        elif isinstance(default, bool):
            out.append(f"{x} = {'true' if default else 'false'}")
        elif default == {}:
            out.append(f"empty({x})")
        elif isinstance(default, str):
            out.append(f"{x} = {_quote(default)}")
        elif isinstance(default, int | float):
            out.append(f"{x} = {default!r}")
        else:
            raise Unsupported(f"default of {f['name']!r}")
    return out


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
