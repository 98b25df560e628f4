"""The contract shared by producers and consumers: Avro schemas, models, codec, DDL.

Nothing in this package talks to a network.
"""

from schemas.codec import CodecError, DecodedRecord, SingleObjectCodec, default_codec
from schemas.hashing import GENESIS_DOMAIN, chain_hash, genesis_hash
from schemas.ids import uuid7
from schemas.models import Checkpoint, DecisionEvent, JsonObject
from schemas.registry import SchemaRegistry, ShippedSchema, shipped_schemas

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
