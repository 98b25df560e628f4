"""``decision-audit verify``: prove, from what is stored, that the trail is complete and untouched.

For every chain ``(producer_id, producer_epoch)`` each stored event's hash is recomputed from
its original Avro bytes, its columns are compared with what those bytes say, the chain links
are walked in seq order, and every stored checkpoint signature is checked against the
trusted public keys. Every chained record kind (decisions, model events, outcomes, reviews:
``CHAINED_KINDS`` in decision_audit.contract.fields) is verified, each from its own table and
checkpoint table; a chain pruned by retention is walked from its recorded boundary
(:func:`.retention.chain_starts`): its first kept event must link to the boundary's hash,
and the events below it are neither read nor owed a checkpoint.

For decisions the per-event work runs in ClickHouse, set-based (:mod:`.engine_walk`): one
query hashes, re-encodes and links every event of every chain and returns, per chain, a
summary and the few events the walk must look at. Python keeps what is per chain or per
checkpoint: the Ed25519 signatures, the walk over those events (:mod:`.chain_walk`, shared
with ``trace``) and the report. A chain the query cannot judge exactly (an event whose
columns differ from its bytes, bytes it cannot read, a seq claimed twice) is checked event
by event in Python (:meth:`TrailVerifier._python_chain`, also the whole of
``engine=False``), which names each difference; either way the same problems are reported
with the same seqs and event ids.
The other kinds' chains (far fewer events than decisions) are checked in Python.

``incremental=True`` checks, per chain, only the events above the seq the last recorded run
proved (:mod:`.verify_runs`), linked to that run's last proven event, and the checkpoints
not yet relied on, for every kind (chain ids never repeat across kinds: a side kind's
producer id is suffixed, ``<pid>/outcomes``). Every run is recorded in ``verify_runs``.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from decision_audit.audit.chain_walk import ChainRow, ChainWalk, Fault, Finding
from decision_audit.audit.engine_walk import ABOVE_BOUND, EngineChain, EngineWalk, bound_parameters
from decision_audit.audit.retention import ChainStart, chain_starts
from decision_audit.audit.row_check import Signature, check_signature, row_integrity
from decision_audit.audit.verify_report import ChainReport, Problem, TrailReport
from decision_audit.audit.verify_runs import Boundary, RunRecorder, boundaries
from decision_audit.contract.codec import HEADER_SIZE, SingleObjectCodec, default_codec
from decision_audit.contract.fields import CHAINED_KINDS, DECISION_EVENT, RecordKind
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import ProblemKind

log = logging.getLogger("decision_audit.verify")

# Columns that must equal what the original Avro bytes say (decision_audit.contract.fields).
COMPARED = DECISION_EVENT.compared
REORDER_WINDOW = 10_000

Chain = tuple[str, int]


@dataclass
class _Signed:
    """A chain's stored checkpoints: how many, the problems of the invalid ones, the valid
    ones' heads by seq."""

    count: int = 0
    problems: list[Problem] = field(default_factory=list)
    heads: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Outcome:
    """What a chain's check leaves for the run's record: its last event, its latest time."""

    last: ChainRow | None = None
    latest: datetime | None = None


