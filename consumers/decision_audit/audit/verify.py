"""``decision-audit verify``: prove, from what is stored, that the trail is complete and untouched.

For every chain ``(producer_id, producer_epoch)`` the stored rows are streamed in seq order;
each row's hash is recomputed from its original Avro bytes, its columns are compared with
what those bytes say, the chain links are walked, and every stored checkpoint signature is
checked against the trusted public keys. Memory is bounded: one chain's rows are streamed,
and rows out of place are held in a small reorder window.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.codec import CodecError, SingleObjectCodec, default_codec
from decision_audit.contract.hashing import chain_hash, genesis_hash
from decision_audit.contract.keys import KeyRing

PROBLEM_KINDS = {
    "undecodable_row": "the stored raw bytes do not decode",
    "altered_row": "a row's columns or hash differ from its original bytes",
    "reordered_row": "a row's seq column differs from the seq in its original bytes",
    "deleted_rows": "seqs missing from the chain",
    "inserted_row": "a row that does not belong in the chain (duplicate seq or broken link)",
    "chain_break": "prev_hash does not match the previous event's hash",
    "forged_checkpoint": "a checkpoint signature that does not verify",
    "unknown_key": "a checkpoint signed with a key id not among --keys",
    "checkpoint_mismatch": "a validly signed checkpoint names another chain head",
    "missing_checkpoint": "a signed chain whose latest events no checkpoint covers",
}

# Columns that must equal what the original Avro bytes say.
COMPARED = (
    "event_id", "occurred_at", "model_name", "model_version", "deployment_id", "request_id",
    "inputs", "prediction", "prediction_is_json", "score", "explanation", "run_id",
    "dataset_version", "code_commit", "environment_hash", "actor", "latency_ms", "tags",
    "redaction_policy", "key_id", "producer_id", "producer_epoch", "prev_hash",
)  # fmt: skip
REORDER_WINDOW = 10_000


@dataclass
class Problem:
    kind: str
    seq: int | None
    detail: str
    event_ids: list[str] = field(default_factory=list)


@dataclass
class ChainReport:
    producer_id: str
    producer_epoch: int
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    key_id: str | None = None
    checkpoints: int = 0
    attested_to: int = 0
    """highest seq vouched for by a valid checkpoint whose head matches the stored chain"""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class TrailReport:
    database: str
    keys_checked: bool
    chains: list[ChainReport]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.chains)

    @property
    def events(self) -> int:
        return sum(c.events for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database": self.database,
            "signatures_checked": self.keys_checked,
            "events": self.events,
            "problems": sum(len(c.problems) for c in self.chains),
            "chains": [{**asdict(c), "ok": c.ok} for c in self.chains],
        }


@dataclass(order=True)
class _Row:
    seq: int
    event_id: str = field(compare=False)
    prev_hash: bytes = field(compare=False)
    event_hash: bytes = field(compare=False)


class TrailVerifier:
    def __init__(
        self,
        client: Any,
        database: str,
        keyring: KeyRing,
        *,
        codec: SingleObjectCodec | None = None,
        checkpoint_grace: timedelta = timedelta(minutes=5),
    ) -> None:
        self.client = client
        self.db = database
        self.keyring = keyring
        self.codec = codec or default_codec()
        self.grace = checkpoint_grace

    def _where(
        self, producer: str | None, since: datetime | None, until: datetime | None
    ) -> tuple[str, dict[str, Any]]:
        conds: list[str] = ["1"]
        params: dict[str, Any] = {}
        if producer is not None:
            conds.append("producer_id = {producer:String}")
            params["producer"] = producer
        if since is not None:
            conds.append("occurred_at >= {since:DateTime64(3, 'UTC')}")
            params["since"] = since
        if until is not None:
            conds.append("occurred_at < {until:DateTime64(3, 'UTC')}")
            params["until"] = until
        return " AND ".join(conds), params

    def count(
        self,
        producer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        where, params = self._where(producer, since, until)
        rows = self.client.query(
            f"SELECT count() FROM {self.db}.decisions WHERE {where}", parameters=params
        )
        return int(rows.result_rows[0][0])

    def run(
        self,
        producer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        on_rows: Callable[[int], None] | None = None,
    ) -> TrailReport:
        where, params = self._where(producer, since, until)
        cp_where = "1" if producer is None else "producer_id = {producer:String}"
        chains = self.client.query(
            f"SELECT DISTINCT producer_id, producer_epoch FROM ("
            f"SELECT producer_id, producer_epoch FROM {self.db}.decisions WHERE {where} "
            f"UNION ALL SELECT producer_id, producer_epoch FROM {self.db}.checkpoints "
            f"WHERE {cp_where}) ORDER BY producer_id, producer_epoch",
            parameters=params,
        ).result_rows
        windowed = since is not None or until is not None
        reports = [self._chain(str(p), int(e), where, params, windowed, on_rows) for p, e in chains]
        return TrailReport(self.db, bool(self.keyring), reports)

    # -- one chain --------------------------------------------------------------------------

    def _checkpoints(self, rep: ChainReport) -> dict[int, bytes]:
        """Valid checkpoints of the chain: seq -> signed head. Problems for the others."""
        rows = self.client.query(
            f"SELECT seq, chain_head, key_id, signature FROM {self.db}.checkpoints FINAL "
            "WHERE producer_id = {p:String} AND producer_epoch = {e:UInt64} ORDER BY seq",
            parameters={"p": rep.producer_id, "e": rep.producer_epoch},
            column_formats={"chain_head": "bytes", "signature": "bytes"},
        ).result_rows
        valid: dict[int, bytes] = {}
        for seq, head, key_id, signature in rows:
            rep.checkpoints += 1
            if not self.keyring:
                continue
            msg = checkpoint_message(rep.producer_id, rep.producer_epoch, int(seq), bytes(head))
            if key_id not in self.keyring:
                rep.problems.append(
                    Problem("unknown_key", int(seq), f"checkpoint key id {key_id!r}")
                )
            elif not self.keyring.verify(key_id, bytes(signature), msg):
                rep.problems.append(
                    Problem(
                        "forged_checkpoint",
                        int(seq),
                        f"signature does not verify with key {key_id!r}",
                    )
                )
            else:
                valid[int(seq)] = bytes(head)
        return valid

    def _rows(
        self, rep: ChainReport, where: str, params: dict[str, Any]
    ) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(("seq", "toString(event_id) AS eid", "event_hash", "raw", *COMPARED[1:]))
        sql = (
            f"SELECT {cols} FROM {self.db}.decisions FINAL WHERE {where} "
            "AND producer_id = {p:String} AND producer_epoch = {e:UInt64} ORDER BY seq, eid"
        )
        fmt = {"event_hash": "bytes", "raw": "bytes", "prev_hash": "bytes"}
        with self.client.query_row_block_stream(
            sql,
            parameters={**params, "p": rep.producer_id, "e": rep.producer_epoch},
            column_formats=fmt,
        ) as stream:
            for block in stream:
                yield from block

    def _chain(
        self,
        producer_id: str,
        epoch: int,
        where: str,
        params: dict[str, Any],
        windowed: bool,
        on_rows: Callable[[int], None] | None,
    ) -> ChainReport:
        rep = ChainReport(producer_id, epoch)
        signed_heads = self._checkpoints(rep)
        heap: list[_Row] = []
        walk = _ChainWalk(rep, signed_heads, windowed, attest=bool(self.keyring))
        latest: datetime | None = None
        done = 0
        for row in self._rows(rep, where, params):
            seq_col, eid, stored_hash, raw = row[0], row[1], bytes(row[2]), bytes(row[3])
            rep.events += 1
            done += 1
            if on_rows is not None and done % 5000 == 0:
                on_rows(5000)
            try:
                decoded = self.codec.decode(raw)
            except CodecError as exc:
                rep.problems.append(Problem("undecodable_row", int(seq_col), exc.detail, [eid]))
                continue
            rec = decoded.record
            h = chain_hash(rec["prev_hash"], decoded.body)
            if h != stored_hash:
                rep.problems.append(
                    Problem(
                        "altered_row", int(seq_col), "event_hash differs from SHA-256 of raw", [eid]
                    )
                )
            if int(seq_col) != rec["seq"]:
                rep.problems.append(
                    Problem(
                        "reordered_row",
                        rec["seq"],
                        f"stored seq {seq_col} but the event's bytes say seq {rec['seq']}",
                        [eid],
                    )
                )
            stored = dict(zip(COMPARED, (eid, *row[4:]), strict=True))
            changed = [c for c in COMPARED if stored[c] != rec[c]]
            if changed:
                rep.problems.append(
                    Problem(
                        "altered_row",
                        rec["seq"],
                        f"columns differ from raw: {', '.join(changed)}",
                        [eid],
                    )
                )
            if rep.key_id is None:
                rep.key_id = rec.get("key_id")
            latest = rec["occurred_at"] if latest is None else max(latest, rec["occurred_at"])
            heapq.heappush(heap, _Row(rec["seq"], eid, rec["prev_hash"], h))
            while heap and (heap[0].seq <= walk.expected or len(heap) > REORDER_WINDOW):
                walk.step(heapq.heappop(heap))
        while heap:
            walk.step(heapq.heappop(heap))
        if on_rows is not None:
            on_rows(done % 5000)
        walk.finish(latest, self.grace)
        return rep


class _ChainWalk:
    """Follows seq and hash links in seq order."""

    def __init__(
        self, rep: ChainReport, signed_heads: dict[int, bytes], windowed: bool, attest: bool
    ) -> None:
        self.attest = attest
        self.rep = rep
        self.signed = signed_heads
        self.windowed = windowed
        self.prev: _Row | None = None
        self.expected = 1

    def step(self, row: _Row) -> None:
        rep, prev = self.rep, self.prev
        if rep.first_seq is None:
            rep.first_seq = row.seq
        if prev is None:
            if row.seq == 1:
                if row.prev_hash != genesis_hash(rep.producer_id, rep.producer_epoch):
                    rep.problems.append(
                        Problem(
                            "chain_break",
                            1,
                            "first event does not link to the chain's genesis",
                            [row.event_id],
                        )
                    )
            elif not self.windowed:
                rep.problems.append(Problem("deleted_rows", 1, f"seq 1..{row.seq - 1} missing", []))
        elif row.seq == prev.seq:
            rep.problems.append(
                Problem(
                    "inserted_row",
                    row.seq,
                    f"two events claim seq {row.seq}",
                    [prev.event_id, row.event_id],
                )
            )
            return
        elif row.seq > prev.seq + 1:
            rep.problems.append(
                Problem(
                    "deleted_rows",
                    prev.seq + 1,
                    f"seq {prev.seq + 1}..{row.seq - 1} missing",
                    [prev.event_id, row.event_id],
                )
            )
        elif row.prev_hash != prev.event_hash:
            rep.problems.append(
                Problem(
                    "chain_break",
                    row.seq,
                    f"prev_hash of seq {row.seq} is not the hash of seq {prev.seq}",
                    [prev.event_id, row.event_id],
                )
            )
        head = self.signed.get(row.seq)
        if head is not None:
            if head == row.event_hash:
                rep.attested_to = max(rep.attested_to, row.seq)
            else:
                rep.problems.append(
                    Problem(
                        "checkpoint_mismatch",
                        row.seq,
                        "signed head differs from the stored event's hash",
                        [row.event_id],
                    )
                )
        self.prev = row
        self.expected = row.seq + 1
        rep.last_seq = row.seq

    def finish(self, latest: datetime | None, grace: timedelta) -> None:
        rep = self.rep
        last = rep.last_seq or 0
        beyond = [s for s in self.signed if s > last]
        if beyond and not self.windowed:
            rep.problems.append(
                Problem(
                    "deleted_rows",
                    last + 1,
                    f"checkpoint at seq {max(beyond)} attests events up to there; "
                    f"stored chain ends at {last}",
                )
            )
        if self.attest and rep.key_id and rep.attested_to < last and not self.windowed:
            recent = latest is not None and latest > datetime.now(UTC) - grace
            if not recent:
                rep.problems.append(
                    Problem(
                        "missing_checkpoint",
                        rep.attested_to + 1,
                        f"seq {rep.attested_to + 1}..{last} covered by no valid checkpoint",
                    )
                )
