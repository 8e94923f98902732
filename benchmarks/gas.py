"""Gas of ProofLedger's transactions on a private Anvil (started and stopped here).

Run: ``.venv/bin/python benchmarks/gas.py``. Commits are measured in steady state (the
run already has checkpoints, as for every commit after the first) and reported as the
whole transaction's gas divided by the checkpoints it commits. The last line printed is
one JSON object.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pol_chain import commitment as cm  # noqa: E402
from pol_chain.ledger.accounts import dev_account  # noqa: E402
from pol_chain.ledger.anvil import EmbeddedChain, free_port  # noqa: E402
from pol_chain.ledger.client import LedgerClient, connect_web3  # noqa: E402

BATCHES = (1, 8, 32, 128)
MANIFEST_CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # 59 chars, CIDv1


def _digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def measure(hardfork: str | None = None) -> dict[str, object]:
    """Deploy on a fresh Anvil (its default hardfork unless given) and measure."""
    extra = ("--hardfork", hardfork) if hardfork else ()
    with tempfile.TemporaryDirectory() as tmp:
        node = EmbeddedChain(tmp, port=free_port(), extra_args=extra)
        node.start()
        try:
            w3 = connect_web3(node.url)
            ledger = LedgerClient.deploy(w3, dev_account(0))
            ledger.grant_verifier(dev_account(1).address)
            per_checkpoint: dict[str, int] = {}
            first_commit: dict[str, int] = {}
            for batch in BATCHES:
                reg = ledger.register_run(_digest("spec"), MANIFEST_CID)
                run = reg.run_id
                leaves = [
                    cm.leaf(run, i, 100 * i, _digest(f"c{i}"), _digest(f"s{i}"))
                    for i in range(2 * batch)
                ]
                first = ledger.commit_checkpoints(run, 0, leaves[:batch], MANIFEST_CID)
                steady = ledger.commit_checkpoints(run, batch, leaves[batch:], MANIFEST_CID)
                first_commit[str(batch)] = round(first.tx.gas_used / batch)
                per_checkpoint[str(batch)] = round(steady.tx.gas_used / batch)
            fin = ledger.finalize_run(run, _digest("model"), MANIFEST_CID)
            opened = ledger.open_challenge(run)
            w3.provider.make_request("anvil_mine", ["0x1"])  # type: ignore[arg-type]
            att = ledger.with_account(dev_account(1)).attest(
                opened.challenge_id, True, _digest("report"), MANIFEST_CID
            )
            # the same challenger again, its first challenge resolved: the steady state of
            # the per-challenger count of open unbonded challenges (no zero -> non-zero write)
            again = ledger.open_challenge(run)
            info = w3.provider.make_request("anvil_nodeInfo", [])  # type: ignore[arg-type]
            node_info: dict[str, Any] = dict(info.get("result") or {})
            return {
                "commit_gas_per_checkpoint": per_checkpoint,
                "first_commit_gas_per_checkpoint": first_commit,
                "register": reg.tx.gas_used,
                "finalize": fin.tx.gas_used,
                "open_challenge": opened.tx.gas_used,
                "attest": att.tx.gas_used,
                "open_challenge_again": again.tx.gas_used,
                "hardfork": node_info.get("hardFork"),
            }
        finally:
            node.stop()


REQUIRED = ("commit_gas_per_checkpoint", "register", "finalize", "open_challenge", "attest")


def main() -> None:
    latest = measure()
    cancun = measure("cancun")
    print(
        "details: "
        + json.dumps(
            {
                "hardfork": latest["hardfork"],
                "open_challenge_again": latest["open_challenge_again"],
                "first_commit_gas_per_checkpoint": latest["first_commit_gas_per_checkpoint"],
                "cancun_commit_gas_per_checkpoint": cancun["commit_gas_per_checkpoint"],
            }
        )
    )
    print(json.dumps({key: latest[key] for key in REQUIRED}))


if __name__ == "__main__":
    main()
