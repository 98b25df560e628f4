"""The worker's Prometheus metrics, in a registry of its own (several workers per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from decision_audit.contract.reasons import IncidentKind, Reason

PREFIX = "decision_audit_worker"

BATCH_SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000)
INSERT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """Counters, gauges and histograms of one :class:`decision_audit.worker.loop.Worker`.

    Every name starts with ``decision_audit_worker_``; the README lists them all.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        p = PREFIX
        self.consumed = Counter(
            f"{p}_consumed",
            "Messages taken from Kafka and settled (stored, dropped or "
            "quarantined) in a committed batch",
            registry=r,
        )
        self.inserted = Counter(
            f"{p}_inserted", "Decision events inserted into the decisions table", registry=r
        )
        self.duplicates = Counter(
            f"{p}_duplicates_dropped",
            "Redelivered events dropped because their chain already holds them",
            registry=r,
        )
        self.quarantined = Counter(
            f"{p}_quarantined",
            "Messages stored in the quarantine table and sent to the DLQ, by reason code "
            f"({', '.join(Reason)})",
            ["reason"],
            registry=r,
        )
        self.checkpoints = Counter(
            f"{p}_checkpoints", "Signed chain checkpoints stored", registry=r
        )
        self.incidents = Counter(
            f"{p}_incidents",
            f"Integrity incidents recorded ({', '.join(IncidentKind)})",
            registry=r,
        )
        self.batch_size = Histogram(
            f"{p}_batch_size",
            "Messages per committed batch",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.insert_seconds = Histogram(
            f"{p}_insert_seconds",
            "Time to store one batch (all tables and the DLQ), retries included",
            buckets=INSERT_SECONDS_BUCKETS,
            registry=r,
        )
        self.insert_retries = Counter(
            f"{p}_insert_retries",
            "Store attempts that failed with a transient error and were retried, by cause",
            ["cause"],
            registry=r,
        )
        self.staging_fallbacks = Counter(
            f"{p}_staging_fallbacks",
            "Batches whose decision events ClickHouse could not parse, checked in Python instead",
            registry=r,
        )
        self.insert_failing = Gauge(
            f"{p}_insert_failing",
            "1 while the current batch is being retried (partitions paused), else 0",
            registry=r,
        )
        self.pending = Gauge(
            f"{p}_pending_messages", "Messages received but not yet stored", registry=r
        )
        self.lag = Gauge(
            f"{p}_consumer_lag",
            "Messages in the partition after the worker's position (log end offset minus "
            "position; on Tansu, the high watermark of the last fetch minus position)",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            f"{p}_assigned_partitions", "Partitions assigned to this worker", registry=r
        )
        self.rebalances = Counter(
            f"{p}_rebalances",
            "Partition assignment changes seen, by kind (assign, revoke, lost)",
            ["kind"],
            registry=r,
        )
        self.offset_refetches = Counter(
            f"{p}_offset_refetches",
            "Times the consumer skipped offsets of a partition and the worker fetched again",
            registry=r,
        )
        self.last_success = Gauge(
            f"{p}_last_success_timestamp_seconds",
            "Unix time of the last batch stored and committed",
            registry=r,
        )
