"""Shared helpers for the proof benchmarks (plain vs recorded training)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pol_chain.proof import TaskSpec, make_spec
from pol_chain.proof.engine import StepSampler, run_step, step_seeds
from pol_chain.proof.loop import build_bundle, train
from pol_chain.proof.task import configure_determinism

RUN_ID = bytes.fromhex("ab" * 32)
RUN_SEED = bytes.fromhex("cd" * 32)


def spec_for(entry: str, **config: Any) -> TaskSpec:
    """A spec for ``entry`` with ``config`` overrides."""
    return make_spec(entry, config)


def plain_train(spec: TaskSpec, steps: int, device: str = "cpu") -> float:
    """Seconds to train ``steps`` steps with the same loop and no recording."""
    bundle = build_bundle(spec, RUN_SEED, device)
    sampler = StepSampler(RUN_SEED, spec.dataset.size, spec.batch_size, spec.epochs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step, idx in sampler.steps():
        if step >= steps:
            break
        run_step(bundle, idx, step_seeds(RUN_SEED, step))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def recorded_train(
    spec: TaskSpec, steps: int, device: str = "cpu", keep: Path | None = None
) -> float:
    """Seconds to train ``steps`` steps with recording: from the recorder's creation (W0
    capture) to the flush of the last write; task building and evaluation excluded, as
    in :func:`plain_train`."""
    out = keep or Path(tempfile.mkdtemp(prefix="polchain-bench-")) / "proof"
    try:
        result = train(
            spec,
            out,
            RUN_ID,
            RUN_SEED,
            device=device,
            max_steps=steps,
            threads=torch.get_num_threads(),
        )
        return result.seconds
    finally:
        if keep is None:
            shutil.rmtree(out.parent, ignore_errors=True)


def setup(threads: int = 2, deterministic: bool = True) -> None:
    """Fix threads and determinism for a benchmark."""
    configure_determinism(deterministic, threads)
