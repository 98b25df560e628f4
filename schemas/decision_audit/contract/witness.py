"""The witness statement: a worker's signed, hash-linked record of the chains it has stored.

A statement is canonical JSON (keys sorted, no spaces, UTF-8). Version 3 (written today; a
version-2 statement is the same without ``full``) carries only what changed since the
witness's previous statement::

    {"chains": [{"epoch": 0, "first_seen": "2025-01-01T00:00:00.000Z",
                 "head": "<hex of the event hash at seq>", "kind": "decision_event",
                 "producer_id": "p1", "seq": 42}, ...],
     "digest": "<hex>", "prev_hash": "<hex>", "seq": 7, "signed_at": "2025-01-01T00:00:05.000Z",
     "total": 12000, "type": "decision-audit/witness", "version": 3, "witness_id": "worker-a"}

``chains`` lists, sorted by ``(kind, producer_id, epoch)`` and each at most once, the chains
that are new or whose ``(seq, head)`` moved since statement ``seq - 1``; ``kind`` is the
record kind's ``.avsc`` name. The witness's full set after statement ``n`` is the fold of
statements ``1..n`` in seq order: a delta (version 2 or 3) updates the set with its entries, a
version-1 statement (the old format, no ``digest``/``total``) lists the whole set. ``total``
is the size of that set and ``digest`` is :func:`set_digest` of it, so each statement commits
to the full set while its size is bounded by what changed. A worker splits an interval's
changes over several consecutive statements whose topic messages stay within
:data:`MAX_MESSAGE_BYTES`.

A **full restatement** (every ``witness_full_every`` statements) lists the witness's whole
set, at its latest heads, over ``n`` consecutive statements marked ``"full": {"of": n,
"part": i}`` (version 3), each committing to the ``total`` and ``digest`` of the whole set
the restatement states. It is complete when all ``n`` parts are in the log; a version-1
statement is a complete restatement of one part. A reader may build the set from the latest
complete restatement instead of folding from statement 1 (:func:`complete_restatements`).

The statement's hash is SHA-256 of its bytes; ``prev_hash`` is the previous statement's hash
(32 zero bytes for ``seq`` 1); the signature is Ed25519 over the same bytes, by the key whose
id is ``witness_id``. On the ``decision-witness`` topic each message (key: the witness id) is
``{"signature": "<base64>", "statement": "<the statement's text>"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from decision_audit.contract.errors import DecisionAuditError

STATEMENT_TYPE = "decision-audit/witness"
VERSION = 3
VERSIONS = (1, 2, 3)
"""the versions read (1: every statement lists the whole set; 2: as 3 without ``full``, which
a version-2 reader would refuse as not canonical, hence the bump)"""
GENESIS = bytes(32)
"""``prev_hash`` of a witness's first statement"""
MAX_MESSAGE_BYTES = 960_000
"""the most bytes of one statement's topic message (:func:`envelope`, which JSON-escapes the
statement): a worker splits an interval's changes so that each stays within it, under
librdkafka's default ``message.max.bytes`` (1,000,000) and Kafka's ``max.message.bytes``
(1,048,588) with room for the key and the record's framing"""
BUCKETS = 1024
"""the digest's buckets (see :func:`set_digest`)"""

_BUCKET_DOMAIN = b"decision-audit/witness-bucket\n"
_SET_DOMAIN = b"decision-audit/witness-set\n"

ChainKey = tuple[str, str, int]
"""``(kind, producer_id, producer_epoch)``"""
Marker = tuple[int, int]
"""``(part, of)`` of a statement in a full restatement; ``(0, 0)`` for a delta"""


class WitnessFormatError(DecisionAuditError, ValueError):
    """Bytes that are not a well-formed witness statement (or envelope)."""


def chain_name(kind: str, producer_id: str, epoch: int) -> str:
    """How reports name a chain: ``producer/epoch``, with the record kind unless a decision's."""
    return f"{producer_id}/{epoch}" + ("" if kind == "decision_event" else f" ({kind})")


