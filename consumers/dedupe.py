"""Dropping redeliveries: per-chain sequence high-watermarks, recovered from ClickHouse."""

from __future__ import annotations

from collections.abc import Callable, Iterable

Chain = tuple[str, int]
"""``(producer_id, producer_epoch)``"""

WatermarkLookup = Callable[[set[Chain]], dict[Chain, int]]


class SeqWatermarks:
    """Highest stored ``seq`` per chain. An event at or below it is a duplicate.

    Watermarks advance only when a batch is committed, so a failed insert leaves them as
    they were. Unknown chains are looked up in bulk with ``lookup`` (one query per batch).
    """

    def __init__(self, lookup: WatermarkLookup) -> None:
        self._lookup = lookup
        self._stored: dict[Chain, int] = {}
        self._pending: dict[Chain, int] = {}

    def prepare(self, chains: Iterable[Chain]) -> None:
        """Load the watermarks of chains not seen since the last reset."""
        unknown = {c for c in chains if c not in self._stored}
        if unknown:
            found = self._lookup(unknown)
            for chain in unknown:
                self._stored[chain] = found.get(chain, 0)

    def accept(self, chain: Chain, seq: int) -> bool:
        """True if ``seq`` is new for ``chain`` (and remember it for this batch)."""
        top = self._pending.get(chain)
        if top is None:
            top = self._stored[chain]
        if seq <= top:
            return False
        self._pending[chain] = seq
        return True

    def commit(self) -> None:
        self._stored.update(self._pending)
        self._pending.clear()

    def abort(self) -> None:
        self._pending.clear()

    def reset(self) -> None:
        """Forget everything (after a rebalance another worker may have advanced a chain)."""
        self._stored.clear()
        self._pending.clear()
