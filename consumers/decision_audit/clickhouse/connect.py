"""Opening a clickhouse-connect client from a DSN: a ClickHouse server or embedded chDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decision_audit.contract.errors import DecisionAuditError

CHDB_SCHEME = "chdb://"


class ClickHouseUnavailable(DecisionAuditError, RuntimeError):
    """The store named by the DSN cannot be opened; the message says how to fix it."""


def chdb_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb://`` DSN (``chdb:///abs`` or ``chdb://relative``)."""
    if not dsn.startswith(CHDB_SCHEME):
        return None
    rest = dsn[len(CHDB_SCHEME) :].split("?", 1)[0]
    if not rest:
        raise ValueError("chdb DSN needs a data directory: chdb:///abs/path or chdb://rel/path")
    return Path(rest).expanduser().resolve()


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def connect(dsn: str, **kwargs: Any) -> Any:
    """A clickhouse-connect client. ``chdb://`` opens (and creates) an embedded data directory."""
    import clickhouse_connect

    path = chdb_path(dsn)
    kwargs.setdefault("tz_mode", "aware")
    try:
        if path is None:
            return clickhouse_connect.get_client(dsn=dsn, **kwargs)
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(path), **kwargs)
    except ImportError as exc:
        raise ClickHouseUnavailable(
            f"{exc}. For the embedded engine install the local extra: "
            "pip install 'decision-audit[local]'"
        ) from exc
    except Exception as exc:
        hint = (
            f" Is another process using {path}? chDB allows one process per data directory "
            "and one data directory per process."
            if path is not None
            else " Check the URL, credentials and that the server is up."
        )
        raise ClickHouseUnavailable(
            f"cannot open ClickHouse at {redact_dsn(dsn)}: {exc}.{hint}"
        ) from exc