@dataclass(frozen=True, slots=True)
class WitnessedChain:
    kind: str
    producer_id: str
    epoch: int
    seq: int
    head: bytes
    first_seen: datetime
    """when this witness first stored an event of the chain"""

    @property
    def key(self) -> ChainKey:
        return (self.kind, self.producer_id, self.epoch)

    @property
    def name(self) -> str:
        return chain_name(self.kind, self.producer_id, self.epoch)

    def entry(self) -> dict[str, Any]:
        """The chain's canonical entry (in a statement's ``chains`` and in the digest)."""
        return {
            "kind": self.kind,
            "producer_id": self.producer_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "head": self.head.hex(),
            "first_seen": _ts(self.first_seen),
        }


@dataclass(frozen=True, slots=True)
class Statement:
    witness_id: str
    seq: int
    prev_hash: bytes
    signed_at: datetime
    chains: tuple[WitnessedChain, ...]
    """a delta: the chains new or moved since statement ``seq - 1``; a restatement's part:
    its share of the whole set; version 1: all"""
    total: int = 0
    """version 2+: how many chains the witness's full set holds after this statement (a
    restatement's parts: after the restatement)"""
    digest: bytes = GENESIS
    """version 2+: :func:`set_digest` of that full set"""
    version: int = VERSION
    full: tuple[int, int] | None = None
    """version 3: ``(part, of)`` when the statement is part of a full restatement"""

    @property
    def marker(self) -> Marker:
        """``(part, of)`` of the full restatement it belongs to (``(0, 0)``: none)."""
        if self.version == 1:
            return (1, 1)
        return self.full or (0, 0)

    def encode(self) -> bytes:
        """The canonical bytes that are hashed and signed."""
        doc: dict[str, Any] = {
            "type": STATEMENT_TYPE,
            "version": self.version,
            "witness_id": self.witness_id,
            "seq": self.seq,
            "prev_hash": self.prev_hash.hex(),
            "signed_at": _ts(self.signed_at),
            "chains": [c.entry() for c in sorted(self.chains, key=lambda c: c.key)],
        }
        if self.version >= 2:
            doc["total"] = self.total
            doc["digest"] = self.digest.hex()
        if self.version >= 3 and self.full is not None:
            doc["full"] = {"part": self.full[0], "of": self.full[1]}
        return _canonical(doc)


def statement_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _bucket(key: ChainKey) -> int:
    kind, producer_id, epoch = key
    h = hashlib.sha256(f"{kind}\n{producer_id}\n{epoch}".encode()).digest()
    return int.from_bytes(h[:4], "big") % BUCKETS


class ChainSet:
    """A witness's full set of chains, with its digest kept up to date by bucket.

    The digest (:func:`set_digest`) is a two-level hash tree of fixed shape: each chain
    falls into one of :data:`BUCKETS` buckets by the SHA-256 of its key; a bucket's hash is
    SHA-256 over its entries' canonical bytes sorted by key; the digest is SHA-256 over the
    bucket hashes in order. Updating a few chains re-hashes only their buckets and the
    32 KiB of bucket hashes, so the worker and the verifier can check a digest at every
    statement of a long log without re-hashing the whole set each time.
    """

    def __init__(self, chains: Iterable[WitnessedChain] = ()) -> None:
        self.chains: dict[ChainKey, WitnessedChain] = {}
        self._entries: dict[ChainKey, bytes] = {}
        """each chain's canonical entry, encoded once"""
        self._members: list[set[ChainKey]] = [set() for _ in range(BUCKETS)]
        self._buckets = [b""] * BUCKETS
        self._dirty: set[int] = set(range(BUCKETS))
        for c in chains:
            self.put(c)

    def __len__(self) -> int:
        return len(self.chains)

    def __iter__(self) -> Iterator[WitnessedChain]:
        return iter(self.chains.values())

    def get(self, key: ChainKey) -> WitnessedChain | None:
        return self.chains.get(key)

    def put(self, chain: WitnessedChain) -> None:
        key = chain.key
        b = _bucket(key)
        self._members[b].add(key)
        self.chains[key] = chain
        self._entries[key] = _canonical(chain.entry())
        self._dirty.add(b)

    def remove(self, key: ChainKey) -> None:
        if self.chains.pop(key, None) is not None:
            del self._entries[key]
            b = _bucket(key)
            self._members[b].discard(key)
            self._dirty.add(b)

    def digest(self) -> bytes:
        for b in self._dirty:
            entries = [self._entries[key] + b"\n" for key in sorted(self._members[b])]
            self._buckets[b] = hashlib.sha256(_BUCKET_DOMAIN + b"".join(entries)).digest()
        self._dirty.clear()
        return hashlib.sha256(_SET_DOMAIN + b"".join(self._buckets)).digest()


