"""The lookup layout of migration 0018, on the real engine: a FINAL lookup by request id is
narrowed by both bloom filters on request_id, and 0015's projection is gone."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _skip_granules(plan: str) -> dict[str, tuple[int, int]]:
    """Each skip index of an ``EXPLAIN indexes = 1`` plan: (granules kept, granules seen)."""
    found = re.findall(
        r"Skip\s+Name: (\w+)\s+Description: [^\n]*\s+Parts: [^\n]*\s+Granules: (\d+)/(\d+)", plan
    )
    return {name: (int(kept), int(seen)) for name, kept, seen in found}


def test_final_lookup_by_request_id_is_narrowed_by_both_filters(ch: Any, database: str) -> None:
    ch.command(
        f"INSERT INTO {database}.decisions (event_id, occurred_at, model_name, model_version, "
        "request_id) SELECT generateUUIDv7(), now64(3), 'm', '1', toString(number) "
        "FROM numbers(50000)"
    )
    plan = "\n".join(
        str(r[0])
        for r in ch.query(
            f"EXPLAIN indexes = 1 SELECT event_id FROM {database}.decisions FINAL "
            "WHERE request_id = {r:String}",
            parameters={"r": "31337"},
        ).result_rows
    )
    skips = _skip_granules(plan)
    assert set(skips) >= {"idx_request_id", "idx_request_id_g1"}, plan
    coarse_kept, _ = skips["idx_request_id"]
    fine_kept, fine_seen = skips["idx_request_id_g1"]
    # the fine filter reads only what the coarse one kept, and leaves fewer granules
    assert fine_seen <= coarse_kept and fine_kept < coarse_kept, plan
    assert [
        str(r[0])
        for r in ch.query(
            f"SELECT request_id FROM {database}.decisions FINAL WHERE request_id = '31337'"
        ).result_rows
    ] == ["31337"]


def test_the_request_id_projection_is_dropped(ch: Any, database: str) -> None:
    names = ch.query(
        "SELECT name FROM system.projections WHERE database = {db:String} AND table = 'decisions'",
        parameters={"db": database},
    ).result_rows
    assert ("by_request_id",) not in [tuple(r) for r in names]
    indexes = {
        str(r[0])
        for r in ch.query(
            "SELECT name FROM system.data_skipping_indices WHERE database = {db:String} "
            "AND table = 'decisions'",
            parameters={"db": database},
        ).result_rows
    }
    assert {"idx_request_id", "idx_request_id_g1", "idx_event_id_g1"} <= indexes
