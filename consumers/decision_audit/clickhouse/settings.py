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


class MigrateSettings(ClickHouseSettings):
    """What ``decision-audit migrate`` needs: the store, and the cluster to lay it out on."""

    cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="ClickHouse cluster (its remote_servers name) to create the tables on: "
        "ON CLUSTER DDL, Replicated engines, Distributed tables under the usual names; "
        "unset: one server",
    )
