"""Calibration measures honest reproduction error and recommends ρ below a forger's step."""

from __future__ import annotations

from pathlib import Path

from pol_chain.proof.calibration import calibrate

from .helpers import RUN_SEED


def test_calibration_on_honest_proof(honest_proof: Path) -> None:
    result = calibrate(honest_proof, RUN_SEED, segments=[1, 9], threads=2)
    assert result["bitwise_identical"]["deterministic"] is True
    det = [r for r in result["rows"] if r["mode"] == "deterministic"]
    assert all(r["normalized_error"] == 0.0 for r in det)
    rho = result["recommended"]["rho"]
    assert result["honest"]["max_normalized_error"] < rho < result["smallest_step_update_ratio"]
    assert result["margin"]["smallest_update_over_rho"] > 1
    assert 0.5 <= result["recommended"]["c"] <= 0.99
