"""Checking a batch's messages and following their chains into what each table gets.

Decision events are checked by ClickHouse when it can parse them (:mod:`.staging`, the
fast path), the rest and anything ClickHouse flags by the Python verifier
(:class:`.checks.EventVerifier`); then the chains (:func:`.chains.judge`) sort the batch
into rows, incidents, rejections and dropped duplicates: a :class:`PreparedBatch`. The
messages of the side topics (model events, outcomes, reviews) follow their own chains
(:mod:`.side_chains`).

With a schema registry, messages in the Confluent framing (``00`` + schema id) are first
re-framed as single-object encoding (the same Avro body, so the same hash), which both
paths check and the trail stores; a rejected one is quarantined as it was received. A
registry that cannot answer fails the batch with a transient error (retried like a failing
store: nothing quarantined, nothing committed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import prometheus_client

from decision_audit.contract.codec import CodecError, SingleObjectCodec
from decision_audit.contract.fields import OUTCOME, REVIEW
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import IncidentKind, Reason
from decision_audit.contract.registry_codec import RegistryCodec, RegistryUnavailable
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.chains import ChainTracker, Checked, judge
from decision_audit.worker.checks import (
    EventVerifier,
    Rejection,
    StagedEvent,
    VerifiedCheckpoint,
    VerifiedEvent,
)
from decision_audit.worker.followups import FollowUpIngest
from decision_audit.worker.model_events import ModelEventIngest
from decision_audit.worker.received import Received
from decision_audit.worker.retry import classify
from decision_audit.worker.rows import QuarantineRow, checkpoint_row
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.side_chains import SideBatch, SideChainIngest
from decision_audit.worker.staging import Stager, StagingMismatch
from decision_audit.worker.store import DecisionColumns

log = logging.getLogger("decision_audit.worker")
_new_tuple = tuple.__new__


@dataclass
class PreparedBatch:
    """What one batch of messages becomes: rows per table, rejections, dropped duplicates."""

    decisions: DecisionColumns = field(default_factory=DecisionColumns)
    staged: list[int] = field(default_factory=list)
    """``_idx`` of the staged events to copy into ``decisions`` (see :mod:`.staging`)"""
    staged_total: int = 0
    """how many events the stager holds (all of them copied when ``staged`` is complete)"""
    checkpoints: list[list[Any]] = field(default_factory=list)
    incidents: list[list[Any]] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)
    duplicates: int = 0
    sides: list[tuple[SideChainIngest, SideBatch]] = field(default_factory=list)
    """each side topic's rows and checkpoints (their incidents and rejections are above)"""

    @property
    def inserted(self) -> int:
        """Decision events the batch inserts."""
        return len(self.decisions) + len(self.staged)


