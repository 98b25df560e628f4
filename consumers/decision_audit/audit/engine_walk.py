"""``verify``'s per-event work, done by ClickHouse in one set-based query.

For every stored decision the query recomputes SHA-256(prev_hash ‖ body) from ``raw`` (the
body is ``raw`` without its 10-byte header), compares it with ``event_hash``, and encodes
the row's columns again as its writer schema would (:mod:`.avro_sql`) to compare them with
the body byte for byte. A window over each chain ``(producer_id, producer_epoch)`` in seq
order gives every event its predecessor, and one row per chain comes back: the chain's
summary and its *interesting* events: those whose hash differs, the first one and those
that do not follow their predecessor (a gap, a broken link), each with its predecessor; and
those at a checkpoint's seq, whose hash the walk compares with the signed head. Everything
else is, by construction, an event the chain walk (:class:`.chain_walk.ChainWalk`) would
pass without a word, so walking only the interesting events, each after its own
predecessor, finds exactly what a walk over every event finds (:mod:`.verify` does that
walk, and the signatures).

A chain the query cannot judge exactly — an event whose columns differ from its bytes or
whose bytes are not an encoding the query knows (another framing, an unknown schema), two
events claiming one seq, or more interesting events than the query returns — is marked
``exact=False``; :mod:`.verify` then checks that chain event by event in Python, which
names every difference as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from decision_audit.audit.avro_sql import (
    SMALL_VARINTS,
    SMALL_VARINTS_SQL,
    Unsupported,
    body_sql,
    defaults_sql,
)
from decision_audit.audit.chain_walk import ChainRow
from decision_audit.contract.codec import HEADER_SIZE, MAGIC
from decision_audit.contract.schemas import SchemaRegistry, shipped_schemas

Chain = tuple[str, int]

MAX_INTERESTING = 100_000
"""events with a link finding returned per chain; a chain with more is checked in Python"""

MAX_CHECKPOINT_EVENTS = 5_000_000
"""events at a checkpoint's seq returned per chain (one in a thousand events, by default)"""

EXTERNAL_SORT_BYTES = 256 * 1024 * 1024
"""the window's sort spills to disk past this, so memory stays bounded at any size"""

_INTERESTING = (
    "seq",
    "event_id",
    "prev_hash",
    "h",
    "hash_ok",
    "has_prev",
    "p_seq",
    "p_eid",
    "p_h",
)


ABOVE_BOUND = (
    "seq > transform(concat(toString(producer_epoch), ':', producer_id), "
    "{bound_keys:Array(String)}, {bound_seqs:Array(UInt64)}, toUInt64(0))"
)
"""Only the events above each chain's bound (:func:`bound_parameters`; 0 for the others)."""


def bound_parameters(bounds: Mapping[Chain, int]) -> dict[str, list[Any]]:
    """The query parameters of :data:`ABOVE_BOUND`."""
    # A chain's key as text, the epoch first: no producer_id can spell another chain's key.
    return {
        "bound_keys": [f"{e}:{p}" for p, e in bounds],
        "bound_seqs": list(bounds.values()),
    }


@dataclass(slots=True)
class Interesting:
    """An event the walk must see, with its predecessor in the chain (if any)."""

    row: ChainRow
    """the event: its seq, id, prev_hash and the hash recomputed from ``raw``"""
    hash_ok: bool
    """the stored ``event_hash`` is the recomputed hash"""
    prev: ChainRow | None
    """the event before it in seq order (None for the chain's first event in the range)"""
    linked: bool = True
    """False: an event at a checkpoint's seq that follows its predecessor (only its hash
    against the signed head is to check; ``prev`` is not given)"""


@dataclass(slots=True)
class EngineChain:
    """One chain, as the query judged it."""

    producer_id: str
    producer_epoch: int
    events: int
    first_seq: int
    last_seq: int
    key_id: str | None
    """the first non-null ``key_id`` in seq order"""
    latest: datetime
    """the latest ``occurred_at``"""
    last: ChainRow
    """the event with the highest seq (its hash recomputed)"""
    exact: bool
    """every event was judged: its bytes encode its columns, no seq repeats"""
    interesting: list[Interesting] = field(default_factory=list)


