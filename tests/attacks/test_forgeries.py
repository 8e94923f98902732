"""Attacks 6.1–6.4 on digits: each forgery is committed on chain by the attacker, the
reference-style verifier accepts it, pol_chain's verifier (on-chain seed) rejects it."""

from __future__ import annotations

import math

import torch

from pol_chain.attacks import (
    forge_adversarial_data_proof,
    forge_infinitesimal_proof,
    forge_interpolated_proof,
    forge_momentum_steering_proof,
    infinitesimal_proof_spec,
    ks_init_test,
    load_claimed_dataset,
    reference_verify,
)
from pol_chain.attacks._proof import load_checkpoint, load_model_file
from pol_chain.attacks.onchain import register
from pol_chain.attacks.reference import init_layers
from pol_chain.proof import commit_dataset
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import Policy, detection_probability

from .conftest import ATTACKER, World
from .helpers import challenge_and_verify, commit_forgery, failed_segments, ratio


def test_honest_run_verifies_on_chain_and_with_the_reference(world: World) -> None:
    report = challenge_and_verify(world, world.honest_run, world.honest_dir)
    assert report.passed and report.bitwise_identical, report.checks
    ref = reference_verify(world.honest_dir, threads=2)
    assert ref.passed, ref.reasons
    owner = world.admin.owner_of(world.model_digest)
    assert owner is not None  # resolved in test_thieves


def test_rank_matched_init(world: World) -> None:
    attacker = world.client(ATTACKER)
    run, seed = register(attacker, world.spec)
    stolen = world.honest_dir / "model.safetensors"
    forged = forge_interpolated_proof(
        stolen, world.tmp / "rank", world.spec, run, seed, init="rank_matched"
    )
    commit_forgery(world, forged)
    w0 = {k[6:]: v for k, v in load_checkpoint(forged.proof_dir, 0)[0].items()}
    target = load_model_file(stolen)
    seeded = build_bundle(world.spec, seed).model.state_dict()
    layers = init_layers(build_bundle(world.spec, seed))
    # rank matching: same values as a true init, much closer to the stolen weights
    for name in layers:
        assert torch.equal(
            w0[name].reshape(-1).sort().values, seeded[name].reshape(-1).sort().values
        )

    def dist(a: dict[str, torch.Tensor]) -> float:
        return float(torch.cat([(a[n] - target[n]).reshape(-1) for n in layers]).norm())

    assert dist(w0) < 0.75 * dist(seeded)
    # the reference's KS test cannot tell it from a fresh init; a naive close W0 fails it
    assert ks_init_test(w0, world.spec)[0]
    naive = {k: v.clone() for k, v in target.items()}
    for name in layers:
        naive[name] = target[name] * 0.9
    assert not ks_init_test(naive, world.spec)[0]
    ref = reference_verify(forged.proof_dir, threads=2)
    assert ref.passed and ref.ks_passed, ref.reasons
    report = challenge_and_verify(world, run, forged.proof_dir)
    assert not report.passed
    assert "init_mismatch" in report.reasons
    assert report.checks["init"].ok is False
    world.record(
        "rank-matched init",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost=ratio(world, forged),
        distance_ratio=round(dist(w0) / dist(seeded), 3),
    )


def test_adversarial_data(world: World) -> None:
    attacker = world.client(ATTACKER)
    run, seed = register(attacker, world.spec)
    forged = forge_adversarial_data_proof(
        world.honest_dir / "model.safetensors", world.tmp / "advdata", world.spec, run, seed
    )
    commit_forgery(world, forged)
    claimed = load_claimed_dataset(forged.proof_dir)
    ref = reference_verify(forged.proof_dir, dataset=claimed, threads=2)
    assert ref.passed, ref.reasons
    # the data is what makes it work: with the real samples the reference's replay fails
    assert not reference_verify(forged.proof_dir, threads=2).passed
    honest = build_bundle(world.spec, seed)
    assert honest.train_x is not None and honest.train_y is not None
    _, tree = commit_dataset(honest.train_x, honest.train_y)  # paths to the committed root
    report = challenge_and_verify(
        world, run, forged.proof_dir, dataset=claimed, dataset_proofs=tree.proof
    )
    assert not report.passed
    assert "membership" in report.reasons
    assert report.checks["membership"].ok is False
    world.record(
        "adversarial data",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost=ratio(world, forged),
        perturbed_samples=forged.details["perturbed_samples"],
    )


