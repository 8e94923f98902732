"""A tiny Hugging Face ``Trainer`` task whose model has BatchNorm (buffers every forward
pass changes), with 2 micro-batches a step: what a cut step must not leave behind."""

from __future__ import annotations

from typing import Any

import torch

from pol_chain.integrations.hf import hf_task

DEFAULT_CONFIG: dict[str, Any] = {"batch_size": 16, "k": 4, "epochs": 1, "grad_accumulation": 2}


class Points(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """256 points in 8 dimensions, labelled by the sign of their sum."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=gen)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 2),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.f(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def build(config: dict[str, Any], device: torch.device) -> Any:
    data = Points()
    batch = int(config["batch_size"])
    return hf_task(
        Net().to(device),
        data,
        total_steps=len(data) // batch,
        learning_rate=0.01,
        gradient_accumulation_steps=int(config["grad_accumulation"]),
        per_device_train_batch_size=batch // int(config["grad_accumulation"]),
    )
