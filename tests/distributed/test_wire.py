"""The channel over real gloo processes: a worker that announces more bytes than allowed
is refused before anything is allocated, a worker that misses the deadline is lost
without closing the other pairs (gloo's own timeout would close them all), and a later
round still talks to a worker whose earlier reply never came."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch.distributed as dist

from pol_chain.distributed.launch import init_group, master_store
from pol_chain.distributed.wire import SUBMIT, Channel, Limits, PeerLost

CHILD = """
import sys, time, torch
from pol_chain.distributed.launch import init_group
from pol_chain.distributed.wire import MAGIC, SUBMIT, Channel
import torch.distributed as dist
rank, port = int(sys.argv[1]), int(sys.argv[2])
init_group(rank, 3, port=port)
if rank == 1:  # announces a 2 GiB state: never read
    dist.send(torch.tensor([MAGIC, SUBMIT, 1, 2 << 30, 0, 0]), 0, tag=1002)
    time.sleep(30)
else:  # silent in round 1, then answers round 2
    time.sleep(3)
    channel = Channel()  # holds the send until it is delivered
    channel.send(0, SUBMIT, 2, (b"state", b"segment"), extra=7)
    time.sleep(30)
"""


@pytest.fixture
def group() -> object:
    store = master_store(3, 60)
    kids = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(r), str(store.port)]) for r in (1, 2)
    ]
    init_group(0, 3, store=store)
    try:
        yield kids
    finally:
        for kid in kids:
            kid.kill()
            kid.wait()
        dist.destroy_process_group()


def test_bounds_and_deadlines_never_cost_the_other_pairs(group: object) -> None:
    channel = Channel()
    limits = Limits(1 << 20, 1 << 10)
    start = time.monotonic()
    first = channel.gather([1, 2], (SUBMIT,), limits, time.monotonic() + 1.0, 1)
    assert time.monotonic() - start < 10
    assert isinstance(first[1], PeerLost) and "announced 2147483648" in first[1].why
    assert isinstance(first[2], PeerLost) and "missed the deadline" in first[2].why
    second = channel.gather([2], (SUBMIT,), limits, time.monotonic() + 30.0, 2)[2]
    assert not isinstance(second, PeerLost), second
    assert second.parts == (b"state", b"segment") and second.extra == 7 and second.round == 2