class TrailVerifier:
    def __init__(
        self,
        client: Any,
        database: str,
        keyring: KeyRing,
        *,
        codec: SingleObjectCodec | None = None,
        checkpoint_grace: timedelta = timedelta(minutes=5),
        engine: bool = True,
        kinds: tuple[RecordKind, ...] = CHAINED_KINDS,
    ) -> None:
        self.client = client
        self.db = database
        self.keyring = keyring
        self.codec = codec or default_codec()
        self.grace = checkpoint_grace
        self.engine = engine
        """False: every event decoded and compared in Python (the reference path)"""
        self.kinds = kinds
        """the chained record kinds verified (each its table and its checkpoint table)"""
        self.python_chains = 0
        """decision chains the last run checked event by event in Python (the other kinds'
        chains always are)"""

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
        *,
        incremental: bool = False,
        record: bool = True,
        actor: str | None = None,
    ) -> TrailReport:
        """Verify the trail (or one producer's chains, or a time window of it).

        ``incremental``: only what arrived since the last recorded run (no time window).
        ``record``: append the run to ``verify_runs`` (who, when, range per chain, result).
        """
        windowed = since is not None or until is not None
        if incremental and windowed:
            raise ValueError("an incremental verify covers whole chains: no since/until")
        started = datetime.now(UTC)
        previous = boundaries(self.client, self.db, producer) if incremental or record else {}
        bounds = previous if incremental else {}
        where, params = self._where(producer, since, until)
        self.python_chains = 0
        reports: list[ChainReport] = []
        recorder = RunRecorder(self.client, self.db, started, actor=actor) if record else None
        for kind in self.kinds:
            reports += self._kind(
                kind, producer, where, params, windowed, bounds, recorder, on_rows
            )
        report = TrailReport(self.db, bool(self.keyring), reports, incremental)
        if recorder is not None:
            scope = ", ".join(
                f"{k}={v}"
                for k, v in (("producer", producer), ("since", since), ("until", until))
                if v is not None
            )
            recorder.finish(
                report,
                mode="incremental" if incremental else "full",
                scope=scope,
                previous=previous,
                proves=not windowed,
            )
        return report

    def _kind(
        self,
        kind: RecordKind,
        producer: str | None,
        where: str,
        params: dict[str, Any],
        windowed: bool,
        bounds: dict[Chain, Boundary],
        recorder: RunRecorder | None,
        on_rows: Callable[[int], None] | None,
    ) -> list[ChainReport]:
        """The chains of one record kind, each checked and reported (and recorded)."""
        starts = chain_starts(self.client, self.db, kind.table)
        # A chain retention pruned past its proven events is walked from the boundary again.
        bounds = {c: b for c, b in bounds.items() if c not in starts or b.seq >= starts[c].seq - 1}
        # Only the events above these seqs are read: the proven ones, the pruned ones.
        floors = {c: b.seq for c, b in bounds.items()}
        for c, start in starts.items():
            floors[c] = max(floors.get(c, 0), start.seq - 1)
        signed = self._checkpoints(kind, producer, bounds)
        late = self._late_events(kind, signed, bounds, starts)
        engine = self.engine and kind is DECISION_EVENT
        reports: list[ChainReport] = []
        for chain, result in self._chains(kind, engine, where, params, signed, floors, bounds):
            rep = ChainReport(*chain)
            cps = signed.get(chain, _Signed())
            rep.checkpoints = cps.count
            rep.problems.extend(cps.problems)
            bound = bounds.get(chain)
            if bound is not None:
                rep.key_id = bound.key_id
            walk = _Walk(
                rep,
                cps.heads,
                windowed,
                attest=bool(self.keyring),
                boundary=bound,
                start=starts.get(chain),
            )
            for event in late.get(chain, ()):
                walk.check_head(event)
            if isinstance(result, EngineChain) and result.exact:
                outcome = self._engine_chain(rep, walk, result)
                if on_rows is not None:
                    on_rows(rep.events)
            elif result is None:  # checkpoints only
                outcome = _Outcome(walk.boundary_row)
            else:
                if kind is DECISION_EVENT:
                    self.python_chains += 1
                above = floors.get(chain, 0)
                outcome = self._python_chain(kind, rep, walk, where, params, above, on_rows)
            if bound is not None and bound.latest is not None:
                outcome.latest = max(bound.latest, outcome.latest or bound.latest)
            walk.finish(outcome.latest, self.grace)
            reports.append(rep)
            if recorder is not None:
                recorder.chain(rep, outcome.last, outcome.latest, sorted(walk.relied_on))
        return reports

    # -- what is stored -----------------------------------------------------------------------

    def _checkpoints(
        self, kind: RecordKind, producer: str | None, bounds: dict[Chain, Boundary]
    ) -> dict[Chain, _Signed]:
        """Every stored checkpoint (past each chain's attested seq, when incremental), its
        signature checked."""
        assert kind.chain is not None
        conds = ["1"]
        params: dict[str, Any] = {}
        if producer is not None:
            conds.append("producer_id = {producer:String}")
            params["producer"] = producer
        if bounds:
            conds.append(ABOVE_BOUND)
            params.update(bound_parameters({c: b.attested_to for c, b in bounds.items()}))
        sql = (
            f"SELECT producer_id, producer_epoch, seq, chain_head, key_id, signature "
            f"FROM {self.db}.{kind.chain.checkpoints} FINAL WHERE {' AND '.join(conds)} "
            "ORDER BY producer_id, producer_epoch, seq"
        )
        out: dict[Chain, _Signed] = {}
        fmt = {"chain_head": "bytes", "signature": "bytes"}
        with self.client.query_row_block_stream(
            sql, parameters=params, column_formats=fmt
        ) as stream:
            for block in stream:
                for pid, epoch, seq, head, key_id, signature in block:
                    chain = (str(pid), int(epoch))
                    cps = out.get(chain)
                    if cps is None:
                        cps = out[chain] = _Signed()
                    self._check_signature(cps, chain, int(seq), bytes(head), key_id, signature)
        return out

    def _check_signature(
        self, cps: _Signed, chain: Chain, seq: int, head: bytes, key_id: str, signature: bytes
    ) -> None:
        cps.count += 1
        if not self.keyring:
            return
        verdict = check_signature(self.keyring, *chain, seq, head, key_id, bytes(signature))
        if verdict is Signature.UNKNOWN_KEY:
            cps.problems.append(
                Problem(ProblemKind.UNKNOWN_KEY, seq, f"checkpoint key id {key_id!r}")
            )
        elif verdict is Signature.FORGED:
            cps.problems.append(
                Problem(
                    ProblemKind.FORGED_CHECKPOINT,
                    seq,
                    f"signature does not verify with key {key_id!r}",
                )
            )
        else:
            cps.heads[seq] = head

    def _chains(
        self,
        kind: RecordKind,
        engine: bool,
        where: str,
        params: dict[str, Any],
        signed: dict[Chain, _Signed],
        floors: dict[Chain, int],
        bounds: dict[Chain, Boundary],
    ) -> Iterator[tuple[Chain, EngineChain | bool | None]]:
        """Every chain with events in ``where`` above its floor or with checkpoints, in
        order: the engine's judgement of it (``engine``: decisions only), None (no events to
        check), or True (to be checked in Python)."""
        if engine:
            # Read to the end first (one client streams one result at a time, and the chains
            # checked in Python query again); a chain's summary is small.
            # An incremental run reads without FINAL: its narrow PREWHERE then skips the
            # proven events at a few bytes each (FINAL reads every sorting key), and a chain
            # FINAL would have collapsed rows of is checked in Python, with FINAL.
            found = EngineWalk(self.client, self.db).run(
                where,
                params,
                checkpoints=any(s.heads for s in signed.values()),
                bounds=floors,
                final=not bounds,
            )
            judged: Iterator[tuple[Chain, EngineChain | bool]] = (
                ((c.producer_id, c.producer_epoch), c) for c in found
            )
        else:
            stored = self._stored_chains(kind, where, params, floors)
            judged = ((chain, True) for chain in stored)
        with_events = iter(judged)
        pending = sorted(signed)
        nxt = next(with_events, None)
        i = 0
        while nxt is not None or i < len(pending):
            if nxt is not None and (i >= len(pending) or nxt[0] <= pending[i]):
                if i < len(pending) and pending[i] == nxt[0]:
                    i += 1
                yield nxt
                nxt = next(with_events, None)
            else:
                yield pending[i], None
                i += 1

    def _stored_chains(
        self, kind: RecordKind, where: str, params: dict[str, Any], floors: dict[Chain, int]
    ) -> list[Chain]:
        if floors:
            where = f"{where} AND {ABOVE_BOUND}"
            params = {**params, **bound_parameters(floors)}
        rows = self.client.query(
            f"SELECT DISTINCT producer_id, producer_epoch FROM {self.db}.{kind.table} "
            f"WHERE {where} ORDER BY producer_id, producer_epoch",
            parameters=params,
        ).result_rows
        return [(str(p), int(e)) for p, e in rows]

    # -- one chain, judged by the engine ------------------------------------------------------

    def _engine_chain(self, rep: ChainReport, walk: _Walk, chain: EngineChain) -> _Outcome:
        rep.events = chain.events
        if rep.key_id is None:
            rep.key_id = chain.key_id
        for event in chain.interesting:
            if not event.linked:
                walk.check_head(event.row)
                continue
            if not event.hash_ok:
                rep.problems.append(
                    Problem(
                        ProblemKind.ALTERED_ROW,
                        event.row.seq,
                        "event_hash differs from SHA-256 of raw",
                        [event.row.event_id],
                    )
                )
            if event.prev is not None:
                walk.links.prev = event.prev
            walk.step(event.row)
        walk.links.prev = chain.last
        walk.links.last_seq = chain.last_seq
        return _Outcome(chain.last, chain.latest)

    def _late_events(
        self,
        kind: RecordKind,
        signed: dict[Chain, _Signed],
        bounds: dict[Chain, Boundary],
        starts: dict[Chain, ChainStart],
    ) -> dict[Chain, list[ChainRow]]:
        """The stored events at the seqs of checkpoints that came after the run that proved
        those seqs (incremental; none below a retention boundary): one query for all
        chains."""
        late = [
            (chain[0], chain[1], seq)
            for chain, cps in signed.items()
            if chain in bounds
            for seq in cps.heads
            if seq <= bounds[chain].seq and (chain not in starts or seq >= starts[chain].seq)
        ]
        out: dict[Chain, list[ChainRow]] = {}
        if not late:
            return out
        rows = self.client.query(
            f"SELECT producer_id, producer_epoch, seq, toString(event_id) AS eid, prev_hash, "
            f"SHA256(concat(prev_hash, substring(raw, {HEADER_SIZE + 1}))) AS h "
            f"FROM {self.db}.{kind.table} "
            "WHERE (producer_id, producer_epoch, seq) "
            "IN {late:Array(Tuple(String, UInt64, UInt64))} "
            "ORDER BY producer_id, producer_epoch, seq, eid "
            "LIMIT 1 BY producer_id, producer_epoch, seq",
            parameters={"late": sorted(late)},
            column_formats={"prev_hash": "bytes", "h": "bytes"},
        ).result_rows
        for pid, epoch, seq, eid, prev_hash, h in rows:
            out.setdefault((str(pid), int(epoch)), []).append(
                ChainRow(int(seq), str(eid), bytes(prev_hash), bytes(h))
            )
        return out

    # -- one chain, event by event in Python --------------------------------------------------

    def _rows(
        self, kind: RecordKind, rep: ChainReport, where: str, params: dict[str, Any], above: int
    ) -> Iterator[tuple[Any, ...]]:
        compared = kind.compared
        cols = ", ".join(("seq", "toString(event_id) AS eid", "event_hash", "raw", *compared[1:]))
        sql = (
            f"SELECT {cols} FROM {self.db}.{kind.table} FINAL PREWHERE {where} "
            "AND producer_id = {p:String} AND producer_epoch = {e:UInt64} "
            "AND seq > {above:UInt64} ORDER BY seq, eid"
        )
        fmt = {"event_hash": "bytes", "raw": "bytes", "prev_hash": "bytes"}
        with self.client.query_row_block_stream(
            sql,
            parameters={**params, "p": rep.producer_id, "e": rep.producer_epoch, "above": above},
            column_formats=fmt,
        ) as stream:
            for block in stream:
                yield from block

    def _python_chain(
        self,
        kind: RecordKind,
        rep: ChainReport,
        walk: _Walk,
        where: str,
        params: dict[str, Any],
        above: int,
        on_rows: Callable[[int], None] | None,
    ) -> _Outcome:
        """The chain's events above seq ``above``, each decoded and compared in Python."""
        # The row's columns by name; toString(event_id) stands for event_id (compared first).
        names = ("seq", "event_id", "event_hash", "raw", *kind.compared[1:])
        heap: list[ChainRow] = []
        latest: datetime | None = None
        done = 0
        for row in self._rows(kind, rep, where, params, above):
            seq_col, eid = row[0], row[1]
            rep.events += 1
            done += 1
            if on_rows is not None and done % 5000 == 0:
                on_rows(5000)
            check = row_integrity(self.codec, kind.compared, dict(zip(names, row, strict=True)))
            if check.decoded is None:
                rep.problems.append(
                    Problem(ProblemKind.UNDECODABLE_ROW, int(seq_col), check.error, [eid])
                )
                continue
            rec = check.decoded.record
            if not check.hash_ok:
                rep.problems.append(
                    Problem(
                        ProblemKind.ALTERED_ROW,
                        int(seq_col),
                        "event_hash differs from SHA-256 of raw",
                        [eid],
                    )
                )
            if not check.seq_ok:
                rep.problems.append(
                    Problem(
                        ProblemKind.REORDERED_ROW,
                        rec["seq"],
                        f"stored seq {seq_col} but the event's bytes say seq {rec['seq']}",
                        [eid],
                    )
                )
            if check.changed:
                rep.problems.append(
                    Problem(
                        ProblemKind.ALTERED_ROW,
                        rec["seq"],
                        f"columns differ from raw: {', '.join(check.changed)}",
                        [eid],
                    )
                )
            if rep.key_id is None:
                rep.key_id = rec.get("key_id")
            latest = rec["occurred_at"] if latest is None else max(latest, rec["occurred_at"])
            heapq.heappush(heap, ChainRow(rec["seq"], eid, rec["prev_hash"], check.event_hash))
            while heap and (heap[0].seq <= walk.links.expected or len(heap) > REORDER_WINDOW):
                walk.step(heapq.heappop(heap))
        while heap:
            walk.step(heapq.heappop(heap))
        if on_rows is not None:
            on_rows(done % 5000)
        return _Outcome(walk.links.prev, latest)


