"""Who read the trail: ``query``, ``trace`` and ``report`` record themselves in ``access_log``."""

from __future__ import annotations

import getpass
import logging
import socket
from typing import Any

from pydantic import Field

from decision_audit.contract.settings import AuditSettings

log = logging.getLogger("decision_audit.access")


def os_user() -> str:
    """The operating-system user running the command ("unknown" if it cannot be told)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, no USER variable (containers)
        return "unknown"


class AccessSettings(AuditSettings):
    """Who is reading (env ``DECISION_AUDIT_ACTOR``; default: the OS user)."""

    actor: str = Field(default_factory=os_user, min_length=1, max_length=512)


def record_access(
    client: Any,
    database: str,
    command: str,
    target: str,
    *,
    actor: str | None = None,
    status: str = "ok",
    detail: str = "",
) -> bool:
    """Append one row to ``{database}.access_log``; False (and a warning) if it cannot be.

    A read-only account cannot write the log; the read still happens, and the warning says
    so, rather than the audit trail becoming unreadable to auditors.
    """
    who = actor or AccessSettings().actor
    try:
        client.insert(
            f"{database}.access_log",
            [[who, os_user(), socket.gethostname(), command, target[:10_000], status, detail]],
            column_names=["actor", "os_user", "host", "command", "target", "status", "detail"],
        )
    except Exception as exc:
        log.warning("access not recorded in %s.access_log: %s", database, exc)
        return False
    return True
