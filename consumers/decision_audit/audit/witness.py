"""Checking the witness logs: each links and is signed, and every chain they witnessed is whole.

Run by ``decision-audit verify`` after the chains' own checks. The statements come from
``witness_statements`` or, with ``--witness-from-kafka``, from the witness topic (then a
statement the topic has and ClickHouse lacks or holds otherwise is reported too: the log was
rewritten inside ClickHouse). Every statement's link and signature is checked. Each witness's
set of chains is folded in seq order (:mod:`decision_audit.contract.witness`: a delta carries
what changed, a full restatement — or a version-1 statement — the whole set; they mix in one
log) from its second-latest complete restatement on, so the work of folding stays bounded
by ``witness_full_every`` however long the log: each delta's ``total`` and ``digest`` are
checked against the set folded up to it, and each complete restatement against that set
(one that drops a chain is ``restatement_mismatch``). Several
workers keep one witness each (id: its key id) over the chains they stored; the check unions
their folded sets: every chain any witness names must exist at least to the seq that witness
last saw, with the witnessed head hash at that seq — or have been pruned by retention past it
(``retention_prunings``) — so a chain two workers witnessed across a rebalance must reach the
higher of the two. A pruning past a witnessed head counts only if a retention run record
covers it and its window had passed since the statement that last moved the chain (else
``unproven_pruning``: a fresh chain deleted under a made-up pruning row). When the auditor
expects a witness (``--expect-witness``), an empty log (``no_witness``) and a stored chain no
statement covers (``unwitnessed_chain``) are problems too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from decision_audit.audit.retention import (
    EU_AI_ACT_FLOOR_DAYS,
    Pruning,
    chain_starts,
    prunings,
)
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.fields import CHAINED_KINDS
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.models import utc_now
from decision_audit.contract.reasons import WitnessProblemKind
from decision_audit.contract.witness import (
    GENESIS,
    ChainKey,
    ChainSet,
    Statement,
    WitnessedChain,
    WitnessFormatError,
    chain_name,
    complete_restatements,
    decode,
    open_envelope,
    statement_hash,
)


@dataclass(frozen=True)
class StoredStatement:
    """A statement as read back: its bytes, signature, and where it was read from."""

    data: bytes
    signature: bytes
    origin: str
    """``witness_statements`` or ``topic[partition]@offset``"""
    witness_id: str | None = None
    """the row's column (ClickHouse), compared with the signed bytes"""
    seq: int | None = None


@dataclass(frozen=True)
class WitnessProblem:
    kind: WitnessProblemKind
    witness_id: str
    statement: int | None
    detail: str
    chain: str | None = None


@dataclass
class WitnessReport:
    source: str
    witnesses: dict[str, int] = field(default_factory=dict)
    """witness id -> statements read"""
    chains: int = 0
    """chains in the union of the witnesses' folded sets"""
    signatures_checked: bool = False
    expected: bool = False
    """whether the auditor expected a witness (``--expect-witness``)"""
    problems: list[WitnessProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "witnesses": self.witnesses,
            "chains": self.chains,
            "signatures_checked": self.signatures_checked,
            "expected": self.expected,
            "problems": [asdict(p) for p in self.problems],
        }


Claim = tuple[str, int, WitnessedChain]
"""``(witness id, seq of the statement that last witnessed the chain, the chain)``"""


Logs = dict[str, dict[int, tuple[Statement, StoredStatement]]]
"""each witness's statements by seq"""


class WitnessSourceError(DecisionAuditError, RuntimeError):
    """The witness statements could not be read (topic missing, broker down)."""


def statements_from_clickhouse(client: Any, database: str) -> list[StoredStatement]:
    rows = client.query(
        f"SELECT witness_id, seq, statement, signature FROM {database}.witness_statements "
        "ORDER BY witness_id, seq",
        column_formats={"statement": "bytes", "signature": "bytes"},
    ).result_rows
    return [
        StoredStatement(bytes(d), bytes(sig), "witness_statements", str(w), int(s))
        for w, s, d, sig in rows
    ]


