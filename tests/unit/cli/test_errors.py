"""Bad input at every command gives one line naming the problem and the fix, never a traceback.

No services: each case fails before a broker or the ClickHouse engine would be needed (an
unreachable ClickHouse *server* is a closed port on loopback). Usage errors exit 2, as click's
do; other failures exit 1.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from decision_audit.cli.errors import explain
from decision_audit.cli.main import main
from decision_audit.devtools.tansu_broker import free_port

KEYSTORE_KEY = "ks/k.key"
"""a key store private key, written by ``keystore keygen`` for the commands that need one"""
STORE_COMMANDS: dict[str, list[str]] = {
    "migrate": [],
    "verify": [],
    "query": ["SELECT 1"],
    "trace": ["some-id"],
    "report": ["--html", "report.html"],
    "worker": [],
    "reconcile": [],
    "gate": ["--model-version", "m@1"],
    "replay": ["some-id", "--model", "os.path:basename"],
    "decrypt": ["some-id", "--keystore-key", KEYSTORE_KEY],
    "erase": ["--subject-hash", "ab" * 32, "--reason", "r", "--keystore-key", KEYSTORE_KEY],
    "retention": ["--retention-decisions-days", "365"],
    "hold add": ["--reason", "r"],
    "hold list": [],
    "hold release": ["some-hold", "--reason", "r"],
    "keystore file": [],
}
"""every command that opens the store (takes ``--clickhouse-url``), with what else it needs"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in [v for v in os.environ if v.startswith("DECISION_AUDIT_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def store_command(command: str, dsn: str) -> Result:
    args = STORE_COMMANDS[command]
    if KEYSTORE_KEY in args and not Path(KEYSTORE_KEY).is_file():
        assert run("keystore", "keygen", "--out", "ks", "--key-id", "k").exit_code == 0
    return run(*command.split(), "--clickhouse-url", dsn, *args)


