"""The contract shared by producers and consumers: Avro schemas, field declarations, models,
codec, reasons, header names and value rules, DDL.

Nothing in this package talks to a network, except the Schema Registry framing
(:mod:`.registry_codec`), through the registry client it is given or builds from a URL.
"""

from decision_audit.contract.codec import (
    CodecError,
    DecodedRecord,
    SingleObjectCodec,
    default_codec,
)
from decision_audit.contract.hashing import GENESIS_DOMAIN, chain_hash, genesis_hash
from decision_audit.contract.ids import uuid7
from decision_audit.contract.models import Checkpoint, DecisionEvent, JsonObject
from decision_audit.contract.schemas import SchemaRegistry, ShippedSchema, shipped_schemas

__all__ = [
    "GENESIS_DOMAIN",
    "Checkpoint",
    "CodecError",
    "DecisionEvent",
    "DecodedRecord",
    "JsonObject",
    "SchemaRegistry",
    "ShippedSchema",
    "SingleObjectCodec",
    "chain_hash",
    "default_codec",
    "genesis_hash",
    "shipped_schemas",
    "uuid7",
]