Replaced = dict[ChainKey, WitnessedChain | None]
"""the entries a statement replaced in a :class:`ChainSet` (None: the chain was new)"""


def set_digest(chains: Iterable[WitnessedChain]) -> bytes:
    """The digest of a full set of chains (see :class:`ChainSet`)."""
    return ChainSet(chains).digest()


def _parts(
    entries: list[WitnessedChain], fixed: int, max_bytes: int
) -> list[tuple[WitnessedChain, ...]]:
    """``entries`` in order, cut so that each part plus ``fixed`` bytes fits ``max_bytes``."""
    parts: list[tuple[WitnessedChain, ...]] = []
    i = 0
    while True:
        size, j = fixed, i
        while j < len(entries):
            entry = len(_escaped(_canonical(entries[j].entry()))) + 1
            if j > i and size + entry > max_bytes:
                break
            size, j = size + entry, j + 1
        parts.append(tuple(entries[i:j]))
        i = j
        if i >= len(entries):
            return parts


def _overhead(
    witness_id: str, last_seq: int, prev_hash: bytes, signed_at: datetime, full: Marker | None
) -> int:
    """Bytes of a statement's envelope with no chains, as wide as any of a run ending at
    ``last_seq`` can be (its numbers at their widest)."""
    widest = Statement(witness_id, last_seq, prev_hash, signed_at, (), 10**12, full=full)
    return len(envelope(widest.encode(), bytes(64)))


