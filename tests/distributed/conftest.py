"""Fixtures of the distributed tests: real gloo processes on loopback, a real Anvil
ledger (the session chain of tests/conftest.py), a real local store, digits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from pol_chain.distributed import (
    DistributedPlan,
    DistributedResult,
    LocalWorkers,
    distributed_spec,
    register_run,
    run_local,
)
from pol_chain.format import RunBinding, TaskSpec
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.client import LedgerClient
from pol_chain.store import LocalStore

TRAINER, VERIFIER, CHALLENGER = 0, 1, 4


@dataclass
class Run:
    """A finished distributed run and where it lives."""

    spec: TaskSpec
    binding: RunBinding
    out: Path
    result: DistributedResult
    client: LedgerClient
    store: LocalStore


RunFn = Callable[..., Run]


def start_run(
    client: LedgerClient,
    root: Path,
    plan: DistributedPlan,
    byzantine: Mapping[int, Sequence[str]] | None = None,
    **options: Any,
) -> Run:
    """Register and run a distributed digits run with local worker processes (started
    first: they import while the spec is built and registered)."""
    workers = options.pop("workers", None) or LocalWorkers(
        plan.workers, byzantine, log_dir=root / "logs"
    )
    workers.start()
    store = LocalStore(root / "store")
    spec = distributed_spec("digits", plan)
    out = root / "run"
    binding, spec = register_run(client, store, spec, out)
    options.setdefault("round_timeout", 120.0)
    result = run_local(spec, binding, out, client, store, workers=workers, **options)
    return Run(spec, binding, out, result, client, store)


@pytest.fixture(scope="module")
def module_ledger(w3: Web3) -> LedgerClient:
    """A ProofLedger for one test module; dev account 1 holds the verifier role."""
    client = LedgerClient.deploy(w3, dev_account(TRAINER))
    client.grant_verifier(dev_account(VERIFIER).address)
    return client
