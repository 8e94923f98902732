"""ResNet-20 (He et al. 2016, CIFAR variant) on CIFAR-shaped synthetic tensors.

The data are generated deterministically from ``data_seed``: each class has a fixed
random 3×32×32 template and samples are template + Gaussian noise, so the task is
learnable and BatchNorm buffers move. For benchmarks and GPU checks; no download.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pol_chain.proof.task import TaskBundle
from pol_chain.tasks.common import random_crop_flip, sgd_bundle

__all__ = ["DEFAULT_CONFIG", "ResNet20", "build", "synthetic_cifar"]

DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 128,
    "data_seed": 0,
    "epochs": 1,
    "k": 100,
    "lr": {"base": 0.1, "gamma": 0.1, "kind": "multistep", "milestones": [0.5, 0.75]},
    "momentum": 0.9,
    "noise": 1.0,
    "train_size": 4096,
    "test_size": 512,
    "weight_decay": 0.0001,
}


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet20(nn.Module):
    """ResNet-20: 3 stages × 3 basic blocks (16/32/64 channels), ~0.27 M parameters."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(_Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        out = self.layers(self.stem(x))
        return self.fc(out.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def synthetic_cifar(
    n: int, seed: int, noise: float, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``n`` CIFAR-shaped samples (float32, 3×32×32) and labels from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 3, 32, 32, generator=gen)
    gen.manual_seed(seed * 1_000_003 + 17 + offset)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = templates[y] + noise * torch.randn(n, 3, 32, 32, generator=gen)
    return x.contiguous(), y


def build(config: Mapping[str, Any], device: torch.device) -> TaskBundle:
    """Build the ResNet-20 task from ``config`` (see :data:`DEFAULT_CONFIG`)."""
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    seed, noise = int(cfg["data_seed"]), float(cfg["noise"])
    train_x, train_y = synthetic_cifar(int(cfg["train_size"]), seed, noise)
    test_x, test_y = synthetic_cifar(int(cfg["test_size"]), seed, noise, offset=1)
    model = ResNet20().to(device)
    return sgd_bundle(
        cfg,
        model,
        (train_x, train_y, test_x, test_y),
        device,
        lambda x, gen: random_crop_flip(x, gen, 4),
    )
