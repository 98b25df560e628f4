"""``decision-audit erase``: destroy a data subject's keys, and record that it was done.

Erasure is crypto-shredding: the decisions stay as they are (hash-chained, so ``verify`` is
unchanged), while the data keys of their encrypted input fields are deleted from the key
store (``subject_keys``). Without them those fields open for nobody; every other field still
queries. The erasure itself is recorded in ``erasures``: when, by whom, why, the subject's
keyed hash (never its id) and how many decisions' keys were destroyed.

Nothing is deleted unless the key store key given opens every key about to be destroyed:
whoever erases proves they hold the key store, and a wrong key loses nothing. The order —
record, then delete, then check that nothing is left — means a failure half-way leaves a
recorded erasure whose keys the next ``erase`` of the subject (and the key filer) remove,
and which readers already treat as erased.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from decision_audit.audit.access_log import os_user
from decision_audit.audit.keystore import (
    ERASURE_COLUMNS,
    Erasure,
    KeystoreKey,
    WrongKeystoreKey,
    erasure_from_row,
)
from decision_audit.clickhouse.tables import delete_keys
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.ids import uuid7
from decision_audit.contract.models import utc_now
from decision_audit.contract.sealing import SUBJECT_HASH_RE, SealedKey
from decision_audit.contract.settings import AuditSettings


class UnknownSubject(DecisionAuditError, LookupError):
    """The key store has no key of the subject, and no erasure of it is recorded."""


class ErasureIncomplete(DecisionAuditError, RuntimeError):
    """Keys of the subject remain after the delete; the message says what to do."""


class EmptyReason(DecisionAuditError, ValueError):
    """An erasure must say why."""


@dataclass(frozen=True)
class ErasureOutcome:
    erasure: Erasure
    """the erasure recorded now, or (``already``) the earlier one"""
    already: bool
    """True when no key was left to destroy: nothing was done"""


def latest_erasure(client: Any, database: str, sub: str) -> Erasure | None:
    rows = client.query(
        f"SELECT {ERASURE_COLUMNS} FROM {database}.erasures WHERE subject_hash = {{s:String}} "
        "ORDER BY erased_at DESC LIMIT 1",
        parameters={"s": sub},
    ).result_rows
    return erasure_from_row(rows[0]) if rows else None


def _keys(client: Any, database: str, sub: str, until: datetime) -> list[tuple[Any, ...]]:
    return list(
        client.query(
            "SELECT toString(event_id), occurred_at, keystore_key_id, ephemeral_key, nonce, "
            f"sealed_key FROM {database}.subject_keys FINAL "
            "WHERE subject_hash = {s:String} AND occurred_at <= {t:DateTime64(3, 'UTC')} "
            "ORDER BY occurred_at",
            parameters={"s": sub, "t": until},
            column_formats={"ephemeral_key": "bytes", "nonce": "bytes", "sealed_key": "bytes"},
        ).result_rows
    )


def erase_subject(
    client: Any,
    database: str,
    sub: str,
    key: KeystoreKey,
    *,
    actor: str,
    reason: str,
    cluster: str | None = None,
) -> ErasureOutcome:
    """Destroy the keys of subject ``sub`` (its keyed hash) for every decision recorded until
    now and record the erasure; an already erased subject is a no-op (``already``). On a
    ``cluster`` the delete runs on every shard's local table (``ON CLUSTER``).

    Raises :class:`UnknownSubject` when nothing of the subject is known,
    :class:`~decision_audit.audit.keystore.WrongKeystoreKey` (nothing deleted) when ``key``
    does not open its keys.
    """
    if not SUBJECT_HASH_RE.match(sub):
        raise ValueError(f"subject hash {sub!r} is not 64 lowercase hex digits")
    if not reason.strip():
        raise EmptyReason("--reason must say why the subject is erased (e.g. the request's id)")
    erased_at = utc_now()
    rows = _keys(client, database, sub, erased_at)
    if not rows:
        earlier = latest_erasure(client, database, sub)
        if earlier is not None:
            return ErasureOutcome(earlier, already=True)
        raise UnknownSubject(
            f"the key store {database}.subject_keys has no key of subject {sub[:12]}… and no "
            "erasure of it is recorded: check the subject id and the redaction secret "
            "(DECISION_AUDIT_REDACTION_SECRET), and that `decision-audit keystore file` has "
            "filed the keys; nothing was erased"
        )
    for eid, _, kid, eph, nonce, sealed in rows:
        try:
            key.open(SealedKey(str(eid), sub, str(kid), bytes(eph), bytes(nonce), bytes(sealed)))
        except WrongKeystoreKey as exc:
            raise WrongKeystoreKey(f"{exc}; nothing was erased") from None
    erasure = Erasure(str(uuid7()), erased_at, sub, actor, reason.strip(), len(rows))
    client.insert(
        f"{database}.erasures",
        [
            [
                erasure.erasure_id,
                erased_at,
                sub,
                actor,
                os_user(),
                socket.gethostname(),
                erasure.reason,
                len(rows),
                rows[0][1],
                rows[-1][1],
                sorted({str(r[2]) for r in rows}),
            ]
        ],
        column_names=[
            "erasure_id",
            "erased_at",
            "subject_hash",
            "actor",
            "os_user",
            "host",
            "reason",
            "records",
            "first_occurred_at",
            "last_occurred_at",
            "keystore_key_ids",
        ],
        settings={"async_insert": 0},
    )
    delete_keys(client, database, sub, erased_at, cluster)
    left = _keys(client, database, sub, erased_at)
    if left:
        raise ErasureIncomplete(
            f"the erasure of subject {sub[:12]}… is recorded but {len(left)} of its keys "
            f"remain in {database}.subject_keys: run the same erase again"
        )
    return ErasureOutcome(erasure, already=False)


class SubjectSecret(AuditSettings):
    """The producers' redaction secret (``DECISION_AUDIT_REDACTION_SECRET``), which keys the
    subject hash the key store files keys under."""

    redaction_secret: SecretStr | None = None
