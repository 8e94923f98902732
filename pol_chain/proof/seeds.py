"""Sub-seeds derived from the 32-byte run seed, one per purpose (docs/protocol.md §2).

``derive_seed(run_seed, purpose, *counters)`` = first 8 bytes (big-endian, top bit
cleared) of ``SHA-256(SEED_DOMAIN ‖ run_seed ‖ purpose ‖ 0x00 ‖ u64 counters)``
(:data:`pol_chain.format.names.SEED_DOMAIN`).
Purposes used by the engine: ``init``, ``data-order`` (per epoch), ``augment`` and
``dropout`` (per step).
"""

from __future__ import annotations

import hashlib

import torch

from pol_chain.format.names import SEED_DOMAIN

__all__ = [
    "PURPOSES",
    "derive_seed",
    "epoch_permutation",
    "make_generator",
    "seed_global_rng",
]

PURPOSES = ("init", "data-order", "augment", "dropout")


def derive_seed(run_seed: bytes, purpose: str, *counters: int) -> int:
    """Return a 63-bit seed for ``purpose`` (and counters such as epoch or step)."""
    if len(run_seed) != 32:
        raise ValueError(f"run seed must be 32 bytes, got {len(run_seed)}")
    h = hashlib.sha256(SEED_DOMAIN + bytes(run_seed) + purpose.encode("utf-8") + b"\x00")
    for counter in counters:
        h.update(int(counter).to_bytes(8, "big"))
    return int.from_bytes(h.digest()[:8], "big") & ((1 << 63) - 1)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def epoch_permutation(run_seed: bytes, epoch: int, size: int) -> torch.Tensor:
    """Return the data order of ``epoch`` (a permutation of ``range(size)``, int64, CPU)."""
    gen = make_generator(derive_seed(run_seed, "data-order", epoch))
    return torch.randperm(size, generator=gen)


def seed_global_rng(seed: int) -> None:
    """Seed torch's global generators (CPU, and CUDA once initialized) as
    ``torch.manual_seed`` does, with the same resulting state. Called once per training
    step: ``torch.manual_seed`` also queues lazy seeding for every accelerator backend,
    formatting the caller's stack each time (~0.5 ms inside a framework's loop)."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