def statements_from_kafka(
    bootstrap_servers: str, topic: str, timeout: float = 30.0, settle: float = 1.0
) -> list[StoredStatement]:
    """Every message of the witness topic, read from the start of each partition to its end."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
    from confluent_kafka import TopicPartition as TP

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"decision-audit-verify-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    out: list[StoredStatement] = []
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            raise WitnessSourceError(f"cannot read topic {topic!r}: {exc}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            raise WitnessSourceError(
                f"witness topic {topic!r} not found at {bootstrap_servers} "
                "(workers publish to it only with --witness-key)"
            )
        partitions = sorted(meta.partitions)
        consumer.assign([TP(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            now = time.monotonic()
            if msg is None:
                # EOF on every partition and nothing more for a moment: the end (a broker's
                # end-of-partition answer may come a batch early, hence the settling).
                if len(at_end) == len(partitions):
                    quiet_since = quiet_since or now
                    if now - quiet_since >= settle:
                        return out
                continue
            quiet_since = None
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    continue
                raise WitnessSourceError(f"reading topic {topic!r}: {err}")
            origin = f"{topic}[{msg.partition()}]@{msg.offset()}"
            try:
                data, sig = open_envelope(msg.value() or b"")
            except WitnessFormatError as exc:
                data, sig = msg.value() or b"", b""
                origin += f" ({exc})"
            out.append(StoredStatement(data, sig, origin))
        raise WitnessSourceError(f"timed out reading topic {topic!r} to its end")
    finally:
        consumer.close()


def _logs(statements: Iterable[StoredStatement], keyring: KeyRing, report: WitnessReport) -> Logs:
    """Each witness's statements by seq, after format and signature checks."""
    logs: Logs = {}
    for s in statements:
        wid = s.witness_id or "?"
        try:
            st = decode(s.data)
        except WitnessFormatError as exc:
            report.problems.append(
                WitnessProblem(WitnessProblemKind.UNREADABLE, wid, s.seq, f"{s.origin}: {exc}")
            )
            continue
        where = f"statement {st.seq} of witness {st.witness_id} ({s.origin})"
        if s.witness_id is not None and (s.witness_id, s.seq) != (st.witness_id, st.seq):
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.EDITED,
                    st.witness_id,
                    st.seq,
                    f"{where}: its row says witness {s.witness_id} seq {s.seq}",
                )
            )
        if keyring:
            if st.witness_id not in keyring:
                report.problems.append(
                    WitnessProblem(
                        WitnessProblemKind.UNKNOWN_KEY,
                        st.witness_id,
                        st.seq,
                        f"{where}: no trusted key {st.witness_id}.pub in --keys",
                    )
                )
            elif not keyring.verify(st.witness_id, s.signature, s.data):
                report.problems.append(
                    WitnessProblem(
                        WitnessProblemKind.BAD_SIGNATURE,
                        st.witness_id,
                        st.seq,
                        f"{where}: the signature does not verify with key "
                        f"{st.witness_id} (forged or edited)",
                    )
                )
                continue
        log = logs.setdefault(st.witness_id, {})
        seen = log.get(st.seq)
        if seen is not None:
            if seen[1].data != s.data:
                report.problems.append(
                    WitnessProblem(
                        WitnessProblemKind.FORK,
                        st.witness_id,
                        st.seq,
                        f"{where}: two different statements",
                    )
                )
            continue  # the same statement twice (published again after a timeout)
        log[st.seq] = (st, s)
    return logs


