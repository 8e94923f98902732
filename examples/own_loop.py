#!/usr/bin/env python3
"""Record a proof from your own PyTorch loop (the README's example, runnable).

    polchain register digits --epochs 1 --out proof
    python examples/own_loop.py proof --workers 2   # while `polchain commit proof --follow` runs
    polchain finalize proof

The loop keeps its own shape — a DataLoader with worker processes, early stopping — and
takes from pol_chain only what makes the proof: W0 from the run seed (``build_bundle``),
the data order (``rec.batch_sampler()``), the per-step seeds, and the task's step
(``run_step``: the step the verifier replays). ``--stop-after N`` stops early after N
steps and finalizes there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pol_chain.errors import PolchainError
from pol_chain.format import RunBinding, TaskSpec
from pol_chain.proof import Recorder
from pol_chain.proof.engine import TrainState, run_step
from pol_chain.proof.loop import build_bundle


def main(proof: Path, workers: int = 0, stop_after: int | None = None) -> None:
    binding = RunBinding.read(proof)
    spec = TaskSpec.from_bytes((proof / "spec.json").read_bytes())
    bundle = build_bundle(spec, binding.run_seed)  # W0 regenerated from the run seed
    rec = Recorder(proof, spec, binding.run_id_bytes, binding.run_seed, state=TrainState.of(bundle))
    loader = torch.utils.data.DataLoader(
        bundle.data, batch_sampler=rec.batch_sampler(), num_workers=workers
    )  # the data order comes from the run seed; workers keep it
    batches = iter(loader)
    sampler = rec.sampler()
    last = spec.total_steps if stop_after is None else min(spec.total_steps, stop_after)
    for step in range(rec.step, last):
        micro = sampler.micro_batches(step)  # the indices the loader's batches hold
        seeds = rec.step_seeds(step)  # per-step augmentation and dropout seeds
        run_step(bundle, micro, seeds, step, batches=[next(batches) for _ in micro])
        rec.on_step_end(micro, seeds)
    rec.close(final=True)  # a run may finalize before its planned last step
    print(f"recorded {rec.step} steps into {proof}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proof", type=Path, nargs="?", default=Path("proof"))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--stop-after", type=int, default=None, help="stop early after N steps")
    args = parser.parse_args()
    try:
        main(args.proof, args.workers, args.stop_after)
    except PolchainError as exc:  # one line and a hint, as the CLI prints them
        raise SystemExit(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else "")) from None
