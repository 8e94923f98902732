"""``python -m pol_chain.distributed``: a worker process, or every rank under torchrun.

Worker (what :class:`~pol_chain.distributed.LocalWorkers` spawns)::

    python -m pol_chain.distributed worker --rank R --world-size W --master-port P \
        [--master-addr A] [--byzantine R=BEHAVIOUR]

torchrun (every rank runs the same command; rank 0 coordinates, with the ``polchain``
settings of its environment — ``POLCHAIN_RPC_URL``, ``POLCHAIN_CONTRACT_ADDRESS`` …;
ranks 1.. are the workers, ``--workers`` is ``WORLD_SIZE - 1``)::

    torchrun --nnodes 2 --nproc-per-node 3 --rdzv-endpoint HOST:29500 \
        -m pol_chain.distributed digits --rounds 10 --local-steps 5 \
        --check-probability 0.25 --out runs/dist [--byzantine 4=sign_flip]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


def _orphan_watch(parent: int) -> None:
    """Exit as soon as the launching process is gone (a local worker must not outlive
    the coordinator that spawned it, even one killed before the rendezvous)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="polchain-orphan-watch", daemon=True).start()


def _worker(args: argparse.Namespace, rank: int) -> int:
    from pol_chain.distributed.behaviours import parse_byzantine
    from pol_chain.distributed.worker import run_worker

    behaviours = parse_byzantine(args.byzantine or [], max(rank, 4096)).get(rank, ("honest",))
    return run_worker(rank, behaviours, idle_timeout=args.idle_timeout, log=_log)


def _coordinator(args: argparse.Namespace, world_size: int) -> None:
    from pol_chain.compose.context import open_ledger, open_store
    from pol_chain.config import load_settings
    from pol_chain.distributed.coordinator import Coordinator
    from pol_chain.distributed.launch import distributed_spec
    from pol_chain.distributed.publish import register_run
    from pol_chain.format import DistributedPlan

    plan = DistributedPlan(
        workers=world_size - 1,
        local_steps=args.local_steps,
        rounds=args.rounds,
        check_probability=args.check_probability,
        max_rejections=args.max_rejections,
        verify=not args.no_verify,
    )
    settings = load_settings()
    client, store = open_ledger(settings), open_store(settings)
    spec = distributed_spec(args.task, plan)
    out = Path(args.out)
    binding, spec = register_run(client, store, spec, out)
    _log(f"registered run {binding.run_id}")
    result = Coordinator(
        spec, binding, out, client, store, round_timeout=args.round_timeout, log=_log
    ).run()
    print(json.dumps(result.to_json(), indent=2, sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    import torch.distributed as dist

    from pol_chain.distributed.launch import init_group
    from pol_chain.distributed.wire import GROUP_TIMEOUT
    from pol_chain.errors import PolchainError

    parser = argparse.ArgumentParser(prog="python -m pol_chain.distributed")
    parser.add_argument("task", help="'worker', or the task to train (under torchrun)")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world-size", type=int)
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int)
    parser.add_argument("--byzantine", action="append", metavar="RANK=BEHAVIOUR")
    parser.add_argument("--idle-timeout", type=float, default=3600.0)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--check-probability", type=float, default=0.25)
    parser.add_argument("--max-rejections", type=int, default=2)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--round-timeout", type=float, default=120.0)
    parser.add_argument("--out", default="runs/distributed")
    args = parser.parse_args(argv)
    torchrun = "RANK" in os.environ and args.rank is None
    if args.parent_pid:
        _orphan_watch(args.parent_pid)
    if args.task == "worker" or int(os.environ.get("RANK", "0")) > 0:
        # the slow first steps (imports, torch's determinism switch: ~1.5 s) before the
        # rendezvous, while rank 0 still builds and registers the run
        import pol_chain.distributed.worker  # noqa: F401
        from pol_chain.proof.task import configure_determinism

        configure_determinism(True)
    try:
        if torchrun:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=GROUP_TIMEOUT))
        else:
            if args.task != "worker" or None in (args.rank, args.world_size, args.master_port):
                parser.error("outside torchrun: worker --rank R --world-size W --master-port P")
            rank, world = args.rank, args.world_size
            init_group(rank, world, args.master_addr, args.master_port)
        if rank > 0:
            _worker(args, rank)
            sys.stderr.flush()
            os._exit(0)  # done: skip tearing torch and gloo down (seconds, for nothing)
        try:
            _coordinator(args, world)
        finally:
            dist.destroy_process_group()
    except PolchainError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
