"""Worker configuration: command-line flags override ``DECISION_AUDIT_*`` env vars."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DECISION_AUDIT_"


class ClickHouseSettings(BaseSettings):
    """Where the audit tables live."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    clickhouse_url: str = Field(
        "chdb:///./.decision-audit/chdb",
        description="clickhouse-connect DSN: http://user:pass@host:8123 or chdb:///path",
    )
    database: str = Field("audit", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class WorkerSettings(ClickHouseSettings):
    """Settings of :class:`consumers.worker.Worker`."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    topic: str = Field("decisions", min_length=1)
    dlq_topic: str = Field("decisions-dlq", min_length=1)
    group: str = Field("decision-audit", min_length=1)
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    flush_interval: float = Field(
        1.0, gt=0, description="seconds before a partial batch is written"
    )
    exit_when_idle: float | None = Field(
        None, gt=0, description="exit once assigned, caught up and idle this many seconds"
    )
    max_event_bytes: int = Field(1_000_000, gt=0, description="larger messages are quarantined")
    session_timeout_ms: int = Field(6000, ge=1000)
    create_topics: bool = Field(True, description="create missing topics on start")
    keys: Path | None = Field(None, description="directory of KEY_ID.pub files to verify with")
    require_signed: bool = Field(False, description="quarantine events of unsigned chains")
    topic_partitions: int = Field(4, ge=1, description="partitions for topics the worker creates")

    def consumer_config(self) -> dict[str, object]:
        """librdkafka consumer settings: manual offset store and commit, bounded prefetch."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group,
            "client.id": "decision-audit-worker",
            "logger": logging.getLogger("decision_audit.kafka"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(self.session_timeout_ms // 3, 500),
            "queued.max.messages.kbytes": 65536,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": max(self.max_event_bytes * 2, 1048576),
        }

    def dlq_producer_config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": "decision-audit-worker-dlq",
            "logger": logging.getLogger("decision_audit.kafka"),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "message.max.bytes": self.max_event_bytes * 2 + 65536,
        }
