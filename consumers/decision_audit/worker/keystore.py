"""The key filer: sealed data keys from the keys topic into the key store table.

Producers whose redaction policy has ``encrypt`` rules send each event's data key, sealed to
the key store's X25519 public key (decision_audit.contract.sealing), to the keys topic. The
:class:`KeyFiler` consumes that topic in its own consumer group and inserts each key into
``subject_keys`` under its subject hash. It opens nothing: it never holds the key store's
private key, and it logs no key bytes.

A key whose subject was erased after the decision it opens (an ``erasures`` row with
``erased_at`` at or after its ``occurred_at``) is refused, so a redelivered or late key
cannot undo an erasure; after each insert the filer looks again and deletes what an erasure
that ran meanwhile covers. Offsets are committed only after the batch is stored; a
redelivered batch is dropped by its insert deduplication token.

Like the worker, the filer reads both framings with ``schema_registry_url`` (producers with
``schema_registry=`` frame the keys ``00`` + schema id under ``<keys topic>-value``; a
registry that cannot answer is retried, the batch held and nothing committed), and turns
the Tansu workaround for skipped offsets on by the broker's cluster id
(``broker_workarounds``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import prometheus_client
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import Field

from decision_audit.clickhouse.connect import connect, redact_dsn
from decision_audit.clickhouse.migrate import migrate
from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.contract.codec import (
    CodecError,
    DecodedRecord,
    SingleObjectCodec,
    default_codec,
)
from decision_audit.contract.fields import SUBJECT_KEY
from decision_audit.contract.registry_codec import (
    RegistryClient,
    RegistryCodec,
    RegistryUnavailable,
)
from decision_audit.contract.sealing import DATA_KEY_BYTES, NONCE_BYTES, SUBJECT_HASH_RE
from decision_audit.worker.broker_workarounds import OffsetGapGuard, needed
from decision_audit.worker.offsets import commit_stored
from decision_audit.worker.received import Received
from decision_audit.worker.startup import kafka_reason, wait_for_broker
from decision_audit.worker.store import Store, batch_token
from decision_audit.worker.topics import TopicNotCreated

log = logging.getLogger("decision_audit.keystore")

SEALED_BYTES = DATA_KEY_BYTES + 16
"""a sealed data key: the key and its AES-GCM tag"""
REGISTRY_RETRY_MAX = 30.0
"""the longest wait between two tries of a batch while the Schema Registry is away (s)"""


class KeyFilerSettings(ClickHouseSettings):
    """Settings of :class:`KeyFiler` (``decision-audit keystore file``)."""

    bootstrap_servers: str = Field(
        "localhost:9092", min_length=1, description="Kafka bootstrap servers (host:port,...)"
    )
    broker_wait: float = Field(
        60.0, ge=0, description="seconds to wait on start for the Kafka broker to answer"
    )
    keys_topic: str = Field("decision-keys", min_length=1, description="topic of sealed keys")
    keys_group: str = Field(
        "decision-audit-keys", min_length=1, description="consumer group id of the key filers"
    )
    keys_batch_size: int = Field(10_000, ge=1, le=100_000, description="max keys per insert")
    keys_flush_interval: float = Field(0.5, gt=0, description="seconds a poll waits for keys")
    keys_exit_when_idle: float | None = Field(
        None, gt=0, description="exit once assigned, caught up and idle this many seconds"
    )
    keys_session_timeout_ms: int = Field(
        6000, ge=1000, description="consumer group session timeout (ms)"
    )
    keys_create_topic: bool = Field(True, description="create the keys topic if it is missing")
    keys_topic_partitions: int = Field(4, ge=1, description="partitions of a keys topic it creates")
    keys_retention_hours: float = Field(
        24.0,
        gt=0,
        description="retention of a keys topic it creates: how long a sealed key also stays "
        "in Kafka (erasure cannot reach it there)",
    )
    # Shared with the worker and erase (no keys_ prefix): the same broker, registry, cluster.
    cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="ClickHouse cluster the tables were created on (migrate --cluster): the "
        "filer's deletes then run ON CLUSTER on every shard's local table; unset: one server",
    )
    broker_workarounds: Literal["auto", "on", "off"] = Field(
        "auto",
        description="workarounds for Tansu's wrong answers (skipped offsets fetched again): "
        "auto turns them on only when the broker's cluster id names Tansu",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL: read keys framed 00 + schema id too "
        "(none: single-object encoding only)",
    )
    schema_registry_timeout: float = Field(
        10.0, gt=0, description="seconds per Schema Registry request"
    )

    def consumer_config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.keys_group,
            "client.id": "decision-audit-key-filer",
            "logger": logging.getLogger("decision_audit.kafka"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.keys_session_timeout_ms,
            "heartbeat.interval.ms": max(self.keys_session_timeout_ms // 3, 500),
        }


@dataclass
class FilerStats:
    consumed: int = 0
    filed: int = 0
    """keys inserted (a redelivered batch is dropped by ClickHouse and counted again)"""
    refused: int = 0
    """keys of subjects erased after their decision: never filed, or deleted again"""
    malformed: int = 0
    """messages that are not a valid sealed key (logged with partition and offset)"""


def ensure_keys_topic(
    bootstrap_servers: str, topic: str, partitions: int, retention_hours: float
) -> None:
    """Create the keys topic if missing, with a bounded retention."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        existing = admin.list_topics(timeout=15).topics
    except KafkaException as exc:
        raise TopicNotCreated(f"cannot list topics at {bootstrap_servers}: {exc}") from exc
    if topic in existing:
        return
    config = {"retention.ms": str(int(retention_hours * 3_600_000))}
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    for name, fut in admin.create_topics([new], operation_timeout=15).items():
        try:
            fut.result(15)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicNotCreated(
                f"cannot create topic {name!r} at {bootstrap_servers}: {kafka_reason(exc)}. "
                "Create it yourself (with a short retention.ms) and pass --no-keys-create-topic"
            ) from exc