def one_line(result: Result, exit_code: int, *needles: str) -> str:
    """The single line the command printed; it exits ``exit_code`` and holds ``needles``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert result.exit_code == exit_code, result.output
    line = lines[0]
    assert line.startswith("Error: "), line
    for needle in needles:
        assert needle in line, line
    return line


# ---------------------------------------------------------------- bad DSN


def test_every_store_command_is_covered() -> None:
    def commands(group: click.Group, prefix: str = "") -> set[str]:
        found = set()
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                found |= commands(cmd, f"{prefix}{name} ")
            elif any("--clickhouse-url" in p.opts for p in cmd.params):
                found.add(prefix + name)
        return found

    assert isinstance(main, click.Group)
    assert commands(main) == set(STORE_COMMANDS)


@pytest.mark.parametrize("command", sorted(STORE_COMMANDS))
def test_chdb_dsn_without_a_directory(command: str) -> None:
    result = store_command(command, "chdb://")
    one_line(result, 2, "--clickhouse-url", "needs a data directory", "chdb:///abs/path")


@pytest.mark.parametrize("dsn", ["ftp://host", "localhost:8123", "http://", "http://h:port"])
def test_dsn_of_another_form(dsn: str) -> None:
    one_line(run("migrate", "--clickhouse-url", dsn), 2, "--clickhouse-url", "http://user:pass@")


def test_bad_dsn_from_the_environment_names_the_variable() -> None:
    result = run("migrate", env={"DECISION_AUDIT_CLICKHOUSE_URL": "chdb://"})
    one_line(result, 2, "DECISION_AUDIT_CLICKHOUSE_URL", "needs a data directory")


def test_bad_dsn_keeps_the_password_out() -> None:
    line = one_line(run("migrate", "--clickhouse-url", "ftp://u:s3cr3t@h"), 2, "u:***@h")
    assert "s3cr3t" not in line


# ---------------------------------------------------------------- unreachable ClickHouse


@pytest.mark.parametrize("command", sorted(STORE_COMMANDS))
def test_unreachable_clickhouse_server(command: str) -> None:
    dsn = f"http://audit:s3cr3t@127.0.0.1:{free_port()}"
    result = store_command(command, dsn)
    line = one_line(result, 1, "cannot open ClickHouse", "Connection refused", "Check the URL")
    assert "s3cr3t" not in line


def test_chdb_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run("migrate", "--clickhouse-url", f"chdb://{tmp_path / 'file'}")
    one_line(result, 1, "cannot open ClickHouse", "is a file, not a directory")


def test_chdb_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run("migrate", "--clickhouse-url", f"chdb://{tmp_path / 'file' / 'db'}")
    one_line(result, 1, "cannot open ClickHouse", "cannot create", "name a directory")


# ---------------------------------------------------------------- unwritable paths


def test_report_into_a_missing_folder() -> None:
    result = run("report", "--html", "missing/report.html")
    one_line(result, 2, "--html", "'missing' does not exist", "create it first")


def test_report_into_a_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line(run("report", "--html", "file/report.html"), 2, "--html", "is not a directory")


def test_report_onto_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    one_line(run("report", "--html", "out"), 2, "--html", "is a directory")


def test_report_into_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:
        # Root may write anywhere, so access(2) says yes: answer as the owner, a user, would
        # (the owner's rwx bits line up with R_OK, W_OK, X_OK).
        def as_owner(path: str | Path, mode: int) -> bool:
            return (stat.S_IMODE(os.stat(path).st_mode) >> 6) & mode == mode

        monkeypatch.setattr(os, "access", as_owner)
    one_line(run("report", "--html", "ro/report.html"), 2, "--html", "not writable")


def test_keygen_creates_a_missing_folder(tmp_path: Path) -> None:
    result = run("keygen", "--out", "keys/new", "--key-id", "k1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "keys/new/k1.key").is_file() and (tmp_path / "keys/new/k1.pub").is_file()
    assert stat.S_IMODE((tmp_path / "keys/new").stat().st_mode) & 0o077 == 0


def test_keygen_into_a_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line(run("keygen", "--out", "file/keys"), 2, "--out", "cannot create directory")


def test_keygen_onto_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line(run("keygen", "--out", "file"), 2, "--out", "is a file")


def test_keygen_over_an_existing_key() -> None:
    assert run("keygen", "--out", "k", "--key-id", "k1").exit_code == 0
    one_line(run("keygen", "--out", "k", "--key-id", "k1"), 1, "already exists", "--key-id")


def test_keygen_bad_key_id() -> None:
    one_line(run("keygen", "--out", "k", "--key-id", "../x"), 2, "--key-id", "must match")


def test_demo_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line(run("demo", "--data-dir", "file"), 2, "--data-dir", "is a file")


# ---------------------------------------------------------------- missing or bad keys


@pytest.mark.parametrize(
    ("command", "rest"), [("verify", []), ("trace", ["id"]), ("report", ["--html", "r.html"])]
)
def test_missing_keys_directory(command: str, rest: list[str]) -> None:
    one_line(run(command, "--keys", "nokeys", *rest), 2, "--keys", "'nokeys' does not exist")


def test_worker_missing_keys_directory() -> None:
    one_line(run("worker", "--keys", "nokeys"), 2, "--keys", "'nokeys' does not exist")


def test_keys_directory_without_keys(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    one_line(run("verify", "--keys", "empty"), 2, "--keys", "no *.pub files")


@pytest.mark.parametrize("command", ["verify", "worker"])
def test_keys_directory_with_a_bad_key(tmp_path: Path, command: str) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a.pub").write_text("not a key")
    one_line(run(command, "--keys", "keys"), 2, "--keys", "a.pub is not a PEM public key")


def test_worker_keys_from_the_environment() -> None:
    result = run("worker", env={"DECISION_AUDIT_KEYS": "nokeys"})
    one_line(result, 2, "DECISION_AUDIT_KEYS", "not a directory")


# ---------------------------------------------------------------- bad flag values


def test_worker_flag_out_of_range() -> None:
    one_line(run("worker", "--batch-size", "0"), 2, "--batch-size", "greater than or equal to 1")


def test_worker_flag_of_the_wrong_type() -> None:
    one_line(run("worker", "--batch-size", "many"), 2, "--batch-size", "not a valid integer")


def test_worker_env_var_of_the_wrong_type() -> None:
    result = run("worker", env={"DECISION_AUDIT_FLUSH_INTERVAL": "soon"})
    one_line(result, 2, "DECISION_AUDIT_FLUSH_INTERVAL", "valid number")


def test_worker_settings_that_contradict_each_other() -> None:
    result = run("worker", "--session-timeout-ms", "9000", "--max-poll-interval-ms", "5000")
    one_line(result, 2, "--max-poll-interval-ms", "--session-timeout-ms")


def test_worker_negative_broker_wait() -> None:
    one_line(run("worker", "--broker-wait", "-1"), 2, "--broker-wait")


@pytest.mark.parametrize(("command", "rest"), [("verify", []), ("report", ["--html", "r.html"])])
def test_since_that_is_not_a_time(command: str, rest: list[str]) -> None:
    one_line(run(command, "--since", "yesterday", *rest), 2, "--since", "not an ISO time")


def test_bad_database_name() -> None:
    one_line(run("migrate", "--database", "audit-prod"), 2, "--database", "should match")


def test_broker_port_out_of_range() -> None:
    one_line(run("broker", "--port", "99999"), 2, "--port", "1<=x<=65535")


def test_format_not_offered() -> None:
    one_line(run("query", "--format", "xml", "SELECT 1"), 2, "--format", "'table'")


def test_unknown_command() -> None:
    one_line(run("wrker"), 2, "No such command 'wrker'", "worker", "--help")


def test_unknown_option() -> None:
    one_line(run("worker", "--batch", "5"), 2, "No such option", "--batch-size")


def test_no_command_still_shows_the_help() -> None:
    result = run()
    assert "Commands:" in result.output and "worker" in result.output


# ---------------------------------------------------------------- the boundary itself


def test_settings_read_inside_a_command_name_their_env_var() -> None:
    from decision_audit.audit.access_log import AccessSettings

    with pytest.raises(ValidationError) as info:
        AccessSettings(actor="")
    line = explain(info.value)
    assert isinstance(line, click.UsageError) and line.exit_code == 2
    assert line.format_message().startswith("DECISION_AUDIT_ACTOR: String should have")


def test_file_system_errors_name_the_path() -> None:
    line = explain(FileNotFoundError(2, "No such file or directory", "/nowhere/x"))
    assert line is not None and line.exit_code == 1
    assert "No such file or directory: /nowhere/x" in line.format_message()


def test_decision_audit_errors_keep_their_message_on_one_line() -> None:
    from decision_audit.clickhouse.connect import BadDSN, ClickHouseUnavailable

    bad = explain(BadDSN("bad\nDSN"))
    assert bad is not None and bad.exit_code == 2 and bad.format_message() == "bad DSN"
    down = explain(ClickHouseUnavailable("down: start it"))
    assert down is not None and down.exit_code == 1 and down.format_message() == "down: start it"


def test_a_bug_keeps_its_traceback() -> None:
    assert explain(KeyError("x")) is None
    assert explain(ValueError("not ours")) is None


def test_worker_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run("worker", "--metrics-host", "127.0.0.1", "--metrics-port", port)
    one_line(result, 1, f"127.0.0.1:{port}", "Address already in use", "--metrics-port")


def test_worker_metrics_host_not_of_this_machine() -> None:
    result = run("worker", "--metrics-host", "nosuch.invalid", "--metrics-port", "9464")
    one_line(result, 1, "cannot listen on nosuch.invalid:9464", "--metrics-host")