def _fold_log(
    wid: str, log: dict[int, tuple[Statement, StoredStatement]], report: WitnessReport
) -> list[Claim]:
    """Seqs 1..n, each linked to the one before. The set is folded from the first part of the
    second-latest complete restatement (from statement 1 if there is none): no statement may
    move a chain back, each delta's total and digest are those of the set folded up to it,
    and each complete restatement must list every chain folded before it and commit to the
    set its parts list. Returns the folded set, each chain with the seq of the statement that
    last witnessed it."""
    restatements = complete_restatements({seq: st.marker for seq, (st, _) in log.items()})
    ends = {first: last for first, last in restatements}
    fold_from = restatements[-2][0] if len(restatements) >= 2 else 1
    chains = ChainSet()
    witnessed_in: dict[ChainKey, int] = {}
    # False past a missing statement or before the first restatement folded from: digests
    # cannot be checked until a complete restatement states the set again
    complete = fold_from == 1
    restating: tuple[int, int] | None = None  # (first, last seq) of the restatement being read
    listed_in: dict[ChainKey, WitnessedChain] = {}  # what that restatement's parts list
    prev_hash = GENESIS
    for seq in range(1, max(log) + 1):
        entry = log.get(seq)
        if entry is None:
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.MISSING_STATEMENT, wid, seq, f"statement {seq} is missing"
                )
            )
            prev_hash, complete, restating = b"", False, None
            continue
        st, stored = entry
        if prev_hash and st.prev_hash != prev_hash:
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.BROKEN_LINK,
                    wid,
                    seq,
                    f"statement {seq} ({stored.origin}) does not link to statement {seq - 1}",
                )
            )
        prev_hash = statement_hash(stored.data)
        if seq < fold_from:
            continue  # linked and signed; its chains are stated again by a later restatement
        if seq in ends:
            restating, listed_in = (seq, ends[seq]), {}
        for c in st.chains:
            listed_in[c.key] = c
            known = chains.get(c.key)
            if known is not None and (
                known.seq > c.seq or (known.seq == c.seq and known.head != c.head)
            ):
                report.problems.append(
                    WitnessProblem(
                        WitnessProblemKind.WITNESS_REWRITTEN,
                        wid,
                        seq,
                        f"statement {seq} "
                        + ("moves back" if known.seq > c.seq else "changes the head of")
                        + f" chain {c.name} (seq {known.seq} in statement "
                        f"{witnessed_in[c.key]})",
                        c.name,
                    )
                )
                continue  # the claim stays at the higher seq witnessed before
            if known != c:
                chains.put(c)
                witnessed_in[c.key] = seq
        if restating is not None:
            if seq == restating[1]:
                complete = _check_restatement(wid, restating, log, listed_in, chains, report)
                restating = None
            continue
        if st.full is not None:
            continue  # a part of a restatement never completed: it commits to no folded set
        if st.version >= 2 and complete:
            _check_digest(
                wid,
                st,
                stored,
                chains,
                f"statements {fold_from}..{seq} fold to",
                report,
                " (a statement dropped or edited)",
            )
    return [(wid, witnessed_in[c.key], c) for c in chains]


def _check_restatement(
    wid: str,
    span: tuple[int, int],
    log: dict[int, tuple[Statement, StoredStatement]],
    listed: dict[ChainKey, WitnessedChain],
    chains: ChainSet,
    report: WitnessReport,
) -> bool:
    """A complete restatement (statements ``span``) against the set folded up to its end: it
    lists every chain, at its head, and all its parts commit to the set they list. Returns
    whether digests can be checked after it."""
    first, last = span
    where = f"statements {first}..{last}" if last > first else f"statement {first}"
    ok = True
    for c in chains:
        if listed.get(c.key) != c:
            ok = False
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.RESTATEMENT_MISMATCH,
                    wid,
                    last,
                    f"the full restatement in {where} "
                    + ("drops" if c.key not in listed else "lists another head of")
                    + f" chain {c.name} (seq {c.seq} folded before it)",
                    c.name,
                )
            )
    final = log[last][0]
    if final.version == 1:
        return ok
    stated = ChainSet(listed.values())
    for seq in range(first, last + 1):
        st, stored = log[seq]
        against = f"the full restatement in {where} lists"
        ok = _check_digest(wid, st, stored, stated, against, report) and ok
    return ok


