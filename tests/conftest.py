"""Session fixtures: one real Tansu broker and one chDB data directory per test run.

Tests isolate themselves with a fresh topic, consumer group and ClickHouse database each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decision_audit.clickhouse.connect import connect
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import migrated_database


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
