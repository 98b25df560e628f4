"""Where records are turned into Avro binary bodies fast: a writer compiled per schema.

fastavro's general writer walks the schema for every record; on the producer's hot path that
walk is most of the cost. :func:`compile_writer` walks the schema once and returns a closure
that appends each field's encoding to a ``bytearray``. It covers the types the shipped
schemas use — null, boolean, int, long, double, string, bytes, fixed, enum, map, array,
record, unions with null, and timestamp-millis — and falls back to fastavro for anything
else, so its output is byte-for-byte what fastavro writes (``tests/unit/test_avro_writer.py``
checks that on every shipped schema).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_writer

Write = Callable[[bytearray, Any], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_pack_double = struct.Struct("<d").pack


_LONG_CACHE: dict[int, bytes] = {}
_FAST = "#fast"
"""suffix of the fast variant of a named record's writer"""


def encode_long(n: int) -> bytes:
    """The Avro encoding of a ``long``: zigzag, then base-128 little-endian."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    if z < 0x200000:
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
    if z < 0x800000000:  # Kafka offsets, sizes: unrolled, since they seldom repeat
        b4 = (z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, ((z >> 14) & 0x7F) | 0x80
        if z < 0x10000000:
            return bytes((*b4, z >> 21))
        return bytes((*b4, ((z >> 21) & 0x7F) | 0x80, z >> 28))
    # Large longs repeat: a producer's epoch on every event, a timestamp for the events of
    # one millisecond. Their encodings are kept (bounded) instead of rebuilt.
    b = _LONG_CACHE.get(z)
    if b is None:
        key = z
        buf = bytearray()
        while z > 0x7F:
            buf.append((z & 0x7F) | 0x80)
            z >>= 7
        buf.append(z)
        if len(_LONG_CACHE) >= 1024:
            _LONG_CACHE.clear()
        b = _LONG_CACHE[key] = bytes(buf)
    return b


SMALL_LONGS = [encode_long(n) for n in range(8192)]
"""encodings of 0..8191 (lengths, indexes, partitions), looked up rather than built"""


def _long(out: bytearray, n: int) -> None:
    if 0 <= n < 64:
        out.append(n << 1)
    else:
        out += encode_long(n)


def _string(out: bytearray, s: str) -> None:
    b = s.encode()
    _long(out, len(b))
    out += b


def _bytes(out: bytearray, b: bytes) -> None:
    _long(out, len(b))
    out += b


def _boolean(out: bytearray, v: bool) -> None:
    out.append(1 if v else 0)


def _double(out: bytearray, v: float) -> None:
    out += _pack_double(v)


def _timestamp_millis(out: bytearray, v: datetime | int) -> None:
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError("timestamp-millis needs a timezone-aware datetime")
        delta = v - _EPOCH
        v = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    _long(out, v)


def _int_checked(out: bytearray, v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an int, got {type(v).__name__}")
    _long(out, v)


_PRIMITIVES: dict[str, Write] = {
    "long": _int_checked,
    "int": _int_checked,
    "string": _string,
    "bytes": _bytes,
    "boolean": _boolean,
    "double": _double,
    "float": lambda out, v: out.extend(struct.pack("<f", v)),
}


def _fixed(size: int) -> Write:
    def write(out: bytearray, v: bytes) -> None:
        if len(v) != size:
            raise ValueError(f"fixed of size {size} got {len(v)} bytes")
        out += v

    return write


def _nullable(inner: Write, null_first: bool) -> Write:
    if null_first:

        def write(out: bytearray, v: Any) -> None:
            if v is None:
                out.append(0)
            else:
                out.append(2)  # zigzag(1)
                inner(out, v)

    else:

        def write(out: bytearray, v: Any) -> None:
            if v is None:
                out.append(2)
            else:
                out.append(0)
                inner(out, v)

    return write


def _map(values: Write) -> Write:
    def write(out: bytearray, v: dict[str, Any]) -> None:
        if v:
            _long(out, len(v))
            for key, item in v.items():
                _string(out, key)
                values(out, item)
        out.append(0)

    return write


def _array(items: Write) -> Write:
    def write(out: bytearray, v: list[Any]) -> None:
        if v:
            _long(out, len(v))
            for item in v:
                items(out, item)
        out.append(0)

    return write


# Field encodings spelled out in generated code: no function call per field on the hot path.
_INLINE: dict[str, tuple[str, ...]] = {
    "string": (
        "b_ = {v}.encode()",
        "n_ = len(b_)",
        "if n_ < 8192: out += _SMALL_LONGS[n_]",
        "else: out += _encode_long(n_)",
        "out += b_",
    ),
    "boolean": ("out.append(1 if {v} else 0)",),
    "double": ("out += _pack_double({v})",),
    # Exact ints inline; anything else (bool, a datetime) through the checked writer.
    "long": ("if type({v}) is int: out += _encode_long({v})", "else: _int_checked(out, {v})"),
    "int": ("if type({v}) is int: out += _encode_long({v})", "else: _int_checked(out, {v})"),
    "timestamp-millis": (
        "if type({v}) is int: out += _encode_long({v})",
        "else: _timestamp_millis(out, {v})",
    ),
}


def _inline(kind: str, var: str, indent: str) -> list[str]:
    return [indent + line.format(v=var) for line in _INLINE[kind]]


def _record(fields: list[tuple[str, Write, bool, Any, Any]], name: str) -> tuple[Write, Write]:
    """Generate the functions writing every field in order (see ``_INLINE``): ``(careful,
    fast)``.

    *careful* fills in defaults of missing fields and names the field that fails. *fast*
    does neither (it raises KeyError on any missing field); the caller runs *careful* when
    it raises, so both write the same bytes and raise the same errors.
    """
    env: dict[str, Any] = {
        "_encode_long": encode_long,
        "_SMALL_LONGS": SMALL_LONGS,
        "_int_checked": _int_checked,
        "_timestamp_millis": _timestamp_millis,
        "_pack_double": _pack_double,
        "_field_error": _field_error,
    }
    careful = ["def write(out, v):", "    f = None", "    try:"]
    fast = ["def write_fast(out, v):"]
    for i, (fname, w, has_default, default, schema) in enumerate(fields):
        env[f"w{i}"] = w
        env[f"d{i}"] = default
        get = f"v.get({fname!r}, d{i})" if has_default else f"v[{fname!r}]"
        careful.append(f"        f = {fname!r}")
        careful.append(f"        x{i} = {get}")
        fast.append(f"    x{i} = v[{fname!r}]")
        kind = schema if isinstance(schema, str) else None
        if (
            isinstance(schema, dict)
            and schema.get("type") == "long"
            and schema.get("logicalType") == "timestamp-millis"
        ):
            kind = "timestamp-millis"
        nullable = (
            isinstance(schema, list)
            and len(schema) == 2
            and schema[0] == "null"
            and isinstance(schema[1], str)
            and schema[1] in _INLINE
        )
        body: list[str] = []
        if kind in _INLINE:
            body += _inline(kind, f"x{i}", "")
        elif nullable:
            body.append(f"if x{i} is None: out.append(0)")
            body.append("else:")
            body.append("    out.append(2)")
            body += _inline(schema[1], f"x{i}", "    ")
        else:
            body.append(f"w{i}(out, x{i})")
        careful += ["        " + line for line in body]
        fast += ["    " + line for line in body]
    careful.append("    except Exception as exc:")
    careful.append("        _field_error(f, v, exc)")
    # The code is built here from the schema's own fields.
    exec("\n".join(careful), env)
    exec("\n".join(fast), env)
    write: Write = env["write"]
    write.__qualname__ = f"write_{name}"
    write_fast: Write = env["write_fast"]
    write_fast.__qualname__ = f"write_fast_{name}"
    return write, write_fast


def _field_error(field: str | None, record: Any, exc: Exception) -> None:
    if isinstance(exc, KeyError) and field is not None and field not in record:
        raise ValueError(f"field {field!r} is missing") from None
    if isinstance(exc, ValueError | OverflowError):
        raise ValueError(f"field {field!r}: {exc}") from None
    if isinstance(exc, TypeError | AttributeError | struct.error):
        raise TypeError(f"field {field!r}: {exc}") from None
    raise exc


class _Unsupported(Exception):
    pass


def _compile(schema: Any, named: dict[str, Write]) -> Write:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in named:
            return named[schema]
        raise _Unsupported(schema)
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(schema) == 2 and len(branches) == 1:
            return _nullable(_compile(branches[0], named), schema[0] == "null")
        raise _Unsupported("union")
    t = schema["type"]
    logical = schema.get("logicalType")
    if t == "long" and logical == "timestamp-millis":
        return _timestamp_millis
    if logical is not None and t != "fixed":
        raise _Unsupported(logical)
    if t == "fixed":
        w = _fixed(schema["size"])
        named[schema["name"]] = w
        return w
    if t == "map":
        return _map(_compile(schema["values"], named))
    if t == "array":
        return _array(_compile(schema["items"], named))
    if t == "enum":
        index = {s: i for i, s in enumerate(schema["symbols"])}
        return lambda out, v: _long(out, index[v])
    if t == "record":
        fields = []
        for f in schema["fields"]:
            w = _compile(f["type"], named)
            fields.append((f["name"], w, "default" in f, f.get("default"), f["type"]))
        w, w_fast = _record(fields, schema["name"].replace(".", "_"))
        named[schema["name"]] = w
        named[schema["name"] + _FAST] = w_fast
        return w
    return _compile(t, named)


def compile_writer(parsed_schema: Any) -> Callable[[dict[str, Any]], bytes]:
    """``record -> Avro body`` for a fastavro-parsed schema (fastavro for what is not covered)."""
    named: dict[str, Write] = {}
    try:
        write = _compile(parsed_schema, named)
    except _Unsupported:

        def slow(record: dict[str, Any]) -> bytes:
            buf = io.BytesIO()
            schemaless_writer(buf, parsed_schema, record)
            return buf.getvalue()

        return slow

    write_fast = (
        named.get(f"{parsed_schema.get('name')}{_FAST}")
        if isinstance(parsed_schema, dict)
        else None
    )
    if write_fast is None:

        def careful(record: dict[str, Any]) -> bytes:
            out = bytearray()
            write(out, record)
            return bytes(out)

        return careful

    def fast(record: dict[str, Any]) -> bytes:
        out = bytearray()
        try:
            write_fast(out, record)
        except Exception:
            # A missing field with a default, or an error to name: start again, carefully.
            out = bytearray()
            write(out, record)
        return bytes(out)

    return fast