def test_blindfold_top_q(world: World) -> None:
    attacker = world.client(ATTACKER)
    run, seed = register(attacker, world.spec)
    forged = forge_interpolated_proof(
        world.honest_dir / "model.safetensors", world.tmp / "blindfold", world.spec, run, seed
    )
    commit_forgery(world, forged)
    honest_segments = set(forged.details["honest_segments"])
    ref = reference_verify(forged.proof_dir, threads=2)
    assert ref.passed, ref.reasons
    assert {s["index"] for s in ref.segments} == honest_segments  # top-Q saw only those
    # a large-run policy (no full replay): first, last, m random and top-Q
    policy = Policy(full_below=0, m=5, q=1)
    report = challenge_and_verify(world, run, forged.proof_dir, policy=policy, attest=False)
    assert not report.passed
    assert report.checks["init"].ok and report.checks["data_order"].ok
    failed = failed_segments(report)
    assert all(s.passed for s in report.segments if s.index in honest_segments)
    caught_by_random = [i for i, s in failed.items() if "random" in s.selected_by]
    assert caught_by_random and {"replay_distance", "direction"} & set(report.reasons)
    n = len(report.segments) and 9
    f = (n - len(honest_segments)) / n
    bound = detection_probability(f, policy.m)
    assert bound >= 0.99
    # and the default policy (short run: every segment replayed) rejects it too
    default = challenge_and_verify(world, run, forged.proof_dir)
    assert not default.passed and "replay_distance" in default.reasons
    world.record(
        "blindfold top-Q",
        reference="accepts",
        pol_chain=default.reason_codes,
        random_segments_failed=sorted(caught_by_random),
        detection_bound=round(bound, 6),
        cost=ratio(world, forged),
    )


def test_infinitesimal_update(world: World) -> None:
    attacker = world.client(ATTACKER)
    for claim in ("spec", "checkpoint"):
        proof_spec = infinitesimal_proof_spec(world.spec, claim)  # type: ignore[arg-type]
        run, seed = register(attacker, proof_spec)  # the spec it will publish
        forged = forge_infinitesimal_proof(
            world.honest_dir / "model.safetensors",
            world.tmp / f"tiny-{claim}",
            world.spec,
            run,
            seed,
            claim=claim,  # type: ignore[arg-type]
        )
        assert forged.spec.digest == proof_spec.digest
        ref = reference_verify(forged.proof_dir, threads=2)
        assert ref.passed, ref.reasons
        assert all(s["hyperparameters"]["lr"][0] < 1e-6 for s in ref.segments)
        commit_forgery(world, forged)
        report = challenge_and_verify(world, run, forged.proof_dir)
        assert not report.passed
        assert {"replay_distance", "direction"} <= set(report.reasons)
        # relative error ≈ 1, or infinite (None) where the forger's optimizer state does
        # not move and the replay's does: the replay did not move along W_i→W_i+1
        found = [s.metrics.normalized_error for s in report.segments if s.metrics is not None]
        errors = [math.inf if e is None else e for e in found]
        assert min(errors) > 0.5
        world.record(
            f"infinitesimal update (tiny lr in {claim})",
            reference="accepts",
            pol_chain=report.reason_codes,
            min_normalized_error=round(min(errors), 3) if math.isfinite(min(errors)) else None,
            cost=ratio(world, forged),
        )


def test_momentum_steering(world: World) -> None:
    attacker = world.client(ATTACKER)
    run, seed = register(attacker, world.spec)
    forged = forge_momentum_steering_proof(
        world.honest_dir / "model.safetensors", world.tmp / "momentum", world.spec, run, seed
    )
    commit_forgery(world, forged)
    ref = reference_verify(forged.proof_dir, threads=2)
    assert ref.passed, ref.reasons
    report = challenge_and_verify(world, run, forged.proof_dir)
    assert not report.passed
    assert report.checks["init"].ok and report.checks["data_order"].ok
    assert "replay_distance" in report.reasons
    # the parameters of every intermediate checkpoint replay exactly; only the optimizer
    # state (compared over the full state) gives the forgery away
    seg = report.segment(3)
    assert seg is not None and not seg.passed and seg.metrics is not None
    assert (seg.metrics.normalized_error or 0.0) > 0.1
    world.record(
        "momentum steering",
        reference="accepts",
        pol_chain=report.reason_codes,
        cost=ratio(world, forged),
        final_residual_l2=round(forged.details["final_residual_l2"], 5),
    )
