"""Shared steps of the attack tests: commit a forgery on chain, challenge it, verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pol_chain.attacks import ForgedProof
from pol_chain.attacks.onchain import attest_report, challenge, commit_proof, verify_on_chain
from pol_chain.format import SegmentResult
from pol_chain.ledger.types import RunStatus
from pol_chain.proof.report import Report

from .conftest import ATTACKER, VERIFIER, World


def challenge_and_verify(
    world: World, run_id: bytes, proof_dir: Path, *, attest: bool = True, **kwargs: Any
) -> Report:
    """Open a challenge (challenger: account 0), verify with the on-chain seed, attest."""
    cid, seed = challenge(world.admin, run_id)
    kwargs.setdefault("threads", 2)
    report = verify_on_chain(world.admin, run_id, proof_dir, seed, **kwargs)
    if attest:
        attest_report(world.client(VERIFIER), cid, report)
        status = world.admin.get_run(run_id).status
        assert status is (RunStatus.VERIFIED if report.passed else RunStatus.REFUTED)
    return report


def commit_forgery(world: World, forged: ForgedProof) -> None:
    """Commit and finalize a forgery under the attacker's run (it claims the stolen model)."""
    commit_proof(world.client(ATTACKER), forged.run_id, forged.proof_dir)


def failed_segments(report: Report) -> dict[int, SegmentResult]:
    """Replayed segments that failed, by index."""
    return {s.index: s for s in report.segments if not s.passed}


def ratio(world: World, forged: ForgedProof) -> dict[str, float]:
    """The forgery's cost over the honest run's (steps and wall time)."""
    r = forged.cost.ratio(world.honest_steps, world.honest_seconds)
    return {"steps": round(r["steps"], 3), "time": round(r["time"], 3)}
