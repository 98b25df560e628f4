"""Creating the topics the pipeline uses, when they are missing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


def ensure_topics(
    bootstrap_servers: str, partitions: Mapping[str, int], timeout: float = 15.0
) -> None:
    """Create each missing topic with the given partition count (existing ones are left as is)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    missing = [
        NewTopic(name, num_partitions=partitions[name], replication_factor=1)
        for name in _absent(admin, partitions, timeout)
    ]
    if not missing:
        return
    for name, fut in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise RuntimeError(f"cannot create topic {name!r}: {exc}") from exc


def missing_topics(
    bootstrap_servers: str, names: Iterable[str], timeout: float = 15.0
) -> list[str]:
    """Those of ``names`` the cluster does not have."""
    return _absent(AdminClient({"bootstrap.servers": bootstrap_servers}), names, timeout)


def _absent(admin: AdminClient, names: Iterable[str], timeout: float) -> list[str]:
    existing = admin.list_topics(timeout=timeout).topics
    return [name for name in names if name not in existing]
