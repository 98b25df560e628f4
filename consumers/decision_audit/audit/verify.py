"""``decision-audit verify``: prove, from what is stored, that the trail is complete and untouched.

For every chain ``(producer_id, producer_epoch)`` the stored rows are streamed in seq order;
each row's hash is recomputed from its original Avro bytes, its columns are compared with
what those bytes say, the chain links are walked, and every stored checkpoint signature is
checked against the trusted public keys. Memory is bounded: one chain's rows are streamed,
and rows out of place are held in a small reorder window. Every chained record kind
(decisions, model events, outcomes, reviews: ``CHAINED_KINDS`` in
decision_audit.contract.fields) is verified this way, each from its own table and
checkpoint table.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from decision_audit.audit.chain_walk import ChainRow, ChainWalk, Fault, Finding
from decision_audit.audit.retention import ChainStart, chain_starts
from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.codec import CodecError, SingleObjectCodec, default_codec
from decision_audit.contract.fields import CHAINED_KINDS, DECISION_EVENT, RecordKind
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import ProblemKind

# Columns that must equal what the original Avro bytes say (decision_audit.contract.fields).
COMPARED = DECISION_EVENT.compared
REORDER_WINDOW = 10_000


@dataclass
class Problem:
    kind: ProblemKind
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


class TrailVerifier:
    def __init__(
        self,
        client: Any,
        database: str,
        keyring: KeyRing,
        *,
        codec: SingleObjectCodec | None = None,
        checkpoint_grace: timedelta = timedelta(minutes=5),
        kinds: tuple[RecordKind, ...] = CHAINED_KINDS,
    ) -> None:
        self.client = client
        self.db = database
        self.keyring = keyring
        self.codec = codec or default_codec()
        self.grace = checkpoint_grace
        self.kinds = kinds
        """the chained record kinds verified (each its table and its checkpoint table)"""

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
        counts = " + ".join(
            f"(SELECT count() FROM {self.db}.{kind.table} WHERE {where})" for kind in self.kinds
        )
        rows = self.client.query(f"SELECT {counts}", parameters=params)
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
        windowed = since is not None or until is not None
        reports = []
        for kind in self.kinds:
            assert kind.chain is not None
            chains = self.client.query(
                f"SELECT DISTINCT producer_id, producer_epoch FROM ("
                f"SELECT producer_id, producer_epoch FROM {self.db}.{kind.table} WHERE {where} "
                f"UNION ALL SELECT producer_id, producer_epoch FROM "
                f"{self.db}.{kind.chain.checkpoints} WHERE {cp_where}) "
                "ORDER BY producer_id, producer_epoch",
                parameters=params,
            ).result_rows
            starts = chain_starts(self.client, self.db, kind.table)
            reports += [
                self._chain(
                    kind, str(p), int(e), where, params, windowed, on_rows, starts.get((p, e))
                )
                for p, e in chains
            ]
        return TrailReport(self.db, bool(self.keyring), reports)

    # -- one chain --------------------------------------------------------------------------

    def _checkpoints(self, kind: RecordKind, rep: ChainReport) -> dict[int, bytes]:
        """Valid checkpoints of the chain: seq -> signed head. Problems for the others."""
        assert kind.chain is not None
        rows = self.client.query(
            f"SELECT seq, chain_head, key_id, signature FROM {self.db}.{kind.chain.checkpoints} "
            "FINAL "
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
                    Problem(ProblemKind.UNKNOWN_KEY, int(seq), f"checkpoint key id {key_id!r}")
                )
            elif not self.keyring.verify(key_id, bytes(signature), msg):
                rep.problems.append(
                    Problem(
                        ProblemKind.FORGED_CHECKPOINT,
                        int(seq),
                        f"signature does not verify with key {key_id!r}",
                    )
                )
            else:
                valid[int(seq)] = bytes(head)
        return valid

    def _rows(
        self, kind: RecordKind, rep: ChainReport, where: str, params: dict[str, Any]
    ) -> Iterator[tuple[Any, ...]]:
        compared = kind.compared
        cols = ", ".join(("seq", "toString(event_id) AS eid", "event_hash", "raw", *compared[1:]))
        sql = (
            f"SELECT {cols} FROM {self.db}.{kind.table} FINAL WHERE {where} "
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
        kind: RecordKind,
        producer_id: str,
        epoch: int,
        where: str,
        params: dict[str, Any],
        windowed: bool,
        on_rows: Callable[[int], None] | None,
        start: ChainStart | None = None,
    ) -> ChainReport:
        rep = ChainReport(producer_id, epoch)
        signed_heads = self._checkpoints(kind, rep)
        compared = kind.compared
        heap: list[ChainRow] = []
        walk = _Walk(rep, signed_heads, windowed, attest=bool(self.keyring), start=start)
        latest: datetime | None = None
        done = 0
        for row in self._rows(kind, rep, where, params):
            seq_col, eid, stored_hash, raw = row[0], row[1], bytes(row[2]), bytes(row[3])
            rep.events += 1
            done += 1
            if on_rows is not None and done % 5000 == 0:
                on_rows(5000)
            try:
                decoded = self.codec.decode(raw)
            except CodecError as exc:
                rep.problems.append(
                    Problem(ProblemKind.UNDECODABLE_ROW, int(seq_col), exc.detail, [eid])
                )
                continue
            rec = decoded.record
            h = chain_hash(rec["prev_hash"], decoded.body)
            if h != stored_hash:
                rep.problems.append(
                    Problem(
                        ProblemKind.ALTERED_ROW,
                        int(seq_col),
                        "event_hash differs from SHA-256 of raw",
                        [eid],
                    )
                )
            if int(seq_col) != rec["seq"]:
                rep.problems.append(
                    Problem(
                        ProblemKind.REORDERED_ROW,
                        rec["seq"],
                        f"stored seq {seq_col} but the event's bytes say seq {rec['seq']}",
                        [eid],
                    )
                )
            stored = dict(zip(compared, (eid, *row[4:]), strict=True))
            changed = [c for c in compared if stored[c] != rec[c]]
            if changed:
                rep.problems.append(
                    Problem(
                        ProblemKind.ALTERED_ROW,
                        rec["seq"],
                        f"columns differ from raw: {', '.join(changed)}",
                        [eid],
                    )
                )
            if rep.key_id is None:
                rep.key_id = rec.get("key_id")
            latest = rec["occurred_at"] if latest is None else max(latest, rec["occurred_at"])
            heapq.heappush(heap, ChainRow(rec["seq"], eid, rec["prev_hash"], h))
            while heap and (heap[0].seq <= walk.links.expected or len(heap) > REORDER_WINDOW):
                walk.step(heapq.heappop(heap))
        while heap:
            walk.step(heapq.heappop(heap))
        if on_rows is not None:
            on_rows(done % 5000)
        walk.finish(latest, self.grace)
        return rep


class _Walk:
    """The chain's links walked in seq order (:mod:`.chain_walk`), reported as problems."""

    def __init__(
        self,
        rep: ChainReport,
        signed_heads: dict[int, bytes],
        windowed: bool,
        attest: bool,
        start: ChainStart | None = None,
    ) -> None:
        self.attest = attest
        self.rep = rep
        self.windowed = windowed
        self.start = start
        """the chain's retention boundary: the walk starts after it, linked to its hash"""
        if start is None:
            self.links = ChainWalk(rep.producer_id, rep.producer_epoch, signed_heads)
        else:
            self.links = ChainWalk(
                rep.producer_id,
                rep.producer_epoch,
                signed_heads,
                start=start.seq,
                start_hash=start.prev_hash,
            )

    def step(self, row: ChainRow) -> None:
        for finding in self.links.step(row):
            problem = self._problem(finding)
            if problem is not None:
                self.rep.problems.append(problem)

    def _problem(self, f: Finding) -> Problem | None:
        row, prev = f.row, f.prev
        if f.fault is Fault.MISSING:
            if prev is None or row is None:
                if self.windowed:  # the window starts or ends inside the chain
                    return None
                if row is None:
                    return Problem(
                        ProblemKind.DELETED_ROWS,
                        f.first,
                        f"checkpoint at seq {f.last} attests events up to there; "
                        f"stored chain ends at {f.first - 1}",
                    )
                return Problem(
                    ProblemKind.DELETED_ROWS, f.first, f"seq {f.first}..{f.last} missing", []
                )
            return Problem(
                ProblemKind.DELETED_ROWS,
                f.first,
                f"seq {f.first}..{f.last} missing",
                [prev.event_id, row.event_id],
            )
        assert row is not None
        if f.fault is Fault.OFF_BOUNDARY:
            assert self.start is not None
            return Problem(
                ProblemKind.CHAIN_BREAK,
                row.seq,
                f"first kept event does not link to the retention boundary recorded at seq "
                f"{row.seq - 1} (head {self.start.prev_hash.hex()[:16]}…)",
                [row.event_id],
            )
        if f.fault is Fault.OFF_GENESIS:
            return Problem(
                ProblemKind.CHAIN_BREAK,
                1,
                "first event does not link to the chain's genesis",
                [row.event_id],
            )
        if f.fault is Fault.HEAD_MISMATCH:
            return Problem(
                ProblemKind.CHECKPOINT_MISMATCH,
                row.seq,
                "signed head differs from the stored event's hash",
                [row.event_id],
            )
        assert prev is not None
        if f.fault is Fault.REPEATED:
            return Problem(
                ProblemKind.INSERTED_ROW,
                row.seq,
                f"two events claim seq {row.seq}",
                [prev.event_id, row.event_id],
            )
        return Problem(
            ProblemKind.CHAIN_BREAK,
            row.seq,
            f"prev_hash of seq {row.seq} is not the hash of seq {prev.seq}",
            [prev.event_id, row.event_id],
        )

    def finish(self, latest: datetime | None, grace: timedelta) -> None:
        rep, links = self.rep, self.links
        rep.first_seq, rep.last_seq, rep.attested_to = (
            links.first_seq,
            links.last_seq,
            links.attested_to,
        )
        end = links.end()
        if end is not None:
            problem = self._problem(end)
            if problem is not None:
                rep.problems.append(problem)
        last = rep.last_seq or 0
        if self.attest and rep.key_id and rep.attested_to < last and not self.windowed:
            recent = latest is not None and latest > datetime.now(UTC) - grace
            if not recent:
                rep.problems.append(
                    Problem(
                        ProblemKind.MISSING_CHECKPOINT,
                        rep.attested_to + 1,
                        f"seq {rep.attested_to + 1}..{last} covered by no valid checkpoint",
                    )
                )
