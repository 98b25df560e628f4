"""The Confluent Schema Registry framing: ``00`` + schema id (4 bytes, big-endian) + Avro body.

The body is byte for byte the single-object one (:mod:`.codec`): only the 5-byte header
differs from the 10-byte ``C3 01`` + fingerprint one, so ``event_hash = SHA-256(prev_hash ||
body)`` is the same whatever the framing. A worker reads both framings on one topic and
stores every event in single-object encoding (:meth:`RegistryCodec.as_single_object`), so
``verify`` and ``trace`` read the trail without a registry.

Subjects (:func:`subject_name`): a topic carries two record types, its events and the
checkpoints of their chains. With the default ``topic`` strategy (Confluent's
TopicNameStrategy) the events are registered under ``<topic>-value`` (``decisions-value``,
``model-events-value``) and the checkpoints under ``<topic>-io.decision_audit.Checkpoint``
(TopicRecordNameStrategy): TopicNameStrategy allows one record type per subject, a union
under ``<topic>-value`` would change the encoded body (a union branch index before the
record, so the chain would not cover the same bytes in both framings), and a name starting
with the topic stays inside the topic's subject prefix, which is what registries grant
access by. ``record`` (RecordNameStrategy) names every subject by the record's full name,
``topic_record`` every one by ``<topic>-<full name>``. Each message carries the id of its
own record's schema, so any Confluent deserializer reads either kind.

This module talks to a registry only through the client it is given or builds from a URL
(``confluent_kafka.schema_registry``, the ``[registry]`` extra).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from fastavro import parse_schema

from decision_audit.contract.codec import (
    CONFLUENT_HEADER_SIZE,
    CONFLUENT_MAGIC,
    MAGIC,
    CodecError,
    DecodedRecord,
    SingleObjectCodec,
)
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.reasons import Reason
from decision_audit.contract.schemas import SchemaRegistry, ShippedSchema, avro_fingerprint

__all__ = [
    "ConfluentFraming",
    "RegistryClient",
    "RegistryCodec",
    "RegistryExtraMissing",
    "RegistryUnavailable",
    "SchemaIds",
    "SchemaRejected",
    "SubjectNameStrategy",
    "SubjectNotRegistered",
    "confluent_header",
    "registry_client",
    "resolve_schema_id",
    "schema_text",
    "subject_name",
]

EXTRA_HINT = "pip install 'decision-audit[registry]'"


class SubjectNameStrategy(StrEnum):
    """How a schema's subject is named (Confluent's strategies of the same names)."""

    TOPIC = "topic"
    """``<topic>-value`` for the topic's events, ``<topic>-<full name>`` for checkpoints"""
    RECORD = "record"
    """``<full name>``, e.g. ``io.decision_audit.DecisionEvent``"""
    TOPIC_RECORD = "topic_record"
    """``<topic>-<full name>``"""


class RegistryClient(Protocol):
    """What decision-audit calls on a ``confluent_kafka.schema_registry.SchemaRegistryClient``."""

    def register_schema(self, subject_name: str, schema: Any) -> int: ...

    def lookup_schema(self, subject_name: str, schema: Any) -> Any: ...

    def get_schema(self, schema_id: int) -> Any: ...


class RegistryExtraMissing(DecisionAuditError, ImportError):
    """A schema registry was configured, but its client (the ``[registry]`` extra) is missing."""


class RegistryUnavailable(DecisionAuditError, ConnectionError):
    """The registry could not answer now (network, timeout, server error, credentials).

    Transient for the worker: the batch is retried, nothing quarantined, nothing committed.
    """


class SubjectNotRegistered(DecisionAuditError, LookupError):
    """Lookup-only (``auto_register_schemas=False``): the subject lacks the schema."""

    def __init__(self, subject: str, schema: ShippedSchema, detail: str) -> None:
        super().__init__(
            f"Schema Registry subject {subject!r} has no version with the schema "
            f"{schema.name}.v{schema.version} (fingerprint {schema.fingerprint.hex()}): "
            f"register schemas/avro/{schema.name}.v{schema.version}.avsc under {subject!r}, "
            f"or let the producer register it (auto_register_schemas=True) [{detail}]"
        )
        self.subject = subject


class SchemaRejected(DecisionAuditError, ValueError):
    """The registry refused to register a schema (incompatible with the subject, invalid)."""


