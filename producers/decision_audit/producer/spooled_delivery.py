"""Delivery with a spool: straight to the client while the broker is healthy, through the
on-disk spool while it is not, and back in chain order.

(Without ``spool_dir`` the producer uses :mod:`.direct_delivery` instead: nothing is spooled,
a message the client will not take is dropped and counted, a delivery error is counted.)

Every message gets an *order* number when it is dispatched (under the state lock, in the
order the hash chain assigned seqs, checkpoints after the event they cover). The invariant is
that messages reach the broker in that order, so the worker sees every chain's seq in order.
Two modes:

* **direct** (healthy): ``send`` hands the message to librdkafka and keeps a reference
  (``_inflight``) until its delivery report. The hot path never touches the disk.
* **spool**: ``send`` appends the message to an in-memory ``_pending`` list (bounded together
  with the spool by ``spool_max_bytes``) and returns; the background thread writes pending
  messages to the spool in order and replays the spool from its cursor. The hot path still
  never touches the disk (fsync would break the latency bound); a message counts as spooled
  once the background thread wrote it, usually within one 50 ms tick.

*Trouble* switches direct → spool: the local queue stays full past ``enqueue_timeout``, the
client reports all brokers down, the oldest unacknowledged message waited ``spool_after``
seconds, a delivery report carries an error, or the client hit a fatal error. Then:

1. ``send`` stops producing directly at once (same lock as the switch), so nothing produced
   after the first failure can overtake it.
2. The background thread purges librdkafka's queue — the whole queue at once, so what the
   broker still gets is a prefix of the order and the rest comes back as errors — and, after
   another ``spool_after``, the in-flight requests too (these may have been written: replaying
   them makes duplicates, which the worker drops by hash). A fatal client (e.g. the broker
   restarted and forgot the idempotent producer id), or one that still has not settled after
   three ``spool_after``, is replaced by a fresh one and whatever it still held is taken back
   from ``_inflight``.
3. Failed messages join ``_pending``; only when no direct message is unresolved is
   ``_pending`` sorted by order and appended to the spool, so a late failure can never land
   behind a newer event.
4. Replay reads a window of records from the spool cursor and produces them. Acknowledged
   records move the cursor (persisted every tick: a crash replays at most one tick of
   duplicates); a failed replay only rewinds the read position to the cursor, since the
   records are still on disk. When the spool, ``_pending`` and the replay window are all
   empty, the producer goes direct again.

With a spool, ``message.timeout.ms`` defaults to 0 (never): librdkafka would time messages out
one by one, and a later message could then be delivered before an earlier one is replayed.
The spool's own stall detection (``spool_after``) purges the whole queue instead. If you set
``message.timeout.ms`` yourself, keep it well above ``spool_after``.

A spool left by an earlier process holds other chains (every producer instance starts a new
epoch), so a new producer sends its own events directly while it replays them.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from decision_audit.producer.delivery import (
    Delivery,
    DeliveryProblem,
    ProducerStats,
    Report,
    chain_id,
)
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.spool import Position, Spool, SpoolFull, SpoolRecord

log = logging.getLogger("decision_audit.producer")

_REPLAY_WINDOW = 2000
"""records replayed but not yet acknowledged, at most"""
_REPLAY_WINDOW_BYTES = 16 << 20
_PERMANENT = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._INVALID_ARG, KafkaError.INVALID_RECORD}
)
"""errors a retry cannot fix: spooling such a message would wedge the spool"""


@dataclass(slots=True, eq=False)
class _Out:
    """A message handed to librdkafka, until its delivery report."""

    order: int
    record: SpoolRecord
    seq: int | None
    sent_at: float
    size: int
    """its size in the spool"""
    replay: Position | None = None
    """for a replayed record: its position in the spool"""
    done: bool = False


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


class SpooledDelivery(Delivery):
    """Sends encoded messages, spooling and replaying them when the broker is unavailable."""

    def __init__(
        self,
        settings: ProducerSettings,
        conf: dict[str, Any],
        stats: ProducerStats,
        report: Report,
    ) -> None:
        assert settings.spool_dir is not None
        self._spool = Spool(
            settings.spool_dir,
            settings.spool_max_bytes,
            fsync=settings.spool_fsync,
            fsync_interval=settings.spool_fsync_interval,
        )
        conf.setdefault("message.timeout.ms", 0)
        super().__init__(settings, conf, stats, report)
        self._changed = threading.Condition(self._state)
        self._order = 0
        self._inflight: dict[int, _Out] = {}
        self._direct_inflight = 0
        self._direct_inflight_bytes = 0
        self._replays: deque[_Out] = deque()
        self._replay_bytes = 0
        self._pending: list[_Out] = []
        self._pending_bytes = 0
        self._writing = (0, 0)
        """(messages, bytes) taken from _pending and being written by the background thread"""
        self._direct = True
        self._trouble: str | None = None
        self._trouble_since = 0.0
        self._fatal = False
        self._spool_mirror = (0, 0, 0)
        """(disk bytes, events, event bytes) of the spool, read by other threads"""
        self._mirror_spool()

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def direct(self) -> bool:
        return self._direct

    # -- the hot path -------------------------------------------------------------------

    def send(self, record: SpoolRecord, seq: int | None, *, background: bool = False) -> str | None:
        deadline: float | None = None
        with self._state:
            self._order += 1
            out = _Out(self._order, record, seq, time.monotonic(), record.framed_size())
            while True:
                if self._direct:
                    problem, retriable = self._produce_direct(out)
                    if problem is None or not retriable:
                        return problem
                    self._enter_trouble(problem)
                # Room held back for unresolved direct messages: they are older, already on
                # the chain, and may come back; dropping them would leave a gap.
                if self._room() - self._direct_inflight_bytes >= out.size:
                    self._pending.append(out)
                    self._pending_bytes += out.size
                    self._update_depth()
                    return None
                policy = self._settings.spool_full_policy
                if policy == "block" and not background:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._settings.spool_block_timeout
                    if now < deadline:
                        self._changed.wait(deadline - now)
                        continue
                full = f"spool full ({self._settings.spool_max_bytes} bytes)"
                if policy == "raise" and not background:
                    raise SpoolFull(full)
                return full

    def _produce_direct(self, out: _Out) -> tuple[str | None, bool]:
        """Hand ``out`` to the client: ``(why not, whether the spool may keep it)``."""
        try:
            problem = self._produce(out.record, functools.partial(self._on_delivery, out))
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError._FATAL:
                self._fatal = True
            permanent = err is not None and err.code() in _PERMANENT
            return f"kafka client refused the event: {exc}", not permanent
        if problem is not None:
            return problem, True
        self._inflight[out.order] = out
        self._direct_inflight += 1
        self._direct_inflight_bytes += out.size
        return None, True

    def _room(self) -> int:
        disk, _, _ = self._spool_mirror
        return self._settings.spool_max_bytes - disk - self._pending_bytes - self._writing[1]

    # -- callbacks (any thread that polls) ----------------------------------------------

    def _on_delivery(self, out: _Out, err: KafkaError | None, _msg: Any) -> None:
        problem: DeliveryProblem | None = None
        with self._state:
            if self._inflight.pop(out.order, None) is None:
                return  # taken back already (a replaced client)
            if out.replay is None:
                self._direct_inflight -= 1
                self._direct_inflight_bytes -= out.size
            if err is None:
                self._stats.delivered += 1
                if out.replay is not None:
                    out.done = True
                    self._stats.replayed += 1
                return
            if err.code() in _PERMANENT:
                self._stats.failed += 1
                problem = DeliveryProblem("failed", str(err), self._chain_of(out), out.seq)
                out.done = True  # a replayed record nothing can deliver: skip it
            else:
                self._enter_trouble(f"delivery failed: {err.str()}")
                if out.replay is None:
                    problem = self._spill(out)
        if problem is not None:
            self._report(problem)

    def _chain_of(self, out: _Out) -> str:
        return chain_id(out.record.key, self._pid)

    def _spill(self, out: _Out) -> DeliveryProblem | None:
        """Move a message the client gave back to ``_pending`` (or drop it when full)."""
        if self._room() >= out.size:
            self._pending.append(out)
            self._pending_bytes += out.size
            self._update_depth()
            return None
        self._stats.dropped += 1
        return DeliveryProblem(
            "dropped",
            "could not be delivered and the spool is full; the chain will show a gap",
            self._chain_of(out),
            out.seq,
        )

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._state:
                self._fatal = True
                self._enter_trouble(f"fatal client error: {err.str()}")
            log.error("kafka client fatal error (producer %s): %s", self._pid, err)
            return
        log.warning("kafka client error (producer %s): %s", self._pid, err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            with self._state:
                self._enter_trouble("all brokers down")

    def _enter_trouble(self, reason: str) -> None:
        if self._trouble is None:
            self._trouble = reason
            self._trouble_since = time.monotonic()
            if self._direct:
                log.warning(
                    "producer %s: %s; spooling to %s until the broker is back",
                    self._pid,
                    reason,
                    self._spool.dir,
                )
        self._direct = False

    def _poll(self, timeout: float) -> None:
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            err = _kafka_error(exc)
            with self._state:
                if err is not None and err.fatal():
                    self._fatal = True
                self._enter_trouble(f"kafka client error: {exc}")

    # -- the background thread ----------------------------------------------------------

    def service(self, wait: float) -> None:
        """One tick of the background thread: serve callbacks, resolve trouble, write the
        pending messages to the spool, replay it and move its cursor."""
        self._poll(wait)
        with self._state:
            self._check_stall()
            trouble = self._trouble is not None
        if trouble:
            self._resolve_trouble()
        self._write_pending()
        self._replay()
        self._advance()

    def _check_stall(self) -> None:
        if self._trouble is not None or not self._direct_inflight:
            return
        oldest = next((o for o in self._inflight.values() if o.replay is None), None)
        limit = self._settings.spool_after
        if oldest is not None and time.monotonic() - oldest.sent_at > limit:
            self._enter_trouble(f"no acknowledgement for {limit:g}s")

    def _resolve_trouble(self) -> None:
        problems: list[DeliveryProblem] = []
        with self._state:
            stuck = time.monotonic() - self._trouble_since > 3 * self._settings.spool_after
            if self._inflight and stuck and not self._fatal:
                # Purging did not bring everything back: give up on this client instance.
                log.warning("producer %s: the kafka client does not settle", self._pid)
                self._fatal = True
            if self._fatal:
                problems += self._replace_client()
            elif self._inflight:
                late = time.monotonic() - self._trouble_since > self._settings.spool_after
                try:
                    self._producer.purge(in_queue=True, in_flight=late, blocking=False)
                except KafkaException as exc:
                    log.warning("purge failed (producer %s): %s", self._pid, exc)
        self._poll(0)
        with self._state:
            if self._inflight and self._fatal:
                problems += self._replace_client()
            if not self._inflight:
                self._spool.rewind()
                self._replays.clear()
                self._replay_bytes = 0
                log.info("producer %s: client queue settled after: %s", self._pid, self._trouble)
                self._trouble = None
        for p in problems:
            self._report(p)

    def _take_back_inflight(self) -> list[DeliveryProblem]:
        """Spool, in order, the direct messages the client held (its queue was purged)."""
        problems = []
        self._direct_inflight = self._direct_inflight_bytes = 0
        for out in sorted(self._inflight.values(), key=lambda o: o.order):
            if out.replay is None:
                problem = self._spill(out)
                if problem is not None:
                    problems.append(problem)
        self._inflight.clear()
        return problems

    def _replace_client(self) -> list[DeliveryProblem]:
        """Swap a fatally failed client for a new one, taking back what it still holds."""
        old = self._producer
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0)
        except KafkaException:
            pass
        problems = self._take_back_inflight()
        self._producer = Producer(self._conf)
        self._fatal = False
        log.warning("producer %s: replaced the Kafka client after a fatal error", self._pid)
        return problems

    def _write_pending(self) -> None:
        with self._state:
            if not self._pending or self._direct_inflight:
                return
            batch = sorted(self._pending, key=lambda o: o.order)
            self._writing = (len(batch), self._pending_bytes)
            self._pending = []
            self._pending_bytes = 0
        try:
            self._spool.append(o.record.encode() for o in batch)
        except OSError as exc:
            log.error("producer %s: cannot write the spool: %s", self._pid, exc)
            with self._state:  # keep them in memory and try again next tick
                self._pending[:0] = batch
                self._pending_bytes += self._writing[1]
                self._writing = (0, 0)
            return
        with self._state:
            self._writing = (0, 0)
            self._stats.spooled += len(batch)
            self._mirror_spool()
            self._changed.notify_all()

    def _replay(self) -> None:
        with self._state:
            if self._trouble is not None or self._fatal:
                return
            free = _REPLAY_WINDOW - len(self._replays)
            free_bytes = _REPLAY_WINDOW_BYTES - self._replay_bytes
        if free <= 0 or free_bytes <= 0 or not self._spool.unread:
            return
        start = self._spool.read_position
        items = self._spool.read(free, free_bytes)
        with self._state:
            for i, (record, pos, size) in enumerate(items):
                self._order += 1
                out = _Out(self._order, record, None, time.monotonic(), size, replay=pos)
                try:
                    self._producer.produce(
                        record.topic,
                        record.value,
                        record.key,
                        headers=list(record.headers) or None,
                        on_delivery=functools.partial(self._on_delivery, out),
                    )
                except BufferError:
                    self._spool.read_position = items[i - 1][1] if i else start
                    return
                except KafkaException as exc:
                    err = _kafka_error(exc)
                    if err is not None and err.code() in _PERMANENT:
                        out.done = True  # undeliverable: skip it rather than wedge the spool
                        self._stats.failed += 1
                        self._replays.append(out)
                        log.error("producer %s: spooled message dropped: %s", self._pid, exc)
                        continue
                    if err is not None and err.code() == KafkaError._FATAL:
                        self._fatal = True
                    self._enter_trouble(f"kafka client refused a replay: {exc}")
                    self._spool.read_position = items[i - 1][1] if i else start
                    return
                self._inflight[out.order] = out
                self._replays.append(out)
                self._replay_bytes += size

    def _advance(self) -> None:
        with self._state:
            acked = []
            while self._replays and self._replays[0].done:
                out = self._replays.popleft()
                assert out.replay is not None
                self._replay_bytes -= out.size
                acked.append((out.replay, out.size))
        for pos, size in acked:
            self._spool.ack(pos, size)
        self._spool.commit()
        with self._state:
            self._mirror_spool()
            if (
                not self._direct
                and self._trouble is None
                and not self._pending
                and not self._writing[0]
                and not self._replays
                and self._spool.empty
            ):
                self._direct = True
                log.info("producer %s: spool drained; sending directly again", self._pid)
            self._changed.notify_all()

    def _mirror_spool(self) -> None:
        s = self._spool
        self._spool_mirror = (s.disk_bytes, s.events, s.pending_bytes)
        self._update_depth()

    def _update_depth(self) -> None:
        _, events, nbytes = self._spool_mirror
        self._stats.spool_events = events + len(self._pending) + self._writing[0]
        self._stats.spool_bytes = nbytes + self._pending_bytes + self._writing[1]

    # -- flush and close ----------------------------------------------------------------

    def undelivered(self) -> int:
        """Messages not yet acknowledged: in the client, pending, or in the spool."""
        with self._state:
            _, events, _ = self._spool_mirror
            direct = self._direct_inflight
            return direct + len(self._pending) + self._writing[0] + events

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = self.undelivered()
            now = time.monotonic()
            if not left or now >= deadline:
                return left
            self._poll(min(0.05, deadline - now))

    def close(self, timeout: float) -> int:
        """Final flush once the background thread stopped; returns what is left undelivered.

        Whatever the client still holds is taken back and written to the spool, which keeps
        it for the next producer started on the same ``spool_dir``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.undelivered():
            self.service(min(0.05, max(0.0, deadline - time.monotonic())))
        if self._inflight:
            # Take back what the client still holds (in-flight ones may have been written:
            # replaying them makes duplicates, which the worker drops).
            with self._state:
                self._direct = False
            try:
                self._producer.purge(in_queue=True, in_flight=True, blocking=True)
                self._producer.poll(0)
            except KafkaException:
                pass
        with self._state:
            problems = self._take_back_inflight()
            self._replays.clear()
        for p in problems:
            self._report(p)
        self._write_pending()
        spool = self._spool
        spool.close()
        try:
            self._producer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the kafka client (producer %s): %s", self._pid, exc)
        with self._state:
            self._mirror_spool()
        if spool.events:
            log.warning(
                "producer %s: %d messages (%d bytes) left in the spool %s; a producer started "
                "with the same spool_dir replays them",
                self._pid,
                spool.events,
                spool.pending_bytes,
                spool.dir,
            )
        return spool.events
