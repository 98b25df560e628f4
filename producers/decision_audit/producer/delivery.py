"""How the producer's messages reach Kafka: what both delivery modes share, and the choice.

Without ``spool_dir`` the producer uses :class:`~.direct_delivery.DirectDelivery` (hand each
message to librdkafka, count what it drops or fails); with one,
:class:`~.spooled_delivery.SpooledDelivery` (spool to disk while the broker is unavailable,
replay in chain order; its module docstring is the design). the producer picks one
(:func:`.audit_producer.make_delivery`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.spool import Spool, SpoolRecord

__all__ = ["Delivery", "DeliveryProblem", "ProducerStats"]


@dataclass
class ProducerStats:
    """Counters since the producer started (spool depth: now)."""

    logged: int = 0
    """events handed to the Kafka client or the spool"""
    delivered: int = 0
    """messages the broker acknowledged (events and checkpoints, replays included); without a
    spool brought up to date by the background thread (every 50 ms) and by ``flush``"""
    failed: int = 0
    """messages lost after the Kafka client took them (delivery error and no spool to keep them)"""
    dropped: int = 0
    """events never recorded (queue full and no spool, spool full, or client error)"""
    checkpoints: int = 0
    """signed checkpoints handed to the Kafka client or the spool"""
    spooled: int = 0
    """messages written to the spool"""
    replayed: int = 0
    """spooled messages the broker acknowledged"""
    spool_events: int = 0
    """messages waiting in the spool now (written, or about to be)"""
    spool_bytes: int = 0
    """their size in the spool"""


@dataclass(frozen=True)
class DeliveryProblem:
    """Reported to ``on_error`` when an event was dropped or could not be delivered."""

    kind: str
    """``dropped`` or ``failed``"""
    reason: str
    producer_id: str
    """the chain's id (``<producer_id>/model-events`` for a model event)"""
    seq: int | None = None


Report = Callable[[DeliveryProblem], None]
OnDelivery = Callable[[KafkaError | None, Any], None]


def chain_id(key: bytes | None, default: str) -> str:
    """The chain a message belongs to: every chain's messages are keyed by its id."""
    return default if not key else key.decode(errors="replace")


class Delivery(ABC):
    """Sends the producer's encoded messages to Kafka.

    ``send`` is called with the chain's lock held; everything else runs on the producer's
    background thread (``service``) or in ``flush``/``close``.
    """

    def __init__(
        self,
        settings: ProducerSettings,
        conf: dict[str, Any],
        stats: ProducerStats,
        report: Report,
    ) -> None:
        self._settings = settings
        self._pid = settings.producer_id
        self._stats = stats
        self._report = report
        self._state = threading.RLock()
        conf["error_cb"] = self._on_client_error
        self._conf = conf
        self._producer = Producer(conf)

    @property
    def spool(self) -> Spool | None:
        return None

    @property
    @abstractmethod
    def direct(self) -> bool:
        """True while new messages go straight to the Kafka client (not to the spool)."""

    @abstractmethod
    def send(self, record: SpoolRecord, seq: int | None, *, background: bool = False) -> str | None:
        """Send (or spool) one message; returns why it was dropped, or None.

        The spooled mode may block or raise
        :class:`~decision_audit.producer.spool.SpoolFull` under its full policy, unless
        ``background`` (the background thread never blocks or raises).
        """

    @abstractmethod
    def service(self, wait: float) -> None:
        """One tick of the background thread: serve the client's callbacks (and the spool)."""

    @abstractmethod
    def undelivered(self) -> int:
        """Messages not yet acknowledged."""

    @abstractmethod
    def flush(self, timeout: float) -> int:
        """Wait until everything sent so far is acknowledged; returns what is not (yet)."""

    @abstractmethod
    def close(self, timeout: float) -> int:
        """Final flush once the background thread stopped; returns what is left undelivered."""

    @abstractmethod
    def _on_client_error(self, err: KafkaError) -> None: ...

    @abstractmethod
    def _poll(self, timeout: float) -> None: ...

    def _produce(self, r: SpoolRecord, on_delivery: OnDelivery) -> str | None:
        """``produce()``, waiting up to ``enqueue_timeout`` for room in the client's queue.

        Returns why the message was not taken, or None; a refusal by the client raises
        :class:`~confluent_kafka.KafkaException`.
        """
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    r.topic,
                    r.value,
                    r.key,
                    headers=list(r.headers) or None,
                    on_delivery=on_delivery,
                )
                return None
            except BufferError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._settings.enqueue_timeout
                elif now >= deadline:
                    return "local queue full (broker slow or unreachable)"
                self._poll(0.0002)
                if not self.direct:  # only ever False with a spool
                    return "delivery failing"
