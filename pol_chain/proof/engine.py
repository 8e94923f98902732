"""The training step, data order, and full-state capture / restore.

Training and replay run the same step (:func:`run_step`: the task's own step, or
:func:`default_step`), so replay on the same hardware in deterministic mode is bitwise
identical. The full state (:class:`TrainState`) is the model's parameters and buffers
(``model.<name>``), every optimizer's state (``optim.<param index>.<key>`` for the first,
``optim<o>.<param index>.<key>`` for optimizer o ≥ 1), and a gradient scaler's scale and
growth tracker (``scaler.*``); metadata carries the step, the scheduler position and
(information only) the learning rates. Hyperparameters always stay those the task was
built with from the spec; only state and the scheduler *position* come from a checkpoint.
"""

from __future__ import annotations

import os
import resource
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pol_chain.format import CheckpointMeta, SegmentStep
from pol_chain.proof.errors import CannotVerify, MalformedArtefactError
from pol_chain.proof.seeds import derive_seed, epoch_permutation, make_generator, seed_global_rng
from pol_chain.proof.task import StepInput, TaskBundle

__all__ = [
    "ReplayJob",
    "RunBatchSampler",
    "StepSampler",
    "TrainState",
    "as_micro_batches",
    "capture_state",
    "check_order_fits",
    "default_step",
    "model_tensors",
    "replay_segments",
    "replay_steps",
    "restore_state",
    "run_step",
    "step_seeds",
]

Batches = torch.Tensor | Sequence[int] | Sequence[Sequence[int]]


ORDER_BYTES_PER_SAMPLE = 48
"""What a run's data order costs per sample (an int64 permutation and its Python list)."""


def check_order_fits(size: int) -> None:
    """Raise :class:`CannotVerify` when the data order of ``size`` samples would take more
    than half the memory this process may use: checked before anything is allocated, so
    a spec claiming 2^40 samples cannot take its verifier down (docs/protocol.md §4)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    have = physical if soft == resource.RLIM_INFINITY else min(physical, soft)
    need = size * ORDER_BYTES_PER_SAMPLE
    if need > have // 2:
        raise CannotVerify(
            f"the run's data order over {size} samples needs about {need >> 20} MiB, "
            f"more than half of the {have >> 20} MiB this verifier may use",
            hint="verify on a machine with more memory",
        )


class StepSampler:
    """Batches of data indices per step, derived from the run seed (one permutation per
    epoch, last partial batch dropped); each batch splits into ``accumulation`` equal
    micro-batches in order."""

    def __init__(
        self, run_seed: bytes, size: int, batch_size: int, epochs: int, accumulation: int = 1
    ) -> None:
        self.run_seed, self.size, self.batch_size, self.epochs = run_seed, size, batch_size, epochs
        self.accumulation = accumulation
        self.steps_per_epoch = size // batch_size
        self.total_steps = epochs * self.steps_per_epoch
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)
        self._order: list[int] = []  # _perm as Python ints: loops slice it every step

    @classmethod
    def of(cls, spec: Any, run_seed: bytes) -> StepSampler:
        """The sampler of a :class:`~pol_chain.format.TaskSpec`."""
        return cls(run_seed, spec.dataset.size, spec.batch_size, spec.epochs, spec.accumulation)

    def _epoch_of(self, step: int) -> int:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm, self._epoch = epoch_permutation(self.run_seed, epoch, self.size), epoch
            self._order = self._perm.tolist()
        return pos * self.batch_size

    def batch(self, step: int) -> torch.Tensor:
        """Return the int64 indices of ``step`` (0-based)."""
        start = self._epoch_of(step)
        return self._perm[start : start + self.batch_size]

    def micro_batches(self, step: int) -> list[list[int]]:
        """The micro-batches of ``step``: its batch cut into ``accumulation`` equal parts."""
        start = self._epoch_of(step)
        size = self.batch_size // self.accumulation
        order = self._order
        return [order[start + i * size : start + (i + 1) * size] for i in range(self.accumulation)]

    def steps(self, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(step, indices)`` from ``start`` to the end of training."""
        for step in range(start, self.total_steps):
            yield step, self.batch(step)


