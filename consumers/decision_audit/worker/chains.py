"""Where the worker follows each hash chain: drops redeliveries, spots gaps, breaks and forks.

State per chain ``(producer_id, producer_epoch)`` is the highest stored ``seq`` and its
``event_hash``, recovered from ClickHouse in bulk the first time a chain is seen after a
(re)assignment, and advanced only when a batch is committed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from decision_audit.contract.hashing import genesis_hash
from decision_audit.contract.reasons import Reason
from decision_audit.worker.checks import Rejection, StagedEvent, VerifiedCheckpoint, VerifiedEvent

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
    FORK = "fork"
    """seq already stored with a different hash: two histories for one chain"""
    BREAK = "break"
    """the next seq, but prev_hash is not the stored head"""
    BEHIND = "behind"
    """below the head and not in this batch: ``settle`` compares it with the stored event"""
    LATE = "late"
    """below the head but never stored (its slot is a recorded gap or was quarantined)"""


# Why an event with a rejecting outcome is quarantined.
_REJECTED: dict[Outcome, Reason] = {
    Outcome.FORK: Reason.CHAIN_FORK,
    Outcome.BREAK: Reason.CHAIN_BREAK,
    Outcome.LATE: Reason.LATE_EVENT,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    gap: tuple[int, int] | None = None
    """``(first, last)`` missing seqs before a NEW event, if any"""


# Verdicts without a gap are shared (one per event would be built otherwise).
_PLAIN = {outcome: Verdict(outcome) for outcome in Outcome}


class ChainTracker:
    """Follows each chain's head across batches."""

    def __init__(self, lookup: HeadLookup, stored_hashes: HashLookup | None = None) -> None:
        self._lookup = lookup
        self._stored_hashes = stored_hashes
        self._stored: dict[Chain, Head] = {}
        # Per chain touched by the batch: [head seq, head hash, {seq: hash} accepted in the
        # batch]. One lookup per event, updated in place: this runs for every event.
        self._pending: dict[Chain, list[Any]] = {}

    def prepare(self, chains: Iterable[Chain]) -> None:
        """Load the heads of chains not seen since the last reset (one query)."""
        unknown = {c for c in chains if c not in self._stored}
        if unknown:
            found = self._lookup(unknown)
            for chain in unknown:
                self._stored[chain] = found.get(chain) or (0, genesis_hash(*chain))

    def head(self, chain: Chain) -> Head | None:
        state = self._pending.get(chain)
        return (state[0], state[1]) if state is not None else self._stored.get(chain)

    def accept(self, chain: Chain, seq: int, prev_hash: bytes, event_hash: bytes) -> Verdict:
        """Judge the next event of ``chain``; a NEW one becomes the chain's pending head."""
        state = self._pending.get(chain)
        if state is None:
            state = self._pending[chain] = [*self._stored[chain], {}]
        top_seq, top_hash, batch = state
        if seq == top_seq + 1:
            if prev_hash != top_hash:
                return _PLAIN[Outcome.BREAK]
            state[0] = seq
            state[1] = batch[seq] = event_hash
            return _PLAIN[Outcome.NEW]
        if seq < top_seq:
            seen = batch.get(seq)
            if seen is None:
                return _PLAIN[Outcome.BEHIND]
            return _PLAIN[Outcome.DUPLICATE if event_hash == seen else Outcome.FORK]
        if seq == top_seq:
            return _PLAIN[Outcome.DUPLICATE if event_hash == top_hash else Outcome.FORK]
        state[0] = seq
        state[1] = batch[seq] = event_hash
        return Verdict(Outcome.NEW, (top_seq + 1, seq - 1))

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

    def advanced(self) -> dict[Chain, Head]:
        """The pending head of each chain the batch took a new event of."""
        return {c: (st[0], st[1]) for c, st in self._pending.items() if st[2]}

    def commit(self) -> None:
        for chain, (seq, event_hash, _) in self._pending.items():
            self._stored[chain] = (seq, event_hash)
        self._pending.clear()

    def abort(self) -> None:
        self._pending.clear()

    def reset(self) -> None:
        """Forget everything (after a rebalance another worker may have advanced a chain)."""
        self._stored.clear()
        self._pending.clear()