class BatchChecker:
    """Checks a batch's messages and follows the chains through them (:meth:`prepare`)."""

    def __init__(
        self,
        verifier: EventVerifier,
        chains: ChainTracker,
        sides: dict[str, SideChainIngest],
        stager: Stager | None,
        *,
        topic: str,
        staging_fallbacks: prometheus_client.Counter,
        codec: SingleObjectCodec | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        """``sides``: the ingest of each side topic (model events, outcomes, reviews).
        ``codec``: the verifier's; a :class:`RegistryCodec` turns the re-framing of
        Confluent-framed messages on (those over ``max_event_bytes`` are left as they are,
        for the verifier to reject)."""
        self._chains = chains
        self._stager = stager
        """the fast path, None when the worker parses in Python"""
        self._verifier = verifier
        self._sides = sides
        self._topic = topic
        self._staging_fallbacks = staging_fallbacks
        self._reframer = codec if isinstance(codec, RegistryCodec) else None
        self._max_bytes = max_event_bytes
        self._originals: dict[tuple[str, int, int], bytes] = {}
        """the received value of each re-framed message of the batch, by position"""

    @classmethod
    def for_settings(
        cls,
        settings: WorkerSettings,
        client: Any,
        codec: SingleObjectCodec,
        keyring: KeyRing,
        staging_fallbacks: prometheus_client.Counter,
    ) -> BatchChecker:
        """The checker of a worker with ``settings``, reading and staging through ``client``."""
        s = settings
        stored = ChainReader(client, s.database)
        stager = None
        if s.parse_in_clickhouse:
            stager = Stager(
                client,
                codec.registry,
                max_event_bytes=s.max_event_bytes,
                keyring=keyring,
                require_signed=s.require_signed,
            )
        verifier = EventVerifier(
            codec,
            max_event_bytes=s.max_event_bytes,
            keyring=keyring,
            require_signed=s.require_signed,
        )
        return cls(
            verifier,
            ChainTracker(stored.chain_heads, stored.stored_hashes),
            {
                s.model_events_topic: ModelEventIngest(stored),
                s.outcomes_topic: FollowUpIngest(OUTCOME, stored),
                s.reviews_topic: FollowUpIngest(REVIEW, stored),
            },
            stager,
            topic=s.topic,
            staging_fallbacks=staging_fallbacks,
            codec=codec,
            max_event_bytes=s.max_event_bytes,
        )

    def prepare(self, messages: list[Received]) -> PreparedBatch:
        """Check every message, then follow the chains: what to insert, drop and quarantine."""
        return self.follow(self.check(messages))

    def check(self, messages: list[Received]) -> list[tuple[Received, Checked]]:
        """Check every message: decision events through ClickHouse when it can parse them."""
        early: dict[int, Rejection] = {}
        self._originals = {}
        if self._reframer is not None:
            messages, early = self._reframe(messages)
        stager = self._stager
        if stager is None:
            if early:
                return [(m, early.get(i) or self._check(m)) for i, m in enumerate(messages)]
            return [(m, self._check(m)) for m in messages]
        stager.reset()
        topic = self._topic
        results: list[Checked] = []
        screen, add = stager.screen, results.append
        for i, m in enumerate(messages):
            if early and i in early:
                add(early[i])
                continue
            staged = None
            if m.topic == topic:
                staged = screen(m.value, m.key, m.headers, m.partition, m.offset)
            add(staged if staged is not None else self._check(m))
        if not len(stager):
            return list(zip(messages, results, strict=True))
        try:
            flagged: dict[int, str] | None = stager.stage()
        except Exception as exc:
            if not isinstance(exc, StagingMismatch) and classify(exc).transient:
                raise
            # Typically a malformed event among them: find it (and the reason) in Python.
            self._staging_fallbacks.inc()
            log.warning(
                "ClickHouse could not read this batch's events (%s): checking them in Python. "
                "If this repeats for every batch and the cause is not the data (e.g. the user "
                "may not create temporary tables), run the worker with --parse-in-python",
                f"{type(exc).__name__}: {exc}"[:300],
            )
            flagged = None
        if flagged is None or flagged:
            for i, (m, r) in enumerate(zip(messages, results, strict=True)):
                if isinstance(r, StagedEvent) and (flagged is None or r.index in flagged):
                    results[i] = self._check(m)
        return list(zip(messages, results, strict=True))

    def follow(self, checked: list[tuple[Received, Checked]]) -> PreparedBatch:
        """Follow the chains through the batch: what to insert, drop and quarantine."""
        topic = self._topic
        # Side kinds follow their own chains (decision_audit.worker.side_chains).
        side: dict[str, list[tuple[Received, Checked]]] = {}
        if any(c[0].topic != topic for c in checked):
            for c in checked:
                if c[0].topic != topic:
                    side.setdefault(c[0].topic, []).append(c)
            checked = [c for c in checked if c[0].topic == topic]
        j = judge(checked, self._chains)
        out = PreparedBatch(duplicates=j.duplicates)
        if self._stager is not None:
            out.staged_total = len(self._stager)
        copy = out.staged.append
        for msg, ev in j.accepted:
            if isinstance(ev, StagedEvent):
                copy(ev.index)
            else:
                out.decisions.append(ev, msg.value or b"", msg.partition, msg.offset)
        for msg, cp in j.checkpoints:
            out.checkpoints.append(checkpoint_row(cp, msg.value or b"", msg.partition, msg.offset))
        for msg, rec, lo, hi in j.gaps:
            out.incidents.append(
                [
                    IncidentKind.SEQ_GAP,
                    rec["producer_id"],
                    rec["producer_epoch"],
                    lo,
                    hi,
                    f"{hi - lo + 1} event(s) missing before seq {rec['seq']}",
                    msg.partition,
                    msg.offset,
                ]
            )
        for msg, rejection in j.rejected:
            out.rejected.append(
                QuarantineRow(
                    topic, msg.partition, msg.offset, msg.key, rejection, msg.value or b""
                )
            )
        for side_topic, messages in side.items():
            ingest = self._sides[side_topic]
            sb = ingest.process(messages)
            out.sides.append((ingest, sb))
            out.incidents += sb.incidents
            out.rejected += sb.rejected
            out.duplicates += sb.duplicates
        if self._originals:  # a re-framed message is quarantined as it was received
            received = self._originals
            out.rejected = [
                r
                if (value := received.get((r.topic, r.partition, r.offset))) is None
                else replace(r, raw=value)
                for r in out.rejected
            ]
        return out

    def linked(self, batch: PreparedBatch) -> list[list[Any]]:
        """The ``unknown_decision`` incidents of the batch's outcomes and reviews (once its
        decisions are stored: decision_audit.worker.followups)."""
        out: list[list[Any]] = []
        for ingest, sb in batch.sides:
            if isinstance(ingest, FollowUpIngest):
                out += ingest.unknown_decisions(sb)
        return out

    def commit_chains(self) -> None:
        """The batch is stored: its chains advance (and the staged events are let go)."""
        self._chains.commit()
        for ingest in self._sides.values():
            ingest.chains.commit()
        if self._stager is not None:
            self._stager.reset()

    def abort_chains(self) -> None:
        """The batch was not stored: forget how its chains would have advanced."""
        self._chains.abort()
        for ingest in self._sides.values():
            ingest.chains.abort()

    def reset_chains(self) -> None:
        """Forget every chain head (after a rebalance another worker may have moved them)."""
        self._chains.reset()
        for ingest in self._sides.values():
            ingest.chains.reset()

    def staged_rows(self, batch: PreparedBatch) -> str:
        """The ``SELECT`` of the batch's accepted staged events as decisions rows."""
        assert self._stager is not None
        return self._stager.selection(batch.staged, batch.staged_total)

    def _reframe(self, messages: list[Received]) -> tuple[list[Received], dict[int, Rejection]]:
        """The batch with its Confluent-framed messages re-framed as single-object encoding,
        and the rejections of those whose schema id is unknown (by position).

        Raises :class:`RegistryUnavailable` when the registry cannot answer.
        """
        codec = self._reframer
        assert codec is not None
        limit = self._max_bytes
        originals = self._originals
        out = messages
        early: dict[int, Rejection] = {}
        for i, m in enumerate(messages):
            v = m.value
            if not v or v[0] != 0 or (limit is not None and len(v) > limit):
                continue
            try:
                single = codec.as_single_object(v)
            except CodecError as exc:
                early[i] = Rejection(exc.reason, exc.detail)
                continue
            if single is v:
                continue
            if out is messages:
                out = list(messages)
            topic, partition, offset, key, _, headers = m
            # tuple.__new__: the named tuple's _replace costs more, once per message.
            out[i] = _new_tuple(Received, (topic, partition, offset, key, single, headers))
            originals[(topic, partition, offset)] = v
        return out, early

    def _check(self, msg: Received) -> VerifiedEvent | VerifiedCheckpoint | Rejection:
        size = None
        if self._originals:
            received = self._originals.get((msg.topic, msg.partition, msg.offset))
            if received is not None:
                size = len(received)
        try:
            side = self._sides.get(msg.topic) if msg.topic != self._topic else None
            record = "decision_event" if side is None else side.kind.schema
            return self._verifier.check(msg.value, msg.key, msg.headers, record=record, size=size)
        except RegistryUnavailable:
            raise  # transient: the batch is retried, nothing is quarantined
        except Exception as exc:  # hostile input must not crash the worker: quarantine it
            log.warning(
                "verifier raised on %s/%d/%d: %r", msg.topic, msg.partition, msg.offset, exc
            )
            return Rejection(
                Reason.INVALID_EVENT, f"unverifiable: {type(exc).__name__}: {exc}"[:500]
            )
