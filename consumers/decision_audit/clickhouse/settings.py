"""Where the audit tables live: the ClickHouse DSN and database every command shares."""

from __future__ import annotations

from pydantic import Field

from decision_audit.contract.settings import AuditSettings


class ClickHouseSettings(AuditSettings):
    """Where the audit tables live."""

    clickhouse_url: str = Field(
        "chdb:///./.decision-audit/chdb",
        description="clickhouse-connect DSN: http://user:pass@host:8123 or chdb:///path",
    )
    database: str = Field("audit", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