def _check_digest(
    wid: str,
    st: Statement,
    stored: StoredStatement,
    chains: ChainSet,
    against: str,
    report: WitnessReport,
    why: str = "",
) -> bool:
    """Whether statement ``st`` commits to ``chains`` (count and digest); if not, reports it."""
    if (st.total, st.digest) == (len(chains), chains.digest()):
        return True
    report.problems.append(
        WitnessProblem(
            WitnessProblemKind.DIGEST_MISMATCH,
            wid,
            st.seq,
            f"statement {st.seq} ({stored.origin}) commits to {st.total} chains, digest "
            f"{st.digest.hex()[:16]}…; {against} {len(chains)}, digest "
            f"{chains.digest().hex()[:16]}…{why}",
        )
    )
    return False


def check_logs(
    statements: Iterable[StoredStatement], keyring: KeyRing, source: str = "witness_statements"
) -> tuple[WitnessReport, list[Claim]]:
    """The checks of the witness logs themselves (no store needed), and the union of the
    folded sets: one claim per (witness, chain)."""
    report, claims, _ = _check_logs(statements, keyring, source)
    return report, claims


def _check_logs(
    statements: Iterable[StoredStatement], keyring: KeyRing, source: str
) -> tuple[WitnessReport, list[Claim], Logs]:
    report = WitnessReport(source, signatures_checked=bool(keyring))
    claims: list[Claim] = []
    logs = _logs(statements, keyring, report)
    for wid, log in sorted(logs.items()):
        report.witnesses[wid] = len(log)
        claims += _fold_log(wid, log, report)
    report.chains = len({c.key for _, _, c in claims})
    return report, claims, logs


DEFAULT_GRACE = timedelta(minutes=10)
"""how long a chain may be stored before ``--expect-witness`` requires a statement covering it
(the workers' ``witness_interval``, 30 s by default, and a restart after a kill)"""


