"""Producer configuration: constructor arguments override ``DECISION_AUDIT_*`` env vars."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_producer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ProducerSettings(BaseSettings):
    """Settings of :class:`producers.AuditProducer`."""

    model_config = SettingsConfigDict(env_prefix="DECISION_AUDIT_", extra="ignore")

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    producer_id: str = Field(default_factory=default_producer_id, min_length=1, max_length=256)
    topic: str = Field("decisions", min_length=1)
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
    redaction_secret: SecretStr | None = Field(None, description="HMAC secret for hash rules")

    def kafka_config(self) -> dict[str, object]:
        """librdkafka settings: idempotent, acks=all, lz4, a short linger."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"decision-audit-producer-{self.producer_id}",
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "message.max.bytes": self.max_message_bytes + 4096,
        }
