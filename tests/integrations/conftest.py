"""Runs recorded by the examples' own training scripts (Lightning, Hugging Face)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pol_chain.format import BUNDLE_FILE, SPEC_FILE, RunBinding
from pol_chain.proof import make_spec
from pol_chain.proof.spec import bundle_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_ID = bytes.fromhex("5a" * 32)


def example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples folder is the task's project)."""
    pytest.importorskip("lightning" if name.startswith("lightning") else "transformers")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def register(proof: Path, entry: str, config: dict[str, object] | None = None) -> RunBinding:
    """What ``polchain register`` leaves in a proof directory, without a chain: the
    spec, its code bundle and a run binding (run id and seed)."""
    spec = make_spec(entry, config or {}, project=EXAMPLES)
    proof.mkdir(parents=True)
    (proof / SPEC_FILE).write_bytes(spec.to_bytes())
    (proof / BUNDLE_FILE).write_bytes(bundle_bytes(entry, EXAMPLES))
    binding = RunBinding.offline(RUN_ID, spec.digest)
    binding.write(proof)
    return binding


def _recorded(factory: pytest.TempPathFactory, name: str, steps: int) -> tuple[Path, RunBinding]:
    """A full run of ``examples/<name>.py``, recorded by its own ``main``."""
    mod = example(name)
    proof = factory.mktemp(name) / "proof"
    binding = register(proof, f"{name}:build")
    assert mod.main(proof) == steps
    return proof, binding


@pytest.fixture(scope="package")
def lightning_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunBinding]:
    return _recorded(tmp_path_factory, "lightning_digits", 44)


@pytest.fixture(scope="package")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunBinding]:
    return _recorded(tmp_path_factory, "hf_tiny_gpt", 24)