class RunBatchSampler(torch.utils.data.Sampler[list[int]]):
    """The run's data order as a ``batch_sampler`` for a ``DataLoader``: every
    micro-batch of steps ``start`` … ``stop - 1``, in order (worker processes keep the
    order; augmentation must not happen in them — see the step contract)."""

    def __init__(self, sampler: StepSampler, start: int = 0, stop: int | None = None) -> None:
        self.sampler = sampler
        self.start = start
        self.stop = sampler.total_steps if stop is None else min(stop, sampler.total_steps)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield from self.sampler.micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.sampler.accumulation


def step_seeds(run_seed: bytes, step: int) -> dict[str, int]:
    """Return the per-step seeds (augmentation, dropout) of ``step``."""
    return {
        "augment": derive_seed(run_seed, "augment", step),
        "dropout": derive_seed(run_seed, "dropout", step),
    }


def as_micro_batches(indices: Batches) -> list[list[int]]:
    """Indices as a list of micro-batches (flat indices are one micro-batch)."""
    if isinstance(indices, torch.Tensor):
        return [indices.tolist()] if indices.dim() <= 1 else [r.tolist() for r in indices]
    items: list[Any] = list(indices)
    if items and not isinstance(items[0], int) and not isinstance(items[0], torch.Tensor):
        return [list(map(int, mb)) for mb in items]
    return [list(map(int, items))]


def _collate(bundle: TaskBundle, indices: list[int]) -> Any:
    if bundle.dataset is None and bundle.train_x is not None and bundle.train_y is not None:
        idx = torch.as_tensor(indices, dtype=torch.int64).to(
            bundle.train_x.device, non_blocking=True
        )
        return bundle.train_x[idx], bundle.train_y[idx]
    return bundle.collate_fn([bundle.sample(i) for i in indices])


def default_step(bundle: TaskBundle, inp: StepInput) -> torch.Tensor:
    """The step of tasks that give none: ``loss_fn(model(augment(x)), y)`` over each
    micro-batch (losses weighted by micro-batch size), one optimizer and scheduler step."""
    assert bundle.loss_fn is not None, "a task without its own step needs a loss_fn"
    device = next(bundle.model.parameters()).device
    gen = make_generator(int(inp.seeds["augment"])) if bundle.augment is not None else None
    bundle.model.train()
    total = sum(len(i) for i in inp.indices)
    many = len(inp.micro_batches) > 1
    losses: list[torch.Tensor] = []
    for optimizer in bundle.optimizers:
        optimizer.zero_grad(set_to_none=True)
    for batch, indices in zip(inp.micro_batches, inp.indices, strict=True):
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if gen is not None and bundle.augment is not None:
            x = bundle.augment(x, gen)
        loss = bundle.loss_fn(bundle.model(x), y)
        if many:  # one micro-batch stays bitwise today's plain step
            loss = loss * (len(indices) / total)
        loss.backward()
        losses.append(loss.detach())
    for optimizer in bundle.optimizers:
        optimizer.step()
    for scheduler in bundle.schedulers:
        scheduler.step()
    return losses[0] if not many else torch.stack(losses).sum()


