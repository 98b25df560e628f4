"""The wire codec: Avro single-object encoding (``C3 01`` + 8-byte fingerprint + body).

Readers look the writer schema up by fingerprint among the shipped schemas and resolve it
to the latest version of the same record, so old events stay readable. The Confluent Schema
Registry framing (``00`` + 4-byte schema id + the same body) is the second implementation,
in :mod:`decision_audit.contract.registry_codec`; what the trail stores is always this one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro import schemaless_reader

from decision_audit.contract.avro_writer import compile_writer
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.reasons import Reason
from decision_audit.contract.schemas import SchemaRegistry, ShippedSchema, shipped_schemas

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10
CONFLUENT_MAGIC = b"\x00"
"""first byte of the Confluent Schema Registry framing (then the schema id, 4 bytes, big-endian)"""
CONFLUENT_HEADER_SIZE = 5


class CodecError(DecisionAuditError, ValueError):
    """A message that cannot be decoded, and why (``reason``)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A decoded message: the writer schema, the record read as the latest version, the body."""

    writer: ShippedSchema
    record: dict[str, Any]
    body: bytes


class Codec(Protocol):
    """What producers and consumers need from a wire format."""

    def encode_body(self, schema: ShippedSchema, record: dict[str, Any]) -> bytes: ...

    def frame(self, schema: ShippedSchema, body: bytes) -> bytes: ...

    def decode(self, data: bytes) -> DecodedRecord: ...


class SingleObjectCodec:
    """Avro single-object encoding against a :class:`SchemaRegistry`."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or shipped_schemas()
        self._writers: dict[bytes, Callable[[dict[str, Any]], bytes]] = {}

    def encode_body(self, schema: ShippedSchema, record: dict[str, Any]) -> bytes:
        writer = self._writers.get(schema.fingerprint)
        if writer is None:
            writer = self._writers[schema.fingerprint] = compile_writer(schema.parsed)
        return writer(record)

    def frame(self, schema: ShippedSchema, body: bytes) -> bytes:
        return MAGIC + schema.fingerprint + body

    def encode(self, schema: ShippedSchema, record: dict[str, Any]) -> bytes:
        return self.frame(schema, self.encode_body(schema, record))

    def decode(self, data: bytes) -> DecodedRecord:
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            detail = "not Avro single-object encoding (expected C3 01 header)"
            if len(data) > CONFLUENT_HEADER_SIZE and data[:1] == CONFLUENT_MAGIC:
                detail += (
                    f"; 00 + schema id {int.from_bytes(data[1:5], 'big')} looks like Confluent "
                    "Schema Registry framing, but no schema registry is configured to read it"
                )
            raise CodecError(Reason.BAD_MAGIC, detail)
        writer = self.registry.by_fingerprint(data[2:HEADER_SIZE])
        if writer is None:
            raise CodecError(
                Reason.UNKNOWN_SCHEMA,
                f"no shipped schema has fingerprint {data[2:HEADER_SIZE].hex()}",
            )
        return self.read(writer, data[HEADER_SIZE:])

    def read(self, writer: ShippedSchema, body: bytes) -> DecodedRecord:
        """Decode an Avro ``body`` written with ``writer``, as the latest version of its record."""
        reader = self.registry.latest(writer.name)
        buf = io.BytesIO(body)
        try:
            record = schemaless_reader(
                buf, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise CodecError(Reason.MALFORMED_AVRO, f"{type(exc).__name__}: {exc}"[:500]) from None
        if buf.tell() != len(body):
            raise CodecError(
                Reason.MALFORMED_AVRO, f"{len(body) - buf.tell()} trailing bytes after the record"
            )
        if not isinstance(record, dict):
            raise CodecError(Reason.MALFORMED_AVRO, "top-level value is not a record")
        return DecodedRecord(writer, record, body)


_default: SingleObjectCodec | None = None


def default_codec() -> SingleObjectCodec:
    """A process-wide codec over the shipped schemas."""
    global _default
    if _default is None:
        _default = SingleObjectCodec()
    return _default
