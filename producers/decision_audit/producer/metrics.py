"""The producer's counters as Prometheus metrics, for serving processes that export them.

Optional: needs ``prometheus-client`` (``pip install 'decision-audit[metrics]'``); the
producer itself never imports it. Read at scrape time from :class:`ProducerStats`, so the
hot path pays nothing::

    from prometheus_client import start_http_server
    from decision_audit.producer.metrics import instrument

    instrument(audit)          # registers on prometheus_client's default registry
    start_http_server(9464)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

if TYPE_CHECKING:
    from decision_audit.producer.audit_producer import AuditProducer

PREFIX = "decision_audit_producer"
COUNTERS = {
    "logged": "events handed to the Kafka client or the spool",
    "delivered": "messages the broker acknowledged (events, checkpoints, replays)",
    "failed": "messages lost after the Kafka client took them (no spool to keep them)",
    "dropped": "events never recorded (queue full without spool, spool full, client error)",
    "checkpoints": "signed checkpoints emitted",
    "spooled": "messages written to the on-disk spool",
    "replayed": "spooled messages the broker acknowledged",
}
GAUGES = {
    "spool_events": "messages waiting in the spool now",
    "spool_bytes": "bytes waiting in the spool now",
}


class ProducerCollector(Collector):
    """Exports the counters of one or more :class:`AuditProducer`, labelled by producer id."""

    def __init__(self, *producers: AuditProducer) -> None:
        self.producers = list(producers)

    def collect(self) -> Iterator[Any]:
        for name, doc in COUNTERS.items():
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["producer_id"])
            for p in self.producers:
                family.add_metric([p.producer_id], getattr(p.stats, name))
            yield family
        for name, doc in GAUGES.items():
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["producer_id"])
            for p in self.producers:
                gauge.add_metric([p.producer_id], getattr(p.stats, name))
            yield gauge


def instrument(
    *producers: AuditProducer, registry: CollectorRegistry = REGISTRY
) -> ProducerCollector:
    """Register a collector for ``producers`` on ``registry`` and return it."""
    collector = ProducerCollector(*producers)
    registry.register(collector)
    return collector