class WitnessChecker:
    """Checks the witness logs against the stored chains.

    ``expect``: the auditor expects a witness, so an empty log and a chain stored more than
    ``grace`` before ``now`` that no statement covers are problems."""

    def __init__(
        self,
        client: Any,
        database: str,
        keyring: KeyRing,
        *,
        expect: bool = False,
        grace: timedelta = DEFAULT_GRACE,
        now: datetime | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.keyring = keyring
        self.expect = expect
        self.grace = grace
        self.now = now

    def run(
        self,
        statements: list[StoredStatement],
        source: str = "witness_statements",
        compare_with: list[StoredStatement] | None = None,
    ) -> WitnessReport:
        """``compare_with``: ClickHouse's copy, when ``statements`` come from the topic."""
        report, claims, logs = _check_logs(statements, self.keyring, source)
        if compare_with is not None:
            self._compare(logs, compare_with, report)
        signed = {(w, seq): st.signed_at for w, log in logs.items() for seq, (st, _) in log.items()}
        now = self.now or utc_now()
        self._check_chains(claims, signed, now, report)
        if self.expect:
            report.expected = True
            self._check_coverage(claims, now, report)
        return report

    def _check_coverage(self, claims: list[Claim], now: datetime, report: WitnessReport) -> None:
        """Every chain stored before ``now - grace`` is in some witness's folded set."""
        witnessed = {c.key for _, _, c in claims}
        cutoff = now - self.grace
        unwitnessed: list[tuple[str, str]] = []
        for kind in CHAINED_KINDS:
            table = kind.tables[0]
            rows = self.client.query(
                f"SELECT producer_id, producer_epoch FROM {self.database}.{table} "
                "GROUP BY producer_id, producer_epoch "
                "HAVING min(ingested_at) < {t:DateTime64(3, 'UTC')} "
                "ORDER BY producer_id, producer_epoch",
                parameters={"t": cutoff},
            ).result_rows
            for pid, epoch in rows:
                if (kind.schema, str(pid), int(epoch)) not in witnessed:
                    unwitnessed.append((table, chain_name(kind.schema, str(pid), int(epoch))))
        if not report.witnesses:
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.NO_WITNESS,
                    "-",
                    None,
                    f"a witness is expected and {report.source} holds no witness statement "
                    f"({len(unwitnessed)} chain(s) stored before {cutoff.isoformat()}): the "
                    "log was emptied, or the workers run without --witness-key",
                )
            )
            return
        for table, name in unwitnessed:
            report.problems.append(
                WitnessProblem(
                    WitnessProblemKind.UNWITNESSED_CHAIN,
                    "-",
                    None,
                    f"chain {name} in {table}, stored before {cutoff.isoformat()}, is in no "
                    "witness statement (statements deleted, or stored by a worker without "
                    "--witness-key)",
                    name,
                )
            )

    def _compare(
        self,
        logs: Logs,
        stored: list[StoredStatement],
        report: WitnessReport,
    ) -> None:
        """Every statement of the topic must be in ClickHouse, byte for byte."""
        held = {(s.witness_id, s.seq): s.data for s in stored}
        for wid, log in sorted(logs.items()):
            for seq, (_, s) in sorted(log.items()):
                data = held.get((wid, seq))
                if data != s.data:
                    report.problems.append(
                        WitnessProblem(
                            WitnessProblemKind.WITNESS_REWRITTEN,
                            wid,
                            seq,
                            f"statement {seq} of witness {wid} ({s.origin}) is "
                            + ("missing from" if data is None else "different in")
                            + f" {self.database}.witness_statements",
                        )
                    )

    def _check_chains(
        self,
        latest: list[Claim],
        signed: dict[tuple[str, int], datetime],
        now: datetime,
        report: WitnessReport,
    ) -> None:
        for kind in CHAINED_KINDS:
            claims = [(w, n, c) for w, n, c in latest if c.kind == kind.schema]
            if not claims:
                continue
            table = kind.tables[0]
            chains = sorted({(c.producer_id, c.epoch) for _, _, c in claims})
            links = sorted({(c.producer_id, c.epoch, c.seq) for _, _, c in claims})
            db = self.database
            heads = {
                (str(p), int(e)): int(s)
                for p, e, s in self.client.query(
                    f"SELECT producer_id, producer_epoch, max(seq) FROM {db}.{table} "
                    "WHERE (producer_id, producer_epoch) IN {c:Array(Tuple(String, UInt64))} "
                    "GROUP BY producer_id, producer_epoch",
                    parameters={"c": chains},
                ).result_rows
            }
            hashes = {
                (str(p), int(e), int(s)): bytes(h)
                for p, e, s, h in self.client.query(
                    f"SELECT producer_id, producer_epoch, seq, any(event_hash) AS h "
                    f"FROM {db}.{table} WHERE (producer_id, producer_epoch, seq) "
                    "IN {l:Array(Tuple(String, UInt64, UInt64))} "
                    "GROUP BY producer_id, producer_epoch, seq",
                    parameters={"l": links},
                    column_formats={"h": "bytes"},
                ).result_rows
            }
            pruned = chain_starts(self.client, db, table)
            past = [k for k in chains if k in pruned]
            recorded = prunings(self.client, db, table, past) if past else {}
            for wid, n, c in claims:
                problem = self._claim(c, heads, hashes, pruned, table)
                if problem is None and (c.producer_id, c.epoch) in pruned:
                    problem = _unproven(c, recorded, signed[(wid, n)], now, table)
                if problem is not None:
                    kind_name, detail = problem
                    report.problems.append(
                        WitnessProblem(
                            kind_name,
                            wid,
                            n,
                            f"chain {c.name} witnessed by {wid} (statement {n}) at seq {c.seq}: "
                            + detail,
                            c.name,
                        )
                    )

    @staticmethod
    def _claim(
        c: WitnessedChain,
        heads: dict[tuple[str, int], int],
        hashes: dict[tuple[str, int, int], bytes],
        pruned: dict[tuple[str, int], Any],
        table: str,
    ) -> tuple[WitnessProblemKind, str] | None:
        boundary = pruned.get((c.producer_id, c.epoch))
        if boundary is not None and boundary.seq - 1 >= c.seq:
            if boundary.seq - 1 == c.seq and boundary.prev_hash != c.head:
                return (
                    WitnessProblemKind.HEAD_MISMATCH,
                    "retention recorded another hash at this seq",
                )
            return None  # pruned by retention past the witnessed head
        top = heads.get((c.producer_id, c.epoch))
        if top is None:
            return (
                WitnessProblemKind.MISSING_CHAIN,
                f"no events of it in {table} (the chain was deleted)",
            )
        if top < c.seq:
            return (
                WitnessProblemKind.TRUNCATED_CHAIN,
                f"{table} holds it only up to seq {top} (tail deleted)",
            )
        stored = hashes.get((c.producer_id, c.epoch, c.seq))
        if stored is None:
            return WitnessProblemKind.MISSING_HEAD, f"the witnessed head event is not in {table}"
        if stored != c.head:
            return (
                WitnessProblemKind.HEAD_MISMATCH,
                "the stored event hash differs from the witnessed head",
            )
        return None


