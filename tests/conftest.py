"""Session fixtures: one real Tansu broker and one chDB data directory per test run.

Tests isolate themselves with a fresh topic, consumer group and ClickHouse database each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from decision_audit.clickhouse.connect import connect
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import migrated_database


@pytest.fixture(autouse=True)
def _services_only_when_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked ``integration`` may start no broker and open no ClickHouse engine,
    so that ``pytest -m "not integration"`` is a true no-services run."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError(
            f"{request.node.nodeid} starts a service: mark it pytest.mark.integration"
        )

    def get_client(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("interface") == "chdb":
            refuse()
        return real_get_client(*args, **kwargs)

    real_get_client = clickhouse_connect.get_client
    monkeypatch.setattr(LocalBroker, "start", refuse)
    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as b:
        yield b


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def ch(chdb_dir: Path) -> Any:
    return connect(f"chdb://{chdb_dir}")


@pytest.fixture
def database(ch: Any) -> Iterator[str]:
    yield from migrated_database(ch)


@pytest.fixture
def topic(broker: LocalBroker) -> str:
    name = f"decisions-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {name: 3, f"{name}-dlq": 1})
    return name


@pytest.fixture
def worker_settings(
    broker: LocalBroker, chdb_dir: Path, database: str, topic: str
) -> WorkerSettings:
    return WorkerSettings(
        bootstrap_servers=broker.bootstrap_servers,
        clickhouse_url=f"chdb://{chdb_dir}",
        database=database,
        topic=topic,
        dlq_topic=f"{topic}-dlq",
        group=f"g-{uuid.uuid4().hex[:8]}",
        flush_interval=0.2,
        exit_when_idle=1.5,
        session_timeout_ms=2000,
        create_topics=False,
    )
