"""A worker (ranks 1..N): told the run once, then trains H local steps per round.

The worker trusts nothing it is not able to check: it recomputes the run seed from the
chain facts in the hello (never receives a seed), requires the spec bytes to hash to the
announced digest and its own task source to hash like the spec's, and parses every
state it receives with the bounded checkpoint parser. Its data order and seeds come from
the run seed (:class:`pol_chain.proof.rounds.Schedule`); its step is the task's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from pol_chain.commitment import run_seed as compute_run_seed
from pol_chain.distributed.behaviours import Actor
from pol_chain.distributed.wire import HELLO, STOP, SUBMIT, TRAIN, Channel, Limits
from pol_chain.errors import PolchainError
from pol_chain.format import DistributedPlan, Hello, Segment, TaskSpec
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.rounds import Schedule
from pol_chain.proof.serialization import load_checkpoint_bytes, serialize_state
from pol_chain.proof.spec import check_bundle
from pol_chain.proof.task import check_source, configure_determinism

__all__ = ["run_worker"]

MAX_STATE = 1 << 30


def run_worker(
    rank: int,
    behaviours: Sequence[str] = ("honest",),
    *,
    idle_timeout: float = 3600.0,
    log: Callable[[str], None] | None = None,
) -> int:
    """Serve the coordinator (rank 0 of the default process group) until it says stop;
    return the number of rounds trained. ``behaviours`` other than ``honest`` make it
    misbehave (see :mod:`pol_chain.distributed.behaviours`)."""
    say = log or (lambda _m: None)
    channel = Channel()
    hello_msg = channel.recv(0, (HELLO,), Limits(1 << 16, 1 << 20), idle_timeout)
    hello = Hello.from_bytes(hello_msg.parts[0])
    say(f"worker {rank}: hello")
    spec_bytes = hello_msg.parts[1]
    if hashlib.sha256(spec_bytes).digest() != hello.spec_sha256 or hello.rank != rank:
        raise PolchainError(f"worker {rank}: the hello does not match its spec or rank")
    spec = TaskSpec.from_bytes(spec_bytes)
    check_source(spec) if spec.version == 1 else check_bundle(spec)  # the committed code
    plan = DistributedPlan.of_config(spec.config)
    if plan is None:
        raise PolchainError(f"worker {rank}: the spec has no distributed plan")
    run_seed = compute_run_seed(hello.chain_id, hello.ledger, hello.run_id)
    configure_determinism(True, plan.threads)
    bundle = build_bundle(spec, run_seed, hello.device)
    actor = Actor(bundle, Schedule.of(spec, run_seed, plan), plan, run_seed, rank, behaviours)
    say(
        f"worker {rank}: run 0x{hello.run_id.hex()[:12]}…, {plan.rounds} rounds of {plan.local_steps} steps"
    )
    trained = 0
    while True:
        msg = channel.recv(0, (TRAIN, STOP), Limits(MAX_STATE), idle_timeout)
        channel.delivered(0)  # the coordinator got our last submission before it sent this
        if msg.kind == STOP:
            say(f"worker {rank}: stopped after {trained} rounds")
            return trained
        r = msg.round
        base, base_meta = load_checkpoint_bytes(msg.parts[0], f"global state of round {r}")
        say(f"worker {rank}: round {r} ({actor.behaviour(r)})")
        tick = time.thread_time()
        state, meta, steps = actor.submit(r, base, base_meta)
        seconds = time.thread_time() - tick
        segment = Segment.of(r, plan.end_step(r), steps).to_bytes()
        channel.send(0, SUBMIT, r, (serialize_state(state, meta), segment), int(seconds * 1e6))
        trained += 1
