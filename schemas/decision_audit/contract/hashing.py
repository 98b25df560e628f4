"""Where the hash chain is computed.

``event_hash = SHA-256(prev_hash || body)`` where ``body`` is the Avro binary body of the
event (the single-object payload without its 10-byte header). The first event of a chain
links to a genesis value that names the chain, so two chains never share a prefix.
"""

from __future__ import annotations

import hashlib

GENESIS_DOMAIN = b"decision-audit/genesis/v1"
HASH_SIZE = 32


def genesis_hash(producer_id: str, producer_epoch: int) -> bytes:
    """``prev_hash`` of seq 1: SHA-256 over a domain tag, the producer id and its epoch."""
    return hashlib.sha256(
        GENESIS_DOMAIN + b"\x00" + producer_id.encode() + b"\x00" + str(producer_epoch).encode()
    ).digest()


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    """The event hash linking ``body`` to its predecessor."""
    h = hashlib.sha256(prev_hash)
    h.update(body)
    return h.digest()
