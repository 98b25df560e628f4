"""Where the worker follows each hash chain: drops redeliveries, spots gaps, breaks and forks.

State per chain ``(producer_id, producer_epoch)`` is the highest stored ``seq`` and its
``event_hash``, recovered from ClickHouse in bulk the first time a chain is seen after a
(re)assignment, and advanced only when a batch is committed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.hashing import genesis_hash

Chain = tuple[str, int]
"""``(producer_id, producer_epoch)``"""

Head = tuple[int, bytes]
"""``(seq, event_hash)`` of the highest stored event of a chain"""

HeadLookup = Callable[[set[Chain]], dict[Chain, Head]]

Link = tuple[str, int, int]
"""``(producer_id, producer_epoch, seq)``"""

HashLookup = Callable[[set[Link]], dict[Link, bytes]]


class Outcome(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    """seq already stored with the same hash: a redelivery"""
    FORK = "chain_fork"
    """seq already stored with a different hash: two histories for one chain"""
    BREAK = "chain_break"
    """the next seq, but prev_hash is not the stored head"""
    BEHIND = "behind"
    """below the head and not in this batch: ``settle`` compares it with the stored event"""
    LATE = "late_event"
    """below the head but never stored (its slot is a recorded gap or was quarantined)"""


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    gap: tuple[int, int] | None = None
    """``(first, last)`` missing seqs before a NEW event, if any"""


class ChainTracker:
    """Follows each chain's head across batches."""

    def __init__(self, lookup: HeadLookup, stored_hashes: HashLookup | None = None) -> None:
        self._lookup = lookup
        self._stored_hashes = stored_hashes
        self._stored: dict[Chain, Head] = {}
        self._pending: dict[Chain, Head] = {}
        self._batch: dict[Link, bytes] = {}

    def prepare(self, chains: Iterable[Chain]) -> None:
        """Load the heads of chains not seen since the last reset (one query)."""
        unknown = {c for c in chains if c not in self._stored}
        if unknown:
            found = self._lookup(unknown)
            for chain in unknown:
                self._stored[chain] = found.get(chain) or (0, genesis_hash(*chain))

    def head(self, chain: Chain) -> Head | None:
        return self._pending.get(chain) or self._stored.get(chain)

    def accept(self, chain: Chain, seq: int, prev_hash: bytes, event_hash: bytes) -> Verdict:
        """Judge the next event of ``chain``; a NEW one becomes the chain's pending head."""
        top_seq, top_hash = self._pending.get(chain) or self._stored[chain]
        if seq < top_seq:
            seen = self._batch.get((*chain, seq))
            if seen is None:
                return Verdict(Outcome.BEHIND)
            return Verdict(Outcome.DUPLICATE if event_hash == seen else Outcome.FORK)
        if seq == top_seq:
            return Verdict(Outcome.DUPLICATE if event_hash == top_hash else Outcome.FORK)
        gap = None
        if seq == top_seq + 1:
            if prev_hash != top_hash:
                return Verdict(Outcome.BREAK)
        else:
            gap = (top_seq + 1, seq - 1)
        self._pending[chain] = (seq, event_hash)
        self._batch[(*chain, seq)] = event_hash
        return Verdict(Outcome.NEW, gap)

    def settle(self, behind: list[tuple[Link, bytes]]) -> list[Outcome]:
        """Judge events that came back below the head against the stored ones (one query).

        A redelivery after a crash matches (DUPLICATE); different content under a stored seq
        is a FORK; a seq that was never stored is LATE.
        """
        if not behind:
            return []
        if self._stored_hashes is None:
            return [Outcome.DUPLICATE] * len(behind)
        stored = self._stored_hashes({link for link, _ in behind})
        out = []
        for link, event_hash in behind:
            have = stored.get(link)
            if have is None:
                out.append(Outcome.LATE)
            else:
                out.append(Outcome.DUPLICATE if have == event_hash else Outcome.FORK)
        return out

    def commit(self) -> None:
        self._stored.update(self._pending)
        self._pending.clear()
        self._batch.clear()

    def abort(self) -> None:
        self._pending.clear()
        self._batch.clear()

    def reset(self) -> None:
        """Forget everything (after a rebalance another worker may have advanced a chain)."""
        self._stored.clear()
        self._pending.clear()
        self._batch.clear()
