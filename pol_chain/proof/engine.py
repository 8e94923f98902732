"""The shared training step, data order, and full-state capture / restore.

Training and replay run the same :func:`run_step`, so replay on the same hardware in
deterministic mode is bitwise identical. Checkpoint tensor names: ``model.<name>``
(parameters and buffers) and ``optim.<param index>.<key>`` (optimizer state, e.g.
momentum buffers); metadata carries the step, the scheduler position and (information
only) the learning rates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from pol_chain.format import CheckpointMeta, SegmentStep
from pol_chain.proof.errors import MalformedArtefactError
from pol_chain.proof.seeds import derive_seed, epoch_permutation, make_generator
from pol_chain.proof.task import TaskBundle

__all__ = [
    "StepSampler",
    "capture_state",
    "model_tensors",
    "replay_steps",
    "restore_state",
    "run_step",
    "step_seeds",
]


class StepSampler:
    """Batches of data indices per step, derived from the run seed (one permutation per
    epoch, last partial batch dropped)."""

    def __init__(self, run_seed: bytes, size: int, batch_size: int, epochs: int) -> None:
        self.run_seed, self.size, self.batch_size, self.epochs = run_seed, size, batch_size, epochs
        self.steps_per_epoch = size // batch_size
        self.total_steps = epochs * self.steps_per_epoch
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def batch(self, step: int) -> torch.Tensor:
        """Return the int64 indices of ``step`` (0-based)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm, self._epoch = epoch_permutation(self.run_seed, epoch, self.size), epoch
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]

    def steps(self, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(step, indices)`` from ``start`` to the end of training."""
        for step in range(start, self.total_steps):
            yield step, self.batch(step)


def step_seeds(run_seed: bytes, step: int) -> dict[str, int]:
    """Return the per-step seeds (augmentation, dropout) of ``step``."""
    return {
        "augment": derive_seed(run_seed, "augment", step),
        "dropout": derive_seed(run_seed, "dropout", step),
    }


def run_step(
    bundle: TaskBundle, indices: torch.Tensor | Sequence[int], seeds: Mapping[str, int]
) -> torch.Tensor:
    """Run one optimizer step (and scheduler step) on the batch ``indices``; return the
    (detached) loss, left on the device so callers decide when to synchronize."""
    device = bundle.train_x.device
    idx = torch.as_tensor(indices, dtype=torch.int64).to(device, non_blocking=True)
    x, y = bundle.train_x[idx], bundle.train_y[idx]
    if bundle.augment is not None:
        x = bundle.augment(x, make_generator(int(seeds["augment"])))
    torch.manual_seed(int(seeds["dropout"]))
    bundle.model.train()
    loss = bundle.loss_fn(bundle.model(x), y)
    bundle.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    bundle.optimizer.step()
    if bundle.scheduler is not None:
        bundle.scheduler.step()
    return loss.detach()


def capture_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Return the full state as ``({name: tensor clone on its device}, metadata)``."""
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, t in model.state_dict().items():
            tensors[f"model.{name}"] = t.detach().clone()
        opt = optimizer.state_dict()
        for pid, state in opt["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = value.detach().clone()
                elif value is not None:
                    tensors[f"optim.{pid}.{key}"] = torch.tensor(float(value), dtype=torch.float64)
    meta = CheckpointMeta(
        step=step,
        scheduler_position=step if scheduler is None else int(scheduler.last_epoch),
        lr=tuple(_lr(g.get("lr")) for g in opt["param_groups"]),
    )
    return tensors, meta


def _lr(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def model_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the model part of a checkpoint's tensors, ``model.`` prefix stripped."""
    return {k[6:]: v for k, v in state.items() if k.startswith("model.")}


def _fast_forward(scheduler: torch.optim.lr_scheduler.LRScheduler, position: int) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.last_epoch = position
        scheduler._step_count = position + 1  # type: ignore[attr-defined]
        lrs = [
            base * fn(position)
            for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
        ]
        for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = lrs  # type: ignore[attr-defined]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while scheduler.last_epoch < position:
            scheduler.step()


def restore_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    tensors: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    what: str,
) -> int:
    """Load model and optimizer state into a freshly built ``bundle``; return the step.

    Hyperparameters stay those the bundle was built with (the spec); only the state
    and the scheduler *position* come from the checkpoint.
    """
    step = meta.step
    device = next(iter(model.state_dict().values())).device
    model_sd = {k: v.to(device) for k, v in model_tensors(tensors).items()}
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise MalformedArtefactError(what, f"model state does not fit the task: {exc}") from None
    if scheduler is not None:
        _fast_forward(scheduler, step)  # the position is the step, by contract
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid_text, key = name.split(".", 2)
        if not pid_text.isdigit() or int(pid_text) >= n_params:
            raise MalformedArtefactError(what, f"optimizer state for unknown parameter {name!r}")
        # a copy: the optimizer updates its state in place and must not alias the checkpoint
        state.setdefault(int(pid_text), {})[key] = value.detach().to(device, copy=True)
    current = optimizer.state_dict()
    try:
        optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as exc:
        raise MalformedArtefactError(what, f"optimizer state does not fit: {exc}") from None
    return step


def replay_steps(
    bundle: TaskBundle,
    tensors: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    what: str = "checkpoint",
    on_step: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Restore ``bundle`` from a checkpoint and replay the recorded ``steps``; return the
    captured state and the final step."""
    step = restore_state(bundle.model, bundle.optimizer, bundle.scheduler, tensors, meta, what)
    size = len(bundle.train_x)
    for st in steps:
        if st.indices and (min(st.indices) < 0 or max(st.indices) >= size):
            raise MalformedArtefactError(what, "segment index outside the dataset")
        run_step(bundle, torch.tensor(st.indices, dtype=torch.int64), st.seeds)
        step += 1
        if on_step is not None:
            on_step(step)
    state, _ = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, step)
    return state, step
