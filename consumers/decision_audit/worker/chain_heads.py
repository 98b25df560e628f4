"""Reading the stored chains: each chain's head, and the hashes of stored links.

The chain trackers (:class:`.chains.ChainTracker`, for decisions and for model events) ask
these when they first meet a chain after a (re)assignment, and for events that come back
below a chain's head. Heads come from ``chain_heads`` (one row per chain, kept on insert by
a materialized view, migration 0007), so recovering them costs the same at ten million
stored events as at ten. Every write is :class:`.store.Store`'s.

The views write ``chain_heads`` after the insert has written its own table, not atomically
with it: a worker killed in between (the embedded engine dies with it) leaves events stored
above the kept head, which its successor would take for new and store again. So every head
read from ``chain_heads`` is confirmed by one point lookup per chain (nothing stored at the
next seq; the seq column first), and a chain with an event there is aggregated from the
table, as all were before the views.
"""

from __future__ import annotations

import logging
from typing import Any

from decision_audit.worker.chains import Chain, Head, Link

log = logging.getLogger("decision_audit.worker")

KEPT_HEADS = frozenset({"decisions", "model_events"})
"""the tables whose heads ``chain_heads`` keeps (migration 0007's views); the other chained
tables (outcomes, reviews: far fewer events) have their heads aggregated"""


class ChainReader:
    """Queries ``{database}.chain_heads`` and ``decisions`` (or ``model_events``)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def chain_heads(self, chains: set[Chain], table: str = "decisions") -> dict[Chain, Head]:
        """Highest stored seq and its event hash, per chain (absent: no rows).

        ``table`` is any chained table (``decisions``, ``model_events``, ``outcomes``…).
        """
        if not chains:
            return {}
        if table not in KEPT_HEADS:
            return self.aggregated_heads(chains, table)
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMaxMerge(event_hash) AS head "
            f"FROM {self.database}.chain_heads "
            "WHERE source = {table:String} "
            "AND (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"table": table, "chains": sorted(chains)},
            column_formats={"head": "bytes"},
        )
        heads = {(str(p), int(e)): (int(s), bytes(h)) for p, e, s, h in result.result_rows}
        behind = self._unconfirmed(chains, heads, table)
        if behind:
            log.info(
                "%d of %d chains stored past their kept head (an insert cut short): "
                "their heads aggregated from %s",
                len(behind),
                len(chains),
                table,
            )
            heads.update(self.aggregated_heads(behind, table))
        return heads

    def _unconfirmed(self, chains: set[Chain], heads: dict[Chain, Head], table: str) -> set[Chain]:
        """The chains with an event stored right after their kept head (one query)."""
        nexts = sorted((p, e, heads.get((p, e), (0, b""))[0] + 1) for p, e in chains)
        # The seq alone first: the chain's key is compared only at those seqs.
        result = self.client.query(
            f"SELECT DISTINCT producer_id, producer_epoch FROM {self.database}.{table} "
            "PREWHERE seq IN {seqs:Array(UInt64)} AND (producer_id, producer_epoch, seq) "
            "IN {nexts:Array(Tuple(String, UInt64, UInt64))}",
            parameters={"seqs": sorted({seq for _, _, seq in nexts}), "nexts": nexts},
        )
        return {(str(p), int(e)) for p, e in result.result_rows}

    def aggregated_heads(self, chains: set[Chain], table: str = "decisions") -> dict[Chain, Head]:
        """Highest stored seq and its event hash, per chain, aggregated from ``table``."""
        if not chains:
            return {}
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMax(event_hash, seq) AS head "
            f"FROM {self.database}.{table} "
            "WHERE (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"chains": sorted(chains)},
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
