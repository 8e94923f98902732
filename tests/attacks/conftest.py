"""One honest digits run per session, trained and committed live on a real Anvil ledger,
with the thieves of docs/protocol.md §6.7/6.8 acting around it; every attack test reuses it.

Timeline (``world`` fixture): the honest trainer (account 1) registers and commits every
checkpoint as it is pinned; a live copier (account 4) re-binds each pinned checkpoint to
its own run and commits it too, and finalizes the moment the final model appears
(front-running); an early thief (account 3), who got the model leaked before the honest
finalize, forges an interpolation proof and finalizes; then the honest trainer finalizes;
later a late thief (account 5) copies the whole public proof and finalizes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from web3 import Web3

from pol_chain.attacks import ForgedProof, LiveCopier, forge_interpolated_proof, rebind_proof
from pol_chain.attacks.onchain import commit_proof, register
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.anvil import EmbeddedChain, free_port
from pol_chain.ledger.client import LedgerClient, connect_web3
from pol_chain.proof import CheckpointRecord, FinalRecord, TaskSpec, make_spec, train
from pol_chain.tasks import DIGITS

torch.set_num_threads(2)

HONEST, ATTACKER, EARLY, COPIER, LATE, VERIFIER = 1, 2, 3, 4, 5, 9


@dataclass
class World:
    """The shared scenario: ledger clients, the honest run and the thieves' runs."""

    admin: LedgerClient
    clients: dict[int, LedgerClient]
    spec: TaskSpec
    honest_dir: Path
    honest_run: bytes
    honest_seed: bytes
    honest_steps: int
    honest_seconds: float
    model_digest: bytes
    early: ForgedProof
    live_copy: ForgedProof
    late_copy: ForgedProof
    tmp: Path
    costs: list[dict[str, Any]] = field(default_factory=list)

    def client(self, account: int) -> LedgerClient:
        """The ledger client signing with dev account ``account``."""
        return self.clients[account]

    def record(self, attack: str, **row: Any) -> None:
        """Add a row to the session's attack table (printed at the end)."""
        self.costs.append({"attack": attack, **row})
        print(f"\n[attack] {attack}: {row}")


@pytest.fixture(scope="session")
def attack_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerClient]:
    """A ProofLedger on an Anvil of its own (admin account 0, verifier 9). Its own chain
    makes the ledger address, hence every run id and run seed of the scenario, the same
    whatever ran before: the reference verifier's KS test rejects some honest inits
    (docs/security.md), so a seed that moved with the test order made its verdicts move."""
    node = EmbeddedChain(tmp_path_factory.mktemp("attack-chain"), port=free_port())
    node.start()
    try:
        yield _deploy(connect_web3(node.url))
    finally:
        node.stop()


def _deploy(w3: Web3) -> LedgerClient:
    ledger = LedgerClient.deploy(w3, dev_account(0))
    ledger.grant_verifier(dev_account(VERIFIER).address)
    return ledger


@pytest.fixture(scope="session")
def spec() -> TaskSpec:
    """Digits, 2 epochs, k = 10: 88 steps, 9 segments (44 steps per epoch)."""
    return make_spec(DIGITS, {"epochs": 2, "k": 10})


@pytest.fixture(scope="session")
def world(
    attack_ledger: LedgerClient,
    spec: TaskSpec,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    """Run the shared scenario once (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("attacks")
    clients = {
        i: attack_ledger.with_account(dev_account(i))
        for i in (HONEST, ATTACKER, EARLY, COPIER, LATE, VERIFIER)
    }
    honest = clients[HONEST]
    run, seed = register(honest, spec)
    copier = clients[COPIER]
    copy_run, _ = register(copier, spec)

    def honest_commit(record: CheckpointRecord | FinalRecord) -> None:
        if isinstance(record, CheckpointRecord):
            honest.commit_checkpoints(run, record.index, [record.leaf], "local:manifest")

    live = LiveCopier(
        tmp / "live-copy",
        copy_run,
        commit=lambda i, leaves: copier.commit_checkpoints(copy_run, i, leaves, "local:m"),
        finalize=lambda digest: copier.finalize_run(copy_run, digest, "local:model"),
    )
    honest_dir = tmp / "honest"
    result = train(spec, honest_dir, run, seed, listeners=[honest_commit, live], threads=2)
    # wall-time baseline: the same honest training without the ledger listeners
    t0 = time.perf_counter()
    train(spec, tmp / "baseline", b"\x01" * 32, seed, threads=2)
    seconds = time.perf_counter() - t0
    # the model leaked before the honest finalize: the early thief forges and claims it
    early_client = clients[EARLY]
    early_run, early_seed = register(early_client, spec)
    early = forge_interpolated_proof(
        honest_dir / "model.safetensors", tmp / "early", spec, early_run, early_seed
    )
    commit_proof(early_client, early_run, early.proof_dir)
    honest.finalize_run(run, result.model_digest, "local:model")
    # later, a thief copies the whole public proof
    late_client = clients[LATE]
    late_run, _ = register(late_client, spec)
    late = rebind_proof(honest_dir, tmp / "late-copy", late_run)
    commit_proof(late_client, late_run, late.proof_dir)
    w = World(
        admin=attack_ledger,
        clients=clients,
        spec=spec,
        honest_dir=honest_dir,
        honest_run=run,
        honest_seed=seed,
        honest_steps=result.steps,
        honest_seconds=seconds,
        model_digest=result.model_digest,
        early=early,
        live_copy=live.result(),
        late_copy=late,
        tmp=tmp,
    )
    yield w
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and w.costs:
        reporter.write_line("")
        reporter.write_line(
            f"attack table (honest: {w.honest_steps} steps, {w.honest_seconds:.2f} s)"
        )
        for row in w.costs:
            reporter.write_line(f"  {row}")
