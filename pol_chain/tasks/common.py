"""Helpers shared by the shipped tasks: step-wise LR schedule, simple augmentations and
the SGD + schedule + cross-entropy bundle both tasks train with."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pol_chain.proof.task import TaskBundle

__all__ = ["accuracy", "lr_lambda", "random_crop_flip", "random_shift", "sgd_bundle"]


def lr_lambda(schedule: Mapping[str, Any], total_steps: int) -> Callable[[int], float]:
    """Return a per-step LR multiplier: ``{"kind": "cosine"|"multistep"|"constant", ...}``.

    ``cosine``: linear warmup over ``warmup_steps`` then cosine decay to ``min_factor``.
    ``multistep``: multiply by ``gamma`` at each fraction of training in ``milestones``.
    """
    kind = schedule.get("kind", "constant")
    warmup = int(schedule.get("warmup_steps", 0))
    if kind == "cosine":
        floor = float(schedule.get("min_factor", 0.0))

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            span = max(1, total_steps - warmup)
            t = min(1.0, (step - warmup) / span)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

        return cosine
    if kind == "multistep":
        marks = [int(f * total_steps) for f in schedule.get("milestones", [0.5, 0.75])]
        gamma = float(schedule.get("gamma", 0.1))
        return lambda step: gamma ** sum(step >= m for m in marks)
    if kind == "constant":
        return lambda step: 1.0
    raise ValueError(f"unknown lr schedule kind {kind!r}")


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill); shifts drawn from ``gen``."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen)
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    rows = (torch.arange(h).view(1, h) + max_shift - shifts[:, :1]).to(x.device)
    cols = (torch.arange(w).view(1, w) + max_shift - shifts[:, 1:]).to(x.device)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-style augmentation: random crop with ``pad`` and horizontal flip, from ``gen``."""
    shifted = random_shift(x, gen, pad)
    flip = torch.rand(x.shape[0], generator=gen).lt(0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), shifted.flip(3), shifted)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Return the top-1 accuracy of ``model`` on ``(x, y)`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def sgd_bundle(
    cfg: Mapping[str, Any],
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    *,
    nesterov: bool = False,
) -> TaskBundle:
    """Bundle ``model`` (already on ``device``) with SGD and the ``cfg["lr"]`` schedule.

    ``cfg`` gives ``lr`` (``base`` plus :func:`lr_lambda`'s schedule), ``momentum``,
    ``weight_decay``, ``epochs`` and ``batch_size``; ``data`` is ``(train_x, train_y,
    test_x, test_y)``, moved to ``device``. Loss: cross-entropy; evaluation: test accuracy.
    """
    train_x, train_y, test_x, test_y = data
    lr = dict(cfg["lr"])
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=float(lr["base"]),
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight_decay"]),
        nesterov=nesterov,
    )
    total = int(cfg["epochs"]) * (len(train_y) // int(cfg["batch_size"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(lr, total))
    test_x, test_y = test_x.to(device), test_y.to(device)
    return TaskBundle(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.functional.cross_entropy,
        train_x=train_x.to(device),
        train_y=train_y.to(device),
        augment=augment,
        evaluate=lambda m: accuracy(m, test_x, test_y),
    )
