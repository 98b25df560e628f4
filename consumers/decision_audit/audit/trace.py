"""``decision-audit trace``: one decision, its lineage and the proof that its record is intact.

Given an event id, request id or prediction id (``request_id`` or ``tags['prediction_id']``)
the trace prints the decision, what followed it (its human reviews and its outcomes, each
with the proof of its own record), then walks deployment → model version → training run →
dataset version / code commit / environment through ``audit.model_events`` (who registered,
approved, promoted, deployed, rolled back, and when), and proves the decision's record:
its hash recomputed from the stored ``raw`` bytes, its columns equal to what those bytes
say, its link to the previous event of its chain, and the signed checkpoint that covers it
(with every link between the two re-checked).

:class:`LifecycleTracer` answers seed 003's other two questions from ``audit.model_events``:
``trace --deployment D --since T --until U`` (a deployment's timeline, with its decisions
around each event) and ``trace --model-version NAME@VERSION`` (the approval chain), each
event proven like the decision's follow-ups and judged by the promotion gate's rule.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from decision_audit.audit.chain_walk import ChainRow, ChainWalk, Fault, Finding
from decision_audit.audit.gate import GateAnswer, check_gate
from decision_audit.audit.keystore import (
    EncryptedInput,
    KeystoreKey,
    encrypted_inputs,
    print_encrypted,
    to_dicts,
)
from decision_audit.audit.lookup import ident_condition, ident_parameters
from decision_audit.audit.row_check import covering_checkpoint, row_integrity
from decision_audit.audit.verify import COMPARED
from decision_audit.clickhouse.tables import stored_facts
from decision_audit.contract.codec import CodecError, SingleObjectCodec, default_codec
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.fields import (
    DECISION_EVENT,
    MODEL_EVENT,
    OUTCOME,
    REVIEW,
    RecordKind,
)
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.lineage import model_version_id
from decision_audit.contract.models import decode_value
from decision_audit.contract.promotion import PromotionPolicy, promotion_problems

# What a trace shows of the decision and what followed it (decision_audit.contract.fields).
DECISION_FIELDS = tuple(f.name for f in DECISION_EVENT if f.traced)
FOLLOW_UP_FIELDS = {k.schema: tuple(f.name for f in k if f.traced) for k in (REVIEW, OUTCOME)}
# Which lifecycle actions put a model version into service on a deployment.
SERVING_ACTIONS = ("deploy", "rollback")
# Which lifecycle actions of a model version its lineage link sums up.
VERSION_ACTIONS = (
    "train",
    "evaluate",
    "attest",
    "approve",
    "reject",
    "promote",
    "retire",
    "retrain",
)
MAX_MATCHES = 20


def lookup_sql(database: str, columns: str) -> str:
    """The decisions with event id ``{eid:UUID}``, request id or prediction id ``{id:String}``
    (:func:`decision_audit.audit.lookup.ident_condition`), the latest first."""
    return (
        f"SELECT {columns} FROM {database}.decisions FINAL WHERE {ident_condition(database)} "
        f"ORDER BY occurred_at DESC LIMIT {MAX_MATCHES}"
    )


def chain_rows_sql(database: str) -> str:
    """Seq, event id, hash and raw bytes of chain ``{p:String}``/``{e:UInt64}`` from seq
    ``{lo:UInt64}`` to ``{hi:UInt64}``.

    ``decisions`` is not sorted by chain, so FINAL over a filter on the chain columns would
    merge every row's sorting key; the keys of the chain's rows are found first without
    FINAL (a scan of three narrow columns), and FINAL then reads only those rows' granules.
    The filter is kept outside so that FINAL keeps the same rows as before.
    """
    chain = (
        "producer_id = {p:String} AND producer_epoch = {e:UInt64} "
        "AND seq BETWEEN {lo:UInt64} AND {hi:UInt64}"
    )
    return (
        f"SELECT seq, toString(event_id) AS eid, event_hash, raw FROM {database}.decisions FINAL "
        f"WHERE (model_name, model_version, occurred_at, event_id) GLOBAL IN ("
        f"SELECT model_name, model_version, occurred_at, event_id FROM {database}.decisions "
        f"WHERE {chain}) AND {chain} ORDER BY seq, eid"
    )


class TraceNotFound(DecisionAuditError, LookupError):
    """No decision has that event id, request id or prediction id."""


@dataclass
class LifecycleEvent:
    """One ``audit.model_events`` row as the trace shows it."""

    event_id: str
    occurred_at: datetime
    action: str
    actor: str
    subject: str
    related: list[str]
    metadata: dict[str, Any]
    producer_id: str
    seq: int
    hash_ok: bool


@dataclass
class Link:
    """One step of the lineage walk."""

    step: str
    """deployment, model_version, run, dataset, commit, environment"""
    ref: str | None
    status: str
    """``ok``, ``missing`` (nothing recorded) or ``mismatch`` (records disagree)"""
    detail: str
    events: list[LifecycleEvent] = field(default_factory=list)


@dataclass
class FollowUp:
    """A review or an outcome of the decision, as the trace shows it."""

    kind: str
    """``review`` or ``outcome``"""
    event_id: str
    occurred_at: datetime
    summary: str
    """what it says, for people ("overridden to 'approve' by j.doe at …: reason")"""
    record: dict[str, Any]
    """its traced fields (decision_audit.contract.fields)"""
    hash_ok: bool
    columns_ok: bool
    checkpoint_seq: int | None = None
    """the first signed checkpoint of its chain at or after it (None: none yet, or unsigned)"""
    checkpoint_ok: bool | None = None
    """the checkpoint's signature (checked with --keys, else as the worker checked it)"""

    @property
    def ok(self) -> bool:
        return self.hash_ok and self.columns_ok and self.checkpoint_ok is not False


