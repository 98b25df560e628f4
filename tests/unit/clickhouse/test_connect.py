"""DSN handling: passwords never reach logs or error messages."""

from __future__ import annotations

import pytest

from decision_audit.clickhouse.connect import ClickHouseUnavailable, chdb_path, connect, redact_dsn


def test_redact_dsn_hides_the_password_only() -> None:
    assert redact_dsn("http://audit:s3cr3t@ch:8123/audit") == "http://audit:***@ch:8123/audit"
    assert redact_dsn("chdb:///var/lib/audit") == "chdb:///var/lib/audit"


def test_chdb_dsn_needs_a_directory() -> None:
    with pytest.raises(ValueError, match="data directory"):
        chdb_path("chdb://")


def test_unreachable_server_error_names_the_fix_without_the_password() -> None:
    with pytest.raises(ClickHouseUnavailable) as info:
        connect("http://audit:s3cr3t@127.0.0.1:1/audit", connect_timeout=1)
    message = str(info.value)
    assert "s3cr3t" not in message
    assert "Check the URL" in message
