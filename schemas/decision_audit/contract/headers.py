"""The Kafka header names of the wire contract (producers write them, the worker reads them)."""

from __future__ import annotations

EVENT_HASH_HEADER = "da-event-hash"
"""On every decision and model event: its ``event_hash``, SHA-256(prev_hash || body), 32 bytes."""

# On every message of the dead-letter topic (the rejected message as it was received).
REASON_HEADER = "da-reason"
"""the :class:`~decision_audit.contract.reasons.Reason` it was rejected for"""
DETAIL_HEADER = "da-detail"
"""what exactly was wrong, UTF-8 text (at most 1 KiB)"""
SOURCE_HEADER = "da-source"
"""where it was read: ``topic/partition/offset``"""
TRUNCATED_FROM_HEADER = "da-truncated-from"
"""present when the value was cut to the DLQ's size limit: the original size in bytes"""
