"""Walking a chain's stored events in seq order: the link rules ``verify`` and ``trace`` share.

A chain ``(producer_id, producer_epoch)`` holds when its event at seq 1 links to the chain's
genesis hash, seqs follow one another with no gap and no repeat, each event's ``prev_hash``
is the hash of the event before it, and every signed checkpoint names the hash of the event
at its seq. :class:`ChainWalk` is fed the events one by one (hashes recomputed from their
original bytes by the caller) and says what breaks these rules; the caller decides how to
report it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from decision_audit.contract.hashing import genesis_hash


@dataclass(order=True, slots=True)
class ChainRow:
    """One stored event, as the walk sees it (ordered by seq)."""

    seq: int
    event_id: str = field(compare=False)
    prev_hash: bytes = field(compare=False)
    event_hash: bytes = field(compare=False)
    """SHA-256(prev_hash || body), recomputed from the event's original bytes"""


class Fault(enum.Enum):
    OFF_GENESIS = "the event at seq 1 does not link to the chain's genesis"
    MISSING = "seqs first..last are missing"
    REPEATED = "a second event claims the previous event's seq"
    BREAK = "prev_hash is not the hash of the previous event"
    HEAD_MISMATCH = "a signed checkpoint names another head than the event at its seq"
    OFF_BOUNDARY = "the first kept event does not link to the recorded retention boundary"


@dataclass(frozen=True, slots=True)
class Finding:
    """What breaks the rules at one point of the walk."""

    fault: Fault
    first: int
    """the seq concerned (MISSING: the first missing one)"""
    last: int
    """MISSING: the last missing seq; else ``first``"""
    row: ChainRow | None
    """the event it was found at; None for what is missing after the last event"""
    prev: ChainRow | None
    """the event before ``row`` in the walk, if any"""


_NOTHING: tuple[Finding, ...] = ()


class ChainWalk:
    """Follows one chain's seq and hash links, from seq ``start``, in seq order.

    ``signed_heads`` maps a checkpoint's seq to the chain head it signs (only checkpoints
    whose signature the caller accepted). A walk from ``start`` > 1 takes its first event
    on trust: its own link is not checked, unless ``start_hash`` is given — a retention
    boundary (:func:`decision_audit.audit.retention.chain_starts`): then the event at
    ``start`` must link to it, the events below ``start`` (pruned, or still being pruned)
    are skipped, and no checkpoint is owed for them.
    """

    def __init__(
        self,
        producer_id: str,
        producer_epoch: int,
        signed_heads: Mapping[int, bytes] | None = None,
        *,
        start: int = 1,
        start_hash: bytes | None = None,
    ) -> None:
        self.genesis = genesis_hash(producer_id, producer_epoch)
        self.signed: Mapping[int, bytes] = signed_heads or {}
        self.start = start
        self.start_hash = start_hash
        self.prev: ChainRow | None = None
        self.expected = start
        """the seq the next event should have"""
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.attested_to = 0
        """the highest seq whose event hash a signed head matched"""
        if start_hash is not None:
            self.attested_to = start - 1

    def step(self, row: ChainRow) -> tuple[Finding, ...]:
        """Take the next event; what it breaks (usually nothing)."""
        prev = self.prev
        if self.start_hash is not None and row.seq < self.start:
            return _NOTHING
        if self.first_seq is None:
            self.first_seq = row.seq
        found = _NOTHING
        if prev is None:
            if row.seq == 1:
                if row.prev_hash != self.genesis:
                    found = (Finding(Fault.OFF_GENESIS, 1, 1, row, None),)
            elif row.seq != self.start:
                found = (Finding(Fault.MISSING, self.start, row.seq - 1, row, None),)
            elif self.start_hash is not None and row.prev_hash != self.start_hash:
                found = (Finding(Fault.OFF_BOUNDARY, row.seq, row.seq, row, None),)
        elif row.seq == prev.seq:
            # The first event of a seq stays the one the chain continues from.
            return (Finding(Fault.REPEATED, row.seq, row.seq, row, prev),)
        elif row.seq > prev.seq + 1:
            found = (Finding(Fault.MISSING, prev.seq + 1, row.seq - 1, row, prev),)
        elif row.prev_hash != prev.event_hash:
            found = (Finding(Fault.BREAK, row.seq, row.seq, row, prev),)
        head = self.signed.get(row.seq)
        if head is not None:
            if head == row.event_hash:
                self.attested_to = max(self.attested_to, row.seq)
            else:
                found = (*found, Finding(Fault.HEAD_MISMATCH, row.seq, row.seq, row, prev))
        self.prev = row
        self.expected = row.seq + 1
        self.last_seq = row.seq
        return found

    def end(self) -> Finding | None:
        """After the last event: the events a signed head vouches for that never came."""
        if self.last_seq is not None:
            last = self.last_seq
        else:
            last = self.start - 1 if self.start_hash is not None else 0
        beyond = [s for s in self.signed if s > last]
        if not beyond:
            return None
        return Finding(Fault.MISSING, last + 1, max(beyond), None, self.prev)