@dataclass
class Integrity:
    """The proof of one decision's record."""

    hash_ok: bool = False
    columns_ok: bool = False
    link_ok: bool = False
    checkpoint_seq: int | None = None
    checkpoint_ok: bool | None = None
    """None: no checkpoint covers the decision (unsigned chain or not yet signed)"""
    follow_ups_ok: bool = True
    """every review and outcome of the decision is intact"""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.hash_ok
            and self.columns_ok
            and self.link_ok
            and self.checkpoint_ok is not False
            and self.follow_ups_ok
        )


@dataclass
class Trace:
    """The answer to ``trace ID``."""

    query: str
    decision: dict[str, Any]
    matches: int
    integrity: Integrity
    links: list[Link]
    encrypted: list[EncryptedInput] = field(default_factory=list)
    """the encrypted inputs: opened, sealed or erased (audit/keystore.py)"""
    reviews: list[FollowUp] = field(default_factory=list)
    outcomes: list[FollowUp] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(link.status == "ok" for link in self.links)

    @property
    def missing(self) -> list[str]:
        return [f"{link.step}: {link.detail}" for link in self.links if link.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "matches": self.matches,
            "decision": self.decision,
            "integrity": {**asdict(self.integrity), "ok": self.integrity.ok},
            "lineage_complete": self.complete,
            "missing_links": self.missing,
            "links": [asdict(link) for link in self.links],
            "encrypted_inputs": to_dicts(self.encrypted),
            "reviews": [{**asdict(r), "ok": r.ok} for r in self.reviews],
            "outcomes": [{**asdict(o), "ok": o.ok} for o in self.outcomes],
        }