def _unproven(
    c: WitnessedChain,
    recorded: dict[tuple[str, int], list[Pruning]],
    witnessed_at: datetime,
    now: datetime,
    table: str,
) -> tuple[WitnessProblemKind, str] | None:
    """Why the pruning that removed the witnessed head cannot be a real retention run, if it
    cannot: a run prunes only what is older than its window, so its run time less its window
    (and its horizon) must be after the statement that last saw the chain move (``None``
    when the chain was not pruned past its witnessed seq)."""
    past = [p for p in recorded.get((c.producer_id, c.epoch), []) if p.boundary_seq >= c.seq]
    if not past:
        return None
    p = past[0]  # the pruning that removed the witnessed head
    why = f"pruning {p.pruning_id} (run time {p.pruned_at.isoformat()}) "
    run = p.run
    if run is None:
        return WitnessProblemKind.UNPROVEN_PRUNING, why + "is covered by no retention run record"
    window = timedelta(days=run.window_days)
    if (run.ran_at, run.horizon) != (p.pruned_at, p.horizon) or p.horizon != run.ran_at - window:
        return WitnessProblemKind.UNPROVEN_PRUNING, (
            why + f"disagrees with its run record (run at {run.ran_at.isoformat()}, "
            f"{run.window_days} days, horizon {run.horizon.isoformat()}; pruning horizon "
            f"{p.horizon.isoformat()})"
        )
    if table == "decisions" and run.window_days < EU_AI_ACT_FLOOR_DAYS and not run.below_floor:
        return WitnessProblemKind.UNPROVEN_PRUNING, (
            why + f"records a decisions window of {run.window_days} days, under the floor of "
            f"{EU_AI_ACT_FLOOR_DAYS}, and no --below-eu-ai-act-floor"
        )
    if run.ran_at > now:
        return WitnessProblemKind.UNPROVEN_PRUNING, why + "records a run time in the future"
    if run.ran_at - window < witnessed_at or p.horizon < witnessed_at:
        return WitnessProblemKind.UNPROVEN_PRUNING, (
            why + f"with a window of {run.window_days} days (horizon "
            f"{p.horizon.isoformat()}) ran less than its window after the witness saw the "
            f"chain at seq {c.seq} ({witnessed_at.isoformat()}): its events were not that old"
        )
    return None


def print_witness(report: WitnessReport, console: Any) -> None:
    """The witness part of ``verify``'s text report."""
    if not report.witnesses and not report.problems:
        console.print(
            f"[yellow]no witness statements[/] in {report.source}: deleted whole chains are "
            "not detectable (start the workers with --witness-key)"
        )
        return
    ids = ", ".join(f"{w} ({n})" for w, n in sorted(report.witnesses.items()))
    console.print(f"witnesses in {report.source}: {ids or 'none readable'}")
    for p in report.problems:
        console.print(f"[red]{p.kind}[/] witness {p.witness_id}: {p.detail}")
    if not report.signatures_checked:
        console.print("[yellow]witness signatures not checked[/]: pass --keys DIR")
    verdict = "[green]WITNESSED[/]" if report.ok else f"[red]FAILED[/] ({len(report.problems)})"
    console.print(f"{verdict}: {report.chains} witnessed chain(s) checked")
