"""Finding decisions by the id a user holds: an event id, a request id or a prediction id
(``tags['prediction_id']``), as ``trace`` and ``replay`` take it."""

from __future__ import annotations

import uuid

IDENT_FILTER = (
    "(event_id = {eid:UUID} OR request_id = {id:String} OR tags['prediction_id'] = {id:String})"
)
"""the rows ``ident`` names (parameters from :func:`ident_parameters`)"""


def ident_parameters(ident: str) -> dict[str, str]:
    """The query parameters of :data:`IDENT_FILTER` and :func:`ident_condition` for ``ident``
    (an id that is no UUID matches no event id)."""
    try:
        eid = str(uuid.UUID(ident))
    except ValueError:
        eid = "00000000-0000-0000-0000-000000000000"
    return {"eid": eid, "id": ident}


def ident_condition(database: str) -> str:
    """A condition on ``{database}.decisions FINAL`` keeping the rows ``ident`` names.

    An OR of three columns defeats each one's skip index (every granule is read), so the
    sorting keys of the rows each predicate matches are found apart, each through its own
    index or projection (migration 0015), and the rows read by those keys; the OR is kept
    outside so that FINAL keeps the same rows as before. GLOBAL: on a cluster the keys are
    gathered from every shard first (``decisions`` is then a Distributed table).
    """
    keys = " UNION ALL ".join(
        f"SELECT model_name, model_version, occurred_at, event_id FROM {database}.decisions "
        f"WHERE {where}"
        for where in (
            "event_id = {eid:UUID}",
            "request_id = {id:String}",
            "tags['prediction_id'] = {id:String}",
        )
    )
    return (
        f"(model_name, model_version, occurred_at, event_id) GLOBAL IN ({keys}) AND {IDENT_FILTER}"
    )
