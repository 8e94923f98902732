"""What a worker hands in: honest work, or one of the misbehaviours used by the tests,
the benchmark and the demo (``--byzantine RANK=BEHAVIOUR``; off by default).

Every misbehaving worker *declares the segment an honest worker would* (the batches and
seeds the run seed gives it), and its state carries the right step, so it passes every
check short of a replay — which is what a replay is for:

- ``random``: an update of random direction, each tensor with the honest update's norm;
- ``sign_flip``: the honest update negated; ``scale``: the honest update times 5
  (parameters and optimizer state; BatchNorm statistics left honest);
- ``lazy``: trains only the first ⌈H/2⌉ of its H steps;
- ``stale``: trains in its first round only, then resubmits that old update on every
  new base (a free rider);
- ``copier``: submits another worker's update (everything is public: the run seed gives
  every worker's batches, so it reproduces worker 1's work, or worker 2's if it is 1);
- ``off_shard``: trains its H steps on samples outside its shard;
- ``slow``: honest, after sleeping :data:`SLOW_SECONDS` (a straggler; for crash tests).

``RANK=B1,B2,…`` cycles through behaviours by round (``honest`` among them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch

from pol_chain.distributed.flags import BEHAVIOURS, UnknownBehaviour, parse_byzantine
from pol_chain.format import CheckpointMeta, DistributedPlan, SegmentStep
from pol_chain.proof.rounds import Schedule, State, train_local
from pol_chain.proof.seeds import derive_seed, make_generator
from pol_chain.proof.task import TaskBundle

__all__ = ["BEHAVIOURS", "SLOW_SECONDS", "Actor", "UnknownBehaviour", "parse_byzantine"]

SCALE = 5.0
SLOW_SECONDS = 3.0


class Actor:
    """Produces worker ``rank``'s submission of each round, per its behaviours."""

    def __init__(
        self,
        bundle: TaskBundle,
        schedule: Schedule,
        plan: DistributedPlan,
        run_seed: bytes,
        rank: int,
        behaviours: Sequence[str] = ("honest",),
    ) -> None:
        self.bundle, self.schedule, self.plan = bundle, schedule, plan
        self.run_seed, self.rank = run_seed, rank
        self.behaviours = tuple(behaviours) or ("honest",)
        self.params = {"model." + n for n, _ in bundle.model.named_parameters()}
        self._first: tuple[State, Mapping[str, torch.Tensor]] | None = None

    def behaviour(self, round_: int) -> str:
        """The behaviour of round ``round_``."""
        return self.behaviours[(round_ - 1) % len(self.behaviours)]

    def submit(
        self, round_: int, base: Mapping[str, torch.Tensor], base_meta: CheckpointMeta
    ) -> tuple[State, CheckpointMeta, tuple[SegmentStep, ...]]:
        """The state, its metadata and the declared steps of round ``round_``."""
        steps = self.schedule.steps(round_, self.rank)
        end = self.plan.end_step(round_)
        how = self.behaviour(round_)
        if how == "slow":
            time.sleep(SLOW_SECONDS)
        honest, meta = train_local(self.bundle, base, base_meta, steps, end)
        first = self._first
        if first is None:
            self._first = (honest, base)
        if how in ("honest", "slow") or (how == "stale" and first is None):
            return honest, meta, steps
        if how == "lazy":
            short = steps[: math.ceil(len(steps) / 2)]
            state, meta = train_local(self.bundle, base, base_meta, short, end)
        elif how == "copier":
            victim = 1 if self.rank != 1 else 2
            state, meta = train_local(
                self.bundle, base, base_meta, self.schedule.steps(round_, victim), end
            )
        elif how == "off_shard":
            state, meta = train_local(
                self.bundle, base, base_meta, self._off_shard(round_, steps), end
            )
        elif how == "stale":
            assert first is not None
            state = self._rebased(base, *first)
        else:
            state = self._transform(how, round_, base, honest)
        return state, meta, steps

    def _update_keys(self, honest: Mapping[str, torch.Tensor]) -> list[str]:
        return [
            k
            for k, v in honest.items()
            if v.is_floating_point() and (k in self.params or k.startswith("optim."))
        ]

    def _transform(
        self, how: str, round_: int, base: Mapping[str, torch.Tensor], honest: State
    ) -> State:
        out = dict(honest)
        gen = make_generator(derive_seed(self.run_seed, "byzantine-random", round_, self.rank))
        for k in self._update_keys(honest):
            start = base[k] if k in base else torch.zeros_like(honest[k])
            delta = honest[k] - start
            if how == "sign_flip":
                out[k] = start - delta
            elif how == "scale":
                out[k] = start + SCALE * delta
            else:  # random: a random direction with the honest update's norm
                noise = torch.randn(delta.shape, generator=gen, dtype=delta.dtype)
                size = float(noise.norm())
                out[k] = start + noise * (float(delta.norm()) / size if size > 0 else 0.0)
        return out

    @staticmethod
    def _rebased(
        base: Mapping[str, torch.Tensor], old: State, old_base: Mapping[str, torch.Tensor]
    ) -> State:
        """``old``'s update (``old - old_base``) applied to ``base``."""
        out: State = {}
        for k, v in old.items():
            start = base[k] if k in base else torch.zeros_like(v)
            before = old_base[k] if k in old_base else torch.zeros_like(v)
            out[k] = start + (v - before)
        return out

    def _off_shard(self, round_: int, steps: Sequence[SegmentStep]) -> tuple[SegmentStep, ...]:
        mine = set(self.schedule.shard(self.rank).tolist())
        others = torch.tensor(
            [i for i in range(self.schedule.size) if i not in mine], dtype=torch.int64
        )
        gen = make_generator(derive_seed(self.run_seed, "byzantine-off-shard", round_, self.rank))
        out = []
        for st in steps:
            pick = others[torch.randperm(len(others), generator=gen)[: len(st.indices)]]
            out.append(SegmentStep(st.step, tuple(pick.tolist()), st.seeds))
        return tuple(out)
