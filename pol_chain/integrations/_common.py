"""What both framework integrations share: the missing-extra error, a check that the
trainer's settings are the task's, and the replay data of a segment."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import torch

from pol_chain.errors import PolchainError
from pol_chain.format import SegmentStep
from pol_chain.proof.engine import ReplayJob, TrainState
from pol_chain.proof.errors import MalformedArtefactError
from pol_chain.proof.task import TaskBundle

__all__ = [
    "IntegrationError",
    "MissingExtra",
    "SegmentPlan",
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


class SegmentPlan:
    """Several segments replayed in one run of a trainer: the run's optimizer steps are
    the segments' steps back to back; before a segment's first step its start checkpoint
    is restored, after its last its end state is captured (where the recorder captured
    it while training). Building a trainer costs more than a short segment's steps."""

    def __init__(self, jobs: Sequence[ReplayJob]) -> None:
        self._jobs = list(jobs)
        self._steps: list[SegmentStep] = []
        self._begins: dict[int, int] = {}  # run step → job
        self._ends: dict[int, int] = {}
        for n, job in enumerate(self._jobs):
            if job.steps:
                self._begins[len(self._steps)] = n
                self._steps.extend(job.steps)
                self._ends[len(self._steps) - 1] = n
        self.captured: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def total(self) -> int:
        """Optimizer steps of the whole run."""
        return len(self._steps)

    def step(self, step: int) -> SegmentStep:
        """The recorded step that is the run's ``step``."""
        return self._steps[step]

    def begin(self, step: int, state: TrainState) -> None:
        """Before the run's ``step``: restore a segment's start if it begins there."""
        n = self._begins.get(step)
        if n is not None:
            job = self._jobs[n]
            state.restore(job.start, job.meta, f"checkpoint {job.index - 1}")

    def end(self, step: int, state: TrainState) -> None:
        """After the run's ``step``: capture a segment's end state if it ends there."""
        n = self._ends.get(step)
        if n is not None:
            job = self._jobs[n]
            self.captured[n], _ = state.capture(job.meta.step + len(job.steps))

    def results(self) -> list[dict[str, torch.Tensor]]:
        """Each job's end state, in order (a job of no steps ends where it starts)."""
        if len(self.captured) != len(self._begins):
            raise MalformedArtefactError("segment", "the trainer stopped before the segment's end")
        return [self.captured.get(n, dict(job.start)) for n, job in enumerate(self._jobs)]
