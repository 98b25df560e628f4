"""What a checkpoint signature covers: the exact bytes both sides sign and verify."""

from __future__ import annotations

CHECKPOINT_DOMAIN = b"decision-audit/checkpoint/v1"
ALGORITHM = "ed25519"


def checkpoint_message(producer_id: str, producer_epoch: int, seq: int, chain_head: bytes) -> bytes:
    """``domain 0 producer_id 0 epoch(8, BE) seq(8, BE) chain_head(32)``."""
    if len(chain_head) != 32:
        raise ValueError("chain_head must be 32 bytes")
    return (
        CHECKPOINT_DOMAIN
        + b"\x00"
        + producer_id.encode()
        + b"\x00"
        + producer_epoch.to_bytes(8, "big", signed=True)
        + seq.to_bytes(8, "big", signed=True)
        + chain_head
    )
