"""Distributed training across untrusted workers, on ``torch.distributed``
(``docs/distributed.md``, ``docs/protocol.md`` §8).

A coordinator (rank 0, the model owner) and N workers train in rounds: every worker runs
H local steps of the task's step on its shard, with batches and seeds from the run seed,
and hands in its state and segment; the coordinator commits the round's submissions
on-chain, draws from the hash of the block that mined that commit which ones to replay
(probability p, and every outlying update), rejects those whose replay fails, averages
the rest, and commits the new global checkpoint. The finished run is a proof like any
other (``polchain verify``, the agent).

Launch it with ``polchain distributed TASK …`` (workers spawned on loopback), with
``torchrun … -m pol_chain.distributed TASK …`` (many machines), or from Python::

    from pol_chain.distributed import DistributedPlan, distributed_spec, register_run, run_local

    plan = DistributedPlan(workers=4, local_steps=5, rounds=10, check_probability=0.25)
    spec = distributed_spec("digits", plan)
    binding, spec = register_run(client, store, spec, out)         # a LedgerClient, a store
    result = run_local(spec, binding, out, client, store, byzantine={3: ["sign_flip"]})

People who start their own processes join a gloo group themselves and call
``Coordinator(spec, binding, out, client, store).run()`` on rank 0 and
``run_worker(rank)`` on the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pol_chain.distributed.coordinator import (
        Coordinator,
        DistributedResult,
        RoundSummary,
        WorkerStatus,
    )
    from pol_chain.distributed.flags import BEHAVIOURS, UnknownBehaviour, parse_byzantine
    from pol_chain.distributed.launch import (
        LocalWorkers,
        distributed_spec,
        init_group,
        run_local,
    )
    from pol_chain.distributed.outliers import OutlierRule, find_outliers
    from pol_chain.distributed.publish import RoundsPublisher, register_run
    from pol_chain.distributed.wire import PeerLost
    from pol_chain.distributed.worker import run_worker
    from pol_chain.format import DistributedPlan

__all__ = [
    "BEHAVIOURS",
    "Coordinator",
    "DistributedPlan",
    "DistributedResult",
    "LocalWorkers",
    "OutlierRule",
    "PeerLost",
    "RoundSummary",
    "RoundsPublisher",
    "UnknownBehaviour",
    "WorkerStatus",
    "distributed_spec",
    "find_outliers",
    "init_group",
    "parse_byzantine",
    "register_run",
    "run_local",
    "run_worker",
]

_WHERE = {
    "BEHAVIOURS": "pol_chain.distributed.flags",
    "UnknownBehaviour": "pol_chain.distributed.flags",
    "parse_byzantine": "pol_chain.distributed.flags",
    "Coordinator": "pol_chain.distributed.coordinator",
    "DistributedResult": "pol_chain.distributed.coordinator",
    "RoundSummary": "pol_chain.distributed.coordinator",
    "WorkerStatus": "pol_chain.distributed.coordinator",
    "LocalWorkers": "pol_chain.distributed.launch",
    "distributed_spec": "pol_chain.distributed.launch",
    "init_group": "pol_chain.distributed.launch",
    "run_local": "pol_chain.distributed.launch",
    "OutlierRule": "pol_chain.distributed.outliers",
    "find_outliers": "pol_chain.distributed.outliers",
    "RoundsPublisher": "pol_chain.distributed.publish",
    "register_run": "pol_chain.distributed.publish",
    "PeerLost": "pol_chain.distributed.wire",
    "run_worker": "pol_chain.distributed.worker",
    "DistributedPlan": "pol_chain.format",
}


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` on first access (PEP 562): the flags and the
    plan stay torch-free for the CLI."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
