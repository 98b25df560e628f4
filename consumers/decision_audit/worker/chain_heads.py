"""Reading the stored chains: each chain's head, and the hashes of stored links.

The chain trackers (:class:`.chains.ChainTracker`, for decisions and for model events) ask
these when they first meet a chain after a (re)assignment, and for events that come back
below a chain's head. Heads come from ``chain_heads`` (one row per chain, kept on insert by
a materialized view, migration 0007), so recovering them costs the same at ten million
stored events as at ten. Every write is :class:`.store.Store`'s.
"""

from __future__ import annotations

from typing import Any

from decision_audit.worker.chains import Chain, Head, Link


class ChainReader:
    """Queries ``{database}.chain_heads`` and ``decisions`` (or ``model_events``)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def chain_heads(self, chains: set[Chain], table: str = "decisions") -> dict[Chain, Head]:
        """Highest stored seq and its event hash, per chain (absent: no rows).

        ``table`` is any chained table: ``decisions`` or ``model_events``.
        """
        if not chains:
            return {}
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMaxMerge(event_hash) AS head "
            f"FROM {self.database}.chain_heads "
            "WHERE source = {table:String} "
            "AND (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"table": table, "chains": sorted(chains)},
            column_formats={"head": "bytes"},
        )
        return {(str(p), int(e)): (int(s), bytes(h)) for p, e, s, h in result.result_rows}

    def stored_hashes(self, links: set[Link], table: str = "decisions") -> dict[Link, bytes]:
        """``event_hash`` of the stored events among ``(producer_id, epoch, seq)`` links."""
        if not links:
            return {}
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, seq, any(event_hash) "
            f"FROM {self.database}.{table} "
            "WHERE (producer_id, producer_epoch, seq) "
            "IN {links:Array(Tuple(String, UInt64, UInt64))} "
            "GROUP BY producer_id, producer_epoch, seq",
            parameters={"links": sorted(links)},
            column_formats={"any(event_hash)": "bytes"},
        )
        return {(str(p), int(e), int(s)): bytes(h) for p, e, s, h in result.result_rows}