class _Walk:
    """The chain's links walked in seq order (:mod:`.chain_walk`), reported as problems.

    From a recorded boundary (incremental), the walk starts after the last proven event,
    which the first event checked must link to. From a retention boundary (``start``), the
    first kept event must link to the boundary's hash, and nothing below it is owed.
    """

    def __init__(
        self,
        rep: ChainReport,
        signed_heads: dict[int, bytes],
        windowed: bool,
        attest: bool,
        boundary: Boundary | None = None,
        start: ChainStart | None = None,
    ) -> None:
        self.attest = attest
        self.rep = rep
        self.windowed = windowed
        self.bound = boundary
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
        self.relied_on: set[int] = set()
        self.boundary_row: ChainRow | None = None
        if boundary is not None and boundary.seq > 0:
            self.boundary_row = ChainRow(boundary.seq, boundary.event_id, b"", boundary.event_hash)
            self.links.prev = self.boundary_row
            self.links.expected = boundary.seq + 1
            self.links.last_seq = boundary.seq
            self.links.attested_to = max(self.links.attested_to, boundary.attested_to)

    def step(self, row: ChainRow) -> None:
        for finding in self.links.step(row):
            problem = self._problem(finding)
            if problem is not None:
                self.rep.problems.append(problem)
        if self.links.signed.get(row.seq) == row.event_hash:
            self.relied_on.add(row.seq)

    def check_head(self, row: ChainRow) -> None:
        """A signed head at an event that follows its predecessor (or that an earlier run
        walked): what :meth:`.chain_walk.ChainWalk.step` checks of it then."""
        head = self.links.signed.get(row.seq)
        if head is None:
            return
        if head == row.event_hash:
            self.links.attested_to = max(self.links.attested_to, row.seq)
            self.relied_on.add(row.seq)
        else:
            problem = self._problem(Finding(Fault.HEAD_MISMATCH, row.seq, row.seq, row, None))
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
            links.last_seq if links.first_seq is not None else None,
            links.attested_to,
        )
        end = links.end()
        if end is not None:
            problem = self._problem(end)
            if problem is not None:
                rep.problems.append(problem)
        last = links.last_seq or 0
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
