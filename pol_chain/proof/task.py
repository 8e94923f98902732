"""The task interface: an entry point ``module:function`` that builds a :class:`TaskBundle`.

A task function has the signature ``build(config: Mapping[str, Any], device) ->
TaskBundle``. It builds the model with torch's *global* generator (the engine seeds it
from the run seed's ``init`` sub-seed around the call), and everything else from the
config. The engine drives the loop: data order, augmentation and dropout randomness
come from the run seed, never from the task.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pol_chain.format import TaskSpec, to_hex
from pol_chain.proof.errors import SpecError

__all__ = [
    "TaskBundle",
    "TaskFn",
    "check_source",
    "configure_determinism",
    "resolve_task",
    "task_source_sha256",
]


@dataclass
class TaskBundle:
    """Everything a run needs, built from a config by a task function."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_x: torch.Tensor
    train_y: torch.Tensor
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    evaluate: Callable[[torch.nn.Module], float] | None = None


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
    """Raise :class:`SpecError` unless the spec's task resolves here and its local source
    hashes to the spec's."""
    resolve_task(spec.entry)
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
