"""Plain data returned by the ledger client: enums mirroring the contract, views, results."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AttestResult",
    "ChallengeInfo",
    "ChallengeStatus",
    "ClaimInfo",
    "CommitResult",
    "FinalizeResult",
    "OpenedChallenge",
    "Owner",
    "RegisteredRun",
    "RunInfo",
    "RunStatus",
    "SealResult",
    "TxInfo",
    "jsonable",
]

_ZERO32 = bytes(32)


def _nonzero(value: bytes) -> bytes | None:
    """``bytes(value)``, or None for the all-zero word the contract uses for "unset"."""
    out = bytes(value)
    return out if out != _ZERO32 else None


class RunStatus(enum.IntEnum):
    """``ProofLedger.RunStatus``."""

    NONE = 0
    REGISTERED = 1
    FINALIZED = 2
    VERIFIED = 3
    REFUTED = 4


class ChallengeStatus(enum.IntEnum):
    """``ProofLedger.ChallengeStatus``."""

    NONE = 0
    OPEN = 1
    PASSED = 2
    FAILED = 3


def jsonable(value: Any) -> Any:
    """Convert dataclasses, bytes (0x-hex), enums (names) and containers for ``json``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class _Json:
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary (bytes as 0x-hex, enums as lower-case names)."""
        out: dict[str, Any] = jsonable(self)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """Return the JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class TxInfo(_Json):
    """A mined transaction."""

    tx_hash: bytes
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class RegisteredRun(_Json):
    run_id: bytes
    trainer: str
    nonce: int
    tx: TxInfo


@dataclass(frozen=True)
class CommitResult(_Json):
    run_id: bytes
    first_index: int
    count: int
    accumulator: bytes
    tx: TxInfo


@dataclass(frozen=True)
class FinalizeResult(_Json):
    run_id: bytes
    model_digest: bytes
    claim_index: int
    tx: TxInfo


@dataclass(frozen=True)
class OpenedChallenge(_Json):
    challenge_id: int
    run_id: bytes
    reveal_block: int
    bond: int
    quorum: int
    tx: TxInfo


@dataclass(frozen=True)
class SealResult(_Json):
    """``seed`` is None when the reveal block was re-anchored to ``reveal_block``."""

    challenge_id: int
    seed: bytes | None
    reveal_block: int
    tx: TxInfo | None


@dataclass(frozen=True)
class AttestResult(_Json):
    """``resolved`` is the challenge's status after the vote (OPEN while undecided)."""

    challenge_id: int
    verifier: str
    passed: bool
    resolved: ChallengeStatus
    tx: TxInfo


@dataclass(frozen=True)
class RunInfo(_Json):
    run_id: bytes
    trainer: str
    spec_digest: bytes
    registered_at: int
    status: RunStatus
    committed_count: int
    accumulator: bytes
    model_digest: bytes | None
    finalized_at: int | None

    @classmethod
    def from_tuple(cls, run_id: bytes, r: Sequence[Any]) -> RunInfo:
        """Decode the ``ProofLedger.getRun`` tuple of run ``run_id``."""
        return cls(
            run_id=run_id,
            trainer=r[0],
            spec_digest=bytes(r[1]),
            registered_at=r[2],
            status=RunStatus(r[3]),
            committed_count=r[4],
            accumulator=bytes(r[5]),
            model_digest=_nonzero(r[6]),
            finalized_at=r[7] or None,
        )


@dataclass(frozen=True)
class ClaimInfo(_Json):
    run_id: bytes
    trainer: str
    finalized_at: int
    status: RunStatus

    @classmethod
    def from_tuple(cls, r: Sequence[Any]) -> ClaimInfo:
        """Decode one row of ``ProofLedger.claimsOf``."""
        return cls(bytes(r[0]), r[1], r[2], RunStatus(r[3]))


@dataclass(frozen=True)
class Owner(_Json):
    trainer: str
    run_id: bytes


@dataclass(frozen=True)
class ChallengeInfo(_Json):
    """``seed`` is None until sealed (see ``LedgerClient.challenge_seed``)."""

    challenge_id: int
    run_id: bytes
    challenger: str
    bond: int
    opened_at_block: int
    reveal_block: int
    seed: bytes | None
    quorum: int
    pass_votes: int
    fail_votes: int
    status: ChallengeStatus

    @classmethod
    def from_tuple(cls, challenge_id: int, c: Sequence[Any]) -> ChallengeInfo:
        """Decode the ``ProofLedger.getChallenge`` tuple of challenge ``challenge_id``."""
        return cls(
            challenge_id=challenge_id,
            run_id=bytes(c[0]),
            challenger=c[1],
            bond=c[2],
            opened_at_block=c[3],
            reveal_block=c[4],
            seed=_nonzero(c[5]),
            quorum=c[6],
            pass_votes=c[7],
            fail_votes=c[8],
            status=ChallengeStatus(c[9]),
        )
