"""A consumed message as the worker holds it: the fields it uses, typed, in a tuple."""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka import Message

from decision_audit.worker.checks import Headers

_new_tuple = tuple.__new__


class Received(NamedTuple):
    """A consumed message, with the fields the worker uses (typed, not Optional)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, msg: Message) -> Received:
        # tuple.__new__ skips the generated __new__'s argument handling: once per message.
        return _new_tuple(
            cls,
            (
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                msg.value(),
                msg.headers(),
            ),
        )
