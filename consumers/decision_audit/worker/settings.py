"""Worker configuration: command-line flags override ``DECISION_AUDIT_*`` env vars."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.contract.keys import KeyRing


class WorkerSettings(ClickHouseSettings):
    """Settings of :class:`decision_audit.worker.loop.Worker`."""

    bootstrap_servers: str = Field(
        "localhost:9092", min_length=1, description="Kafka bootstrap servers (host:port,...)"
    )
    broker_wait: float = Field(
        60.0,
        ge=0,
        description="seconds to wait on start for the Kafka broker to answer, retrying with "
        "backoff, before giving up (0: one try)",
    )
    topic: str = Field("decisions", min_length=1, description="topic of decision events")
    dlq_topic: str = Field(
        "decisions-dlq", min_length=1, description="dead-letter topic of quarantined messages"
    )
    model_events_topic: str = Field(
        "model-events", min_length=1, description="topic of model-lifecycle events"
    )
    outcomes_topic: str = Field(
        "outcomes", min_length=1, description="topic of decision outcomes (ground truth)"
    )
    reviews_topic: str = Field("reviews", min_length=1, description="topic of human reviews")
    group: str = Field(
        "decision-audit",
        min_length=1,
        description="consumer group id (the workers of one group share the partitions)",
    )
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="max events per insert")
    flush_interval: float = Field(
        0.5, gt=0, description="seconds before a partial batch is written"
    )
    exit_when_idle: float | None = Field(
        None,
        gt=0,
        description="exit once assigned, caught up and idle this many seconds (backfills)",
    )
    max_event_bytes: int = Field(
        1_000_000, gt=0, description="larger messages are quarantined as oversized"
    )
    session_timeout_ms: int = Field(
        6000, ge=1000, description="consumer group session timeout (ms)"
    )
    create_topics: bool = Field(
        True,
        description="create missing topics on start; off, a missing model-events, outcomes "
        "or reviews topic is left out with a warning (subscribed while missing, it slows the "
        "decisions fetches)",
    )
    broker_workarounds: Literal["auto", "on", "off"] = Field(
        "auto",
        description="workarounds for Tansu's wrong answers (skipped offsets fetched again, lag "
        "from the consumer's own view): auto turns them on only when the broker's cluster id "
        "names Tansu",
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        "classic",
        description="consumer-group protocol: classic, or consumer (KIP-848: the broker sets "
        "the session timeout and heartbeat, session_timeout_ms does not apply)",
    )
    parse_in_clickhouse: bool = Field(
        True,
        description="let ClickHouse parse and check decision events, or decode each in Python "
        "(half the throughput, the same checks, no temporary tables)",
    )
    keys: Path | None = Field(
        None,
        description="directory of trusted KEY_ID.pub keys: checkpoint signatures are verified "
        "as they arrive",
    )
    require_signed: bool = Field(
        False,
        description="quarantine events of chains that sign no checkpoints (as unattested), or "
        "allow them",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL: read messages framed 00 + schema id too "
        "(none: single-object encoding only)",
    )
    schema_registry_timeout: float = Field(
        10.0, gt=0, description="seconds per Schema Registry request"
    )
    topic_partitions: int = Field(4, ge=1, description="partitions for topics the worker creates")
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="the group drops a member that does not poll this long (ms)"
    )
    prefetch_kbytes: int = Field(
        65536,
        ge=1024,
        description="cap on messages fetched ahead of the loop (KiB, all partitions)",
    )
    insert_retry_limit: int = Field(
        12,
        ge=1,
        description="tries of a batch's store on transient ClickHouse errors before stopping",
    )
    insert_retry_budget: float = Field(
        300.0, gt=0, description="seconds of retrying one batch before stopping"
    )
    insert_retry_backoff: float = Field(0.5, gt=0, description="first wait between tries (s)")
    insert_retry_max_backoff: float = Field(
        30.0, gt=0, description="longest wait between tries (s)"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics and /healthz on this port"
    )
    metrics_host: str = Field("0.0.0.0", description="address the metrics endpoint binds")
    witness_key: Path | None = Field(
        None,
        description="Ed25519 private key (decision-audit keygen's KEY_ID.key) the worker signs "
        "its witness statements with; its key id is the witness id (none: no witness); a "
        "directory of them: each worker on the host claims its own",
    )
    witness_interval: float = Field(
        30.0,
        gt=0,
        description="seconds between witness statements (one more at shutdown; written only "
        "when a chain head moved)",
    )
    witness_full_every: int = Field(
        2880,
        ge=1,
        description="witness statements between full restatements of every chain witnessed "
        "(2880: daily at a 30 s interval); a restart reads back to the latest one",
    )
    witness_topic: str = Field(
        "decision-witness",
        min_length=1,
        description="topic the witness statements are published to (a copy outside ClickHouse)",
    )
    health_stall_seconds: float = Field(
        60.0, gt=0, description="/healthz answers 503 after this long without progress (s)"
    )

    @field_validator("keys")
    @classmethod
    def _loadable_keys(cls, keys: Path | None) -> Path | None:
        KeyRing.load(keys)  # a missing directory or a bad .pub file fails here, named
        return keys

    @field_validator("witness_key")
    @classmethod
    def _loadable_witness_key(cls, path: Path | None) -> Path | None:
        if path is not None:
            from decision_audit.producer.signing import PRIVATE_SUFFIX, Signer, key_files

            keys = key_files(path)
            if not keys:
                raise ValueError(f"{path}: no *{PRIVATE_SUFFIX} files (decision-audit keygen)")
            for key in keys:
                Signer(key)  # unreadable, not Ed25519 or a bad key id: fails here, named
        return path

    @model_validator(mode="after")
    def _poll_interval_covers_session(self) -> WorkerSettings:
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(
                "max_poll_interval_ms must be >= session_timeout_ms: raise "
                "--max-poll-interval-ms or lower --session-timeout-ms"
            )
        return self

    def consumer_config(self) -> dict[str, object]:
        """librdkafka consumer settings: manual offset store and commit, bounded prefetch."""
        partition_fetch = max(self.max_event_bytes * 2, 1048576)
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group,
            "client.id": "decision-audit-worker",
            "logger": logging.getLogger("decision_audit.kafka"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": self.max_poll_interval_ms,
            # Prefetch is bounded in bytes across all partitions; one fetch never asks for
            # more than that bound, nor less than one partition's worth.
            "queued.max.messages.kbytes": self.prefetch_kbytes,
            "fetch.max.bytes": max(min(52428800, self.prefetch_kbytes * 1024), partition_fetch),
            "max.partition.fetch.bytes": partition_fetch,
            # How long a fetch may wait for data. Apache Kafka answers as soon as data
            # arrives; Tansu holds the fetch to the end of this wait, which librdkafka's
            # 500 ms default made part of every event's latency (produce to consume p50
            # 130 ms, p99 253 ms on loopback; 26 and 52 ms with 100).
            "fetch.wait.max.ms": 100,
        }
        if self.group_protocol == "consumer":
            # librdkafka refuses session.timeout.ms and heartbeat.interval.ms here.
            config["group.protocol"] = "consumer"
        else:
            config["session.timeout.ms"] = self.session_timeout_ms
            config["heartbeat.interval.ms"] = max(self.session_timeout_ms // 3, 500)
        return config

    def admin_config(self) -> dict[str, Any]:
        """The admin client that asks the log end offsets for the lag gauge."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": "decision-audit-worker-lag",
            "logger": logging.getLogger("decision_audit.kafka"),
        }

    def witness_producer_config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": "decision-audit-worker-witness",
            "logger": logging.getLogger("decision_audit.kafka"),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "message.max.bytes": 16 * 1048576,
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
