"""Attacks 6.5 and 6.6: tampering after commitment, and a pickle payload in a proof file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pol_chain.attacks import (
    plant_pickle_payload,
    rebind_proof,
    reference_verify,
    tamper_checkpoint,
    tamper_data_order,
)
from pol_chain.attacks.onchain import register, verify_on_chain
from pol_chain.proof.policy import Policy
from pol_chain.proof.verifier import verify_dir

from .conftest import ATTACKER, World
from .helpers import challenge_and_verify, commit_forgery


@pytest.fixture(scope="module")
def honest_seed(world: World) -> bytes:
    """A challenge seed drawn on chain for the honest run (its challenge is verified)."""
    from pol_chain.attacks.onchain import challenge

    _, seed = challenge(world.admin, world.honest_run)
    return seed


def _copy(world: World, name: str) -> Path:
    dst = world.tmp / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(world.honest_dir, dst)
    return dst


def test_tampered_checkpoint_after_commitment(world: World, honest_seed: bytes) -> None:
    proof = _copy(world, "tamper-ckpt")  # manifest untouched (artefact_digest): tests/proof
    tamper_checkpoint(proof, 8, scale=0.05, recommit=True)
    ref = reference_verify(proof, threads=2)
    assert ref.passed, ref.reasons  # segments 8 and 9 are not top-Q: never looked at
    report = verify_on_chain(world.admin, world.honest_run, proof, honest_seed, threads=2)
    assert not report.passed
    assert {"leaf_mismatch", "accumulator_mismatch"} <= set(report.reasons)
    # even with leaves the forger could commit, the replay catches the change: segment 9
    # starts from the tampered checkpoint 8 (this policy replays the first and last only)
    alone = verify_dir(
        proof,
        run_id=world.honest_run,
        run_seed=world.honest_seed,
        challenge_seed=honest_seed,
        policy=Policy(full_below=0, m=0, q=0),
        threads=2,
    )
    last = alone.segment(9)
    assert last is not None and not last.passed and "replay_distance" in last.reasons
    world.record(
        "tampered checkpoint (re-derived manifest)",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost={"steps": 0.0},
    )


def test_tampered_data_order_after_commitment(world: World, honest_seed: bytes) -> None:
    proof = _copy(world, "tamper-order")
    tamper_data_order(proof, 8, swap=(1, 6))
    ref = reference_verify(proof, threads=2)
    assert ref.passed, ref.reasons
    report = verify_on_chain(world.admin, world.honest_run, proof, honest_seed, threads=2)
    assert not report.passed
    assert {"leaf_mismatch", "accumulator_mismatch", "data_order"} <= set(report.reasons)
    assert "replay_distance" in report.reasons
    world.record(
        "tampered data order",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost={"steps": 0.0},
    )


def test_pickle_payload_never_executes(world: World, tmp_path: Path) -> None:
    target = "checkpoints/000003.safetensors"  # a segment payload: tests/proof covers it
    sentinel = tmp_path / "PWNED"
    attacker = world.client(ATTACKER)
    run, _ = register(attacker, world.spec)
    forged = rebind_proof(world.honest_dir, world.tmp / f"pickle-{target[:4]}", run)
    plant_pickle_payload(forged.proof_dir, target, sentinel)  # committed as it is
    commit_forgery(world, forged)
    ref = reference_verify(forged.proof_dir, threads=2)
    report = challenge_and_verify(world, run, forged.proof_dir)
    assert not sentinel.exists()
    assert not report.passed and "malformed_artefact" in report.reasons
    assert not ref.passed and ref.reasons[0].startswith("unreadable")
    world.record(
        f"pickle payload in {target}",
        reference="rejects as unreadable (data-only loader); nothing executed",
        pol_chain=report.reason_codes,
        cost={"steps": 0.0},
    )


def test_attack_code_never_unpickles() -> None:
    root = Path(__file__).resolve().parents[2] / "pol_chain" / "attacks"
    pattern = re.compile(r"(torch\.load|pickle\.loads?|pickle\.Unpickler)\(")
    offenders = [p.name for p in root.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