class KeyFiler:
    """Consumes the keys topic and files each sealed key in ``subject_keys``."""

    def __init__(
        self,
        settings: KeyFilerSettings,
        *,
        client: Any | None = None,
        codec: SingleObjectCodec | None = None,
        schema_registry: str | RegistryClient | None = None,
    ) -> None:
        """``schema_registry`` (a URL or a ``SchemaRegistryClient``; default the setting
        ``schema_registry_url``) lets the filer read the Confluent framing too."""
        self.settings = settings
        self.stats = FilerStats()
        self._client = client
        self._codec = codec or default_codec()
        registry = schema_registry if schema_registry is not None else settings.schema_registry_url
        if registry is not None:
            self._codec = RegistryCodec.connect(
                registry, self._codec.registry, timeout=settings.schema_registry_timeout
            )
        self._stop = threading.Event()
        self._assigned = False
        self._gaps = OffsetGapGuard(
            prometheus_client.Counter(
                "decision_audit_key_filer_offset_refetches",
                "Times the consumer skipped offsets of a partition and the filer fetched again",
                registry=None,
            )
        )

    def stop(self) -> None:
        """Finish the batch in hand, commit and return (safe from signal handlers)."""
        self._stop.set()

    def run(self) -> FilerStats:
        s = self.settings
        client = self._client or connect(s.clickhouse_url)
        migrate(client, s.database)
        if not wait_for_broker(s.bootstrap_servers, s.broker_wait, self._stop):
            return self.stats
        if s.keys_create_topic:
            ensure_keys_topic(
                s.bootstrap_servers, s.keys_topic, s.keys_topic_partitions, s.keys_retention_hours
            )
        consumer = Consumer(s.consumer_config())
        cluster_id = consumer.list_topics(timeout=10).cluster_id
        self._gaps.enabled = needed(s.broker_workarounds, cluster_id)
        consumer.subscribe([s.keys_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "key filer started: topic=%s group=%s store=%s database=%s "
            "(broker cluster %s: Tansu workarounds %s)",
            s.keys_topic,
            s.keys_group,
            redact_dsn(s.clickhouse_url),
            s.database,
            cluster_id,
            "on" if self._gaps.enabled else "off",
        )
        try:
            self._loop(consumer, client)
        finally:
            consumer.close()
            st = self.stats
            log.info(
                "key filer stopped: consumed=%d filed=%d refused=%d malformed=%d",
                st.consumed,
                st.filed,
                st.refused,
                st.malformed,
            )
        return self.stats

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True
        self._gaps.expect_from_commits(consumer, partitions)

    def _on_revoke(self, _c: Consumer, _p: list[TopicPartition]) -> None:
        self._assigned = False  # nothing is held between polls: each batch is stored at once

    def _loop(self, consumer: Consumer, client: Any) -> None:
        s = self.settings
        last = time.monotonic()
        while not self._stop.is_set():
            messages = consumer.consume(s.keys_batch_size, s.keys_flush_interval)
            good: list[Received] = []
            for m in messages:
                err = m.error()
                if err is None:
                    good.append(Received.of(m))
                elif err.code() != KafkaError._PARTITION_EOF:
                    if err.fatal():
                        raise KafkaException(err)
                    log.warning("consumer error: %s", err)
            good = self._gaps.take(consumer, good)
            now = time.monotonic()
            if good:
                if not self._file_retrying(client, good):
                    return  # stopped while the registry was away: nothing committed
                commit_stored(consumer, good)
                last = time.monotonic()
            elif not self._assigned:
                last = now
            elif s.keys_exit_when_idle is not None and now - last >= s.keys_exit_when_idle:
                log.info("idle for %.1fs with every key filed: exiting", s.keys_exit_when_idle)
                return

    def _file_retrying(self, client: Any, messages: list[Received]) -> bool:
        """:meth:`file`, tried again with backoff while the Schema Registry cannot answer.
        False: stopped first; the batch is neither stored nor committed, so it is delivered
        again (to this group's next filer)."""
        delay = 0.5
        while True:
            try:
                self.file(client, messages)
                return True
            except RegistryUnavailable as exc:
                log.warning("keys not filed yet, retrying in %.1fs: %s", delay, exc)
            if self._stop.wait(delay):
                return False
            delay = min(delay * 2, REGISTRY_RETRY_MAX)

    # -- one batch --------------------------------------------------------------------------

    def file(self, client: Any, messages: list[Received]) -> None:
        """Store one batch of consumed messages (the rows of erased subjects left out).

        Raises :class:`RegistryUnavailable` before anything is counted or stored.
        """
        db = self.settings.database
        decoded = [self._decode(m) for m in messages]
        self.stats.consumed += len(messages)
        rows: list[list[Any]] = []
        for m, d in zip(messages, decoded, strict=True):
            row = self._row(m, d)
            if row is not None:
                rows.append(row)
        subjects = sorted({str(r[2]) for r in rows})
        erased = _erased_at(client, db, subjects)
        kept = [r for r in rows if not _covered(erased, r)]
        self.stats.refused += len(rows) - len(kept)
        if kept:
            token = batch_token(
                self.settings.keys_topic,
                [m.partition for m in messages],
                [m.offset for m in messages],
                [m.value for m in messages],
            )
            Store(client, db).insert_subject_keys(kept, token)
            self.stats.filed += len(kept)
            self._sweep(client, kept, erased)

    def _sweep(self, client: Any, kept: list[list[Any]], seen: dict[str, datetime]) -> None:
        """Delete what an erasure that ran during the insert covers (erase records itself
        before it deletes, so either it or this sweep removes a key filed meanwhile)."""
        db = self.settings.database
        now = _erased_at(client, db, sorted({str(r[2]) for r in kept}))
        for sub, at in now.items():
            if seen.get(sub) == at:
                continue
            covered = [r for r in kept if r[2] == sub and r[1] <= at]
            if not covered:
                continue
            Store(client, db).delete_subject_keys(sub, at, self.settings.cluster)
            self.stats.refused += len(covered)
            self.stats.filed -= len(covered)
            log.info("deleted %d key(s) filed while their subject was erased", len(covered))

    def _decode(self, m: Received) -> DecodedRecord | CodecError:
        try:
            return self._codec.decode(m.value or b"")
        except CodecError as exc:
            return exc

    def _row(self, m: Received, decoded: DecodedRecord | CodecError) -> list[Any] | None:
        where = f"{m.topic}[{m.partition}]@{m.offset}"
        if isinstance(decoded, CodecError):
            return self._malformed(where, decoded.detail)
        r = decoded.record
        if decoded.writer.name != SUBJECT_KEY.schema:
            return self._malformed(where, f"a {decoded.writer.name} record, not a sealed key")
        try:
            event_id = uuid.UUID(r["event_id"])
        except ValueError:
            return self._malformed(where, "event_id is not a UUID")
        if not SUBJECT_HASH_RE.match(r["subject_hash"]):
            return self._malformed(where, "subject_hash is not 64 hex digits")
        if (len(r["ephemeral_key"]), len(r["nonce"]), len(r["sealed_key"])) != (
            32,
            NONCE_BYTES,
            SEALED_BYTES,
        ):
            return self._malformed(where, "ephemeral key, nonce or sealed key of the wrong size")
        return [
            event_id,
            r["occurred_at"],
            r["subject_hash"],
            r["keystore_key_id"],
            r["ephemeral_key"],
            r["nonce"],
            r["sealed_key"],
            r["producer_id"],
            m.partition,
            m.offset,
        ]

    def _malformed(self, where: str, why: str) -> list[Any] | None:
        self.stats.malformed += 1
        log.warning("not filed: message %s is not a sealed key: %s", where, why)
        return None


def _erased_at(client: Any, database: str, subjects: list[str]) -> dict[str, datetime]:
    """The latest erasure of each of ``subjects`` that has one."""
    if not subjects:
        return {}
    rows = client.query(
        f"SELECT subject_hash, max(erased_at) FROM {database}.erasures "
        "WHERE subject_hash IN {s:Array(String)} GROUP BY subject_hash",
        parameters={"s": subjects},
    ).result_rows
    return {str(sub): at for sub, at in rows}


def _covered(erased: dict[str, datetime], row: list[Any]) -> bool:
    at = erased.get(row[2])
    return at is not None and row[1] <= at
