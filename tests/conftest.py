"""Session fixtures: real brokers (Apache Kafka and Tansu) and one chDB data directory.

Tests isolate themselves with a fresh topic, consumer group and ClickHouse database each.

Every test that uses ``broker``, ``broker_kind`` or ``broker_factory`` is parametrized by
broker: it runs on Apache Kafka (the production broker; jars fetched by ``make kafka-jars``),
and the modules in ``TANSU_SMOKE`` run on Tansu too (the embedded default of ``make demo`` and
``decision-audit[local]``). Tests marked ``kafka_only`` need what only a real broker does
(a restart that keeps data, KIP-848, a correct ListOffsets). ``--brokers`` (or
``DECISION_AUDIT_TEST_BROKERS``) narrows the run: ``--brokers tansu`` runs every test on Tansu,
without a JVM, and skips the ``kafka_only`` ones. Each broker is started once per session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from decision_audit.clickhouse.connect import connect
from decision_audit.devtools.kafka_broker import KafkaBroker
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import Broker, BrokerFactory, migrated_database

ROOT = Path(__file__).resolve().parents[1]
BROKERS = ("kafka", "tansu")
# The smoke set the embedded broker is held to, beside Kafka: the end-to-end path, the
# ClickHouse-side staging, the integrity checks and verify, erasure (the key filer's own
# topic and group), hostile input, a group of two workers. Kept here, in one place, rather
# than as marks spread over the modules.
TANSU_SMOKE = frozenset(
    {
        "integration/test_pipeline.py",
        "integration/test_staging.py",
        "integration/test_integrity.py",
        "integration/test_erasure.py",
        "faults/test_hostile.py",
        "faults/test_two_workers.py",
    }
)
assert all((ROOT / "tests" / m).is_file() for m in TANSU_SMOKE), "TANSU_SMOKE names a lost module"

# The jars live in the repository's git-ignored cache whatever the working directory.
os.environ.setdefault("DECISION_AUDIT_KAFKA_CACHE", str(ROOT / ".decision-audit" / "kafka"))


_CHOSEN = pytest.StashKey[list[str]]()  # the brokers --brokers chose, in BROKERS order


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--brokers",
        default=os.environ.get("DECISION_AUDIT_TEST_BROKERS", ",".join(BROKERS)),
        help="comma-separated brokers to run on (kafka, tansu; default both: everything on "
        "Kafka, the Tansu smoke set on Tansu too; one broker alone runs everything on it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka_only: needs Apache Kafka (restart with data kept, KIP-848 groups, ListOffsets)",
    )
    chosen = [b.strip() for b in config.getoption("--brokers").split(",") if b.strip()]
    unknown = set(chosen) - set(BROKERS)
    if unknown or not chosen:
        raise pytest.UsageError(f"--brokers: choose from {', '.join(BROKERS)}, not {chosen}")
    config.stash[_CHOSEN] = [b for b in BROKERS if b in chosen]


def _brokers_for(config: pytest.Config, item: pytest.Function) -> list[Any]:
    chosen = config.stash[_CHOSEN]
    if item.get_closest_marker("kafka_only") is not None:
        if "kafka" in chosen:
            return ["kafka"]
        return [pytest.param("kafka", marks=pytest.mark.skip(reason="needs Apache Kafka"))]
    module = Path(str(item.path)).resolve().relative_to(ROOT / "tests").as_posix()
    if module in TANSU_SMOKE:
        return list(chosen)
    return chosen[:1]  # Kafka when chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker_kind" in metafunc.fixturenames:
        metafunc.parametrize(
            "broker_kind",
            _brokers_for(metafunc.config, metafunc.definition),
            indirect=True,
            scope="session",
        )


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
    monkeypatch.setattr(KafkaBroker, "start", refuse)
    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)


def new_broker(kind: str, log_dir: Path, port: int | None = None) -> Broker:
    """An unstarted broker of ``kind``; a Kafka one keeps its data in ``log_dir``."""
    if kind == "kafka":
        return KafkaBroker(port=port, log_dir=log_dir)
    return LocalBroker(port=port)


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``kafka`` or ``tansu``: the broker this test runs on (see the module docstring)."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def broker(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's broker of this kind, started once and shared."""
    b = new_broker(broker_kind, tmp_path_factory.mktemp(f"{broker_kind}-broker"))
    with b:
        yield b


@pytest.fixture
def broker_factory(
    broker_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerFactory]:
    """Start a test's own broker: ``broker_factory(port=None, kind=broker_kind)``; each is
    closed after the test. For tests that stop, kill or restart their broker."""
    made: list[Broker] = []

    def make(port: int | None = None, kind: str | None = None) -> Broker:
        kind = kind or broker_kind
        b = new_broker(kind, tmp_path_factory.mktemp(f"{kind}-own"), port)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.close()


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
def topic(broker: Broker) -> str:
    name = f"decisions-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {name: 3, f"{name}-dlq": 1})
    return name


@pytest.fixture
def worker_settings(broker: Broker, chdb_dir: Path, database: str, topic: str) -> WorkerSettings:
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
