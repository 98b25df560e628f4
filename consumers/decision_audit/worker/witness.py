"""The worker's witness log: signed, hash-linked statements of every chain head it stored.

Every ``witness_interval`` seconds (and at shutdown), if a chain it stored has moved, the
worker signs one statement (:mod:`decision_audit.contract.witness`) over every chain it has
stored since its witness began, each at its latest head, linked to its previous statement.
The statement goes to ``witness_statements`` (through :class:`.store.Store`) and then to the
witness topic, so a copy lives outside ClickHouse. On start the worker continues its log from
the latest statement of its witness id in ClickHouse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from decision_audit.contract.witness import (
    GENESIS,
    ChainKey,
    Statement,
    WitnessedChain,
    decode,
    envelope,
    statement_hash,
)
from decision_audit.producer.signing import Signer
from decision_audit.worker.chains import Head
from decision_audit.worker.store import Store

log = logging.getLogger("decision_audit.worker")


def _now() -> datetime:
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


class Witness:
    """One worker's witness log (its id: the signing key's id)."""

    def __init__(
        self,
        signer: Signer,
        store: Store,
        producer_config: dict[str, object],
        topic: str,
        interval: float,
    ) -> None:
        self.witness_id = signer.key_id
        self._signer = signer
        self._store = store
        self._topic = topic
        self._interval = interval
        self._producer = Producer(producer_config)
        self._chains: dict[ChainKey, WitnessedChain] = {}
        self._seq = 0
        self._prev = GENESIS
        self._changed = False
        self._last = time.monotonic()
        self._unpublished: list[bytes] = []
        self._resume()

    @property
    def seq(self) -> int:
        """The seq of the latest statement written (0: none yet)."""
        return self._seq

    def _resume(self) -> None:
        """Continue from this witness's latest statement in ClickHouse, if any."""
        db = self._store.database
        rows = self._store.client.query(
            f"SELECT statement FROM {db}.witness_statements WHERE witness_id = {{w:String}} "
            "ORDER BY seq DESC LIMIT 1",
            parameters={"w": self.witness_id},
            column_formats={"statement": "bytes"},
        ).result_rows
        if not rows:
            return
        data = bytes(rows[0][0])
        last = decode(data)
        self._seq, self._prev = last.seq, statement_hash(data)
        self._chains = {c.key: c for c in last.chains}
        log.info(
            "witness %s continues after statement %d (%d chains)",
            self.witness_id,
            self._seq,
            len(self._chains),
        )

    def observe(self, heads: Mapping[ChainKey, Head]) -> None:
        """Take the new heads of chains a stored batch advanced."""
        now: datetime | None = None
        for key, (seq, head) in heads.items():
            known = self._chains.get(key)
            if known is not None and known.seq >= seq:
                continue
            if known is None:
                now = now or _now()
            first = known.first_seen if known is not None else now
            assert first is not None
            self._chains[key] = WitnessedChain(*key, seq, head, first)
            self._changed = True

    def due(self) -> bool:
        return self._changed and time.monotonic() - self._last >= self._interval

    def tick(self) -> None:
        """Sign a statement if one is due; a failure is logged and retried next interval."""
        if not self.due():
            return
        self._last = time.monotonic()
        try:
            self.sign()
        except Exception as exc:  # the batches go on; the witness catches up next interval
            log.error("witness %s: statement not written: %s", self.witness_id, exc)

    def sign(self) -> Statement | None:
        """Write and publish a statement over every chain, if any head moved since the last."""
        self._publish()
        if not self._changed:
            return None
        st = Statement(
            self.witness_id, self._seq + 1, self._prev, _now(), tuple(self._chains.values())
        )
        data = st.encode()
        digest = statement_hash(data)
        signature = self._signer.sign(data)
        self._store.insert_witness(
            [
                st.witness_id,
                st.seq,
                st.prev_hash,
                digest,
                st.signed_at,
                len(st.chains),
                data,
                signature,
            ],
            f"witness/{st.witness_id}/{st.seq}/{digest.hex()[:16]}",
        )
        self._seq, self._prev, self._changed = st.seq, digest, False
        self._unpublished.append(envelope(data, signature))
        self._publish()
        log.info("witness %s: statement %d over %d chains", st.witness_id, st.seq, len(st.chains))
        return st

    def _publish(self, timeout: float = 10.0) -> None:
        """Publish the statements not yet on the topic, in order (kept for the next try)."""
        if not self._unpublished:
            return
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        for value in self._unpublished:
            self._producer.produce(
                self._topic, value, key=self.witness_id.encode(), on_delivery=delivered
            )
        left = self._producer.flush(timeout)
        if failed or left:
            log.error(
                "witness %s: %d statement(s) not yet on topic %r (%s): retried with the next",
                self.witness_id,
                len(self._unpublished),
                self._topic,
                failed[0] if failed else "timed out",
            )
            return
        self._unpublished.clear()

    def close(self) -> None:
        """The shutdown statement (if a head moved) and the topic copies still unpublished."""
        try:
            self.sign()
        except Exception as exc:
            log.error("witness %s: shutdown statement not written: %s", self.witness_id, exc)
        self._producer.flush(10.0)


def witness_for(settings: Any, store: Store) -> Witness | None:
    """The worker's witness, or None without ``witness_key``."""
    if settings.witness_key is None:
        log.warning("no --witness-key: this worker keeps no witness log of its chains")
        return None
    return Witness(
        Signer(settings.witness_key),
        store,
        settings.witness_producer_config(),
        settings.witness_topic,
        settings.witness_interval,
    )
