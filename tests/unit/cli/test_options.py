"""The command line's options come from the settings models: every field has its flag, its
help shows the model's default and environment variable, and flags > env vars > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from decision_audit.cli.main import main
from decision_audit.cli.options import build_settings, env_var, flag, shown_default
from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings

WORKER = main.commands["worker"]
STORE_COMMANDS = [
    "migrate", "verify", "query", "trace", "report", "gate", "reconcile", "replay", "worker",
]  # fmt: skip

# The worker's flags before they were generated: each keeps its spelling.
WORKER_FLAGS = {
    "--bootstrap-servers", "--clickhouse-url", "--database", "--topic", "--dlq-topic",
    "--model-events-topic", "--group", "--batch-size", "--flush-interval", "--exit-when-idle",
    "--max-event-bytes", "--create-topics", "--no-create-topics", "--keys", "--require-signed",
    "--allow-unsigned", "--parse-in-clickhouse", "--parse-in-python", "--metrics-port",
    "--insert-retry-limit", "--insert-retry-budget", "-v", "--verbose",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("DECISION_AUDIT_")]:
        monkeypatch.delenv(var)


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name or "": p for p in command.params if isinstance(p, click.Option)}


def help_text(command: click.Command, name: str) -> str:
    """The option's help as ``--help`` prints it, before wrapping."""
    ctx = click.Context(command, info_name=command.name)
    record = options(command)[name].get_help_record(ctx)
    assert record is not None
    return record[1]


def worker_settings(*args: str) -> WorkerSettings:
    ctx = WORKER.make_context("worker", list(args))
    ctx.params.pop("verbose")
    return build_settings(WorkerSettings, ctx.params)


def test_every_worker_setting_has_a_flag_showing_its_default_and_env_var() -> None:
    opts = options(WORKER)
    for name, field in WorkerSettings.model_fields.items():
        assert name in opts, f"WorkerSettings.{name} has no worker flag"
        opt = opts[name]
        if not opt.secondary_opts:
            assert opt.opts == [flag(name)]
        switch = (opt.opts[0], opt.secondary_opts[0]) if opt.secondary_opts else None
        text = help_text(WORKER, name)
        assert f"default: {shown_default(field, switch)}]" in text, text
        assert f"env: {env_var(WorkerSettings, name)};" in text, text
        assert field.description and text.startswith(field.description), text


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("batch_size", "default: 10000"),
        ("flush_interval", "default: 0.5"),
        ("insert_retry_budget", "default: 300"),
        ("broker_wait", "default: 60"),
        ("exit_when_idle", "default: off"),
        ("metrics_port", "default: off"),
        ("create_topics", "default: --create-topics"),
        ("require_signed", "default: --allow-unsigned"),
        ("parse_in_clickhouse", "default: --parse-in-clickhouse"),
        ("clickhouse_url", "default: chdb://.decision-audit/chdb"),
        ("bootstrap_servers", "env: DECISION_AUDIT_BOOTSTRAP_SERVERS"),
    ],
)
def test_worker_help_shows_the_models_values(name: str, shown: str) -> None:
    assert shown in help_text(WORKER, name)


def test_worker_keeps_every_flag_it_had() -> None:
    spelled = {o for p in WORKER.params for o in (*p.opts, *p.secondary_opts)}
    assert spelled >= WORKER_FLAGS, WORKER_FLAGS - spelled


def test_worker_help_lists_every_flag() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in WorkerSettings.model_fields:
        assert flag(name) in result.output


@pytest.mark.parametrize("command", STORE_COMMANDS)
def test_store_options_come_from_clickhouse_settings(command: str) -> None:
    cmd = main.commands[command]
    for name, field in ClickHouseSettings.model_fields.items():
        text = help_text(cmd, name)
        assert f"default: {shown_default(field)}]" in text
        assert f"env: DECISION_AUDIT_{name.upper()};" in text


def test_unset_flags_leave_the_defaults() -> None:
    assert worker_settings() == WorkerSettings()


def test_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECISION_AUDIT_BATCH_SIZE", "42")
    monkeypatch.setenv("DECISION_AUDIT_CREATE_TOPICS", "false")
    monkeypatch.setenv("DECISION_AUDIT_REQUIRE_SIGNED", "true")
    s = worker_settings()
    assert (s.batch_size, s.create_topics, s.require_signed) == (42, False, True)


def test_flags_override_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECISION_AUDIT_BATCH_SIZE", "42")
    monkeypatch.setenv("DECISION_AUDIT_CREATE_TOPICS", "false")
    monkeypatch.setenv("DECISION_AUDIT_PARSE_IN_CLICKHOUSE", "true")
    monkeypatch.setenv("DECISION_AUDIT_BROKER_WAIT", "5")
    s = worker_settings(
        "--batch-size", "7", "--create-topics", "--parse-in-python", "--broker-wait", "0"
    )
    assert (s.batch_size, s.create_topics, s.parse_in_clickhouse) == (7, True, False)
    assert s.broker_wait == 0


def test_every_flag_reaches_its_field(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(_public_key())
    witness_key, _ = generate_keypair(tmp_path / "witness", "worker-1")
    given: dict[str, Any] = {
        "--bootstrap-servers": "b:1", "--broker-wait": "3", "--topic": "t", "--dlq-topic": "d",
        "--model-events-topic": "m", "--outcomes-topic": "o", "--reviews-topic": "r",
        "--group": "g", "--batch-size": "5",
        "--flush-interval": "0.25", "--exit-when-idle": "2", "--max-event-bytes": "100",
        "--session-timeout-ms": "2000", "--topic-partitions": "2",
        "--max-poll-interval-ms": "3000", "--prefetch-kbytes": "2048",
        "--insert-retry-limit": "3", "--insert-retry-budget": "9",
        "--insert-retry-backoff": "0.1", "--insert-retry-max-backoff": "1",
        "--metrics-port": "0", "--metrics-host": "127.0.0.1", "--health-stall-seconds": "5",
        "--clickhouse-url": "http://ch:8123", "--database": "db", "--keys": str(tmp_path),
        "--schema-registry-url": "http://sr:8081", "--schema-registry-timeout": "3",
        "--group-protocol": "consumer", "--broker-workarounds": "on",
        "--witness-key": str(witness_key), "--witness-interval": "3", "--witness-topic": "w",
        "--witness-full-every": "5",
    }  # fmt: skip
    switches = ["--no-create-topics", "--parse-in-python", "--require-signed"]
    s = worker_settings(*[t for kv in given.items() for t in kv], *switches)
    for name in WorkerSettings.model_fields:
        assert getattr(s, name) != WorkerSettings.model_fields[name].default, name


def _public_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
