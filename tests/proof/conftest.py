"""Shared fixtures: one honest digits proof trained once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pol_chain.proof import TaskSpec, make_spec, train
from pol_chain.tasks import DIGITS

from .helpers import RUN_ID, RUN_SEED, TEST_CONFIG

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def spec() -> TaskSpec:
    """The test run's spec: digits, 2 epochs, k = 10 (88 steps, 9 segments)."""
    return make_spec(DIGITS, TEST_CONFIG)


@pytest.fixture(scope="session")
def honest_proof(tmp_path_factory: pytest.TempPathFactory, spec: TaskSpec) -> Path:
    """An honest proof directory (never modified: copy it with ``proof_copy``)."""
    out = tmp_path_factory.mktemp("honest") / "proof"
    train(spec, out, RUN_ID, RUN_SEED, threads=2)
    return out


@pytest.fixture
def proof_copy(honest_proof: Path, tmp_path: Path) -> Path:
    """A private copy of the honest proof for a tamper test."""
    dst = tmp_path / "proof"
    shutil.copytree(honest_proof, dst)
    return dst
