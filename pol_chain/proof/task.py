"""The task interface: an entry point ``module:function`` that builds a :class:`TaskBundle`.

A task function has the signature ``build(config: Mapping[str, Any], device) ->
TaskBundle``. It builds the model with torch's *global* generator (the engine seeds it
from the run seed's ``init`` sub-seed around the call), and everything else from the
config. The engine drives the loop: data order, augmentation and dropout randomness
come from the run seed, never from the task.

**The step contract** (docs/proof.md "The step contract"). A task may give its own
training step, ``step(bundle, inp: StepInput) -> loss``; training and replay both call
it, so the code that trained is the code that replays. One call is one optimizer step:
the step zeroes the gradients, runs forward and backward over every micro-batch of
``inp.micro_batches`` (gradient accumulation), may clip, steps every optimizer and
scheduler once. The engine seeds torch's global RNG from ``inp.seeds["dropout"]`` before
the call; any other randomness must come from ``inp.generator(purpose)``. Everything the
step changes must be in the bundle's ``model``, ``optimizers``, ``schedulers`` or
``scaler``: that is the state captured at each checkpoint. A task that gives no step gets
:func:`pol_chain.proof.engine.default_step` (cross-entropy style ``loss_fn(model(x), y)``).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pol_chain.format import TaskSpec, to_hex
from pol_chain.proof.errors import SpecError

if TYPE_CHECKING:
    from pol_chain.proof.engine import ReplayJob

__all__ = [
    "SegmentReplayer",
    "StepFn",
    "StepInput",
    "TaskBundle",
    "TaskFn",
    "TrainerPlan",
    "check_source",
    "configure_determinism",
    "resolve_task",
    "task_source_sha256",
]


@dataclass(frozen=True)
class StepInput:
    """What one optimizer step gets: its number, its micro-batches (collated, in order),
    their sample indices, and the per-step seeds derived from the run seed."""

    step: int
    micro_batches: Sequence[Any]
    indices: Sequence[Sequence[int]]
    seeds: Mapping[str, int]

    def generator(
        self, purpose: str = "augment", device: str | torch.device = "cpu"
    ) -> torch.Generator:
        """A generator seeded with this step's ``purpose`` seed."""
        gen = torch.Generator(device=device)
        gen.manual_seed(int(self.seeds[purpose]))
        return gen


@dataclass(frozen=True)
class TrainerPlan:
    """What a framework task's own trainer settings fix of a run's shape (None: not
    fixed); registration checks it against the spec, so a run that its trainer would
    refuse is never registered."""

    micro_batches: int | None = None
    micro_batch_size: int | None = None
    total_steps: int | None = None

    def problem(self, spec: TaskSpec) -> str | None:
        """How the spec's config disagrees with these settings (None when it does not)."""
        wanted = (
            (self.micro_batches, spec.accumulation, "micro-batches a step"),
            (self.micro_batch_size, spec.micro_batch_size, "samples a micro-batch"),
            (self.total_steps, spec.total_steps, "optimizer steps"),
        )
        for task, run, what in wanted:
            if task is not None and task != run:
                return f"its trainer settings give {task} {what}, its config {run}"
        return None


