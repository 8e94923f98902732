"""The binding of a proof directory to its on-chain run (``binding.json``).

Written by ``polchain register``/``train`` before training starts. It is information for
the tools on the trainer's machine; a verifier never trusts it and recomputes the run
seed from the chain (:func:`pol_chain.commitment.run_seed`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pol_chain.commitment import run_seed, to_bytes32
from pol_chain.errors import PolchainError

__all__ = ["BINDING_FILE", "NotAProofDir", "RunBinding"]

BINDING_FILE = "binding.json"


class NotAProofDir(PolchainError):
    """The path is not a proof directory bound to a run."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"{path} is not a proof directory: {why}",
            hint="create one with `polchain register TASK --out DIR` or `polchain train TASK`",
        )


@dataclass(frozen=True)
class RunBinding:
    """Chain facts a proof directory was recorded under."""

    chain_id: int
    ledger: str
    run_id: str
    trainer: str
    spec_sha256: str
    spec_cid: str

    @property
    def run_id_bytes(self) -> bytes:
        """The run id as 32 bytes."""
        return to_bytes32(self.run_id)

    @property
    def run_seed(self) -> bytes:
        """The run seed recomputed from chain id, ledger and run id."""
        return run_seed(self.chain_id, self.ledger, self.run_id_bytes)

    def write(self, proof_dir: Path) -> None:
        """Write ``binding.json`` atomically into ``proof_dir``."""
        proof_dir.mkdir(parents=True, exist_ok=True)
        tmp = proof_dir / (BINDING_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, proof_dir / BINDING_FILE)

    @classmethod
    def read(cls, proof_dir: Path) -> RunBinding:
        """Read the binding of ``proof_dir``; :class:`NotAProofDir` when absent or bad."""
        path = proof_dir / BINDING_FILE
        if not proof_dir.is_dir():
            raise NotAProofDir(proof_dir, "no such directory")
        if not path.is_file():
            raise NotAProofDir(proof_dir, f"no {BINDING_FILE}")
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAProofDir(proof_dir, f"unreadable {BINDING_FILE} ({exc})") from None