M = TypeVar("M")
Checked = VerifiedEvent | StagedEvent | VerifiedCheckpoint | Rejection
Event = VerifiedEvent | StagedEvent


@dataclass
class Judgement(Generic[M]):
    """A batch sorted by what its chains say, messages kept in their original order."""

    accepted: list[tuple[M, Event]] = field(default_factory=list)
    checkpoints: list[tuple[M, VerifiedCheckpoint]] = field(default_factory=list)
    gaps: list[tuple[M, dict[str, Any], int, int]] = field(default_factory=list)
    """``(message, record, first missing seq, last missing seq)`` before an accepted event"""
    rejected: list[tuple[M, Rejection]] = field(default_factory=list)
    duplicates: int = 0


def judge(checked: Sequence[tuple[M, Checked]], chains: ChainTracker) -> Judgement[M]:
    """Follow the chains through a verified batch (one query for heads, one for stragglers).

    Events continue their chain or are dropped as redeliveries, recorded with a gap, or
    rejected (break, fork, late); a checkpoint is rejected when it names another head than
    the event stored at its seq.
    """
    # The loop runs for every event of the batch: exact type tests (these classes are
    # final), the chain of each event built once, appends bound once. ``result`` is typed
    # Any below: the type tests narrow it, which mypy does not follow through the tuples.
    links: list[tuple[M, Any, Chain | None]] = [
        (
            msg,
            r,
            None if type(r) is Rejection else (r.record["producer_id"], r.record["producer_epoch"]),
        )
        for msg, r in cast(Sequence[tuple[M, Any]], checked)
    ]
    chains.prepare({chain for _, _, chain in links if chain is not None})
    out: Judgement[M] = Judgement()
    behind: list[tuple[M, Event]] = []
    accept = chains.accept
    accepted = out.accepted.append
    new = Outcome.NEW
    for msg, result, chain in links:
        if chain is None:
            out.rejected.append((msg, result))
            continue
        rec = result.record
        if type(result) is VerifiedCheckpoint:
            head = chains.head(chain)
            if head is not None and head[0] == rec["seq"] and head[1] != rec["chain_head"]:
                out.rejected.append(
                    (
                        msg,
                        Rejection(
                            Reason.CHECKPOINT_MISMATCH,
                            f"checkpoint of {chain} at seq {rec['seq']} names another head",
                        ),
                    )
                )
            else:
                out.checkpoints.append((msg, result))
            continue
        verdict = accept(chain, rec["seq"], rec["prev_hash"], result.event_hash)
        if verdict.outcome is new:
            if verdict.gap is not None:
                out.gaps.append((msg, rec, *verdict.gap))
            accepted((msg, result))
        elif verdict.outcome is Outcome.DUPLICATE:
            out.duplicates += 1
        elif verdict.outcome is Outcome.BEHIND:
            behind.append((msg, result))
        else:
            out.rejected.append(
                (
                    msg,
                    Rejection(
                        _REJECTED[verdict.outcome],
                        f"{chain[0]!r}/{chain[1]} seq {rec['seq']} event {rec['event_id']}",
                    ),
                )
            )
    settled = chains.settle(
        [
            ((r.record["producer_id"], r.record["producer_epoch"], r.record["seq"]), r.event_hash)
            for _, r in behind
        ]
    )
    for (msg, ev), outcome in zip(behind, settled, strict=True):
        if outcome is Outcome.DUPLICATE:
            out.duplicates += 1
            continue
        rec = ev.record
        detail = (
            f"{rec['producer_id']!r}/{rec['producer_epoch']} seq {rec['seq']} "
            f"event {rec['event_id']} is below the chain head"
        )
        if outcome is Outcome.FORK:
            detail += " and differs from the stored event"
        out.rejected.append((msg, Rejection(_REJECTED[outcome], detail)))
    return out
