"""Where the audit tables live: the ClickHouse DSN and database every command shares."""

from __future__ import annotations

from pydantic import Field, field_validator

from decision_audit.clickhouse.connect import check_dsn
from decision_audit.contract.settings import AuditSettings


class ClickHouseSettings(AuditSettings):
    """Where the audit tables live."""

    clickhouse_url: str = Field(
        "chdb://.decision-audit/chdb",
        description="clickhouse-connect DSN: http://user:pass@host:8123 for a server, "
        "chdb:///path for the embedded engine",
    )
    database: str = Field(
        "audit",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="ClickHouse database of the audit tables",
    )

    @field_validator("clickhouse_url")
    @classmethod
    def _openable_dsn(cls, dsn: str) -> str:
        return check_dsn(dsn)