def _writer_checks(registry: SchemaRegistry, present: set[int] | None = None) -> str:
    """``enc_ok``: the row's columns, encoded by its writer schema, are its stored body.

    ``present``: the writers' fingerprints (as ``schema_fingerprint`` holds them) to encode
    for; the engine computes every branch for every row, so fewer is faster. A row written
    by another one is not judged here (its bytes are checked in Python).
    """
    reader = registry.latest("decision_event")
    branches = []
    for writer in registry:
        if writer.name != "decision_event" or writer.definition is None:
            continue
        if present is not None and writer.fingerprint_int not in present:
            continue
        try:
            body, guards = body_sql(writer.definition)
            guards += defaults_sql(writer.definition, reader.definition)
        except Unsupported:
            continue  # its rows are checked in Python
        header = (MAGIC + writer.fingerprint).hex()
        cond = " AND ".join([f"{body} = _body", *guards])
        branches.append(f"_hdr = unhex('{header}'), {cond}")
    if not branches:
        return "false"
    return f"multiIf({', '.join(branches)}, false)"


class EngineWalk:
    """Builds and runs the query over ``{database}.decisions``."""

    def __init__(self, client: Any, database: str, registry: SchemaRegistry | None = None) -> None:
        self.client = client
        self.db = database
        self.registry = registry or shipped_schemas()

    def writers(self) -> set[int]:
        """The writer fingerprints ``decisions`` says it holds (a cheap column to read)."""
        rows = self.client.query(f"SELECT DISTINCT schema_fingerprint FROM {self.db}.decisions")
        return {int(r[0]) for r in rows.result_rows}

    def sql(
        self,
        where: str,
        *,
        checkpoints: bool,
        bounded: bool,
        final: bool = True,
        writers: set[int] | None = None,
    ) -> str:
        """The query. ``where`` filters ``decisions`` (its columns only); ``checkpoints``:
        also return the events at a stored checkpoint's seq; ``bounded``: only events past
        each chain's bound (parameters of :func:`bound_parameters`); ``final``: read with
        ``FINAL`` — without it, a chain holding two rows ``FINAL`` would collapse (one
        sorting key) is not judged (``exact=False``), so the result is the same;
        ``writers``: the writer schemas to encode rows for (default: every shipped one)."""
        db = self.db
        conds = [f"({where})"]
        if bounded:
            conds.append(ABOVE_BOUND)
        # The seq alone first: the chain's key is looked up only at a checkpoint's seq.
        at_cp = (
            f"seq IN (SELECT seq FROM {db}.checkpoints) AND (producer_id, producer_epoch, seq) "
            f"IN (SELECT producer_id, producer_epoch, seq FROM {db}.checkpoints)"
            if checkpoints
            else "false"
        )
        link = "NOT hash_ok OR NOT has_prev OR seq != p_seq + 1 OR prev_hash != p_h"
        # Without FINAL: rows sharing a sorting key (a redelivery not yet merged) are seen.
        # A hash of the key may only make two keys look alike, never two alike look apart.
        collapsible = "" if final else " + (count() - uniqExact(_key))"
        key = (
            ""
            if final
            else ", cityHash64(model_name, model_version, occurred_at, event_id) AS _key"
        )
        return f"""
WITH {SMALL_VARINTS_SQL} AS {SMALL_VARINTS}
SELECT
    producer_id,
    producer_epoch,
    count(),
    min(seq),
    max(seq),
    argMinIf(key_id, seq, isNotNull(key_id)),
    max(occurred_at),
    argMax(tuple(seq, event_id, prev_hash, h), seq),
    countIf(NOT enc_ok) + countIf(has_prev AND seq = p_seq){collapsible},
    countIf({link}),
    groupArrayIf({MAX_INTERESTING})(tuple({", ".join(_INTERESTING)}), {link}),
    countIf(at_cp AND NOT ({link})),
    groupArrayIf({MAX_CHECKPOINT_EVENTS})(tuple(seq, event_id, h), at_cp AND NOT ({link}))
FROM (
    SELECT
        *,
        lagInFrame(seq) OVER w AS p_seq,
        lagInFrame(event_id) OVER w AS p_eid,
        lagInFrame(h) OVER w AS p_h,
        lagInFrame(true) OVER w AS has_prev
    FROM (
        SELECT
            producer_id, producer_epoch, seq, event_id, prev_hash, key_id, occurred_at,
            SHA256(concat(prev_hash, _body)) AS h,
            h = event_hash AS hash_ok,
            {_writer_checks(self.registry, writers)} AS enc_ok,
            {at_cp} AS at_cp{key}
        FROM (
            SELECT *, substring(raw, 1, {HEADER_SIZE}) AS _hdr,
                substring(raw, {HEADER_SIZE + 1}) AS _body
            FROM {db}.decisions{" FINAL" if final else ""}
            PREWHERE {" AND ".join(conds)}
        )
    )
    WINDOW w AS (
        PARTITION BY producer_id, producer_epoch ORDER BY seq
        ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
    )
)
GROUP BY producer_id, producer_epoch
ORDER BY producer_id, producer_epoch"""

    def run(
        self,
        where: str = "1",
        params: Mapping[str, Any] | None = None,
        *,
        checkpoints: bool = False,
        bounds: Mapping[Chain, int] | None = None,
        final: bool = True,
    ) -> list[EngineChain]:
        """The chains with events matching ``where``, as the query judged them, in order.

        ``bounds``: only the events above the given seq of each chain (incremental verify);
        ``final``: see :meth:`sql`.
        """
        parameters = dict(params or {})
        if bounds:
            parameters.update(bound_parameters(bounds))
        sql = self.sql(
            where,
            checkpoints=checkpoints,
            bounded=bool(bounds),
            final=final,
            writers=self.writers(),
        )
        with self.client.query_row_block_stream(
            sql, parameters=parameters, settings=_SETTINGS
        ) as stream:
            return [_chain(row) for block in stream for row in block]


