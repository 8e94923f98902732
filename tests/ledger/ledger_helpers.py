"""Small builders shared by the ledger tests."""

from __future__ import annotations

import hashlib

from web3 import Web3

from pol_chain import commitment as cm
from pol_chain.ledger.client import LedgerClient


def digest(label: str) -> bytes:
    """A deterministic SHA-256 digest for test data."""
    return hashlib.sha256(label.encode()).digest()


def leaves_for(run_id: bytes, first: int, count: int, k: int = 10) -> list[bytes]:
    """Leaves ``first..first+count-1`` of a fake run (checkpoint every ``k`` steps)."""
    return [
        cm.leaf(
            run_id,
            i,
            i * k,
            digest(f"ckpt-{run_id.hex()}-{i}"),
            cm.ZERO32 if i == 0 else digest(f"seg-{i}"),
        )
        for i in range(first, first + count)
    ]


def finalized_run(client: LedgerClient, model: bytes, checkpoints: int = 3) -> bytes:
    """Register, commit ``checkpoints`` leaves and finalize claiming ``model``; return run id."""
    run = client.register_run(digest("spec"), "bafyspec").run_id
    client.commit_checkpoints(run, 0, leaves_for(run, 0, checkpoints), "bafymanifest")
    client.finalize_run(run, model, "bafymodel")
    return run


def mine(w3: Web3, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks on Anvil."""
    w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]
