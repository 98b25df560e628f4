"""Before the loop starts: waiting for the Kafka broker (so a worker may start before its
broker is up) and checking that an address can be listened on."""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from decision_audit.contract.errors import DecisionAuditError

log = logging.getLogger("decision_audit.worker")

_BROKER_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")

ATTEMPT_TIMEOUT = 2.0
"""seconds one metadata request may take (a broker that is up answers in milliseconds)"""
FIRST_DELAY = 0.25
MAX_DELAY = 5.0


class BrokerUnreachable(DecisionAuditError, RuntimeError):
    """No Kafka broker answered at the bootstrap servers; the message says what to check."""

    def __init__(self, bootstrap_servers: str, waited: float, reason: str) -> None:
        waited_for = f" within {waited:g}s" if waited > 0 else ""
        super().__init__(
            f"no Kafka broker answered at {bootstrap_servers}{waited_for} ({reason}). "
            "Check --bootstrap-servers (DECISION_AUDIT_BOOTSTRAP_SERVERS) and that the broker "
            "is up, or wait longer with --broker-wait (DECISION_AUDIT_BROKER_WAIT)"
        )


def wait_for_broker(
    bootstrap_servers: str, wait: float, stop: threading.Event | None = None
) -> bool:
    """Return once a broker at ``bootstrap_servers`` answers a metadata request.

    Retries with exponential backoff (``FIRST_DELAY`` doubling up to ``MAX_DELAY``) for up to
    ``wait`` seconds, logging each wait and its reason; then raises :class:`BrokerUnreachable`.
    ``wait=0`` is one try. Returns False, without waiting further, once ``stop`` is set.
    """
    reasons: list[str] = []
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "decision-audit-worker-startup",
        # The reasons come to error_cb and are logged below, once per try, instead of
        # librdkafka logging every failed connect.
        "error_cb": lambda err: reasons.append(_gist(err.str())),
        "log_level": 0,
        "reconnect.backoff.max.ms": 1000,
    }
    admin = AdminClient(config)
    stop = stop or threading.Event()
    deadline = time.monotonic() + wait
    delay = FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        reasons.clear()
        try:
            admin.list_topics(timeout=ATTEMPT_TIMEOUT)
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb with the failed connects' reasons
            reason = reasons[-1] if reasons else kafka_reason(exc)
        else:
            if tries > 1:
                log.info("Kafka broker at %s is up", bootstrap_servers)
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnreachable(bootstrap_servers, wait, reason)
        log.warning(
            "waiting for the Kafka broker at %s (%s); retrying for %.0fs more",
            bootstrap_servers,
            reason,
            left,
        )
        if stop.wait(min(delay, left)):
            return False
        delay = min(delay * 2, MAX_DELAY)


def listen_problem(host: str, port: int, port_flag: str, host_flag: str) -> str | None:
    """Why a server could not listen on ``host:port`` now, with the fix (the flags name the
    options that chose them), or None when it could. Binds as servers do (SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            fix = (
                f"stop what uses the port or pick another ({port_flag})"
                if exc.errno == errno.EADDRINUSE
                else f"use an address of this machine ({host_flag})"
            )
            return f"cannot listen on {host}:{port} ({exc.strerror}): {fix}"
    return None


def kafka_reason(exc: KafkaException) -> str:
    """The librdkafka error text of ``exc`` (``Local: Broker transport failure``)."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _gist(text: str) -> str:
    """librdkafka's ``host:port/bootstrap: Connect to ... failed: Connection refused (after
    0ms in state CONNECT)`` without the broker prefix and the state suffix."""
    text = _BROKER_PREFIX.sub("", text, count=1)
    return _STATE_SUFFIX.sub("", text)
