"""Training loops as people write them, as pol_chain tasks (imported by the tests and,
through PYTHONPATH, by the agent that replays them).

``variant`` picks the step: ``clip`` (its own step: gradient clipping that fires on most
steps), ``adamw`` (AdamW with two parameter groups and a warmup schedule, the default
step), ``accum`` (the default step over ``grad_accumulation`` micro-batches: dropout and
BatchNorm see each micro-batch), ``bf16`` (its own step under bf16 autocast on the CPU).
All train the digits CNN (BatchNorm and dropout) on scikit-learn's digits, given as a
map-style dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pol_chain.proof.task import StepInput, TaskBundle
from pol_chain.tasks.common import accuracy, lr_lambda
from pol_chain.tasks.digits import DigitsCNN, load_split

DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 32,
    "clip": 0.05,
    "dropout": 0.3,
    "epochs": 1,
    "grad_accumulation": 1,
    "k": 11,
    "lr": {"base": 0.05, "kind": "cosine", "min_factor": 0.1, "warmup_steps": 5},
    "variant": "clip",
    "weight_decay": 0.01,
}

CLIP_STATS = {"steps": 0, "clipped": 0}
"""How often ``clip``'s step clipped (read by the tests, in-process)."""


def _micro_losses(bundle: TaskBundle, inp: StepInput) -> torch.Tensor:
    """Forward and backward over every micro-batch (losses weighted by size)."""
    total = sum(len(i) for i in inp.indices)
    last = torch.zeros(())
    for (x, y), idx in zip(inp.micro_batches, inp.indices, strict=True):
        loss = nn.functional.cross_entropy(bundle.model(x), y)
        if len(inp.micro_batches) > 1:
            loss = loss * (len(idx) / total)
        loss.backward()
        last = loss.detach()
    return last


def clip_step(bundle: TaskBundle, inp: StepInput) -> torch.Tensor:
    """SGD with gradient clipping at ``clip`` (which fires on most steps)."""
    bundle.model.train()
    for optimizer in bundle.optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss = _micro_losses(bundle, inp)
    norm = torch.nn.utils.clip_grad_norm_(bundle.model.parameters(), bundle_config(bundle)["clip"])
    CLIP_STATS["steps"] += 1
    CLIP_STATS["clipped"] += int(float(norm) > bundle_config(bundle)["clip"])
    for optimizer in bundle.optimizers:
        optimizer.step()
    for scheduler in bundle.schedulers:
        scheduler.step()
    return loss


def bf16_step(bundle: TaskBundle, inp: StepInput) -> torch.Tensor:
    """The forward pass under bf16 autocast on the CPU (backward outside, as usual)."""
    bundle.model.train()
    for optimizer in bundle.optimizers:
        optimizer.zero_grad(set_to_none=True)
    total = sum(len(i) for i in inp.indices)
    loss = torch.zeros(())
    for (x, y), idx in zip(inp.micro_batches, inp.indices, strict=True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = bundle.model(x)
        loss = nn.functional.cross_entropy(logits.float(), y) * (len(idx) / total)
        loss.backward()
    for optimizer in bundle.optimizers:
        optimizer.step()
    for scheduler in bundle.schedulers:
        scheduler.step()
    return loss.detach()


_CONFIGS: dict[int, Mapping[str, Any]] = {}


def bundle_config(bundle: TaskBundle) -> Mapping[str, Any]:
    """The config a bundle was built with."""
    return _CONFIGS[id(bundle.model)]


def build(config: Mapping[str, Any], device: torch.device) -> TaskBundle:
    """Build the ``variant`` of the task (see the module docstring)."""
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    train_x, train_y, test_x, test_y = load_split(0, 0.2)
    model = DigitsCNN(float(cfg["dropout"])).to(device)
    lr = dict(cfg["lr"])
    total = int(cfg["epochs"]) * (len(train_y) // int(cfg["batch_size"]))
    if cfg["variant"] == "adamw":
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(cfg["weight_decay"])},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=float(lr["base"]) / 10,
        )
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=float(lr["base"]), momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(lr, total))
    steps = {"clip": clip_step, "bf16": bf16_step}
    bundle = TaskBundle(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.functional.cross_entropy,
        dataset=torch.utils.data.TensorDataset(train_x.to(device), train_y.to(device)),
        step=steps.get(str(cfg["variant"])),
        evaluate=lambda m: accuracy(m, test_x.to(device), test_y.to(device)),
    )
    _CONFIGS[id(model)] = cfg
    return bundle
