"""The store layer imports neither PyTorch nor web3 nor the other layers."""

from __future__ import annotations

import subprocess
import sys


def test_store_imports_nothing_heavy() -> None:
    code = (
        "import sys, pol_chain.store\n"
        "bad = [m for m in ('torch', 'web3', 'pol_chain.proof', 'pol_chain.ledger') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