def run_step(
    bundle: TaskBundle,
    indices: Batches,
    seeds: Mapping[str, int],
    step: int = 0,
    *,
    batches: Sequence[Any] | None = None,
) -> Any:
    """Run one optimizer step on ``indices`` (flat: one micro-batch; a list of lists:
    its micro-batches) with the task's step (or :func:`default_step`); return its loss,
    left on the device so callers decide when to synchronize. ``batches`` are those
    micro-batches already collated (e.g. by a ``DataLoader`` over the run's
    ``batch_sampler``); by default they are collated here from the task's dataset."""
    micro = as_micro_batches(indices)
    if batches is None:
        batches = [_collate(bundle, mb) for mb in micro]
    elif len(batches) != len(micro):
        raise ValueError(f"{len(batches)} batches for {len(micro)} micro-batches")
    seed_global_rng(int(seeds["dropout"]))
    inp = StepInput(step=step, micro_batches=batches, indices=micro, seeds=dict(seeds))
    loss = (bundle.step or default_step)(bundle, inp)
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def _lr(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _prefix(o: int) -> str:
    return "optim." if o == 0 else f"optim{o}."


@dataclass
class TrainState:
    """The stateful parts one training step touches; captured at every checkpoint."""

    model: torch.nn.Module
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    scaler: Any = None

    @classmethod
    def of(cls, bundle: TaskBundle) -> TrainState:
        """The state of a task bundle."""
        return cls(bundle.model, list(bundle.optimizers), list(bundle.schedulers), bundle.scaler)

    def capture(self, step: int) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
        """The full state as ``({name: tensor clone on its device}, metadata)``."""
        tensors: dict[str, torch.Tensor] = {}
        lrs: list[float | None] = []
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                tensors[f"model.{name}"] = t.detach().clone()
            for o, optimizer in enumerate(self.optimizers):
                opt = optimizer.state_dict()
                for pid, state in opt["state"].items():
                    for key, value in state.items():
                        name = f"{_prefix(o)}{pid}.{key}"
                        if isinstance(value, torch.Tensor):
                            tensors[name] = value.detach().clone()
                        elif value is not None:
                            tensors[name] = torch.tensor(float(value), dtype=torch.float64)
                lrs.extend(_lr(g.get("lr")) for g in opt["param_groups"])
            if self.scaler is not None and self.scaler.is_enabled():
                sd = self.scaler.state_dict()
                tensors["scaler.scale"] = torch.tensor(float(sd["scale"]), dtype=torch.float64)
                tensors["scaler.growth_tracker"] = torch.tensor(
                    int(sd["_growth_tracker"]), dtype=torch.int64
                )
        first = self.schedulers[0] if self.schedulers else None
        position = step if first is None else int(getattr(first, "last_epoch", step))
        return tensors, CheckpointMeta(step=step, scheduler_position=position, lr=tuple(lrs))

    def restore(self, tensors: Mapping[str, torch.Tensor], meta: CheckpointMeta, what: str) -> int:
        """Load a checkpoint's state; return its step. The scheduler position is the step
        by contract; hyperparameters stay the task's (the spec's)."""
        step = meta.step
        device = next(iter(self.model.state_dict().values())).device
        model_sd = {k: v.to(device) for k, v in model_tensors(tensors).items()}
        try:
            self.model.load_state_dict(model_sd, strict=True)
        except RuntimeError as exc:
            raise MalformedArtefactError(
                what, f"model state does not fit the task: {exc}"
            ) from None
        for scheduler in self.schedulers:
            _fast_forward(scheduler, step)
        states: list[dict[int, dict[str, Any]]] = [{} for _ in self.optimizers]
        counts = [sum(len(g["params"]) for g in o.param_groups) for o in self.optimizers]
        for name, value in tensors.items():
            if name.startswith(("model.", "scaler.")):
                continue
            head, _, rest = name.partition(".")
            o = 0 if head == "optim" else int(head[5:]) if head[5:].isdigit() else -1
            pid_text, _, key = rest.partition(".")
            if not head.startswith("optim") or not 0 <= o < len(self.optimizers) or not key:
                raise MalformedArtefactError(what, f"state for unknown part {name!r}")
            if not pid_text.isdigit() or int(pid_text) >= counts[o]:
                raise MalformedArtefactError(
                    what, f"optimizer state for unknown parameter {name!r}"
                )
            # a copy: the optimizer updates its state in place and must not alias the checkpoint
            states[o].setdefault(int(pid_text), {})[key] = value.detach().to(device, copy=True)
        for optimizer, state in zip(self.optimizers, states, strict=True):
            current = optimizer.state_dict()
            try:
                optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
            except (RuntimeError, ValueError, KeyError) as exc:
                raise MalformedArtefactError(what, f"optimizer state does not fit: {exc}") from None
        if self.scaler is not None and self.scaler.is_enabled():
            if "scaler.scale" not in tensors:
                raise MalformedArtefactError(what, "the gradient scaler's state is missing")
            sd = self.scaler.state_dict()
            sd["scale"] = float(tensors["scaler.scale"])
            sd["_growth_tracker"] = int(tensors.get("scaler.growth_tracker", torch.tensor(0)))
            self.scaler.load_state_dict(sd)
        return step


def capture_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    step: int,
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The full state of a model with (at most) one optimizer and scheduler."""
    state = TrainState(model, [optimizer] if optimizer else [], [scheduler] if scheduler else [])
    return state.capture(step)


def restore_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    tensors: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    what: str,
) -> int:
    """Load a checkpoint into a model with (at most) one optimizer and scheduler."""
    state = TrainState(model, [optimizer] if optimizer else [], [scheduler] if scheduler else [])
    return state.restore(tensors, meta, what)


def is_counter(name: str) -> bool:
    """Whether checkpoint tensor ``name`` is a count, not a position: an optimizer's
    per-parameter ``step`` (Adam's, stored as a float) or a gradient scaler's scale.
    Replay reproduces them exactly on any machine; as distances they would swamp the
    update (AdamW's ``step`` grows by k in every parameter tensor each segment)."""
    if name == "scaler.scale":
        return True
    head, _, rest = name.partition(".")
    return head.startswith("optim") and rest.endswith(".step")


def model_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the model part of a checkpoint's tensors, ``model.`` prefix stripped."""
    return {k[6:]: v for k, v in state.items() if k.startswith("model.")}


def _fast_forward(scheduler: Any, position: int) -> None:
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


@dataclass(frozen=True)
class ReplayJob:
    """Replay segment ``index``: ``steps`` from the checkpoint ``(start, meta)``."""

    index: int
    start: Mapping[str, torch.Tensor]
    meta: CheckpointMeta
    steps: Sequence[SegmentStep]


def _check_indices(bundle: TaskBundle, steps: Sequence[SegmentStep], what: str) -> None:
    size = bundle.size
    for st in steps:
        if st.indices and (min(st.indices) < 0 or max(st.indices) >= size):
            raise MalformedArtefactError(what, "segment index outside the dataset")


def _replay_framework(
    bundle: TaskBundle, jobs: Sequence[ReplayJob]
) -> list[dict[str, torch.Tensor]]:
    assert bundle.replayer is not None
    states = [dict(s) for s in bundle.replayer(bundle, jobs)]
    if len(states) != len(jobs):
        raise RuntimeError(f"the task's replayer returned {len(states)} states for {len(jobs)}")
    return states


def replay_steps(
    bundle: TaskBundle,
    tensors: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    steps: Sequence[SegmentStep],
    what: str = "checkpoint",
    on_step: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Restore ``bundle`` from a checkpoint and replay the recorded ``steps``; return the
    captured state and the final step. A task run by a framework's loop replays through
    its :attr:`~pol_chain.proof.task.TaskBundle.replayer`."""
    _check_indices(bundle, steps, what)
    if bundle.replayer is not None:
        end = meta.step + len(steps)
        return _replay_framework(bundle, [ReplayJob(0, tensors, meta, steps)])[0], end
    state = TrainState.of(bundle)
    step = state.restore(tensors, meta, what)
    for st in steps:
        run_step(bundle, [list(b) for b in st.batches], st.seeds, step)
        step += 1
        if on_step is not None:
            on_step(step)
    captured, _ = state.capture(step)
    return captured, step


def replay_segments(bundle: TaskBundle, jobs: Sequence[ReplayJob]) -> list[dict[str, torch.Tensor]]:
    """Replay every job from its own start checkpoint; return the states reached, in
    order. A framework-run task replays them all in one run of its trainer (building a
    trainer costs more than a short segment's steps); a format error names no job then:
    replay the jobs one by one to learn which."""
    if bundle.replayer is not None:
        for job in jobs:
            _check_indices(bundle, job.steps, f"segment {job.index}")
        return _replay_framework(bundle, jobs) if jobs else []
    return [  # replay_steps checks each job's indices
        replay_steps(bundle, job.start, job.meta, job.steps, f"segment {job.index}")[0]
        for job in jobs
    ]
