"""Creating the topics the pipeline uses, when they are missing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.worker.startup import BrokerUnreachable, kafka_reason


class TopicNotCreated(DecisionAuditError, RuntimeError):
    """The broker refused to create a missing topic; the message names it and the way out."""


def ensure_topics(
    bootstrap_servers: str,
    partitions: Mapping[str, int],
    timeout: float = 15.0,
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create each missing topic with the given partition count and topic ``configs``
    (existing ones are left as is)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    configs = configs or {}
    missing = [
        NewTopic(
            name,
            num_partitions=partitions[name],
            replication_factor=1,
            config=dict(configs.get(name, {})),
        )
        for name in _absent(admin, bootstrap_servers, partitions, timeout)
    ]
    if not missing:
        return
    for name, fut in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicNotCreated(
                f"cannot create topic {name!r} at {bootstrap_servers}: {kafka_reason(exc)}. "
                "Create it yourself and start the worker with --no-create-topics"
            ) from exc


def missing_topics(
    bootstrap_servers: str, names: Iterable[str], timeout: float = 15.0
) -> list[str]:
    """Those of ``names`` the cluster does not have."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    return _absent(admin, bootstrap_servers, names, timeout)


def _absent(
    admin: AdminClient, bootstrap_servers: str, names: Iterable[str], timeout: float
) -> list[str]:
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnreachable(bootstrap_servers, timeout, kafka_reason(exc)) from exc
    return [name for name in names if name not in existing]
