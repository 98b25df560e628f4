"""The library serving code embeds to record model decisions."""

from producers.producer import AuditProducer, DeliveryProblem, ProducerStats
from producers.settings import ProducerSettings
from producers.spool import SpoolFull

__all__ = ["AuditProducer", "DeliveryProblem", "ProducerSettings", "ProducerStats", "SpoolFull"]
