"""ClickHouse access shared by the worker and the audit tools: DSN, settings, migrations."""
