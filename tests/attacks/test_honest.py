"""No false rejects: honest runs verify, honest inits pass the init rule (the KS test of
the reference does not always), and the KS and detection maths are right."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pol_chain import commitment as cm
from pol_chain.attacks import ks_2samp, ks_init_test, reference_verify
from pol_chain.attacks._proof import checkpoint_meta, write_proof
from pol_chain.ledger.accounts import dev_account
from pol_chain.proof import TaskSpec, make_spec, train
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import detection_probability, draw_random
from pol_chain.proof.verifier import verify_dir
from pol_chain.tasks import DIGITS

LEDGER = "0x" + "5f" * 20  # any ledger address: seeds only need to differ per run
SHORT = {"epochs": 1, "k": 4, "test_fraction": 0.8}  # 359 samples, 11 steps, 3 segments


def _seed(i: int) -> tuple[bytes, bytes]:
    run = cm.run_id(dev_account(1).address, i)
    return run, cm.run_seed(31337, LEDGER, run)


@pytest.fixture(scope="module")
def short_spec() -> TaskSpec:
    """A very short digits run (seconds) for the false-reject sweep."""
    return make_spec(DIGITS, SHORT)


def test_ten_honest_runs_all_verify(short_spec: TaskSpec, tmp_path: Path) -> None:
    ref_passed = 0
    for i in range(10):
        run, seed = _seed(i)
        proof = tmp_path / f"run{i}"
        train(short_spec, proof, run, seed, threads=2)
        report = verify_dir(proof, run_id=run, run_seed=seed, challenge_seed=seed, threads=2)
        assert report.passed, (i, report.reasons)
        assert report.bitwise_identical
        ref_passed += reference_verify(proof, threads=2).passed
        shutil.rmtree(proof)
    print(f"\n[honest] 10/10 pass pol_chain; {ref_passed}/10 pass the reference-style verifier")


INITS = 40


def test_forty_honest_inits_pass_the_init_rule(spec: TaskSpec, tmp_path: Path) -> None:
    ks_rejects = 0
    for i in range(INITS):
        run, seed = _seed(1000 + i)
        bundle = build_bundle(spec, seed)
        w0 = {f"model.{k}": v.clone() for k, v in bundle.model.state_dict().items()}
        proof = tmp_path / "init"
        write_proof(proof, spec, run, [(w0, checkpoint_meta(bundle, 0))], [], final=False)
        report = verify_dir(proof, run_id=run, run_seed=seed, challenge_seed=seed, threads=2)
        assert report.checks["init"].ok, (i, report.checks["init"])
        assert "init_mismatch" not in report.reasons
        ks_ok, _ = ks_init_test(bundle.model.state_dict(), spec)
        ks_rejects += not ks_ok
    print(
        f"\n[init] pol_chain init rule: 0/{INITS} false rejects; reference KS: {ks_rejects}/{INITS}"
    )
    assert ks_rejects < 0.3 * INITS


def test_ks_2samp_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n, m, shift in [(144, 144, 0.0), (4608, 4608, 0.0), (16, 16, 0.3), (640, 700, 0.1)]:
        a, b = rng.uniform(-1, 1, n), rng.uniform(-1, 1, m) + shift
        d, p = ks_2samp(a, b)
        ref = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        assert p == pytest.approx(ref.pvalue, abs=0.02)


def test_random_segments_detect_blindfold_forgeries() -> None:
    n, m, f = 782, 30, 0.1  # ResNet-20 / CIFAR-10, 200 epochs, k = 100 (policy defaults)
    rng = np.random.default_rng(1)
    hits, trials = 0, 2000
    for t in range(trials):
        forged = set(rng.choice(np.arange(1, n + 1), size=math.ceil(f * n), replace=False))
        picks = draw_random(t.to_bytes(32, "big"), n, m)
        hits += any(p in forged for p in picks)
    bound = detection_probability(f, m)
    exact = detection_probability(f, m, n)
    assert exact >= bound >= 0.95
    assert hits / trials >= bound - 3 * math.sqrt(bound * (1 - bound) / trials)
    print(
        f"\n[detection] f={f}, m={m}: bound {bound:.4f}, exact {exact:.4f}, seen {hits / trials:.4f}"
    )
