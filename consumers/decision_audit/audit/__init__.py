"""The audit tools an auditor runs against ClickHouse, without Kafka: verify, trace, report."""
