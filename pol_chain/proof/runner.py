"""Running a proof's task code for its verifier: W0, the dataset's leaves, replays.

The verifier checks everything itself (digests, leaves, data order, membership, the
distances between states) and asks a :class:`TaskRunner` only for what needs the task's
code: the initial model the run seed gives, the leaves of the samples the task trains on,
and the states its step reaches from a checkpoint over a segment. :class:`InProcessRunner`
runs the code in this process (for one's own proofs, calibration and tests);
:class:`pol_chain.sandbox.SandboxRunner` runs a proof's code bundle in a sandbox, which
is what an agent does with anyone else's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from pol_chain.format import FormatError, TaskSpec
from pol_chain.proof.dataset import structured_leaf
from pol_chain.proof.engine import ReplayJob, replay_segments
from pol_chain.proof.errors import CannotVerify, CodeFailure, ProofError, task_error_kind
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.task import TaskBundle

__all__ = [
    "ContainedRunner",
    "InProcessRunner",
    "ReplayJob",
    "ReplayResult",
    "TaskRunner",
    "leaf_of_sample",
    "run_task_code",
]

State = dict[str, torch.Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class ReplayResult:
    """The state a replay reached, or the format error the proof's data caused."""

    state: State | None = None
    error: FormatError | None = None


@runtime_checkable
class TaskRunner(Protocol):
    """What a verifier needs of a proof's task code."""

    def initial_model(self) -> State:
        """The model's tensors right after the task is built from the run seed (W0)."""
        ...

    def dataset_size(self) -> int:
        """How many samples the task trains on."""
        ...

    def sample_leaves(self) -> list[bytes]:
        """The leaf of every training sample, in index order."""
        ...

    def replay(self, jobs: Sequence[ReplayJob]) -> dict[int, ReplayResult]:
        """Replay every job; ``{segment index: result}``."""
        ...

    def close(self) -> None:
        """Release what the runner holds (scratch folders)."""
        ...


def leaf_of_sample(sample: Any) -> bytes:
    """The dataset leaf of one sample as a task's dataset returns it (a pair, a tensor, a
    tuple or a dict of tensors: see :func:`pol_chain.proof.dataset.structured_leaf`)."""
    return structured_leaf(sample)


class InProcessRunner:
    """Runs the spec's task in this process (trusted code: one's own, or installed)."""

    def __init__(
        self,
        spec: TaskSpec,
        run_seed: bytes,
        device: str = "cpu",
        parent_model: bytes | None = None,
        dataset: tuple[torch.Tensor, torch.Tensor] | None = None,
        shards: Any = None,
    ) -> None:
        """``shards`` is the committed dataset (a ShardDataset) of a sharded spec;
        ``dataset`` replaces a tensor-pair task's data (what a forger claims it used)."""
        self.spec = spec
        self.bundle: TaskBundle = build_bundle(spec, run_seed, device, parent_model, shards)
        self._w0 = {k: v.detach().clone() for k, v in self.bundle.model.state_dict().items()}
        if dataset is not None:  # replay on other data (what a forger claims it used)
            assert self.bundle.train_x is not None and self.bundle.train_y is not None
            xs, ys = dataset
            self.bundle.train_x = xs.to(self.bundle.train_x.device)
            self.bundle.train_y = ys.to(self.bundle.train_y.device)

    def initial_model(self) -> State:
        """W0 of the task built from the run seed."""
        return dict(self._w0)

    def dataset_size(self) -> int:
        """Samples of the task's dataset."""
        return self.bundle.size

    def sample_leaves(self) -> list[bytes]:
        """Leaves of the task's samples (none for a committed dataset: the verifier opens
        its shards itself)."""
        if self.spec.dataset.sharded:
            return []
        return [leaf_of_sample(self.bundle.sample(i)) for i in range(self.bundle.size)]

    def replay(self, jobs: Sequence[ReplayJob]) -> dict[int, ReplayResult]:
        """Replay each job with the task's own step; a framework task replays them all in
        one run of its trainer. The proof's format errors are results, the task code's
        errors are raised."""
        if self.bundle.replayer is not None and len(jobs) > 1:
            try:
                states = replay_segments(self.bundle, jobs)
            except FormatError:
                pass  # one job's data is malformed: replay them one by one to learn which
            else:
                return {
                    job.index: ReplayResult(state=s) for job, s in zip(jobs, states, strict=True)
                }
        out: dict[int, ReplayResult] = {}
        for job in jobs:
            try:
                state = replay_segments(self.bundle, [job])[0]
            except FormatError as exc:
                out[job.index] = ReplayResult(error=exc)
                continue
            out[job.index] = ReplayResult(state=state)
        return out

    def close(self) -> None:
        """Nothing to release in-process."""


def run_task_code(what: str, call: Callable[[], T]) -> T:
    """Run task code for a verifier; what it raises is judged the way the sandbox judges
    it (docs/protocol.md §4). The proof engine's own errors pass through; running out of
    memory or lacking a library is this machine's trouble (:class:`CannotVerify`); any
    other error is tried once more: the same error twice is the committed code failing on
    its committed config (:class:`CodeFailure`, a verdict), two different ones no verdict.
    """
    first: tuple[str, str] | None = None
    for _ in range(2):
        try:
            return call()
        except (ProofError, FormatError):
            raise
        except Exception as exc:  # noqa: BLE001 - the task's code: judged, never raised raw
            kind = task_error_kind(exc)
            said = (type(exc).__name__, str(exc)[:500])
            if kind != "code":
                raise CannotVerify(
                    f"this machine cannot {what}: {said[0]}: {said[1]}",
                    hint="verify on a machine with more memory, or with the task's libraries",
                ) from exc
            if first is not None and said != first:
                raise CannotVerify(
                    f"the task's code failed two different ways to {what}: "
                    f"{first[0]}: {first[1]} / {said[0]}: {said[1]}"
                ) from exc
            if first is not None:
                raise CodeFailure(
                    f"the task's code fails to {what} on the committed config: {said[0]}: {said[1]}"
                ) from exc
            first = said
    raise AssertionError("unreachable")


class ContainedRunner:
    """An :class:`InProcessRunner` whose task code's errors are judged by
    :func:`run_task_code` instead of escaping the verifier."""

    def __init__(self, inner: InProcessRunner) -> None:
        self.inner = inner

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> ContainedRunner:
        """Build the task (an :class:`InProcessRunner` of these arguments), contained."""
        return cls(run_task_code("build the task", lambda: InProcessRunner(*args, **kwargs)))

    def initial_model(self) -> State:
        """W0 of the task built from the run seed."""
        return self.inner.initial_model()

    def dataset_size(self) -> int:
        """Samples of the task's dataset."""
        return run_task_code("size its dataset", self.inner.dataset_size)

    def sample_leaves(self) -> list[bytes]:
        """Leaves of the task's samples."""
        return run_task_code("read its dataset", self.inner.sample_leaves)

    def replay(self, jobs: Sequence[ReplayJob]) -> dict[int, ReplayResult]:
        """Replay every job with the task's own step."""
        return run_task_code("replay its step", lambda: self.inner.replay(jobs))

    def close(self) -> None:
        """Release the inner runner."""
        self.inner.close()
