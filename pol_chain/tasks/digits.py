"""Small CNN on scikit-learn's digits (1,797 real 8×8 images): the demo task, CPU seconds.

Deterministic stratified-free split (fixed permutation seed ``split_seed``), SGD with
momentum, weight decay and a step-wise cosine schedule, BatchNorm (buffers), dropout
and a ±1 pixel random shift driven by the per-step augmentation generator.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pol_chain.proof.task import TaskBundle
from pol_chain.tasks.common import random_shift, sgd_bundle

__all__ = ["DEFAULT_CONFIG", "DigitsCNN", "build", "load_split"]

DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 32,
    "dropout": 0.1,
    "epochs": 4,
    "k": 10,
    "lr": {"base": 0.05, "kind": "cosine", "min_factor": 0.05, "warmup_steps": 10},
    "momentum": 0.9,
    "nesterov": False,
    "split_seed": 0,
    "test_fraction": 0.2,
    "weight_decay": 0.0005,
}


class DigitsCNN(nn.Module):
    """Conv(16)-BN-ReLU → Conv(32)-ReLU → MaxPool → Dropout → FC(64) → FC(10)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.head(self.features(x))  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=4)
def load_split(
    split_seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(train_x, train_y, test_x, test_y)``; x float32 (N,1,8,8) in [0,1] (cached;
    callers must not modify the tensors in place)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(y)))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train].contiguous(), y[train].contiguous(), x[test].contiguous(), y[test].contiguous()


def build(config: Mapping[str, Any], device: torch.device) -> TaskBundle:
    """Build the digits task from ``config`` (see :data:`DEFAULT_CONFIG`) on ``device``."""
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    data = load_split(int(cfg["split_seed"]), float(cfg["test_fraction"]))
    model = DigitsCNN(float(cfg["dropout"])).to(device)
    return sgd_bundle(
        cfg,
        model,
        data,
        device,
        lambda x, gen: random_shift(x, gen, 1),
        nesterov=bool(cfg["nesterov"]),
    )