@dataclass
class TaskBundle:
    """Everything a run needs, built from a config by a task function.

    ``optimizer``/``scheduler`` name the (first) optimizer and scheduler; ``optimizers``
    and ``schedulers`` list all of them (filled from the first when left empty). The
    data is ``dataset`` (map-style: ``dataset[i]`` is one sample, batched by ``collate``),
    or, for tasks that keep their data in two tensors, ``train_x``/``train_y``.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    evaluate: Callable[[torch.nn.Module], float] | None = None
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    dataset: Any = None
    collate: Callable[[list[Any]], Any] | None = None
    step: StepFn | None = None
    scaler: Any = None
    replayer: SegmentReplayer | None = None
    framework: Mapping[str, Any] = field(default_factory=dict)
    """What a framework's replayer depends on (``pol_chain.integrations``: the trainer
    settings the task fixes), read by training and replay alike."""
    plan: TrainerPlan = field(default_factory=TrainerPlan)
    """The run shape those trainer settings fix, checked against the spec."""

    def __post_init__(self) -> None:
        if not self.optimizers and self.optimizer is not None:
            self.optimizers = [self.optimizer]
        if self.optimizer is None and self.optimizers:
            self.optimizer = self.optimizers[0]
        if not self.schedulers and self.scheduler is not None:
            self.schedulers = [self.scheduler]
        if self.scheduler is None and self.schedulers:
            self.scheduler = self.schedulers[0]

    @property
    def size(self) -> int:
        """Number of training samples."""
        if self.dataset is not None:
            return len(self.dataset)
        return 0 if self.train_x is None else len(self.train_x)

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any]:
        """The task's ``collate``, or torch's ``default_collate`` when it gives none."""
        return self.collate or torch.utils.data.default_collate

    @property
    def data(self) -> Any:
        """The training data as a map-style dataset (a ``DataLoader`` can load it)."""
        if self.dataset is not None:
            return self.dataset
        assert self.train_x is not None and self.train_y is not None
        return torch.utils.data.TensorDataset(self.train_x, self.train_y)

    def sample(self, index: int) -> Any:
        """Training sample ``index`` (``(x, y)`` for tensor-pair tasks)."""
        if self.dataset is not None:
            return self.dataset[index]
        assert self.train_x is not None and self.train_y is not None
        return self.train_x[index], self.train_y[index]


StepFn = Callable[[TaskBundle, StepInput], Any]
"""A task's own training step (see the module docstring)."""

SegmentReplayer = Callable[
    [TaskBundle, Sequence["ReplayJob"]], Sequence[Mapping[str, torch.Tensor]]
]
"""A framework-driven replay (Lightning, Hugging Face), for tasks whose step is run by a
framework's own loop: ``(bundle, jobs) -> end tensors of each job``; every job starts
from its own checkpoint (``pol_chain.proof.engine.ReplayJob``)."""


TaskFn = Callable[[Mapping[str, Any], torch.device], TaskBundle]


def _split(entry: str) -> tuple[str, str]:
    module, sep, func = entry.partition(":")
    if not sep or not module or not func.isidentifier():
        raise SpecError(f"task entry point must be 'module:function', got {entry!r}")
    return module, func


def resolve_task(entry: str) -> TaskFn:
    """Import and return the task function named by ``entry`` (``module:function``)."""
    module_name, func = _split(entry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import task module {module_name!r}: {exc}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise SpecError(f"task module {module_name!r} has no function {func!r}")
    return fn  # type: ignore[no-any-return]


def task_source_sha256(entry: str) -> bytes:
    """Return SHA-256 of the source file of the task's module."""
    module_name, _ = _split(entry)
    try:
        module = importlib.import_module(module_name)
        path = inspect.getsourcefile(module)
    except (ImportError, TypeError) as exc:
        raise SpecError(f"cannot read source of {module_name!r}: {exc}") from None
    if path is None:
        raise SpecError(f"task module {module_name!r} has no source file")
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).digest()


def check_source(spec: TaskSpec) -> None:
    """For a v1 spec (no code bundle): raise :class:`SpecError` unless the spec's task
    resolves here and its local source file hashes to the spec's."""
    resolve_task(spec.entry)
    if spec.source_sha256 is None:
        raise SpecError("a v2 spec runs its committed code bundle, not installed code")
    local = task_source_sha256(spec.entry)
    if local != spec.source_sha256:
        raise SpecError(
            f"task source of {spec.entry} hashes to {to_hex(local)}, "
            f"spec commits {to_hex(spec.source_sha256)}"
        )


def configure_determinism(deterministic: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Set torch's determinism flags and thread count; return them as environment facts."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if threads is not None:
        torch.set_num_threads(threads)
    return {
        "deterministic": deterministic,
        "threads": torch.get_num_threads(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }
