#!/usr/bin/env python3
"""Record a proof from your own PyTorch loop (the README's example, runnable).

polchain register digits --epochs 1 --out proof
python scripts/example_own_loop.py proof      # while `polchain commit proof --follow` runs
polchain finalize proof
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pol_chain.format import RunBinding
from pol_chain.proof import Recorder, TaskSpec
from pol_chain.proof.loop import build_bundle


def main(proof: Path) -> None:
    binding = RunBinding.read(proof)
    spec = TaskSpec.from_bytes((proof / "spec.json").read_bytes())
    bundle = build_bundle(spec, binding.run_seed)  # W0 regenerated from the run seed
    model, optimizer, scheduler = bundle.model, bundle.optimizer, bundle.scheduler
    rec = Recorder(proof, spec, binding.run_id_bytes, binding.run_seed, model, optimizer, scheduler)
    for step, indices in rec.sampler().steps():  # the data order comes from the run seed
        seeds = rec.step_seeds(step)  # per-step augmentation and dropout seeds
        x, y = bundle.train_x[indices], bundle.train_y[indices]
        if bundle.augment is not None:
            x = bundle.augment(x, rec.generator("augment", step))
        torch.manual_seed(seeds["dropout"])
        model.train()
        loss = bundle.loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        rec.on_step_end(indices, seeds)
    rec.close()
    print(f"recorded {rec.step} steps into {proof}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "proof"))