class Tracer:
    """Runs traces against one audit database."""

    def __init__(
        self,
        client: Any,
        database: str,
        keyring: KeyRing | None = None,
        codec: SingleObjectCodec | None = None,
        keystore_key: KeystoreKey | None = None,
    ) -> None:
        self.client = client
        self.db = database
        self.keyring = keyring or KeyRing()
        self.codec = codec or default_codec()
        self.keystore_key = keystore_key

    def trace(self, ident: str) -> Trace:
        """Trace the decision named by ``ident``; raises :class:`TraceNotFound`."""
        rows = self._find(ident)
        if not rows:
            raise TraceNotFound(
                f"no decision has event id, request id or prediction id {ident!r} in "
                f"{self.db}.decisions"
            )
        row = rows[0]
        decision = {k: row[k] for k in DECISION_FIELDS}
        decision["event_id"] = str(decision["event_id"])
        if len(rows) > 1:
            decision["other_matches"] = [str(r["event_id"]) for r in rows[1:]]
        encrypted = encrypted_inputs(self.client, self.db, row, self.keystore_key)
        integrity = self._integrity(row)
        reviews = self._follow_ups(REVIEW, decision)
        outcomes = self._follow_ups(OUTCOME, decision)
        for f in (*reviews, *outcomes):
            if not f.ok:
                integrity.follow_ups_ok = False
                integrity.problems.append(f"{f.kind} {f.event_id}: {_broken(f)}")
        return Trace(
            ident,
            decision,
            len(rows),
            integrity,
            self._lineage(row),
            encrypted=encrypted,
            reviews=reviews,
            outcomes=outcomes,
        )

    # -- lookup -----------------------------------------------------------------------------

    def _find(self, ident: str) -> list[dict[str, Any]]:
        cols = ", ".join(("event_hash", "raw", *dict.fromkeys((*DECISION_FIELDS, *COMPARED))))
        result = self.client.query(
            lookup_sql(self.db, cols),
            parameters=ident_parameters(ident),
            column_formats={"event_hash": "bytes", "raw": "bytes", "prev_hash": "bytes"},
        )
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]

    # -- integrity --------------------------------------------------------------------------

    def _integrity(self, row: dict[str, Any]) -> Integrity:
        out = Integrity()
        pid, epoch, seq = str(row["producer_id"]), int(row["producer_epoch"]), int(row["seq"])
        check = row_integrity(self.codec, COMPARED, {**row, "event_id": str(row["event_id"])})
        if check.decoded is None:
            out.problems.append(f"stored raw bytes do not decode: {check.error}")
            return out
        out.hash_ok = check.hash_ok
        if not out.hash_ok:
            out.problems.append("event_hash differs from SHA-256(prev_hash || raw body)")
        changed = [*check.changed, *(() if check.seq_ok else ("seq",))]
        out.columns_ok = not changed
        if changed:
            out.problems.append(f"columns differ from the original bytes: {', '.join(changed)}")
        self._walk(out, pid, epoch, seq, row.get("key_id"))
        return out

    def _chain_rows(self, pid: str, epoch: int, lo: int, hi: int) -> list[tuple[Any, ...]]:
        return list(
            self.client.query(
                chain_rows_sql(self.db),
                parameters={"p": pid, "e": epoch, "lo": lo, "hi": hi},
                column_formats={"event_hash": "bytes", "raw": "bytes"},
            ).result_rows
        )

    def _walk(self, out: Integrity, pid: str, epoch: int, seq: int, key_id: str | None) -> None:
        """The decision's link to the event before it, and every link from it up to the
        signed checkpoint that covers it, walked from the stored original bytes."""
        checkpoint = self._checkpoint(out, pid, epoch, seq, key_id)
        cp_seq, head, signature = checkpoint if checkpoint is not None else (seq, None, [])
        start = max(seq - 1, 1)
        walk = ChainWalk(pid, epoch, {cp_seq: head} if head is not None else None, start=start)
        link: list[str] = []  # what is wrong with the decision's link to its chain
        covered: list[str] = []  # what is wrong between the decision and the checkpoint
        for s, eid, stored_hash, raw in self._chain_rows(pid, epoch, start, cp_seq):
            s = int(s)
            where = link if s < seq else covered
            check = row_integrity(self.codec, (), {"raw": raw, "event_hash": stored_hash, "seq": s})
            if check.decoded is None:
                where.append(f"seq {s}: stored raw bytes do not decode")
                if s < seq:
                    continue  # the decision's link is missing, the walk goes on
                break
            prev_hash, h = check.decoded.record["prev_hash"], check.event_hash
            if not check.hash_ok:
                where.append(
                    f"seq {s}: stored event_hash differs from SHA-256(prev_hash || raw body)"
                    if s < seq
                    else f"seq {s}: hash or link broken between decision and checkpoint"
                )
            for f in walk.step(ChainRow(s, str(eid), prev_hash, h)):
                if s < seq:
                    continue  # the event before the decision is taken as stored
                if f.fault is Fault.MISSING and f.first < seq:
                    link.append(f"chain link missing: seq {f.first} of {pid}/{epoch} is not stored")
                elif f.fault is Fault.OFF_GENESIS:
                    link.append("seq 1 does not link to its chain's genesis")
                elif f.fault is Fault.BREAK and s == seq:
                    link.append(f"prev_hash is not the hash of seq {seq - 1} of {pid}/{epoch}")
                else:
                    covered.append(_covered_problem(f, cp_seq))
        end = walk.end()
        if end is not None:
            covered.append(_covered_problem(end, cp_seq))
        out.link_ok = not link
        out.problems += link[:1]
        if checkpoint is not None:
            out.checkpoint_ok = not signature and not covered
            out.problems += signature + covered[:1]

    def _checkpoint(
        self, out: Integrity, pid: str, epoch: int, seq: int, key_id: str | None
    ) -> tuple[int, bytes, list[str]] | None:
        """The first checkpoint at or after ``seq``: its seq, the head it signs and what is
        wrong with its signature (checked with --keys). None when there is none."""
        cp = covering_checkpoint(self.client, self.db, DECISION_EVENT, pid, epoch, seq)
        if cp is None:
            out.notes.append(
                "unsigned chain: no checkpoints"
                if not key_id
                else "no signed checkpoint covers this decision yet"
            )
            return None
        out.checkpoint_seq = cp.seq
        problems = []
        holds = cp.holds(self.keyring)
        if self.keyring:
            if not holds:
                problems.append(
                    f"checkpoint {cp.seq}: signature does not verify with key {cp.key_id!r}"
                )
        else:
            out.notes.append(
                f"checkpoint {cp.seq} signature "
                + ("was verified by the worker" if holds else "not verified")
                + " (pass --keys to check it here)"
            )
        return cp.seq, cp.head, problems

    # -- what followed ----------------------------------------------------------------------

    def _follow_ups(self, kind: RecordKind, decision: dict[str, Any]) -> list[FollowUp]:
        """The decision's reviews or outcomes (named by its event id or its request id), each
        with the proof of its record: hash, columns, the signed checkpoint covering it."""
        names = [
            decision["event_id"],
            *([decision["request_id"]] if decision["request_id"] else []),
        ]
        traced = FOLLOW_UP_FIELDS[kind.schema]
        cols = ", ".join(("event_hash", "raw", *dict.fromkeys((*traced, *kind.compared))))
        result = self.client.query(
            f"SELECT {cols} FROM {self.db}.{kind.table} FINAL "
            "WHERE decision_id IN {names:Array(String)} ORDER BY occurred_at, event_id",
            parameters={"names": names},
            column_formats={"event_hash": "bytes", "raw": "bytes", "prev_hash": "bytes"},
        )
        out = []
        for values in result.result_rows:
            row = dict(zip(result.column_names, values, strict=True))
            row["event_id"] = str(row["event_id"])
            check = row_integrity(self.codec, kind.compared, row)
            record = {k: row[k] for k in traced}
            f = FollowUp(
                kind.schema,
                row["event_id"],
                row["occurred_at"],
                _summary(kind.schema, record, decision),
                record,
                check.hash_ok,
                check.columns_ok,
            )
            self._covering_checkpoint(kind, f, row)
            out.append(f)
        return out

    def _covering_checkpoint(self, kind: RecordKind, f: FollowUp, row: dict[str, Any]) -> None:
        f.checkpoint_seq, f.checkpoint_ok = self._checkpoint_of(kind, row)

    def _checkpoint_of(
        self, kind: RecordKind, row: dict[str, Any]
    ) -> tuple[int | None, bool | None]:
        """The first signed checkpoint of ``row``'s chain at or after it and whether it holds
        (checked with --keys, else as the worker checked it); ``(None, None)`` when none."""
        pid, epoch, seq = str(row["producer_id"]), int(row["producer_epoch"]), int(row["seq"])
        cp = covering_checkpoint(self.client, self.db, kind, pid, epoch, seq)
        if cp is None:
            return None, None
        ok = cp.holds(self.keyring)
        if ok and cp.seq == seq and cp.head != bytes(row["event_hash"]):
            ok = False
        return cp.seq, ok

    # -- lineage ----------------------------------------------------------------------------

    def _model_events(self, refs: set[tuple[str, str]]) -> list[dict[str, Any]]:
        """The ``model_events`` rows about ``refs`` (as subject or related), by time."""
        result = self.client.query(
            f"SELECT * FROM {self.db}.model_events FINAL "
            "WHERE (subject_type, subject_id) IN {refs:Array(Tuple(String, String))} "
            "OR hasAny(arrayMap(r -> (r.1, r.2), related), {refs:Array(Tuple(String, String))}) "
            "ORDER BY occurred_at, seq",
            parameters={"refs": sorted(refs)},
            column_formats={"prev_hash": "bytes", "event_hash": "bytes", "raw": "bytes"},
        )
        rows = []
        for values in result.result_rows:
            row = dict(zip(result.column_names, values, strict=True))
            row["event_id"] = str(row["event_id"])
            rows.append(row)
        return rows

    def _events(self, refs: set[tuple[str, str]]) -> list[LifecycleEvent]:
        if not refs:
            return []
        out = []
        for row in self._model_events(refs):
            try:
                body = self.codec.decode(bytes(row["raw"])).body
                hash_ok = chain_hash(bytes(row["prev_hash"]), body) == bytes(row["event_hash"])
            except CodecError:
                hash_ok = False
            out.append(
                LifecycleEvent(
                    row["event_id"],
                    row["occurred_at"],
                    str(row["action"]),
                    str(row["actor"]),
                    f"{row['subject_type']}:{row['subject_id']}",
                    [_ref_str(r) for r in row["related"]],
                    json.loads(row["metadata"]),
                    str(row["producer_id"]),
                    int(row["seq"]),
                    hash_ok,
                )
            )
        return out

    def _lineage(self, row: dict[str, Any]) -> list[Link]:
        at: datetime = row["occurred_at"]
        version = model_version_id(str(row["model_name"]), str(row["model_version"]))
        given = {
            "run": row["run_id"],
            "dataset": row["dataset_version"],
            "commit": row["code_commit"],
            "environment": row["environment_hash"],
        }
        refs = {("model_version", version)} | {(t, str(v)) for t, v in given.items() if v}
        deployment = row["deployment_id"]
        if deployment:
            refs.add(("deployment", str(deployment)))
        events = self._events(refs)

        def about(ref: str) -> list[LifecycleEvent]:
            return [e for e in events if e.subject == ref or ref in e.related]

        links = [self._deployment_link(deployment, version, at, about)]
        version_events = about(f"model_version:{version}")
        register = next((e for e in version_events if e.action == "register"), None)
        if register is None:
            links.append(
                Link(
                    "model_version",
                    f"model_version:{version}",
                    "missing",
                    f"no register event records model version {version}",
                    version_events,
                )
            )
        else:
            summary = [f"registered by {register.actor} at {register.occurred_at.isoformat()}"]
            for e in version_events:
                if e.action in VERSION_ACTIONS and e.occurred_at <= at:
                    summary.append(f"{_event_words(e)} by {e.actor} at {e.occurred_at.isoformat()}")
            links.append(
                Link(
                    "model_version",
                    f"model_version:{version}",
                    "ok",
                    "; ".join(summary),
                    version_events,
                )
            )
        # Run, dataset, commit, environment: the decision's ids against the registration's.
        recorded = {t: _related_id(register, t) for t in given}
        if recorded["run"] and not given["run"]:
            given["run"] = recorded["run"]
        run_events = about(f"run:{given['run']}") if given["run"] else []
        for e in run_events:
            for t in ("dataset", "commit", "environment"):
                recorded[t] = recorded[t] or _related_id(e, t)
        for step in ("run", "dataset", "commit", "environment"):
            events_of = run_events if step == "run" else []
            if step == "dataset" and (given[step] or recorded[step]):
                events_of = about(f"dataset:{given[step] or recorded[step]}")
            links.append(_id_link(step, given[step], recorded[step], events_of))
        return links

    def _deployment_link(self, deployment: Any, version: str, at: datetime, about: Any) -> Link:
        if not deployment:
            return Link("deployment", None, "missing", "the decision names no deployment_id")
        ref = f"deployment:{deployment}"
        events: list[LifecycleEvent] = about(ref)
        serving = [e for e in events if e.action in SERVING_ACTIONS and e.occurred_at <= at]
        if not serving:
            return Link(
                "deployment",
                ref,
                "missing",
                f"no deploy or rollback of deployment {deployment} recorded before the decision",
                events,
            )
        last = serving[-1]
        served = next(
            (r.split(":", 1)[1] for r in last.related if r.startswith("model_version:")), None
        )
        if served is None and last.subject.startswith("model_version:"):
            served = last.subject.split(":", 1)[1]
        what = f"{last.action} by {last.actor} at {last.occurred_at.isoformat()}"
        if served != version:
            return Link(
                "deployment",
                ref,
                "mismatch",
                f"deployment {deployment} was serving {served} ({what}), "
                f"but the decision names {version}",
                events,
            )
        return Link("deployment", ref, "ok", f"serving {version} since the {what}", events)