def confluent_header(schema_id: int) -> bytes:
    """The 5 bytes before the body: ``00`` and the schema id, big-endian."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


def record_full_name(schema: ShippedSchema) -> str:
    definition = schema.definition or {}
    name = str(definition.get("name", schema.name))
    namespace = definition.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def subject_name(strategy: SubjectNameStrategy | str, topic: str, schema: ShippedSchema) -> str:
    """The subject ``schema`` is registered under on ``topic`` (see the module docstring)."""
    strategy = SubjectNameStrategy(strategy)
    if strategy is SubjectNameStrategy.RECORD:
        return record_full_name(schema)
    if strategy is SubjectNameStrategy.TOPIC and schema.name != "checkpoint":
        return f"{topic}-value"
    return f"{topic}-{record_full_name(schema)}"


def schema_text(schema: ShippedSchema) -> str:
    """The schema as registered: its ``.avsc`` definition (docs and defaults kept, which the
    registry's compatibility checks need), as compact JSON."""
    return json.dumps(schema.definition, separators=(",", ":"), ensure_ascii=False)


def redact_url(url: str) -> str:
    """``url`` without the password of its user info, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _registry_module() -> Any:
    try:
        import confluent_kafka.schema_registry as module
    except ImportError as exc:
        raise RegistryExtraMissing(
            f"a Schema Registry needs confluent-kafka's registry client: {EXTRA_HINT} ({exc})"
        ) from exc
    return module


def registry_client(registry: str | RegistryClient, *, timeout: float) -> RegistryClient:
    """A client for ``registry``: a client is used as it is; a URL (``http(s)://``, with
    ``user:password@`` for basic auth, or ``mock://`` for confluent-kafka's in-memory test
    double, whose store belongs to that one client) gets one with ``timeout`` per request
    and short retries."""
    if not isinstance(registry, str):
        return registry
    client: RegistryClient = _registry_module().SchemaRegistryClient.new_client(
        {
            "url": registry,
            "timeout": timeout,
            "max.retries": 1,
            "retries.wait.ms": 200,
            "retries.max.wait.ms": 1000,
        }
    )
    return client


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a registry's error answer (None: no answer, e.g. a network error)."""
    status = getattr(exc, "http_status_code", None)
    return status if isinstance(status, int) and status > 0 else None


def _definitive(status: int | None) -> bool:
    """A 4xx answer is the registry's word (retrying cannot change it); 408/429 are not."""
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def resolve_schema_id(
    client: RegistryClient, subject: str, schema: ShippedSchema, *, auto_register: bool
) -> int:
    """The id of ``schema`` under ``subject``: registered (``auto_register``) or looked up.

    Raises :class:`SubjectNotRegistered` (lookup-only, not there), :class:`SchemaRejected`
    (the registry refused it) or :class:`RegistryUnavailable` (no answer, or a server error).
    """
    registered = _registry_module().Schema(schema_text(schema), "AVRO")
    try:
        if auto_register:
            return int(client.register_schema(subject, registered))
        return int(client.lookup_schema(subject, registered).schema_id)
    except Exception as exc:
        status = _status(exc)
        detail = f"{type(exc).__name__}: {exc}"[:500]
        if status == 404 and not auto_register:
            raise SubjectNotRegistered(subject, schema, detail) from None
        if _definitive(status):
            raise SchemaRejected(
                f"the Schema Registry refused {schema.name}.v{schema.version} under subject "
                f"{subject!r} (HTTP {status}): {detail}"
            ) from None
        raise RegistryUnavailable(
            f"Schema Registry unavailable resolving subject {subject!r}: {detail}"
        ) from exc


class ConfluentFraming(SingleObjectCodec):
    """The producer's codec for one topic: ``00`` + id for the schemas given an id
    (:meth:`use`), single-object framing for the others (until then: the fallback)."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        super().__init__(registry)
        self._headers: dict[bytes, bytes] = {}

    def use(self, ids: dict[bytes, int]) -> None:
        """Frame the schemas with these fingerprints with their ids from now on (one swap:
        thread-safe)."""
        self._headers = {fp: confluent_header(i) for fp, i in ids.items()}

    @property
    def schema_ids(self) -> dict[bytes, int]:
        """Schema id by fingerprint, of the schemas framed the Confluent way."""
        return {fp: int.from_bytes(h[1:], "big") for fp, h in self._headers.items()}

    def frame(self, schema: ShippedSchema, body: bytes) -> bytes:
        header = self._headers.get(schema.fingerprint)
        if header is None:
            return MAGIC + schema.fingerprint + body
        return header + body


class SchemaIds:
    """Schema ids of a registry resolved to the shipped schemas they are, cached.

    A registered schema is matched by its fingerprint (CRC-64-AVRO of its parsing canonical
    form) with a shipped one; ids the registry does not know, and schemas that are not
    shipped, are remembered too (up to ``max_unknown``), so a flood of hostile ids costs one
    request each.
    """

    def __init__(
        self, client: RegistryClient, shipped: SchemaRegistry, *, max_unknown: int = 10_000
    ) -> None:
        self.client = client
        self._shipped = shipped
        self._known: dict[int, ShippedSchema] = {}
        self._unknown: dict[int, tuple[Reason, str]] = {}
        self._max_unknown = max_unknown

    def writer(self, schema_id: int) -> ShippedSchema:
        """The shipped schema registered as ``schema_id``.

        Raises :class:`~.codec.CodecError` (``unknown_schema_id``: no such id;
        ``unknown_schema``: not a shipped schema) or :class:`RegistryUnavailable`.
        """
        found = self._known.get(schema_id)
        if found is not None:
            return found
        unknown = self._unknown.get(schema_id)
        if unknown is None:
            try:
                return self._resolve(schema_id)
            except CodecError as exc:
                if len(self._unknown) >= self._max_unknown:
                    self._unknown.clear()
                unknown = self._unknown[schema_id] = (exc.reason, exc.detail)
        raise CodecError(*unknown)

    def _resolve(self, schema_id: int) -> ShippedSchema:
        try:
            registered = self.client.get_schema(schema_id)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:500]
            if _status(exc) == 404:
                raise CodecError(
                    Reason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry"
                ) from None
            raise RegistryUnavailable(
                f"Schema Registry unavailable resolving schema id {schema_id}: {detail}"
            ) from exc
        schema_type = getattr(registered, "schema_type", None) or "AVRO"
        if schema_type != "AVRO":
            raise CodecError(
                Reason.UNKNOWN_SCHEMA, f"schema id {schema_id} is a {schema_type} schema"
            )
        try:
            parsed = parse_schema(json.loads(registered.schema_str), _force=True)
            fp = avro_fingerprint(parsed)
        except Exception as exc:
            raise CodecError(
                Reason.UNKNOWN_SCHEMA,
                f"schema id {schema_id} does not parse as Avro: {type(exc).__name__}: {exc}"[:500],
            ) from None
        writer = self._shipped.by_fingerprint(fp)
        if writer is None:
            raise CodecError(
                Reason.UNKNOWN_SCHEMA,
                f"schema id {schema_id} (fingerprint {fp.hex()}) is not one of the shipped schemas",
            )
        self._known[schema_id] = writer
        return writer


class RegistryCodec(SingleObjectCodec):
    """The worker's codec: reads single-object encoding and, through a registry, the
    Confluent framing (``00`` + schema id), on one topic."""

    def __init__(self, client: RegistryClient, registry: SchemaRegistry | None = None) -> None:
        super().__init__(registry)
        self.ids = SchemaIds(client, self.registry)
        self._single_headers: dict[bytes, bytes] = {}
        """the single-object header of each Confluent header resolved"""

    @classmethod
    def connect(
        cls, registry: str | RegistryClient, shipped: SchemaRegistry | None, *, timeout: float
    ) -> RegistryCodec:
        """A codec reading through ``registry`` (a URL or a client, see :func:`registry_client`)."""
        return cls(registry_client(registry, timeout=timeout), shipped)

    def decode(self, data: bytes) -> DecodedRecord:
        if len(data) > CONFLUENT_HEADER_SIZE and data[:1] == CONFLUENT_MAGIC:
            writer = self.ids.writer(int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big"))
            return self.read(writer, data[CONFLUENT_HEADER_SIZE:])
        return super().decode(data)

    def as_single_object(self, data: bytes) -> bytes:
        """A Confluent-framed message re-framed as single-object encoding (the same body
        after the shipped schema's ``C3 01`` + fingerprint); anything else as it is.

        Raises :class:`~.codec.CodecError` for an id that resolves to no shipped schema, and
        :class:`RegistryUnavailable`.
        """
        if len(data) <= CONFLUENT_HEADER_SIZE or data[0] != 0:
            return data
        confluent = data[:CONFLUENT_HEADER_SIZE]
        single = self._single_headers.get(confluent)
        if single is None:
            writer = self.ids.writer(int.from_bytes(confluent[1:], "big"))
            single = self._single_headers[confluent] = MAGIC + writer.fingerprint
        return single + data[CONFLUENT_HEADER_SIZE:]
