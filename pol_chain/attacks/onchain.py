"""Drive an adversary (or the honest party) through the real ledger client.

Register a run (its run id fixes the run seed), commit a proof directory's leaves and
finalize it, open a challenge and obtain its post-commit seed, verify a run exactly as a
verifier agent does (run seed, accumulator, spec and model digests all read from the
chain, never from the proof), and attest the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pol_chain import commitment as cm
from pol_chain.attacks._proof import read_manifest
from pol_chain.ledger.client import LedgerClient
from pol_chain.ledger.history import run_history
from pol_chain.ledger.types import AttestResult
from pol_chain.proof.manifest import DirectorySource
from pol_chain.proof.report import Report
from pol_chain.proof.spec import TaskSpec
from pol_chain.proof.verifier import verify

__all__ = [
    "anvil_mine",
    "attest_report",
    "challenge",
    "commit_proof",
    "register",
    "verify_on_chain",
]


def register(
    client: LedgerClient, spec: TaskSpec, spec_cid: str = "local:spec"
) -> tuple[bytes, bytes]:
    """Register a run of ``spec`` for the client's account; return ``(run_id, run_seed)``
    (the seed as the contract computes it, checked against :mod:`pol_chain.commitment`)."""
    run_id = client.register_run(spec.digest, spec_cid).run_id
    seed = client.run_seed(run_id)
    if seed != cm.run_seed(client.chain_id, client.address, run_id):
        raise RuntimeError("the ledger's run seed differs from pol_chain.commitment.run_seed")
    return run_id, seed


def commit_proof(
    client: LedgerClient,
    run_id: bytes,
    proof_dir: Path | str,
    *,
    first_index: int = 0,
    finalize: bool = True,
    batch: int = 64,
    manifest_cid: str = "local:manifest",
) -> bytes | None:
    """Commit the manifest's leaves ``first_index..`` of ``proof_dir`` in batches and (if
    ``finalize`` and the proof has a final model) finalize; return the claimed model digest."""
    manifest = read_manifest(proof_dir)
    leaves = manifest.leaves
    for start in range(first_index, len(leaves), batch):
        client.commit_checkpoints(run_id, start, leaves[start : start + batch], manifest_cid)
    digest = manifest.final.model.sha256 if manifest.final else None
    if finalize and digest is not None:
        client.finalize_run(run_id, digest, "local:model")
    return digest


def anvil_mine(client: LedgerClient, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks (Anvil dev chains only)."""
    client.mine(blocks)


def challenge(
    client: LedgerClient, run_id: bytes, mine: Callable[[], None] | None = None
) -> tuple[int, bytes]:
    """Open a challenge against ``run_id``; after ``mine`` (default: two Anvil blocks, so the
    reveal block is mined and sealed in the past)
    return ``(challenge_id, challenge_seed)`` — randomness from a block after the opening."""
    opened = client.open_challenge(run_id)
    (mine or (lambda: anvil_mine(client, 2)))()
    return opened.challenge_id, client.challenge_seed(opened.challenge_id)


def verify_on_chain(
    client: LedgerClient,
    run_id: bytes,
    proof_dir: Path | str,
    challenge_seed: bytes,
    *,
    committed_leaves: Sequence[bytes] | None = None,
    **kwargs: Any,
) -> Report:
    """Verify ``proof_dir`` as run ``run_id`` with every trusted value from the chain:
    run seed, spec digest, the committed leaves (rebuilt from the ledger's logs unless
    given), accumulator and claimed model digest (``kwargs`` go to
    :func:`pol_chain.proof.verifier.verify`: policy, dataset, threads…)."""
    info = client.get_run(run_id)
    if committed_leaves is None:
        committed_leaves = run_history(client, run_id).leaves
    source = DirectorySource(proof_dir)
    return verify(
        source.manifest(),
        source,
        run_id=run_id,
        run_seed=client.run_seed(run_id),
        challenge_seed=challenge_seed,
        spec_digest=info.spec_digest,
        committed_leaves=committed_leaves,
        committed_accumulator=client.accumulator_of(run_id),
        model_digest=info.model_digest,
        **kwargs,
    )


def attest_report(verifier: LedgerClient, challenge_id: int, report: Report) -> AttestResult:
    """Vote the report's verdict on ``challenge_id`` (the verifier role is required)."""
    return verifier.attest(challenge_id, report.passed, report.digest, "local:report")