def _event_words(e: LifecycleEvent) -> str:
    """What a lifecycle event of a model version says, in a few words (its details)."""
    m = e.metadata
    if e.action in ("promote", "approve", "reject", "retire"):
        stage = m.get("stage") or m.get("to_stage")
        return f"{e.action}{' to ' + str(stage) if stage else ''}"
    if e.action == "attest":
        return (
            f"attest {m.get('predicate')} {m.get('result')} "
            f"(evidence sha256 {str(m.get('artifact_sha256'))[:12]}…)"
        )
    if e.action == "evaluate":
        metrics = ", ".join(f"{k}={v}" for k, v in dict(m.get("metrics") or {}).items())
        limits = ", ".join(f"{k}={v}" for k, v in dict(m.get("thresholds") or {}).items())
        on = next((r for r in e.related if r.startswith("dataset:")), None)
        return f"evaluate {metrics} (thresholds {limits}){' on ' + on if on else ''}"
    if e.action == "train":
        run = e.subject if e.subject.startswith("run:") else None
        run = run or next((r for r in e.related if r.startswith("run:")), "run ?")
        return f"train {run}"
    if e.action == "retrain":
        trigger = f" (trigger {m['trigger']})" if m.get("trigger") else ""
        return f"retrain: {m.get('reason')}{trigger}"
    return e.action