def delta_statements(
    witness_id: str,
    seq: int,
    prev_hash: bytes,
    signed_at: datetime,
    chains: ChainSet,
    changed: Iterable[WitnessedChain],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[tuple[Statement, bytes, Replaced]]:
    """The statements ``seq``, ``seq + 1``, ... that carry ``changed`` into ``chains``.

    Yields ``(statement, its bytes, the entries it replaced)`` with ``chains`` already
    updated by it: the caller writes each before taking the next, and if one cannot be
    written, takes it back out with :func:`undo` and stops. Each statement holds as many
    changes, in key order, as keep its topic message (:func:`envelope`) within ``max_bytes``.
    """
    pending = sorted(changed, key=lambda c: c.key)
    fixed = _overhead(witness_id, seq + len(pending), prev_hash, signed_at, None)
    for part in _parts(pending, fixed, max_bytes):
        replaced: Replaced = {c.key: chains.get(c.key) for c in part}
        for c in part:
            chains.put(c)
        st = Statement(witness_id, seq, prev_hash, signed_at, part, len(chains), chains.digest())
        data = st.encode()
        yield st, data, replaced
        seq, prev_hash = seq + 1, statement_hash(data)


def full_statements(
    witness_id: str,
    seq: int,
    prev_hash: bytes,
    signed_at: datetime,
    chains: ChainSet,
    changed: Iterable[WitnessedChain],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[tuple[Statement, bytes, Replaced]]:
    """A full restatement: the statements ``seq``, ... that list every chain of ``chains``
    with ``changed`` carried into it, marked part ``i`` of ``n``; as :func:`delta_statements`
    (each part's changes are in ``chains`` once it is yielded, :func:`undo` takes them back),
    but every part commits to the ``total`` and ``digest`` of the whole restated set."""
    updates = {c.key: c for c in changed}
    before: Replaced = {key: chains.get(key) for key in updates}
    for c in updates.values():
        chains.put(c)
    total, digest = len(chains), chains.digest()
    entries = sorted(chains, key=lambda c: c.key)
    undo(chains, before)  # put back part by part below, so a failed part can be undone
    n = len(entries)
    parts = _parts(entries, _overhead(witness_id, seq + n, prev_hash, signed_at, (n, n)), max_bytes)
    for i, part in enumerate(parts, 1):
        replaced: Replaced = {c.key: before[c.key] for c in part if c.key in before}
        for key in replaced:
            chains.put(updates[key])
        st = Statement(
            witness_id, seq, prev_hash, signed_at, part, total, digest, full=(i, len(parts))
        )
        data = st.encode()
        yield st, data, replaced
        seq, prev_hash = seq + 1, statement_hash(data)


def complete_restatements(markers: Mapping[int, Marker]) -> list[tuple[int, int]]:
    """``(first seq, last seq)`` of each complete full restatement, in seq order: parts
    ``1..n`` of ``n`` at consecutive seqs (``markers``: seq -> :attr:`Statement.marker`)."""
    out: list[tuple[int, int]] = []
    for seq, (part, of) in sorted(markers.items()):
        if part and part == of:
            first = seq - of + 1
            if all(markers.get(first + k) == (k + 1, of) for k in range(of)):
                out.append((first, seq))
    return out


def latest_restatement(markers: Mapping[int, Marker], known_above: int) -> int | None:
    """The first seq of the latest complete restatement, given the markers of every seq above
    ``known_above`` (0: of the whole log); 0 if the log has none; None if that cannot be told
    without the markers at or below ``known_above`` (a last part whose first parts lie there,
    later than any restatement complete above it)."""
    found = complete_restatements(markers)
    best = found[-1][1] if found else 0
    for seq, (part, of) in markers.items():
        if part and part == of and seq > best and seq - of + 1 <= known_above:
            return None
    return found[-1][0] if found else (0 if known_above <= 0 else None)


def undo(chains: ChainSet, replaced: Replaced) -> None:
    """Take a statement that was not written back out of ``chains``."""
    for key, old in replaced.items():
        if old is None:
            chains.remove(key)
        else:
            chains.put(old)


def decode(data: bytes) -> Statement:
    """Parse statement bytes (version 1, 2 or 3); raises :class:`WitnessFormatError` naming what
    is wrong."""
    try:
        doc = json.loads(data)
        if doc.get("type") != STATEMENT_TYPE or doc.get("version") not in VERSIONS:
            raise WitnessFormatError(
                f"not a {STATEMENT_TYPE} statement of version "
                + " or ".join(str(v) for v in VERSIONS)
            )
        version = int(doc["version"])
        chains = tuple(
            WitnessedChain(
                str(c["kind"]),
                str(c["producer_id"]),
                int(c["epoch"]),
                int(c["seq"]),
                _hash(c["head"]),
                _parse_ts(c["first_seen"]),
            )
            for c in doc["chains"]
        )
        extra: dict[str, Any] = {}
        if version >= 2:
            extra = {"total": int(doc["total"]), "digest": _hash(doc["digest"])}
        if version >= 3 and "full" in doc:
            part, of = int(doc["full"]["part"]), int(doc["full"]["of"])
            if not 1 <= part <= of:
                raise WitnessFormatError(f"witness statement is part {part} of {of}")
            extra["full"] = (part, of)
        st = Statement(
            str(doc["witness_id"]),
            int(doc["seq"]),
            _hash(doc["prev_hash"]),
            _parse_ts(doc["signed_at"]),
            chains,
            version=version,
            **extra,
        )
    except WitnessFormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WitnessFormatError(f"malformed witness statement: {exc!r}") from None
    if len({c.key for c in chains}) != len(chains):
        raise WitnessFormatError("witness statement names a chain twice")
    if st.encode() != data:
        raise WitnessFormatError("witness statement is not in canonical form")
    return st


def envelope(data: bytes, signature: bytes) -> bytes:
    """The ``decision-witness`` topic's message value for a signed statement."""
    return _canonical(
        {"signature": base64.b64encode(signature).decode(), "statement": data.decode()}
    )


def open_envelope(value: bytes) -> tuple[bytes, bytes]:
    """``(statement bytes, signature)`` of a topic message."""
    try:
        doc = json.loads(value)
        return str(doc["statement"]).encode(), base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise WitnessFormatError(f"malformed witness message: {exc!r}") from None


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _escaped(text: bytes) -> bytes:
    """``text`` as it stands inside a JSON string (the envelope's ``statement``)."""
    return json.dumps(text.decode(), ensure_ascii=False).encode()[1:-1]


def _hash(value: Any) -> bytes:
    raw = bytes.fromhex(str(value))
    if len(raw) != 32:
        raise WitnessFormatError(f"hash {value!r} is not 32 bytes")
    return raw


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _parse_ts(value: Any) -> datetime:
    # fromisoformat is ~20x faster than strptime (a restatement holds thousands); decode's
    # canonical check refuses any form but _ts's
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone")
    return t.astimezone(UTC)
