"""Building run specs on the trainer's machine (the record itself is
:class:`pol_chain.format.TaskSpec`): environment facts, :func:`make_spec` (which packs the
task's code bundle and commits its dataset) and :func:`check_bundle`."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pol_chain.format import (
    ACCUMULATION,
    DatasetCommitment,
    InitRule,
    Locator,
    TaskSpec,
    to_hex,
    write_bundle,
)
from pol_chain.proof.bundle import collect_bundle
from pol_chain.proof.canonical import sha256
from pol_chain.proof.dataset import MerkleTree
from pol_chain.proof.errors import SpecError
from pol_chain.proof.task import TaskBundle, resolve_task

__all__ = [
    "TaskSpec",
    "bundle_bytes",
    "check_bundle",
    "commit_task_dataset",
    "environment_facts",
    "make_spec",
]


def environment_facts(device: str = "cpu", deterministic: bool = True) -> dict[str, Any]:
    """Return library versions, device and determinism flags (information only)."""
    facts: dict[str, Any] = {
        "deterministic": deterministic,
        "device": device,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["cuda"] = torch.version.cuda
    return facts


def commit_task_dataset(bundle: TaskBundle) -> DatasetCommitment:
    """The commitment to the samples a built task trains on."""
    from pol_chain.proof.runner import leaf_of_sample

    leaves = [leaf_of_sample(bundle.sample(i)) for i in range(bundle.size)]
    return DatasetCommitment(root=MerkleTree(leaves).root, size=len(leaves))


def bundle_bytes(entry: str, project: Path | str | None = None) -> bytes:
    """The code bundle of task ``entry`` packed from this machine's files."""
    return write_bundle(collect_bundle(entry, project))


def check_bundle(spec: TaskSpec, project: Path | str | None = None) -> None:
    """Raise :class:`SpecError` unless packing the spec's task here gives exactly its
    committed bundle (then running the installed code is running the committed code)."""
    if spec.bundle is None:
        raise SpecError("a v1 spec has no code bundle")
    local = sha256(bundle_bytes(spec.entry, project))
    if local != spec.bundle.sha256:
        raise SpecError(
            f"the task code of {spec.entry} here packs to {to_hex(local)}, the spec commits "
            f"{to_hex(spec.bundle.sha256)}"
        )


def make_spec(
    entry: str,
    config: Mapping[str, Any] | None = None,
    *,
    init: InitRule | Mapping[str, Any] | None = None,
    device: str = "cpu",
    deterministic: bool = True,
    project: Path | str | None = None,
    dataset: DatasetCommitment | None = None,
    data: Any = None,
) -> TaskSpec:
    """Build a spec for task ``entry``: merges the task's ``DEFAULT_CONFIG`` with
    ``config``, packs its code bundle (its digest and size; the CID is added when it is
    stored), and commits to the dataset the task builds (or takes ``dataset``, whose
    samples ``data`` holds: the task is then built on them). The task built is checked
    against the spec: a framework task whose trainer settings give another run shape
    (:class:`~pol_chain.proof.task.TrainerPlan`) is refused."""
    fn = resolve_task(entry)
    defaults = getattr(sys.modules[fn.__module__], "DEFAULT_CONFIG", {})
    cfg = {**defaults, **dict(config or {})}
    code = bundle_bytes(entry, project)
    built: TaskBundle | None = None
    if dataset is None:
        built = fn(cfg, torch.device("cpu"))
        dataset = commit_task_dataset(built)
    elif data is not None:
        built = fn(cfg, torch.device("cpu"), dataset=data)  # type: ignore[call-arg]
    spec = TaskSpec(
        entry=entry,
        config=cfg,
        init=InitRule.coerce(init),
        dataset=dataset,
        environment=environment_facts(device, deterministic),
        bundle=Locator(sha256(code), None, len(code)),
    )
    problem = built.plan.problem(spec) if built is not None else None
    if problem is not None:
        error = SpecError(f"task {entry}: {problem}")
        error.hint = (
            f"derive the trainer settings from the config ({ACCUMULATION}, batch_size, "
            "epochs), so that the two agree"
        )
        raise error
    return spec
