"""The Avro schemas shipped in ``schemas/avro``, indexed by name, version and fingerprint."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class ShippedSchema:
    """One versioned schema file, parsed once."""

    name: str
    version: int
    parsed: Any
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, little-endian, as in single-object encoding."""
    definition: Any = None
    """the schema as written in its ``.avsc`` file (JSON), for tools that read Avro themselves"""

    @property
    def fingerprint_int(self) -> int:
        return int.from_bytes(self.fingerprint, "little")


def avro_fingerprint(schema: Any) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint (little-endian) of a schema."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaRegistry:
    """Schemas by fingerprint (for readers) and latest version by name (for writers)."""

    def __init__(self, schemas: list[ShippedSchema]) -> None:
        self._by_fp = {s.fingerprint: s for s in schemas}
        self._latest: dict[str, ShippedSchema] = {}
        for s in schemas:
            cur = self._latest.get(s.name)
            if cur is None or s.version > cur.version:
                self._latest[s.name] = s

    def by_fingerprint(self, fp: bytes) -> ShippedSchema | None:
        return self._by_fp.get(fp)

    def latest(self, name: str) -> ShippedSchema:
        try:
            return self._latest[name]
        except KeyError:
            raise KeyError(f"no shipped Avro schema named {name!r}") from None

    def get(self, name: str, version: int) -> ShippedSchema:
        for s in self._by_fp.values():
            if s.name == name and s.version == version:
                return s
        raise KeyError(f"no shipped Avro schema {name}.v{version}")

    def __iter__(self) -> Iterator[ShippedSchema]:
        return iter(sorted(self._by_fp.values(), key=lambda s: (s.name, s.version)))

    def add(self, schema: ShippedSchema) -> None:
        """Register an extra schema (tests, or a deployment's own versions)."""
        self._by_fp[schema.fingerprint] = schema
        cur = self._latest.get(schema.name)
        if cur is None or schema.version > cur.version:
            self._latest[schema.name] = schema


def load_schema(name: str, version: int, definition: dict[str, Any]) -> ShippedSchema:
    parsed = parse_schema(copy.deepcopy(definition), _force=True)
    return ShippedSchema(name, version, parsed, avro_fingerprint(parsed), definition)


@cache
def shipped_schemas() -> SchemaRegistry:
    """Every ``*.vN.avsc`` file under ``schemas/avro``."""
    out = []
    for entry in resources.files("decision_audit.contract").joinpath("avro").iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        definition = json.loads(entry.read_text(encoding="utf-8"))
        out.append(load_schema(m["name"], int(m["version"]), definition))
    return SchemaRegistry(out)
