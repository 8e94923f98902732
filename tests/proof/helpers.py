"""Helpers for the proof tests: run constants and forger tools (re-commit after tampering)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pol_chain.commitment import ZERO32
from pol_chain.commitment import leaf as make_leaf
from pol_chain.proof.canonical import from_hex, sha256, to_hex
from pol_chain.proof.engine import model_tensors
from pol_chain.proof.manifest import Manifest
from pol_chain.proof.serialization import digest_state, load_state_bytes, serialize_state

RUN_ID = bytes.fromhex("11" * 32)
RUN_SEED = bytes.fromhex("22" * 32)
CHALLENGE = bytes.fromhex("33" * 32)
TEST_CONFIG: dict[str, Any] = {"epochs": 2, "k": 10}


def load_checkpoint(proof: Path, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load checkpoint ``index`` of ``proof``."""
    data = (proof / f"checkpoints/{index:06d}.safetensors").read_bytes()
    return load_state_bytes(data, f"checkpoint {index}")


def save_checkpoint(
    proof: Path, index: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Overwrite checkpoint ``index`` of ``proof`` (then call :func:`recommit`)."""
    (proof / f"checkpoints/{index:06d}.safetensors").write_bytes(serialize_state(tensors, meta))


def recommit(proof: Path, run_id: bytes = RUN_ID) -> list[bytes]:
    """Act as a forger: recompute every digest, leaf and the final model of ``proof``
    after tampering, as if the forged values had been committed. Returns the leaves."""
    man = Manifest.from_bytes((proof / "manifest.json").read_bytes())
    man.data["run_id"] = to_hex(run_id)
    man.data["spec_sha256"] = to_hex(sha256((proof / "spec.json").read_bytes()))
    for entry in man.entries:
        ck = sha256((proof / entry["checkpoint"]["file"]).read_bytes())
        entry["checkpoint"]["sha256"] = to_hex(ck)
        seg = ZERO32
        if entry["segment"]:
            seg = sha256((proof / entry["segment"]["file"]).read_bytes())
            entry["segment"]["sha256"] = to_hex(seg)
        entry["leaf"] = to_hex(make_leaf(run_id, entry["index"], entry["step"], ck, seg))
    if man.final is not None:
        last = (proof / man.entries[-1]["checkpoint"]["file"]).read_bytes()
        try:
            tensors, _ = load_state_bytes(last, "last")
            model = model_tensors(tensors)
            (proof / "model.safetensors").write_bytes(
                serialize_state(model, {"format": "polchain-model-v1"})
            )
            man.final["model"]["sha256"] = to_hex(
                digest_state(model, {"format": "polchain-model-v1"})
            )
        except Exception:  # noqa: BLE001 - a forger may have broken the last checkpoint
            pass
    man.write(proof)
    return [from_hex(e["leaf"]) for e in man.entries]