_VERDICT_WORDS = {"confirm": "confirmed", "override": "overridden", "escalate": "escalated"}


def _summary(kind: str, rec: dict[str, Any], decision: dict[str, Any]) -> str:
    """One line saying what a review or an outcome says about the decision."""
    at = rec["occurred_at"].isoformat()
    if kind == "review":
        verdict = str(rec["verdict"])
        what = _VERDICT_WORDS.get(verdict, verdict)
        if verdict == "override":
            final = decode_value(rec["final_decision"], rec["final_decision_is_json"])
            what += f" to {final!r}"
        line = f"{what} by {rec['reviewer']} at {at}"
        return f"{line}: {rec['reason']}" if rec["reason"] else line
    actual = decode_value(rec["actual"], rec["actual_is_json"])
    line = f"outcome {actual!r} observed at {rec['observed_at'].isoformat()}"
    by = ", ".join(
        x
        for x in (
            rec["source"] and f"source {rec['source']}",
            rec["actor"] and f"by {rec['actor']}",
        )
        if x
    )
    if by:
        line += f" ({by})"
    predicted = decode_value(decision["prediction"], decision["prediction_is_json"])
    if predicted is None:
        return f"{line}; the decision has no prediction ({decision['status']})"
    if (
        isinstance(actual, int | float)
        and isinstance(predicted, int | float)
        and not (isinstance(actual, bool) or isinstance(predicted, bool))
    ):
        return f"{line}; prediction {predicted!r} is off by {abs(actual - predicted):.6g}"
    return f"{line}; the prediction {predicted!r} was {'right' if actual == predicted else 'wrong'}"


def _broken(f: FollowUp) -> str:
    if not f.hash_ok:
        return "its hash differs from SHA-256 of its stored bytes"
    if not f.columns_ok:
        return "its columns differ from its stored bytes"
    return f"checkpoint {f.checkpoint_seq} of its chain does not verify"


def _covered_problem(f: Finding, cp_seq: int) -> str:
    """What a finding between a decision and its checkpoint means, for people."""
    if f.fault is Fault.MISSING:
        return f"seq {f.first}..{f.last} missing before checkpoint"
    if f.fault is Fault.HEAD_MISMATCH:
        return f"checkpoint {cp_seq} names another chain head"
    if f.fault is Fault.REPEATED:
        return f"seq {f.first}: two events claim it between decision and checkpoint"
    return f"seq {f.first}: hash or link broken between decision and checkpoint"


def _ref_str(ref: Any) -> str:
    """``type:id`` of a related reference as clickhouse-connect returns it (dict or tuple)."""
    if isinstance(ref, dict):
        return f"{ref['type']}:{ref['id']}"
    return f"{ref[0]}:{ref[1]}"


def _related_id(event: LifecycleEvent | None, ref_type: str) -> str | None:
    if event is None:
        return None
    for r in event.related:
        t, _, i = r.partition(":")
        if t == ref_type:
            return i
    return None


def _id_link(step: str, given: Any, recorded: str | None, events: list[LifecycleEvent]) -> Link:
    if given and recorded and str(given) != recorded:
        return Link(
            step,
            f"{step}:{given}",
            "mismatch",
            f"the decision names {given}, the lifecycle record names {recorded}",
            events,
        )
    value = given or recorded
    if not value:
        return Link(
            step, None, "missing", f"no {step} is named by the decision or a lifecycle event"
        )
    source = (
        "decision and lifecycle record agree"
        if given and recorded
        else ("named by the decision only" if given else "named by the lifecycle record only")
    )
    return Link(step, f"{step}:{value}", "ok", f"{value} ({source})", events)


