"""Helpers for the proof tests: run constants and forger tools (re-commit after tampering)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pol_chain.attacks.tamper import recommit_manifest
from pol_chain.format import CheckpointMeta
from pol_chain.proof.serialization import load_checkpoint_bytes, serialize_state

RUN_ID = bytes.fromhex("11" * 32)
RUN_SEED = bytes.fromhex("22" * 32)
CHALLENGE = bytes.fromhex("33" * 32)
TEST_CONFIG: dict[str, Any] = {"epochs": 2, "k": 10}


def load_checkpoint(proof: Path, index: int) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Load checkpoint ``index`` of ``proof``."""
    data = (proof / f"checkpoints/{index:06d}.safetensors").read_bytes()
    return load_checkpoint_bytes(data, f"checkpoint {index}")


def save_checkpoint(
    proof: Path, index: int, tensors: dict[str, torch.Tensor], meta: CheckpointMeta
) -> None:
    """Overwrite checkpoint ``index`` of ``proof`` (then call :func:`recommit`)."""
    (proof / f"checkpoints/{index:06d}.safetensors").write_bytes(serialize_state(tensors, meta))


def recommit(proof: Path, run_id: bytes = RUN_ID) -> list[bytes]:
    """Act as a forger: recompute every digest, leaf and the final model of ``proof``
    after tampering, as if the forged values had been committed. Returns the leaves."""
    return recommit_manifest(proof, run_id)
