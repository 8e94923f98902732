"""What both framework integrations share: the missing-extra error, a check that the
trainer's settings are the task's, and the replay data of a segment."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import torch

from pol_chain.errors import PolchainError
from pol_chain.proof.errors import MalformedArtefactError
from pol_chain.proof.task import TaskBundle

__all__ = [
    "IntegrationError",
    "MissingExtra",
    "check_settings",
    "import_extra",
    "replay_loader",
    "segment_batches",
]


class MissingExtra(PolchainError, ImportError):
    """The framework an integration needs is not installed."""

    exit_code = 3


class IntegrationError(PolchainError):
    """A framework run that pol_chain cannot record so that it replays exactly."""

    exit_code = 2


def import_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming the pol_chain extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{module} is not installed ({exc})",
            hint=f"pip install 'pol_chain[{extra}]'",
        ) from None


def check_settings(framework: str, wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Raise :class:`IntegrationError` unless every setting the replay depends on is the
    task's: a trainer configured differently from its task would record a run its own
    verifier refutes."""
    wrong = {k: (v, actual.get(k)) for k, v in wanted.items() if actual.get(k) != v}
    if wrong:
        text = ", ".join(
            f"{k}={got!r} (the task says {want!r})" for k, (want, got) in wrong.items()
        )
        raise IntegrationError(
            f"the {framework} trainer's settings differ from the task's: {text}",
            hint="build the trainer from the task's settings; replay uses the task's",
        )


def segment_batches(steps: Sequence[Any], accumulation: int) -> list[list[int]]:
    """The recorded micro-batches of ``steps``, in order; every step must have the
    task's ``accumulation`` of them (else the segment is malformed)."""
    if any(len(st.batches) != accumulation for st in steps):
        raise MalformedArtefactError(
            "segment", f"every step of this task has {accumulation} micro-batches"
        )
    return [list(mb) for st in steps for mb in st.batches]


def replay_loader(bundle: TaskBundle, batches: list[list[int]]) -> torch.utils.data.DataLoader[Any]:
    """A ``DataLoader`` over exactly these micro-batches of the task's data, in order."""
    return torch.utils.data.DataLoader(
        bundle.data, batch_sampler=batches, collate_fn=bundle.collate_fn
    )