def print_trace(trace: Trace, fmt: str, console: Any) -> None:
    """Print a trace for people (``text``, via a rich console) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(trace.to_dict(), indent=2, default=str))
        return
    d = trace.decision
    console.print(f"[bold]Decision {d['event_id']}[/] at {d['occurred_at'].isoformat()}")
    answer = f"prediction {decode_value(d['prediction'], d['prediction_is_json'])!r}"
    if d["status"] != "ok":
        error = ": ".join(str(x) for x in (d["error_type"], d["error_message"]) if x)
        answer = f"[red]{d['status']}[/]{' (' + error + ')' if error else ''}" + (
            f", {answer}" if d["prediction"] is not None else ""
        )
    console.print(
        f"  {d['model_name']}@{d['model_version']} on deployment {d['deployment_id'] or '-'}: "
        f"{answer} score {d['score']} (request {d['request_id'] or '-'}, "
        f"actor {d['actor'] or '-'})"
    )
    if trace.matches > 1:
        console.print(f"  [yellow]{trace.matches} decisions match; showing the latest[/]")
    for title, items in (("Reviews", trace.reviews), ("Outcomes", trace.outcomes)):
        if items:
            console.print(f"[bold]{title}[/]")
        for f in items:
            mark = "" if f.ok else f" [red]({_broken(f)})[/]"
            console.print(f"  {f.summary}{mark}")
    i = trace.integrity
    mark = "[green]ok[/]" if i.ok else "[red]FAILED[/]"
    console.print(
        f"[bold]Integrity[/] {mark}: {d['producer_id']}/{d['producer_epoch']} seq {d['seq']}"
    )
    console.print(f"  hash recomputed from raw: {'ok' if i.hash_ok else 'MISMATCH'}")
    console.print(f"  columns equal raw:        {'ok' if i.columns_ok else 'ALTERED'}")
    console.print(f"  chain link:               {'ok' if i.link_ok else 'BROKEN'}")
    if i.checkpoint_seq is not None:
        state = "ok" if i.checkpoint_ok else "FAILED"
        console.print(f"  covered by signed checkpoint {i.checkpoint_seq}: {state}")
    for note in i.notes:
        console.print(f"  note: {note}")
    for problem in i.problems:
        console.print(f"  [red]problem[/]: {problem}")
    print_encrypted(trace.encrypted, console)
    console.print("[bold]Lineage[/]")
    colour = {"ok": "green", "missing": "yellow", "mismatch": "red"}
    for link in trace.links:
        console.print(
            f"  [{colour[link.status]}]{link.status:8}[/] {link.step:13} {link.ref or '-'}: "
            f"{link.detail}"
        )
        for e in link.events:
            console.print(
                f"           {e.occurred_at.isoformat()} {e.action} {e.subject} by {e.actor}"
                + ("" if e.hash_ok else " [red](hash mismatch)[/]")
            )
    if trace.complete:
        console.print("[green]lineage complete[/]")
    else:
        console.print(f"[yellow]lineage incomplete[/]: {'; '.join(trace.missing)}")


# -- trace --deployment and trace --model-version --------------------------------------------

BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)
END_OF_TIME = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass
class ChainEntry:
    """A lifecycle event as ``trace --deployment`` and ``trace --model-version`` show it:
    what it says, the proof of its record and what the promotion policy makes of it."""

    event_id: str
    occurred_at: datetime
    action: str
    actor: str
    subject: str
    related: list[str]
    metadata: dict[str, Any]
    summary: str
    producer_id: str
    seq: int
    hash_ok: bool
    """its hash recomputed from the stored original bytes"""
    columns_ok: bool
    """its columns equal what those bytes say"""
    checkpoint_seq: int | None = None
    checkpoint_ok: bool | None = None
    """the signed checkpoint covering it (None: unsigned chain or not signed yet)"""
    flags: list[str] = field(default_factory=list)
    """what the audit notes: a failed attestation overridden, what the gate would reject"""

    @property
    def ok(self) -> bool:
        return self.hash_ok and self.columns_ok and self.checkpoint_ok is not False

    @property
    def integrity(self) -> str:
        if not self.hash_ok:
            return "hash mismatch"
        if not self.columns_ok:
            return "columns altered"
        if self.checkpoint_ok is False:
            return f"checkpoint {self.checkpoint_seq} fails"
        if self.checkpoint_seq is None:
            return "intact (not covered by a signed checkpoint)"
        return f"intact, signed (checkpoint {self.checkpoint_seq})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "integrity": self.integrity}


@dataclass
class DecisionWindow:
    """The decisions of a deployment in ``[start, end)``."""

    start: datetime
    end: datetime
    decisions: int = 0
    errors: int = 0
    """decisions whose status is not ``ok``"""
    mean_score: float | None = None
    predictions: dict[str, int] = field(default_factory=dict)

    def shares(self) -> dict[str, float]:
        total = sum(self.predictions.values())
        return {k: v / total for k, v in self.predictions.items()} if total else {}


@dataclass
class TimelineEntry:
    """One lifecycle event of the timeline and the decisions around it."""

    event: ChainEntry
    before: DecisionWindow
    """since the previous event of the timeline (or --since)"""
    after: DecisionWindow
    """until the next event of the timeline (or --until)"""

    @property
    def score_shift(self) -> float | None:
        b, a = self.before.mean_score, self.after.mean_score
        return None if a is None or b is None else a - b

    @property
    def prediction_shift(self) -> float | None:
        """Total variation distance between the prediction mixes (0: same, 1: disjoint)."""
        b, a = self.before.shares(), self.after.shares()
        if not a or not b:
            return None
        return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in {*a, *b}) / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "before": asdict(self.before),
            "after": asdict(self.after),
            "score_shift": self.score_shift,
            "prediction_shift": self.prediction_shift,
        }


@dataclass
class Timeline:
    """The answer to ``trace --deployment D --since T --until U``: what happened to the
    deployment and to the model versions it served, and the decisions around each event."""

    deployment: str
    since: datetime | None
    until: datetime | None
    serving_at_start: str | None
    """the model version the deployment served at --since (its last deploy or rollback)"""
    entries: list[TimelineEntry]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(e.event.ok for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "since": self.since,
            "until": self.until,
            "serving_at_start": self.serving_at_start,
            "ok": self.ok,
            "flagged": [f for e in self.entries for f in e.event.flags],
            "events": [e.to_dict() for e in self.entries],
            "notes": self.notes,
        }


@dataclass
class ApprovalChain:
    """The answer to ``trace --model-version NAME@VERSION``: every lifecycle event of the
    model version (registration, attestations, approvals, promotions…) with its integrity,
    and what the promotion policy rejects."""

    model_version: str
    entries: list[ChainEntry]
    gate: GateAnswer
    """what a promotion to production would miss now (decision_audit.audit.gate)"""

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    @property
    def flagged(self) -> list[str]:
        return [f"{e.action} by {e.actor}: {f}" for e in self.entries for f in e.flags]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "ok": self.ok,
            "flagged": self.flagged,
            "events": [e.to_dict() for e in self.entries],
            "gate": self.gate.to_dict(),
        }


class LifecycleTracer(Tracer):
    """``trace --deployment`` and ``trace --model-version``."""

    def __init__(self, *args: Any, policy: PromotionPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy or PromotionPolicy.load()

    def model_version(self, version: str) -> ApprovalChain:
        """The approval chain of ``version``; raises :class:`TraceNotFound` when no lifecycle
        event names it."""
        entries = self._entries({("model_version", version)})
        if not entries:
            raise TraceNotFound(f"no lifecycle event names model version {version!r}")
        self._judge(entries)
        gate = check_gate(self.client, self.db, version, policy=self.policy)
        return ApprovalChain(version, entries, gate)

    def deployment(
        self, deployment: str, since: datetime | None = None, until: datetime | None = None
    ) -> Timeline:
        """The deployment's timeline in ``[since, until)``; raises :class:`TraceNotFound`
        when neither a lifecycle event nor a decision names it."""
        lo, hi = since or BEGINNING, until or END_OF_TIME
        own = self._entries({("deployment", deployment)})
        served = {v for e in own for v in _versions(e)}
        served |= {
            str(v)
            for (v,) in self.client.query(
                f"SELECT DISTINCT concat(model_name, '@', model_version) FROM {self.db}.decisions "
                "WHERE deployment_id = {d:String} AND occurred_at >= {lo:DateTime64(3, 'UTC')} "
                "AND occurred_at < {hi:DateTime64(3, 'UTC')}",
                parameters={"d": deployment, "lo": lo, "hi": hi},
            ).result_rows
        }
        if not own and not served:
            raise TraceNotFound(f"no lifecycle event or decision names deployment {deployment!r}")
        everything = self._entries(
            {("deployment", deployment)} | {("model_version", v) for v in served}
        )
        self._judge(everything)
        start = [e for e in own if e.action in SERVING_ACTIONS and e.occurred_at < lo]
        serving = next(iter(_versions(start[-1])), None) if start else None
        shown = [e for e in everything if lo <= e.occurred_at < hi]
        bounds = [lo, *(e.occurred_at for e in shown), hi]
        windows = [self._window(deployment, a, b) for a, b in pairwise(bounds)]
        entries = [TimelineEntry(e, windows[i], windows[i + 1]) for i, e in enumerate(shown)]
        notes = [] if shown else ["no lifecycle event in the window"]
        return Timeline(deployment, since, until, serving, entries, notes)

    def _window(self, deployment: str, start: datetime, end: datetime) -> DecisionWindow:
        w = DecisionWindow(start, end)
        if start >= end:
            return w
        n, errors, mean, mix = self.client.query(
            "SELECT count(), countIf(status != 'ok'), avgIf(score, isNotNull(score)), "
            "sumMapIf(map(assumeNotNull(prediction), toUInt64(1)), prediction IS NOT NULL) "
            f"FROM {self.db}.decisions FINAL WHERE deployment_id = {{d:String}} "
            "AND occurred_at >= {lo:DateTime64(3, 'UTC')} "
            "AND occurred_at < {hi:DateTime64(3, 'UTC')}",
            parameters={"d": deployment, "lo": start, "hi": end},
        ).result_rows[0]
        w.decisions, w.errors = int(n), int(errors)
        w.mean_score = float(mean) if n and mean is not None and mean == mean else None
        w.predictions = {str(k): int(v) for k, v in dict(mix).items()}
        return w

    def _entries(self, refs: set[tuple[str, str]]) -> list[ChainEntry]:
        """The lifecycle events about ``refs`` (as subject or related), each proven."""
        out = []
        for row in self._model_events(refs):
            related = [_ref_str(r) for r in row["related"]]
            check = row_integrity(self.codec, MODEL_EVENT.compared, row)
            rec = check.decoded.record if check.decoded is not None else None
            # subject and related span several columns, so they are not among the compared.
            columns_ok = (
                rec is not None
                and check.columns_ok
                and (rec["subject"]["type"], rec["subject"]["id"])
                == (row["subject_type"], row["subject_id"])
                and [_ref_str(r) for r in rec["related"]] == related
            )
            entry = ChainEntry(
                row["event_id"],
                row["occurred_at"],
                str(row["action"]),
                str(row["actor"]),
                f"{row['subject_type']}:{row['subject_id']}",
                related,
                json.loads(row["metadata"]),
                "",
                str(row["producer_id"]),
                int(row["seq"]),
                check.hash_ok,
                columns_ok,
            )
            entry.checkpoint_seq, entry.checkpoint_ok = self._checkpoint_of(MODEL_EVENT, row)
            entry.summary = _entry_words(entry)
            out.append(entry)
        return out

    def _judge(self, entries: list[ChainEntry]) -> None:
        """Flag what the audit notes: failed attestations that a promotion or deployment
        overrode, automatic approvals despite them, and what the promotion gate rejects
        (:func:`decision_audit.contract.promotion.promotion_problems`)."""
        versions = {v for e in entries for v in _versions(e)}
        facts = stored_facts(self.client, self.db, versions)
        for e in entries:
            version = next(iter(_versions(e)), None)
            if version is None:
                continue
            failed = [
                x
                for x in entries
                if x.action == "attest"
                and x.metadata.get("result") == "fail"
                and version in _versions(x)
                and x.occurred_at <= e.occurred_at
                and x is not e
            ]
            if e.action == "attest" and e.metadata.get("result") == "fail":
                went_ahead = next(
                    (
                        x
                        for x in entries
                        if x.action in ("promote", "deploy")
                        and version in _versions(x)
                        and x.occurred_at >= e.occurred_at
                    ),
                    None,
                )
                if went_ahead is not None:
                    e.flags.append(
                        f"{e.metadata.get('predicate')} attestation failed but was overridden: "
                        f"{went_ahead.action} by {went_ahead.actor} at "
                        f"{went_ahead.occurred_at.isoformat()} went ahead"
                    )
            if e.action == "approve" and e.metadata.get("automated") and failed:
                e.flags.append(
                    "approved automatically although "
                    + ", ".join(f"{x.metadata.get('predicate')!s}" for x in failed)
                    + " failed"
                )
            if e.action == "promote" and self.policy.targets_production(e.metadata):
                problems = promotion_problems(
                    self.policy, version, e.actor, e.occurred_at, facts.get(version, []), e.metadata
                )
                e.flags += [f"gate policy rejects: {p}" for p in problems]
                for a in entries:
                    if a.action == "approve" and version in _versions(a):
                        prefix = f"approval by {a.actor!r} does not count"
                        a.flags += [
                            f"gate policy rejects: {p}"
                            for p in problems
                            if p.startswith(prefix) and f"gate policy rejects: {p}" not in a.flags
                        ]


def _versions(e: ChainEntry) -> list[str]:
    """The model versions an event is about: its subject, else its related ones."""
    refs = [e.subject, *e.related]
    return [r.split(":", 1)[1] for r in refs if r.startswith("model_version:")]


def _entry_words(e: ChainEntry) -> str:
    """What a lifecycle event says, in a few words, for the timeline and approval chain."""
    m = e.metadata
    version = next(iter(_versions(e)), None)
    if e.action == "register":
        what = f"register {e.subject}"
        if m.get("artifact_sha256"):
            what += f" (artifact sha256 {str(m['artifact_sha256'])[:12]}…)"
        return what
    if e.action == "attest":
        uri = f" at {m['artifact_uri']}" if m.get("artifact_uri") else ""
        return (
            f"attest {m.get('predicate')} {m.get('result')} for {e.subject} "
            f"(evidence sha256 {m.get('artifact_sha256')}{uri})"
        )
    if e.action == "approve":
        how = " automatically" if m.get("automated") else ""
        basis = f" ({m['basis']})" if m.get("basis") else ""
        return f"approve {e.subject}{how}{basis}"
    if e.action in SERVING_ACTIONS:
        reason = f": {m['reason']}" if m.get("reason") else ""
        return f"{e.action} {e.subject} → {version or '?'}{reason}"
    if e.action == "promote":
        stage = m.get("stage") or m.get("to_stage")
        return f"promote {e.subject}{' to ' + str(stage) if stage else ''}"
    words = _event_words(
        LifecycleEvent(
            e.event_id, e.occurred_at, e.action, e.actor, e.subject, e.related, m, "", 0, True
        )
    )
    return words if e.subject in words else f"{words} ({e.subject})"


def _mark(e: ChainEntry) -> str:
    return "[green]ok[/]" if e.ok else "[red]FAILED[/]"


def _print_flags(e: ChainEntry, console: Any) -> None:
    for f in e.flags:
        console.print(f"      [yellow]flag[/]: {f}", soft_wrap=True)


def _window_words(w: DecisionWindow) -> str:
    if not w.decisions:
        return "0 decisions"
    mix = ", ".join(f"{k} {v:.0%}" for k, v in sorted(w.shares().items()))
    score = f"mean score {w.mean_score:.3f}" if w.mean_score is not None else "no score"
    errors = f", {w.errors} errors" if w.errors else ""
    n = f"{w.decisions} decision{'s' if w.decisions != 1 else ''}"
    return f"{n}{errors}, {score}, {mix or 'no prediction'}"


def print_timeline(t: Timeline, fmt: str, console: Any) -> None:
    """Print a deployment's timeline for people (``text``) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(t.to_dict(), indent=2, default=str))
        return
    span = f"{(t.since or BEGINNING).isoformat()} … {(t.until.isoformat() if t.until else 'now')}"
    console.print(f"[bold]Deployment {t.deployment}[/] {span}")
    if t.serving_at_start:
        console.print(f"  serving {t.serving_at_start} at the start")
    for entry in t.entries:
        e = entry.event
        console.print(
            f"  {e.occurred_at.isoformat()} [bold]{e.summary}[/] by {e.actor} "
            f"[{_mark(e)}: {e.integrity}]",
            soft_wrap=True,
        )
        console.print(f"      before: {_window_words(entry.before)}")
        console.print(f"      after:  {_window_words(entry.after)}")
        shifts = []
        if entry.score_shift is not None:
            shifts.append(f"score {entry.score_shift:+.3f}")
        if entry.prediction_shift is not None:
            shifts.append(f"prediction mix {entry.prediction_shift:.0%}")
        if shifts:
            console.print(f"      shift:  {', '.join(shifts)}")
        _print_flags(e, console)
    for note in t.notes:
        console.print(f"  note: {note}")
    console.print("[green]all events intact[/]" if t.ok else "[red]some events fail integrity[/]")


def print_approvals(chain: ApprovalChain, fmt: str, console: Any) -> None:
    """Print a model version's approval chain for people (``text``) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(chain.to_dict(), indent=2, default=str))
        return
    console.print(f"[bold]Approval chain of {chain.model_version}[/]")
    for e in chain.entries:
        console.print(
            f"  {e.occurred_at.isoformat()} [bold]{e.summary}[/] by {e.actor} "
            f"[{_mark(e)}: {e.integrity}] (event {e.event_id})",
            soft_wrap=True,
        )
        _print_flags(e, console)
    g = chain.gate
    if g.ok:
        console.print(
            "[green]the gate policy lets a promotion to production now pass "
            "(by an actor who did not approve)[/]"
        )
    else:
        console.print("[yellow]a promotion to production now would miss[/]:")
        for problem in g.problems:
            console.print(f"  {problem}")
    console.print(
        "[green]every event intact[/]" if chain.ok else "[red]some events fail integrity[/]"
    )
