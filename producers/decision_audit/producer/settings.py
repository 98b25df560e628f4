"""Producer configuration: constructor arguments override ``DECISION_AUDIT_*`` env vars."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from decision_audit.contract.settings import AuditSettings


def default_producer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ProducerSettings(AuditSettings):
    """Settings of :class:`producers.AuditProducer`."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    producer_id: str = Field(default_factory=default_producer_id, min_length=1, max_length=256)
    topic: str = Field("decisions", min_length=1)
    model_events_topic: str = Field(
        "model-events", min_length=1, description="topic of model-lifecycle events"
    )
    outcomes_topic: str = Field(
        "outcomes", min_length=1, description="topic of decision outcomes (ground truth)"
    )
    reviews_topic: str = Field("reviews", min_length=1, description="topic of human reviews")
    enqueue_timeout: float = Field(
        0.001, ge=0, description="seconds log_decision may wait for room in a full local queue"
    )
    max_message_bytes: int = Field(1_000_000, gt=0)
    schema_version: int | None = Field(
        None, description="pin the writer schema version (default: the latest shipped)"
    )
    signing_key: Path | None = Field(
        None, description="Ed25519 private key (PEM) signing checkpoints; none: unattested"
    )
    key_id: str | None = Field(None, description="key id (default: the key file's name)")
    checkpoint_every: int = Field(1000, ge=1, description="sign a checkpoint every N events")
    checkpoint_interval: float = Field(5.0, gt=0, description="... and at least every T seconds")
    redaction_policy: Path | None = Field(None, description="redaction policy file (JSON/YAML)")
    redaction_secret: SecretStr | None = Field(
        None, description="HMAC secret for hash rules and the subject hash of encrypt rules"
    )
    keystore_public_key: Path | None = Field(
        None,
        description="the key store's X25519 public key (KEY_ID.pub) that encrypt rules seal "
        "each event's data key to; needed by a redaction policy with encrypt rules",
    )
    keys_topic: str = Field(
        "decision-keys", min_length=1, description="topic of sealed data keys (encrypt rules)"
    )
    spool_dir: Path | None = Field(
        None,
        description="directory of the on-disk spool for events the broker cannot take now "
        "(one per serving process, stable across restarts); none: drop and count",
    )
    spool_max_bytes: int = Field(256 << 20, ge=4096, description="bound of the spool on disk")
    spool_full_policy: Literal["block", "drop", "raise"] = Field(
        "drop",
        description="when the spool is full: wait up to spool_block_timeout then drop, "
        "drop (and count), or raise SpoolFull from log_decision",
    )
    spool_block_timeout: float = Field(
        0.1, ge=0, description="seconds log_decision may wait for room in a full spool (block)"
    )
    spool_fsync: Literal["always", "interval", "never"] = Field(
        "interval", description="fsync every spool write, every spool_fsync_interval, or never"
    )
    spool_fsync_interval: float = Field(1.0, gt=0, description="seconds between spool fsyncs")
    spool_after: float = Field(
        5.0,
        gt=0,
        description="seconds an event may wait for the broker's acknowledgement before the "
        "producer moves it, and everything after it, to the spool",
    )

    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL: frame messages 00 + schema id (Confluent "
        "wire format) instead of single-object encoding; none: single-object",
    )
    subject_name_strategy: Literal["topic", "record", "topic_record"] = Field(
        "topic",
        description="registry subjects: <topic>-value (checkpoints <topic>-<record name>), "
        "<record name>, or <topic>-<record name>",
    )
    auto_register_schemas: bool = Field(
        True,
        description="register the schemas at start; off: look them up only (a governed "
        "registry where the subjects are registered beforehand)",
    )
    schema_registry_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds the constructor waits for the registry; unreachable by then: "
        "single-object framing, the registry retried in the background",
    )

    def kafka_config(self) -> dict[str, object]:
        """librdkafka settings: acks=all, one request in flight, lz4, a short linger.

        Order without librdkafka's idempotence: with one produce request in flight per
        broker connection a retried batch cannot be overtaken, so every chain reaches the
        broker in seq order; a batch written whose acknowledgement was lost is sent again,
        and the worker drops the copy by its hash. Idempotence would make the broker drop it
        instead, but it costs every new producer 0.5-1 s before its first delivery
        (librdkafka asks for a producer id on a 500 ms timer), which a short-lived producer
        pays in ``flush``. With librdkafka's default of many requests in flight and no
        idempotence, events were lost across a broker kill -9 (reordered retries); with one,
        none were (tests/faults/test_broker_kill9.py). ``enable_idempotence=True`` brings
        idempotence back.
        """
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"decision-audit-producer-{self.producer_id}",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "message.max.bytes": self.max_message_bytes + 4096,
        }
