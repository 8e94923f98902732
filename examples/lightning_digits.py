#!/usr/bin/env python3
"""Record a proof from an unmodified Lightning ``LightningModule`` and ``Trainer``.

    cd examples
    polchain register lightning_digits:build --out proof
    python lightning_digits.py proof      # while `polchain commit proof --follow` runs
    polchain finalize proof

The file is the task (``build``: the module, its data and the trainer settings replay
depends on) and the training script (``main``). An MLP with BatchNorm and dropout on
scikit-learn's digits, AdamW with two parameter groups and a step-wise warm-up, gradient
clipping, 2-way gradient accumulation and ``precision="bf16-mixed"`` on CPU. The
verifier replays the module's own ``training_step`` through a ``Trainer`` built from
the same settings. ``--stop-after N`` stops early (Lightning's ``max_steps``) and
finalizes there. A run that was killed resumes from its last checkpoint when the same
command is run again (``Recorder(..., resume=True)``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from pol_chain.errors import PolchainError
from pol_chain.format import RunBinding, TaskSpec
from pol_chain.integrations.lightning import (
    PolchainCallback,
    lightning_task,
    train_loader,
    trainer_settings,
)
from pol_chain.proof import Recorder, build_bundle
from pol_chain.proof.engine import TrainState
from pol_chain.proof.task import TaskBundle

DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 32,
    "epochs": 1,
    "k": 10,
    "grad_accumulation": 2,
    "lr": 0.003,
    "warmup_steps": 10,
    "weight_decay": 0.01,
    "dropout": 0.2,
    "clip": 0.5,
    "precision": "bf16-mixed",
}


class DigitsMLP(pl.LightningModule):
    """64 → 128 (BatchNorm, ReLU, dropout) → 10."""

    def __init__(self, lr: float, weight_decay: float, warmup: int, dropout: float) -> None:
        super().__init__()
        self.lr, self.weight_decay, self.warmup = lr, weight_decay, warmup
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.parameters() if p.dim() > 1]
        rest = [p for p in self.parameters() if p.dim() <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=self.lr,
        )
        warmup = max(1, self.warmup)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def digits_train_set() -> torch.utils.data.TensorDataset:
    """The digits images (N, 64) in [0, 1] and labels, 80 % of them in a fixed order."""
    data = load_digits()
    x = torch.from_numpy((data.data / 16.0).astype(np.float32))
    y = torch.from_numpy(data.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    train = order[: int(len(y) * 0.8)]
    return torch.utils.data.TensorDataset(x[train].contiguous(), y[train].contiguous())


def build(config: Mapping[str, Any], device: torch.device) -> TaskBundle:
    """The task: the module, its data and the ``Trainer`` settings its replay uses."""
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    module = DigitsMLP(
        float(cfg["lr"]),
        float(cfg["weight_decay"]),
        int(cfg["warmup_steps"]),
        float(cfg["dropout"]),
    )
    return lightning_task(
        module,
        digits_train_set(),
        accumulate_grad_batches=int(cfg["grad_accumulation"]),
        gradient_clip_val=float(cfg["clip"]),
        precision=str(cfg["precision"]),
    )


def main(proof: Path, workers: int = 0, stop_after: int | None = None) -> int:
    """Train the registered run of ``proof`` with Lightning, recording it; return its steps."""
    binding = RunBinding.read(proof)
    spec = TaskSpec.from_bytes((proof / "spec.json").read_bytes())
    bundle = build_bundle(spec, binding.run_seed)  # W0 from the run seed
    # resume=True: after a crash, the same command continues from the last checkpoint
    state = TrainState.of(bundle)
    rec = Recorder(proof, spec, binding.run_id_bytes, binding.run_seed, state=state, resume=True)
    steps = spec.total_steps if stop_after is None else min(spec.total_steps, stop_after)
    if rec.step > steps:  # a resumed proof already past the stop asked for
        rec.close(final=False)
        raise PolchainError(
            f"the proof is at step {rec.step} already, past --stop-after {steps}",
            hint=f"--stop-after {rec.step} finalizes it there",
        )
    if rec.step == steps:  # resumed at the stop: nothing left to train
        rec.close(final=True)
        return rec.step
    trainer = pl.Trainer(
        **trainer_settings(bundle),
        max_steps=steps - rec.step,  # a fresh Trainer counts from 0, the run from rec.step
        max_epochs=1,  # the run's batch sampler spans all of its epochs
        accelerator="cpu",
        devices=1,
        callbacks=[PolchainCallback(rec, bundle)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = train_loader(bundle, rec, num_workers=workers, persistent_workers=workers > 0)
    assert isinstance(bundle.model, pl.LightningModule)
    trainer.fit(bundle.model, train_dataloaders=loader)
    rec.close(final=True)  # a run may finalize before its planned last step
    print(f"recorded {rec.step} steps into {proof}")
    return rec.step


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
