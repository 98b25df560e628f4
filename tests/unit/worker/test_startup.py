"""Waiting on start for the broker: against a closed loopback port (no broker is started)."""

from __future__ import annotations

import logging
import re
import socket
import threading

import pytest

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.devtools.tansu_broker import free_port
from decision_audit.worker.startup import BrokerUnreachable, listen_problem, wait_for_broker
from decision_audit.worker.topics import ensure_topics, missing_topics


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


def test_no_wait_is_one_try_then_one_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    bs = closed_port()
    with pytest.raises(BrokerUnreachable) as info:
        wait_for_broker(bs, 0)
    message = str(info.value)
    assert isinstance(info.value, DecisionAuditError) and isinstance(info.value, RuntimeError)
    assert message.startswith(f"no Kafka broker answered at {bs} (Connect to ipv4#")
    assert "Connection refused" in message and "\n" not in message
    assert "--bootstrap-servers" in message and "--broker-wait" in message
    assert not [r for r in caplog.records if "waiting" in r.getMessage()]


def test_waiting_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    bs = closed_port()
    with (
        caplog.at_level(logging.WARNING, "decision_audit.worker"),
        pytest.raises(BrokerUnreachable, match=r"within 3s"),
    ):
        wait_for_broker(bs, 3)
    waits = [
        r.getMessage() for r in caplog.records if "waiting for the Kafka broker" in r.getMessage()
    ]
    assert waits, caplog.text
    assert all(f"at {bs} (Connect to ipv4#" in w and "Connection refused)" in w for w in waits)


def test_stop_ends_the_wait_without_an_error() -> None:
    stop = threading.Event()
    stop.set()
    assert wait_for_broker(closed_port(), 300, stop) is False


def test_unresolvable_host_names_the_lookup_failure() -> None:
    with pytest.raises(
        BrokerUnreachable, match=re.escape("Failed to resolve 'nosuch.invalid:9092'")
    ):
        wait_for_broker("nosuch.invalid:9092", 0)


def test_topic_helpers_name_an_unreachable_broker() -> None:
    bs = closed_port()
    with pytest.raises(BrokerUnreachable, match=re.escape(f"no Kafka broker answered at {bs}")):
        missing_topics(bs, ["decisions"], timeout=1)
    with pytest.raises(BrokerUnreachable):
        ensure_topics(bs, {"decisions": 1}, timeout=1)


def test_listen_problem_names_the_port_in_use_and_its_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = listen_problem("127.0.0.1", port, "--port", "--host")
    assert problem == (
        f"cannot listen on 127.0.0.1:{port} (Address already in use): stop what uses the port "
        "or pick another (--port)"
    )
    assert listen_problem("127.0.0.1", free_port(), "--port", "--host") is None
