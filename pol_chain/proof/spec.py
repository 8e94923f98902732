"""Building run specs on the trainer's machine (the record itself is
:class:`pol_chain.format.TaskSpec`): environment facts and :func:`make_spec`."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from typing import Any

import torch

from pol_chain.format import DatasetCommitment, InitRule, TaskSpec
from pol_chain.proof.dataset import MerkleTree
from pol_chain.proof.task import TaskBundle, resolve_task, task_source_sha256

__all__ = ["TaskSpec", "commit_task_dataset", "environment_facts", "make_spec"]


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


def make_spec(
    entry: str,
    config: Mapping[str, Any] | None = None,
    *,
    init: InitRule | Mapping[str, Any] | None = None,
    device: str = "cpu",
    deterministic: bool = True,
) -> TaskSpec:
    """Build a spec for task ``entry``: merges the task's ``DEFAULT_CONFIG`` with ``config``,
    hashes the task source and commits to the dataset the task builds."""
    fn = resolve_task(entry)
    defaults = getattr(sys.modules[fn.__module__], "DEFAULT_CONFIG", {})
    cfg = {**defaults, **dict(config or {})}
    bundle = fn(cfg, torch.device("cpu"))
    commitment = commit_task_dataset(bundle)
    return TaskSpec(
        entry=entry,
        source_sha256=task_source_sha256(entry),
        config=cfg,
        init=InitRule.coerce(init),
        dataset=commitment,
        environment=environment_facts(device, deterministic),
    )