_SETTINGS = {
    # Hash and encode before the window's sort, so the sort carries ~110 bytes an event,
    # not every column (the planner moves functions past a sort by default).
    "query_plan_execute_functions_after_sorting": 0,
    "max_bytes_before_external_sort": EXTERNAL_SORT_BYTES,
    # With a ratio set (0.5 by default) the sort kept every row in memory whatever the
    # byte limit: 1.8 GB RSS at 10M events, ~0.6 GB with the ratio off (measured).
    "max_bytes_ratio_before_external_sort": 0,
    # JIT-compiling the encoding expressions costs ~0.5 s a run and saved no time per
    # event (measured at 1M events).
    "compile_expressions": 0,
}


def _hash(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def _chain(row: tuple[Any, ...]) -> EngineChain:
    (pid, epoch, events, first, last, key_id, latest, top, irregular, n, found, ncp, cps) = row
    t_seq, t_eid, t_prev, t_h = top
    out = EngineChain(
        str(pid),
        int(epoch),
        int(events),
        int(first),
        int(last),
        None if key_id is None else str(key_id),
        latest,
        ChainRow(int(t_seq), str(t_eid), _hash(t_prev), _hash(t_h)),
        exact=irregular == 0 and n <= MAX_INTERESTING and ncp <= MAX_CHECKPOINT_EVENTS,
    )
    for seq, eid, prev_hash, h, hash_ok, has_prev, p_seq, p_eid, p_h in found:
        prev = ChainRow(int(p_seq), str(p_eid), b"", _hash(p_h)) if has_prev else None
        out.interesting.append(
            Interesting(
                ChainRow(int(seq), str(eid), _hash(prev_hash), _hash(h)), bool(hash_ok), prev
            )
        )
    for seq, eid, h in cps:
        at_cp = ChainRow(int(seq), str(eid), b"", _hash(h))
        out.interesting.append(Interesting(at_cp, True, None, linked=False))
    out.interesting.sort(key=lambda i: i.row.seq)
    return out
