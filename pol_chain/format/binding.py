"""The binding of a proof directory to its on-chain run (``binding.json``).

Written by ``polchain register``/``train`` before training starts; information for the
tools on the trainer's machine. A verifier never trusts it: it recomputes the run seed
from the chain (:func:`pol_chain.commitment.run_seed`).

Shape (``polchain-binding-v1``, canonical JSON)::

    {"chain_id", "format", "ledger", "run_id", "spec_cid", "spec_sha256", "trainer"}

Bindings written before the format was versioned (the same fields, indented, no
``format``) still read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pol_chain.commitment import run_seed, to_bytes32
from pol_chain.errors import PolchainError
from pol_chain.format._json import CanonicalRecord, JsonDict, JsonObject, parse_json
from pol_chain.format.errors import FormatError
from pol_chain.format.names import BINDING_FORMAT

__all__ = ["BINDING_FILE", "NotAProofDir", "RunBinding"]

BINDING_FILE = "binding.json"
_FIELDS = ("chain_id", "ledger", "run_id", "spec_cid", "spec_sha256", "trainer")


class NotAProofDir(PolchainError):
    """The path is not a proof directory bound to a run."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"{path} is not a proof directory: {why}",
            hint="create one with `polchain register TASK --out DIR` or `polchain train TASK`",
        )


@dataclass(frozen=True)
class RunBinding(CanonicalRecord):
    """Chain facts a proof directory was recorded under."""

    chain_id: int
    ledger: str
    run_id: str
    trainer: str
    spec_sha256: str
    spec_cid: str

    @classmethod
    def offline(cls, run_id: bytes, spec_digest: bytes, *, chain_id: int = 31337) -> RunBinding:
        """A binding for a run registered on no chain (examples, tests, benchmarks): fixed
        placeholder ledger and trainer addresses, so the run seed follows from ``run_id``."""
        return cls(
            chain_id,
            "0x" + "11" * 20,
            "0x" + run_id.hex(),
            "0x" + "22" * 20,
            "0x" + spec_digest.hex(),
            "-",
        )

    @property
    def run_id_bytes(self) -> bytes:
        """The run id as 32 bytes."""
        return to_bytes32(self.run_id)

    @property
    def run_seed(self) -> bytes:
        """The run seed recomputed from chain id, ledger and run id."""
        return run_seed(self.chain_id, self.ledger, self.run_id_bytes)

    def to_json(self) -> JsonDict:
        """The JSON form."""
        return {**{name: getattr(self, name) for name in _FIELDS}, "format": BINDING_FORMAT}

    @classmethod
    def from_bytes(cls, data: bytes) -> RunBinding:
        """Parse binding bytes (the versioned form, or the older unversioned one)."""
        value = parse_json(data, "binding", canonical=False, max_bytes=1 << 16, max_depth=2)
        obj = JsonObject(value, "binding")
        if "format" in obj.value:
            obj.format(BINDING_FORMAT)
        obj.only(_FIELDS, ("format",))
        try:
            to_bytes32(obj.str("run_id", 66))
            to_bytes32(obj.str("spec_sha256", 66))
        except ValueError as exc:
            raise FormatError("binding", str(exc)) from None
        return cls(
            chain_id=obj.int("chain_id"),
            ledger=obj.str("ledger", 42),
            run_id=obj.str("run_id", 66),
            trainer=obj.str("trainer", 42),
            spec_sha256=obj.str("spec_sha256", 66),
            spec_cid=obj.str("spec_cid", 200),
        )

    def write(self, proof_dir: Path) -> None:
        """Write ``binding.json`` atomically into ``proof_dir``."""
        proof_dir.mkdir(parents=True, exist_ok=True)
        tmp = proof_dir / (BINDING_FILE + ".tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, proof_dir / BINDING_FILE)

    @classmethod
    def read(cls, proof_dir: Path) -> RunBinding:
        """Read the binding of ``proof_dir``; :class:`NotAProofDir` when absent or bad."""
        path = Path(proof_dir) / BINDING_FILE
        if not Path(proof_dir).is_dir():
            raise NotAProofDir(Path(proof_dir), "no such directory")
        if not path.is_file():
            raise NotAProofDir(Path(proof_dir), f"no {BINDING_FILE}")
        try:
            return cls.from_bytes(path.read_bytes())
        except (FormatError, OSError) as exc:
            raise NotAProofDir(Path(proof_dir), f"unreadable {BINDING_FILE} ({exc})") from None
