"""decision-audit: a tamper-evident audit trail for machine-learning decisions.

Serving code embeds the producer::

    from decision_audit import AuditProducer

    with AuditProducer("kafka:9092", producer_id="scoring-api") as audit:
        audit.log_decision("credit-risk", "3.1.0", {"income": 52000}, "approve", score=0.91)

The worker, the audit tools and the command line live in ``decision_audit.worker``,
``decision_audit.audit`` and ``decision_audit.cli`` (``pip install 'decision-audit[worker]'``).
"""

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.lineage import Reference
from decision_audit.producer.audit_producer import AuditProducer
from decision_audit.producer.delivery import DeliveryProblem, ProducerStats
from decision_audit.producer.redaction import RedactionPolicy
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.spool import SpoolFull, SpoolLocked

__version__ = "0.2.0"

__all__ = [
    "AuditProducer",
    "DecisionAuditError",
    "DeliveryProblem",
    "ProducerSettings",
    "ProducerStats",
    "RedactionPolicy",
    "Reference",
    "SpoolFull",
    "SpoolLocked",
    "__version__",
]
