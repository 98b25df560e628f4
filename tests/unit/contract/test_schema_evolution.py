"""Schema evolution of the shipped ``.avsc`` versions, judged by Apache Avro's own
compatibility checker (``avro.compatibility``, the Python port of the Java
``SchemaCompatibility`` that a Confluent Schema Registry applies to Avro subjects).

confluent-kafka's ``mock://`` registry does not check compatibility, and no registry server
runs here, so this is the registry's rule applied without the registry.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from decision_audit.contract.schemas import ShippedSchema, shipped_schemas


def _versions() -> dict[str, list[ShippedSchema]]:
    out: dict[str, list[ShippedSchema]] = {}
    for s in shipped_schemas():
        out.setdefault(s.name, []).append(s)
    return out


def _pairs() -> list[tuple[ShippedSchema, ShippedSchema]]:
    """(older, newer) for every two versions of one record: BACKWARD_TRANSITIVE's pairs."""
    return [
        (old, new)
        for versions in _versions().values()
        for i, old in enumerate(versions)
        for new in versions[i + 1 :]
    ]


def _reads(reader: Any, writer: Any) -> tuple[bool, set[str]]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible, set(result.messages)


def test_there_are_versions_to_judge() -> None:
    assert [s.version for s in _versions()["decision_event"]] == [1, 2, 3, 4]
    assert len(_pairs()) >= 6


@pytest.mark.parametrize(
    ("old", "new"), _pairs(), ids=lambda s: f"{s.name}.v{s.version}" if s else "?"
)
def test_each_version_reads_every_older_one(old: ShippedSchema, new: ShippedSchema) -> None:
    """BACKWARD_TRANSITIVE (the registry's default level is BACKWARD): a consumer on the
    newer schema reads what producers on any older one wrote, so registering it passes."""
    ok, why = _reads(new.definition, old.definition)
    assert ok, f"{new.name}.v{new.version} cannot read v{old.version}: {why}"


def test_the_checker_refuses_a_new_field_without_a_default() -> None:
    latest = shipped_schemas().latest("decision_event").definition
    bad = copy.deepcopy(latest)
    bad["fields"].append({"name": "cost_centre", "type": "string"})
    ok, why = _reads(bad, latest)
    assert not ok and any("cost_centre" in m for m in why)


def test_v3_readers_cannot_read_v4_failed_inferences() -> None:
    """What the README says of FORWARD: v4 lets a failed inference carry no prediction
    (``null``), which a v3 reader, whose prediction is a string, cannot take."""
    v = {s.version: s.definition for s in _versions()["decision_event"]}
    ok, why = _reads(v[3], v[4])
    assert not ok and why == {"reader type: string not compatible with writer type: null"}
    assert _reads(v[2], v[3])[0]
