"""The producer's schema ids in a Confluent Schema Registry: resolved at start, never on the
serving path.

At construction the producer registers (or, lookup-only, looks up) each schema it writes
under its subject (:func:`decision_audit.contract.registry_codec.subject_name`) and waits
at most ``schema_registry_timeout`` for the answer. A refusal — a subject without the schema
in lookup-only mode, a schema the registry rejects — raises from the constructor, naming the
subject. A registry that does not answer in time is not waited for: the producer logs in
single-object framing (which the worker reads as well, on the same topic, into the same
chain), warns, and keeps trying in the background with backoff; once every id is resolved
it switches to the Confluent framing. Falling back rather than spooling keeps the trail
flowing while only a registry is away: nothing is held back from Kafka, nothing dropped,
and ``log_decision`` never waits on the registry.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from decision_audit.contract.registry_codec import (
    ConfluentFraming,
    RegistryClient,
    RegistryUnavailable,
    redact_url,
    resolve_schema_id,
)
from decision_audit.contract.schemas import ShippedSchema

log = logging.getLogger("decision_audit.producer")

MAX_RETRY_DELAY = 60.0


@dataclass(frozen=True, slots=True)
class Wanted:
    """A schema the producer writes on a topic: framed by ``framing`` under ``subject``."""

    framing: ConfluentFraming
    subject: str
    schema: ShippedSchema


class RegistryIds:
    """Resolves the ids of the :class:`Wanted` schemas on a background thread (:meth:`start`)."""

    def __init__(
        self,
        client: RegistryClient,
        wanted: list[Wanted],
        *,
        auto_register: bool,
        where: str,
        owned: bool,
    ) -> None:
        """``where`` names the registry in logs; ``owned``: the client was built here (from a
        URL) and is closed by :meth:`close`."""
        self._client = client
        self._wanted = wanted
        self._auto_register = auto_register
        self._where = redact_url(where)
        self._owned = owned
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._stop = threading.Event()
        self._returned = False
        self._error: Exception | None = None
        self._last_problem = ""
        self._thread = threading.Thread(
            target=self._run, name="decision-audit-registry", daemon=True
        )
        self.resolved = False
        """True once every schema is framed with its id"""

    def start(self, timeout: float) -> None:
        """Resolve, waiting at most ``timeout`` s; raise what the registry refused."""
        self._thread.start()
        self._answered.wait(timeout)
        with self._lock:
            self._returned = True
            error, resolved = self._error, self.resolved
        if error is not None:
            self.close()
            raise error
        if not resolved:
            log.warning(
                "Schema Registry %s unreachable at start (%s): logging in single-object "
                "framing (the worker reads both) and retrying the registry in the background",
                self._where,
                self._last_problem or f"no answer within {timeout:g}s",
            )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._owned:
            close = getattr(self._client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not fail the producer's close
                    log.debug("closing the Schema Registry client failed", exc_info=True)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._use(self._resolve())
            except RegistryUnavailable as exc:
                self._last_problem = str(exc)
                self._answered.set()
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            except Exception as exc:  # the registry's refusal (or a bug): raise or report
                if self._stop.is_set():
                    return  # closing: the client may be closed under the request
                with self._lock:
                    self._error = exc
                    late = self._returned
                self._answered.set()
                if late:
                    log.error(
                        "Schema Registry %s: %s; staying with single-object framing",
                        self._where,
                        exc,
                    )
                return
            with self._lock:
                self.resolved = True
                late = self._returned
            self._answered.set()
            if late:
                log.info(
                    "Schema Registry %s answered: framing messages 00 + schema id from now on",
                    self._where,
                )
            return

    def _use(self, ids: list[int]) -> None:
        """Switch each framing to the ids of its schemas (a framing may serve two topics)."""
        by_framing: dict[int, dict[bytes, int]] = {}
        for w, schema_id in zip(self._wanted, ids, strict=True):
            by_framing.setdefault(id(w.framing), {})[w.schema.fingerprint] = schema_id
        for w in self._wanted:
            w.framing.use(by_framing[id(w.framing)])

    def _resolve(self) -> list[int]:
        done: dict[tuple[str, bytes], int] = {}
        out = []
        for w in self._wanted:
            key = (w.subject, w.schema.fingerprint)
            if key not in done:
                done[key] = resolve_schema_id(
                    self._client, w.subject, w.schema, auto_register=self._auto_register
                )
            out.append(done[key])
        return out
