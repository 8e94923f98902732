"""Checkpoint digest path vs raw SHA-256 over the same bytes, for a ≥ 256 MB state.

Prints one JSON object as its last line: ``{"state_bytes": N, "digest_vs_raw_sha256": r}``
with r = throughput of :func:`digest_state` (layout + streaming SHA-256 over safetensors
bytes) ÷ throughput of ``hashlib.sha256`` over one buffer holding the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import time

import torch

from pol_chain.proof.serialization import SerializedState, digest_state


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    # a ResNet-ish mix of shapes: 64 tensors of 4 MiB + small ones, ≈ 257 MB in all
    state = {f"model.layer{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(64)}
    state.update({f"model.layer{i}.bias": torch.randn(1024, generator=gen) for i in range(64)})
    state.update({f"optim.{i}.momentum_buffer": torch.randn(256, generator=gen) for i in range(64)})
    meta = {"format": "polchain-checkpoint-v1", "step": 1}
    blob = SerializedState(state, meta).to_bytes()
    assert hashlib.sha256(blob).digest() == digest_state(state, meta)
    raw_best = digest_best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha256(blob).digest()
        raw_best = min(raw_best, time.perf_counter() - t)
        t = time.perf_counter()
        digest_state(state, meta)
        digest_best = min(digest_best, time.perf_counter() - t)
    n = len(blob)
    print(
        json.dumps(
            {
                "digest_mb_s": round(n / digest_best / 1e6, 1),
                "digest_vs_raw_sha256": round(raw_best / digest_best, 4),
                "raw_mb_s": round(n / raw_best / 1e6, 1),
                "state_bytes": n,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
