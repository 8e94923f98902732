"""The layer rules of docs/architecture.md, checked on what each layer really imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

# layer → modules it must never load (directly or through its dependencies)
RULES = {
    "pol_chain.proof": ["web3", "eth_account", "httpx", "pol_chain.ledger", "pol_chain.store"],
    "pol_chain.sandbox": [
        "web3",
        "eth_account",
        "httpx",
        "pol_chain.ledger",
        "pol_chain.store",
        "pol_chain.agent",
    ],
    "pol_chain.integrations": [
        "web3",
        "eth_account",
        "httpx",
        "pol_chain.ledger",
        "pol_chain.store",
        "pol_chain.compose",
    ],
    "pol_chain.tasks": ["web3", "httpx", "pol_chain.ledger", "pol_chain.store"],
    "pol_chain.ledger": ["torch", "pol_chain.proof", "pol_chain.store"],
    "pol_chain.store": ["torch", "web3", "pol_chain.proof", "pol_chain.ledger"],
    "pol_chain.commitment": ["torch", "web3", "httpx"],
    "pol_chain.format": [
        "torch",
        "safetensors",
        "web3",
        "eth_account",
        "httpx",
        "pol_chain.proof",
        "pol_chain.ledger",
        "pol_chain.store",
    ],
}


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_stay_inside_their_rules(layer: str) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({layer!r})\n"
        "for info in pkgutil.walk_packages(getattr(pkg, '__path__', []), pkg.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = set(out)
    broken = [m for m in RULES[layer] if m in loaded]
    assert broken == [], f"{layer} loads {broken}"
