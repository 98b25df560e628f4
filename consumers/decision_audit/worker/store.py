"""Writing batches into ClickHouse column-wise, with insert deduplication tokens."""

from __future__ import annotations

import hashlib
import operator
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from decision_audit.contract.fields import CHECKPOINT, DECISION_EVENT
from decision_audit.worker.chains import Chain, Head, Link
from decision_audit.worker.checks import Rejection, VerifiedCheckpoint, VerifiedEvent

# Columns copied from the Avro record as they are (decision_audit.contract.fields).
_RECORD_COLUMNS = DECISION_EVENT.names
DECISION_COLUMNS = DECISION_EVENT.written
"""every column of ``decisions`` the worker writes: the record's, then hash, bytes, position"""
CHECKPOINT_COLUMNS = CHECKPOINT.written
INCIDENT_COLUMNS = (
    "kind",
    "producer_id",
    "producer_epoch",
    "seq_from",
    "seq_to",
    "detail",
    "source_partition",
    "source_offset",
)
QUARANTINE_COLUMNS = (
    "source_topic",
    "source_partition",
    "source_offset",
    "message_key",
    "reason",
    "detail",
    "raw",
)


_pick_record_columns = operator.itemgetter(*_RECORD_COLUMNS)


@dataclass
class DecisionColumns:
    """A batch of trusted events: one tuple per event, turned into columns once, at insert.

    Picking the fields with one ``itemgetter`` call and transposing with ``zip`` keeps the
    per-event cost to a couple of C calls (appending to 29 column lists per event did not).
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, event: VerifiedEvent, raw: bytes, partition: int, offset: int) -> None:
        # Every field is present: the codec resolves older writer versions to the latest.
        self.rows.append(
            (
                *_pick_record_columns(event.record),
                event.event_hash,
                event.decoded.writer.fingerprint_int,
                raw,
                partition,
                offset,
            )
        )

    @property
    def columns(self) -> list[tuple[Any, ...]]:
        """Column-oriented view of the batch, in :data:`DECISION_COLUMNS` order."""
        if not self.rows:
            return [() for _ in DECISION_COLUMNS]
        return list(zip(*self.rows, strict=True))


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


def batch_token(
    topic: str,
    partitions: Sequence[int],
    offsets: Sequence[int],
    values: Sequence[bytes | None],
) -> str:
    """Insert deduplication token for a batch: its offset ranges plus a digest of its bytes.

    The digest keeps a token from matching a different batch at the same offsets (a broker
    that lost its topics restarts offsets at 0), while a true redelivery matches exactly.
    The three sequences are the batch's messages, position by position.
    """
    ranges: dict[int, list[int]] = {}
    for partition, offset in zip(partitions, offsets, strict=True):
        r = ranges.get(partition)
        if r is None:
            ranges[partition] = [offset, offset]
        elif offset < r[0]:
            r[0] = offset
        elif offset > r[1]:
            r[1] = offset
    data = [v or b"" for v in values]
    # Offsets, then lengths, then the bytes: each value stays bound to its offset. SHA-256
    # rather than BLAKE2: OpenSSL's runs on the CPU's SHA extensions, twice as fast over a
    # batch's ~5 MB (measured).
    digest = hashlib.sha256(array("q", offsets).tobytes())
    digest.update(array("q", map(len, data)).tobytes())
    digest.update(b"".join(data))
    spans = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(ranges.items()))
    return f"{topic}/{spans}/{digest.hexdigest()[:32]}"


class ClickHouseSink:
    """Inserts into ``{database}.decisions`` and ``{database}.quarantine``."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def insert_decisions(self, batch: DecisionColumns, token: str) -> None:
        if not len(batch):
            return
        self.client.insert(
            f"{self.database}.decisions",
            batch.columns,
            column_names=list(DECISION_COLUMNS),
            column_oriented=True,
            settings={"async_insert": 0, "insert_deduplication_token": token},
        )

    def insert_quarantine(self, rows: list[QuarantineRow], token: str) -> None:
        self.insert_rows("quarantine", QUARANTINE_COLUMNS, [r.values() for r in rows], token)

    def insert_rows(
        self, table: str, columns: tuple[str, ...], rows: list[list[Any]], token: str
    ) -> None:
        """Row-oriented insert for the small side tables (checkpoints, incidents)."""
        if not rows:
            return
        self.client.insert(
            f"{self.database}.{table}",
            rows,
            column_names=list(columns),
            settings={"async_insert": 0, "insert_deduplication_token": token},
        )

    def chain_heads(self, chains: set[Chain], table: str = "decisions") -> dict[Chain, Head]:
        """Highest stored seq and its event hash, per chain (absent: no rows).

        ``table`` is any chained table: ``decisions`` or ``model_events``.
        """
        if not chains:
            return {}
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMax(event_hash, seq) "
            f"FROM {self.database}.{table} "
            "WHERE (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"chains": sorted(chains)},
            column_formats={"argMax(event_hash, seq)": "bytes"},
        )
        return {(str(p), int(e)): (int(s), bytes(h)) for p, e, s, h in result.result_rows}

    def stored_hashes(self, links: set[Link], table: str = "decisions") -> dict[Link, bytes]:
        """``event_hash`` of the stored events among ``(producer_id, epoch, seq)`` links."""
        if not links:
            return {}
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, seq, any(event_hash) "
            f"FROM {self.database}.{table} "
            "WHERE (producer_id, producer_epoch, seq) "
            "IN {links:Array(Tuple(String, UInt64, UInt64))} "
            "GROUP BY producer_id, producer_epoch, seq",
            parameters={"links": sorted(links)},
            column_formats={"any(event_hash)": "bytes"},
        )
        return {(str(p), int(e), int(s)): bytes(h) for p, e, s, h in result.result_rows}
