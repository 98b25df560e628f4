"""Opening a clickhouse-connect client from a DSN: a ClickHouse server or embedded chDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from decision_audit.contract.errors import DecisionAuditError

CHDB_SCHEME = "chdb://"
SERVER_SCHEMES = ("http", "https")
DSN_FORMS = "http://user:pass@host:8123 for a server, chdb:///abs/path or chdb://rel/path for chDB"


class ClickHouseUnavailable(DecisionAuditError, RuntimeError):
    """The store named by the DSN cannot be opened; the message says how to fix it."""


class BadDSN(DecisionAuditError, ValueError):
    """The DSN is not one :func:`connect` can open; the message shows the forms it takes."""


def check_dsn(dsn: str) -> str:
    """``dsn`` if it is a server URL with a host or a chDB URL with a path; else :class:`BadDSN`."""
    if dsn.startswith(CHDB_SCHEME):
        chdb_path(dsn)
        return dsn
    parts = urlsplit(dsn)
    if parts.scheme not in SERVER_SCHEMES or not parts.hostname:
        raise BadDSN(f"{redact_dsn(dsn)!r} is not a ClickHouse DSN: use {DSN_FORMS}")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise BadDSN(f"{redact_dsn(dsn)!r} has a bad port: use {DSN_FORMS}") from None
    return dsn


def chdb_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb://`` DSN (``chdb:///abs`` or ``chdb://relative``)."""
    if not dsn.startswith(CHDB_SCHEME):
        return None
    rest = dsn[len(CHDB_SCHEME) :].split("?", 1)[0]
    if not rest:
        raise BadDSN("chdb DSN needs a data directory: chdb:///abs/path or chdb://rel/path")
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
    """A clickhouse-connect client. ``chdb://`` opens (and creates) an embedded data directory.

    Raises :class:`BadDSN` for a DSN of another form and :class:`ClickHouseUnavailable` when
    the store cannot be opened, each with a one-line message that names the fix.
    """
    import clickhouse_connect

    path = chdb_path(check_dsn(dsn))
    kwargs.setdefault("tz_mode", "aware")
    if path is not None:
        _make_data_dir(path, f"cannot open ClickHouse at {dsn}")
    elif urlsplit(dsn).scheme == "https":
        # clickhouse-connect takes TLS from the port alone (443, 8443), not from the scheme.
        kwargs.setdefault("interface", "https")
    try:
        if path is None:
            return clickhouse_connect.get_client(dsn=dsn, **kwargs)
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
            f"cannot open ClickHouse at {redact_dsn(dsn)}: {reason(exc)}.{hint}"
        ) from exc


def _make_data_dir(path: Path, problem: str) -> None:
    fix = "name a directory you can write (chdb:///path/to/dir)"
    if path.exists() and not path.is_dir():
        raise ClickHouseUnavailable(f"{problem}: {path} is a file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClickHouseUnavailable(
            f"{problem}: cannot create {path} ({exc.strerror}); {fix}"
        ) from exc


def reason(exc: BaseException) -> str:
    """The gist of a connection error on one line: the OS error at its root, if there is one
    (``Connection refused``), else the first line of the message."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            where = f": {cause.filename}" if cause.filename else ""
            return f"{cause.strerror}{where}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
