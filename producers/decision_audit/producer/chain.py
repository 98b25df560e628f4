"""A producer's hash chain: identity, next sequence number and head hash."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from decision_audit.contract.hashing import genesis_hash


@dataclass(slots=True)
class ChainState:
    """The chain one producer instance writes.

    A chain is identified by ``(producer_id, producer_epoch)``. A fresh producer takes a new
    epoch (microseconds since the Unix epoch), so a restarted process never re-uses sequence
    numbers of an earlier chain and two processes sharing a ``producer_id`` still write
    separate chains.
    """

    producer_id: str
    epoch: int
    seq: int = 0
    head: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not self.head:
            self.head = genesis_hash(self.producer_id, self.epoch)

    @classmethod
    def new(cls, producer_id: str) -> ChainState:
        return cls(producer_id, time.time_ns() // 1000)

    def next_link(self) -> tuple[int, bytes]:
        """``(seq, prev_hash)`` for the next event."""
        return self.seq + 1, self.head

    def advance(self, seq: int, event_hash: bytes) -> None:
        """Record that event ``seq`` with ``event_hash`` was handed to the broker client."""
        self.seq = seq
        self.head = event_hash
