"""Starting a distributed run: the spec, worker processes on loopback, the process group.

- :func:`distributed_spec` — a task's spec with a :class:`~pol_chain.format.DistributedPlan`
  (the LR schedule spans the run's R·H global steps unless ``epochs`` is given);
- :class:`LocalWorkers` — N worker processes (``python -m pol_chain.distributed worker``)
  on 127.0.0.1, each logging to ``<log_dir>/worker-<rank>.log``;
- :func:`run_local` — workers spawned here, this process as rank 0 (the coordinator),
  the gloo group set up and torn down around :class:`~pol_chain.distributed.Coordinator`.

For many machines, launch the same module with ``torchrun`` (``docs/distributed.md``).
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from pol_chain.distributed.wire import GROUP_TIMEOUT
from pol_chain.errors import PolchainError
from pol_chain.format import DistributedPlan, RunBinding, TaskSpec

if TYPE_CHECKING:
    from pol_chain.distributed.coordinator import DistributedResult
    from pol_chain.ledger import LedgerClient
    from pol_chain.store import ArtefactStore

__all__ = ["LocalWorkers", "distributed_spec", "init_group", "run_local"]


def distributed_spec(
    task: str, plan: DistributedPlan, config: Mapping[str, Any] | None = None
) -> TaskSpec:
    """The spec of ``task`` (a name such as ``digits`` or ``module:function``) trained
    by ``plan``; ``epochs`` defaults to what the run's R·H steps cover."""
    from pol_chain.compose.registration import build_spec

    given = dict(config or {})
    spec = build_spec(task, plan.into_config(given))
    if "epochs" not in given:
        epochs = max(1, math.ceil(plan.rounds * plan.local_steps / max(1, spec.steps_per_epoch)))
        spec = spec.replace(config={"epochs": epochs})
    return spec


def init_group(
    rank: int,
    world_size: int,
    addr: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 300.0,
    store: dist.TCPStore | None = None,
) -> None:
    """Join the gloo process group whose rendezvous store rank 0 hosts at ``addr:port``
    (rank 0 may pass its own ``store``, e.g. one bound to a free port). The rendezvous
    waits ``startup_timeout``; the group's own timeout is
    :data:`~pol_chain.distributed.wire.GROUP_TIMEOUT` (every wait is bounded by the
    channel's deadlines instead)."""
    if store is None:
        store = dist.TCPStore(
            addr,
            port,
            world_size,
            rank == 0,
            datetime.timedelta(seconds=startup_timeout),
            wait_for_workers=False,
        )
    dist.init_process_group(
        "gloo",
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=GROUP_TIMEOUT),
    )


def master_store(world_size: int, startup_timeout: float = 300.0) -> dist.TCPStore:
    """Rank 0's rendezvous store on a free loopback port (``.port``), bound before any
    worker starts — so no other process can take the port in between."""
    return dist.TCPStore(
        "127.0.0.1",
        0,
        world_size,
        True,
        datetime.timedelta(seconds=startup_timeout),
        wait_for_workers=False,
    )


class LocalWorkers:
    """Worker processes 1..``workers`` on loopback, with their misbehaviours (``byzantine``
    maps a rank to its behaviours by round)."""

    def __init__(
        self,
        workers: int,
        byzantine: Mapping[int, Sequence[str]] | None = None,
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.byzantine = {int(k): tuple(v) for k, v in (byzantine or {}).items()}
        self.log_dir = Path(log_dir)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(env or {})}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, startup_timeout: float = 300.0) -> LocalWorkers:
        """Bind rank 0's rendezvous store to a free loopback port (:attr:`rendezvous`)
        and spawn every worker to join it; start them early, they import while the run
        is being registered."""
        if self.procs:
            return self
        self.rendezvous = master_store(self.workers + 1, startup_timeout)
        port = self.rendezvous.port
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for rank in range(1, self.workers + 1):
            cmd = [
                sys.executable,
                "-m",
                "pol_chain.distributed",
                "worker",
                "--rank",
                str(rank),
                "--world-size",
                str(self.workers + 1),
                "--master-port",
                str(port),
                "--parent-pid",
                str(os.getpid()),
            ]
            if rank in self.byzantine:
                cmd += ["--byzantine", f"{rank}={','.join(self.byzantine[rank])}"]
            with open(self.log_dir / f"worker-{rank}.log", "ab") as log:
                self.procs[rank] = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                )
        return self

    def log_tail(self, rank: int, size: int = 1500) -> str:
        """The end of worker ``rank``'s log."""
        try:
            return (self.log_dir / f"worker-{rank}.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> dict[int, int | None]:
        """Wait for the workers to exit (killing those still running after ``timeout``);
        their exit codes."""
        codes: dict[int, int | None] = {}
        for rank, proc in self.procs.items():
            try:
                codes[rank] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[rank] = proc.wait()
        return codes


def run_local(
    spec: TaskSpec,
    binding: RunBinding,
    proof_dir: Path,
    client: LedgerClient,
    store: ArtefactStore,
    *,
    byzantine: Mapping[int, Sequence[str]] | None = None,
    workers: LocalWorkers | None = None,
    startup_timeout: float = 300.0,
    **coordinator: Any,
) -> DistributedResult:
    """Run a registered distributed run with its workers as local processes and this
    process as the coordinator; ``coordinator`` takes :class:`Coordinator`'s options.
    Pass ``workers`` (started early, or not yet) to reach the worker processes."""
    from pol_chain.distributed.coordinator import Coordinator

    plan = DistributedPlan.of_config(spec.config)
    if plan is None:
        raise PolchainError("the spec has no distributed plan", hint="use distributed_spec()")
    if dist.is_initialized():
        raise PolchainError("a process group is already set up in this process")
    local = workers or LocalWorkers(plan.workers, byzantine, log_dir=Path(proof_dir) / "logs")
    if local.workers != plan.workers:
        raise PolchainError(f"{local.workers} worker processes for a plan of {plan.workers}")
    local.start(startup_timeout)
    ok = False
    try:
        try:
            init_group(0, plan.workers + 1, store=local.rendezvous)
        except (RuntimeError, ValueError) as exc:
            tails = "\n".join(f"worker {r}: {local.log_tail(r, 400)}" for r in local.procs)
            raise PolchainError(f"the workers did not join: {exc}\n{tails}") from None
        try:
            result = Coordinator(spec, binding, Path(proof_dir), client, store, **coordinator).run()
            ok = True
            return result
        finally:
            local.stop(timeout=20.0 if ok else 1.0)  # before the group goes: no pending peer
            dist.destroy_process_group()
    finally:
        local.stop(timeout=1.0)
