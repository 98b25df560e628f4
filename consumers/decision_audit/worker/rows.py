"""The rows a checked message becomes in the side tables: checkpoints and quarantine.

A :class:`QuarantineRow` is also what the dead-letter topic publishes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from decision_audit.contract.fields import CHECKPOINT
from decision_audit.worker.checks import Rejection, VerifiedCheckpoint


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    rejection: Rejection
    raw: bytes

    def values(self) -> list[Any]:
        key = None if self.key is None else self.key.decode("utf-8", "replace")
        return [
            self.topic,
            self.partition,
            self.offset,
            key,
            self.rejection.reason,
            self.rejection.detail,
            self.raw,
        ]


_pick_checkpoint_columns = operator.itemgetter(*CHECKPOINT.names)


def checkpoint_row(cp: VerifiedCheckpoint, raw: bytes, partition: int, offset: int) -> list[Any]:
    """A row of ``checkpoints`` (or ``model_event_checkpoints``), in CHECKPOINT_COLUMNS order."""
    return [*_pick_checkpoint_columns(cp.record), cp.signature_verified, raw, partition, offset]
