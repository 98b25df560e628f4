"""The worker's witness log: signed, hash-linked statements of the chain heads it stored.

Every ``witness_interval`` seconds (and at shutdown), if a chain it stored has moved, the
worker signs a statement (:mod:`decision_audit.contract.witness`, version 3) carrying the
chains new or moved since its previous statement, at their latest heads, with the size and
digest of the full set it has witnessed since its log began — several consecutive statements
when the changes would not fit one topic message. Every ``witness_full_every`` statements,
and at its first statement if its log holds no complete full restatement yet (a new log, or
one written before restatements), it writes a full restatement instead: the whole set, over
as many parts as it needs. Each statement goes to ``witness_statements`` (through
:class:`.store.Store`) and then to the witness topic, so a copy lives outside ClickHouse. On
start the worker rebuilds its set from its latest complete restatement in ClickHouse and the
statements after it (at most about ``witness_full_every``), and continues the log after the
latest.

``witness_key`` may name a directory of keys, one per replica: each worker claims one
(:func:`claim_key`).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Message, Producer

from decision_audit.contract.witness import (
    GENESIS,
    ChainKey,
    ChainSet,
    Marker,
    Statement,
    WitnessedChain,
    decode,
    delta_statements,
    envelope,
    full_statements,
    latest_restatement,
    statement_hash,
    undo,
)
from decision_audit.producer.signing import PRIVATE_SUFFIX, Signer, key_files
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
        full_every: int = 2880,
    ) -> None:
        self.witness_id = signer.key_id
        self._signer = signer
        self._store = store
        self._topic = topic
        self._interval = interval
        self._producer = Producer(producer_config)
        self._chains = ChainSet()
        self._changed: dict[ChainKey, WitnessedChain] = {}
        """new or moved since the latest statement written"""
        self._seq = 0
        self._prev = GENESIS
        self._last = time.monotonic()
        self._unpublished: list[bytes] = []
        self._full_every = full_every
        self._full_start = 0
        """first seq of the latest complete restatement (0: none)"""
        self.resumed_from = 0
        """the seq the resume read from (0: an empty log)"""
        self.resume_read = 0
        """how many statements the resume folded"""
        self._resume()

    @property
    def seq(self) -> int:
        """The seq of the latest statement written (0: none yet)."""
        return self._seq

    _SCAN = 4096
    """statements whose markers one query of the resume's backward scan reads"""

    def _restatement_start(self) -> int:
        """The first seq of this witness's latest complete restatement (0: none), found by
        reading markers back from the latest statement, a window at a time."""
        db = self._store.database
        top = self._store.client.query(
            f"SELECT max(seq) FROM {db}.witness_statements WHERE witness_id = {{w:String}}",
            parameters={"w": self.witness_id},
        ).result_rows
        hi = int(top[0][0] or 0) if top else 0
        markers: dict[int, Marker] = {}
        while hi > 0:
            lo = max(hi - self._SCAN, 0)
            for seq, part, of in self._store.client.query(
                "WITH JSONExtractUInt(statement, 'version') = 1 AS v1 "
                "SELECT seq, if(v1, 1, JSONExtractUInt(statement, 'full', 'part')), "
                "if(v1, 1, JSONExtractUInt(statement, 'full', 'of')) "
                f"FROM {db}.witness_statements WHERE witness_id = {{w:String}} "
                "AND seq > {lo:UInt64} AND seq <= {hi:UInt64}",
                parameters={"w": self.witness_id, "lo": lo, "hi": hi},
            ).result_rows:
                markers[int(seq)] = (int(part), int(of))
            start = latest_restatement(markers, lo)
            if start is not None:
                return start
            hi = lo
        return 0

    def _resume(self) -> None:
        """Continue from this witness's statements in ClickHouse, if any: its latest complete
        restatement and the statements after it, folded in order."""
        db = self._store.database
        start = self._restatement_start()
        rows = self._store.client.query(
            f"SELECT statement FROM {db}.witness_statements WHERE witness_id = {{w:String}} "
            "AND seq >= {s:UInt64} ORDER BY seq LIMIT 1 BY seq",
            parameters={"w": self.witness_id, "s": start},
            column_formats={"statement": "bytes"},
        ).result_rows
        last: Statement | None = None
        checkable = False
        for (raw,) in rows:
            data = bytes(raw)
            last = decode(data)
            if last.seq == start:
                self._chains = ChainSet()
            for c in last.chains:
                self._chains.put(c)
            part, of = last.marker
            # a part before its restatement's last commits to the set complete only at the
            # last; a lone last part (not the restatement resumed from) to a set never made
            checkable = last.version >= 2 and (
                part == 0 or (part == of and last.seq - of + 1 >= start)
            )
            self._seq, self._prev = last.seq, statement_hash(data)
        self._full_start = start
        self.resumed_from, self.resume_read = start or (1 if rows else 0), len(rows)
        if last is None:
            return
        if checkable and (len(self._chains), self._chains.digest()) != (last.total, last.digest):
            # verify reports the log; this worker goes on from what its statements say
            log.error(
                "witness %s: statements %d..%d do not fold to the digest of statement %d",
                self.witness_id,
                self.resumed_from,
                last.seq,
                last.seq,
            )
        log.info(
            "witness %s continues after statement %d (%d chains; read %d statements from %d)",
            self.witness_id,
            self._seq,
            len(self._chains),
            self.resume_read,
            self.resumed_from,
        )

    def observe(self, heads: Mapping[ChainKey, Head]) -> None:
        """Take the new heads of chains a stored batch advanced."""
        now: datetime | None = None
        for key, (seq, head) in heads.items():
            known = self._changed.get(key) or self._chains.get(key)
            if known is not None and known.seq >= seq:
                continue
            if known is None:
                now = now or _now()
            first = known.first_seen if known is not None else now
            assert first is not None
            self._changed[key] = WitnessedChain(*key, seq, head, first)

    def due(self) -> bool:
        return bool(self._changed) and time.monotonic() - self._last >= self._interval

    def tick(self) -> None:
        """Sign a statement if one is due; a failure is logged and retried next interval."""
        if not self.due():
            return
        self._last = time.monotonic()
        try:
            self.sign()
        except Exception as exc:  # the batches go on; the witness catches up next interval
            log.error("witness %s: statement not written: %s", self.witness_id, exc)

    def sign(self) -> list[Statement]:
        """Write and publish the statements carrying the chains moved since the last (none
        if none moved); what could not be written is carried by the next."""
        self._publish()
        if not self._changed:
            return []
        written: list[Statement] = []
        restate = self._full_start == 0 or self._seq + 1 - self._full_start >= self._full_every
        statements = (full_statements if restate else delta_statements)(
            self.witness_id,
            self._seq + 1,
            self._prev,
            _now(),
            self._chains,
            self._changed.values(),
        )
        try:
            for st, data, replaced in statements:
                digest = statement_hash(data)
                try:
                    signature = self._signer.sign(data)
                    self._store.insert_witness(
                        [
                            st.witness_id,
                            st.seq,
                            st.prev_hash,
                            digest,
                            st.signed_at,
                            st.total,
                            data,
                            signature,
                        ],
                        f"witness/{st.witness_id}/{st.seq}/{digest.hex()[:16]}",
                    )
                except BaseException:
                    undo(self._chains, replaced)
                    raise
                self._seq, self._prev = st.seq, digest
                for c in st.chains:
                    self._changed.pop(c.key, None)
                if st.full is not None and st.full[0] == st.full[1]:
                    self._full_start = st.seq - st.full[1] + 1
                self._unpublished.append(envelope(data, signature))
                written.append(st)
        finally:
            self._publish()
            for st in written:
                log.info(
                    "witness %s: statement %d with %d of %d chains%s",
                    st.witness_id,
                    st.seq,
                    len(st.chains),
                    st.total,
                    f" (full restatement, part {st.full[0]} of {st.full[1]})" if st.full else "",
                )
        return written

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


_claimed: list[IO[bytes]] = []
"""the key files this process holds locked (open for its life: the lock goes with it)"""


def claim_key(path: Path) -> Signer:
    """The witness key ``path``, or, for a directory, its first ``KEY_ID.key`` no other
    process on this host holds: replicas sharing one mounted directory of keys (one per
    replica) each take their own, since two workers signing as one witness would fork its log.
    The claim is an exclusive ``flock`` on the key file, released when the process ends."""
    if not path.is_dir():
        return Signer(path)
    for key in key_files(path):
        f = key.open("rb")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _claimed.append(f)
        return Signer(key)
    raise RuntimeError(
        f"--witness-key {path}: every *{PRIVATE_SUFFIX} in it is held by another worker; "
        "add one key per worker (decision-audit keygen --out DIR --key-id worker-N)"
    )


def witness_for(settings: Any, store: Store) -> Witness | None:
    """The worker's witness, or None without ``witness_key``."""
    if settings.witness_key is None:
        log.warning("no --witness-key: this worker keeps no witness log of its chains")
        return None
    return Witness(
        claim_key(Path(settings.witness_key)),
        store,
        settings.witness_producer_config(),
        settings.witness_topic,
        settings.witness_interval,
        settings.witness_full_every,
    )
