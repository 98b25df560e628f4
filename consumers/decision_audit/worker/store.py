"""Every write of the worker to ClickHouse, with insert deduplication tokens."""

from __future__ import annotations

import hashlib
import operator
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.binding import format_str

from decision_audit.clickhouse.tables import INCIDENT_COLUMNS, delete_keys
from decision_audit.contract.fields import CHECKPOINT, DECISION_EVENT, SUBJECT_KEY, RecordKind
from decision_audit.worker.checks import VerifiedEvent
from decision_audit.worker.rows import QuarantineRow
from decision_audit.worker.side_chains import SideBatch

# Columns copied from the Avro record as they are (decision_audit.contract.fields).
_RECORD_COLUMNS = DECISION_EVENT.names
DECISION_COLUMNS = DECISION_EVENT.written
"""every column of ``decisions`` the worker writes: the record's, then hash, bytes, position"""
CHECKPOINT_COLUMNS = CHECKPOINT.written
SUBJECT_KEY_COLUMNS = SUBJECT_KEY.written
"""the columns of ``subject_keys`` the key filer writes (contract/fields.py)"""
SIDE_TOKENS = {"model_event": "m", "outcome": "o", "review": "r"}
"""the deduplication token suffix of each side kind's rows (``/m``) and checkpoints (``/mc``)"""
WITNESS_COLUMNS = (
    "witness_id",
    "seq",
    "prev_hash",
    "statement_hash",
    "signed_at",
    "chains",
    "statement",
    "signature",
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


INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "distributed_foreground_insert": 1}
"""settings of every insert: stored (on every shard of a ``Distributed`` table) on return,
so the offsets committed after it never run ahead of the rows; one node ignores the second"""

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


class Store:
    """Every write of the worker to ClickHouse: one method per table, each under its token.

    ``token`` is the batch's (:func:`batch_token`); each table's insert adds its own suffix,
    so a retried batch repeats every insert under the same token and none is stored twice.
    """

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def copy_staged(self, select: str, token: str) -> None:
        """``INSERT … SELECT`` staged events into decisions (``select``: :mod:`.staging`'s)."""
        columns = ", ".join(DECISION_COLUMNS)
        # One thread, so a retried insert makes the same blocks and its token matches. The
        # chains already dropped duplicates, so the engine need not collapse rows on insert
        # (optimize_on_insert; FINAL and merges still do): 12-24 % of the copy, measured. The
        # settings are part of the statement: given as ``settings=``, an embedded (chDB)
        # client wraps the statement in a SET and a restore per setting, 10 calls for 1.
        # distributed_foreground_insert: see INSERT_SETTINGS.
        self.client.command(
            f"INSERT INTO {self.database}.decisions ({columns}) SETTINGS "
            f"insert_deduplication_token = {format_str(token + '/s')}, max_threads = 1, "
            f"max_insert_threads = 1, optimize_on_insert = 0, distributed_foreground_insert = 1 "
            f"{select}"
        )

    def insert_decisions(self, batch: DecisionColumns, token: str) -> None:
        if not len(batch):
            return
        self.client.insert(
            f"{self.database}.decisions",
            batch.columns,
            column_names=list(DECISION_COLUMNS),
            column_oriented=True,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )

    def insert_side(self, kind: RecordKind, batch: SideBatch, token: str) -> None:
        """A side kind's rows and their checkpoints (model events, outcomes, reviews; their
        incidents and quarantine go with the rest)."""
        assert kind.chain is not None
        suffix = f"{token}/{SIDE_TOKENS[kind.schema]}"
        self._insert_rows(kind.table, kind.written, batch.rows, suffix)
        self._insert_rows(
            kind.chain.checkpoints, CHECKPOINT_COLUMNS, batch.checkpoints, suffix + "c"
        )

    def insert_checkpoints(self, rows: list[list[Any]], token: str) -> None:
        self._insert_rows("checkpoints", CHECKPOINT_COLUMNS, rows, token + "/c")

    def insert_incidents(self, rows: list[list[Any]], token: str) -> None:
        self._insert_rows("incidents", INCIDENT_COLUMNS, rows, token + "/i")

    def insert_quarantine(self, rows: list[QuarantineRow], token: str) -> None:
        self._insert_rows(
            "quarantine", QUARANTINE_COLUMNS, [r.values() for r in rows], token + "/q"
        )

    def insert_subject_keys(self, rows: list[list[Any]], token: str) -> None:
        """The key filer's sealed keys (:mod:`.keystore`), in :data:`SUBJECT_KEY_COLUMNS`
        order, under the batch's token as it is."""
        self._insert_rows("subject_keys", SUBJECT_KEY_COLUMNS, rows, token)

    def delete_subject_keys(self, sub: str, until: datetime, cluster: str | None = None) -> None:
        """The key filer's sweep: subject ``sub``'s keys of decisions up to ``until``, deleted
        as ``erase`` deletes them (:func:`decision_audit.clickhouse.tables.delete_keys`)."""
        delete_keys(self.client, self.database, sub, until, cluster)

    def insert_witness(self, row: list[Any], token: str) -> None:
        """One witness statement (:mod:`.witness`), in :data:`WITNESS_COLUMNS` order."""
        self._insert_rows("witness_statements", WITNESS_COLUMNS, [row], token)

    def _insert_rows(
        self, table: str, columns: tuple[str, ...], rows: list[list[Any]], token: str
    ) -> None:
        """Row-oriented insert for the small tables."""
        if not rows:
            return
        self.client.insert(
            f"{self.database}.{table}",
            rows,
            column_names=list(columns),
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )
