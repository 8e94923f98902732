"""Rebuild the history of a run or a model from ``ProofLedger`` event logs.

The contract keeps O(1) words per run; the logs hold everything else (every leaf, every
vote). :func:`run_history` and :func:`model_history` read them through the
:class:`~pol_chain.ledger.reader.LedgerReader` (a transaction client is one too) and
rebuild runs, commits (with block timestamps), claims, challenges, attestations,
resolutions and the owner, so a user can audit the chain without trusting any off-chain
database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pol_chain.commitment import accumulator, to_bytes32
from pol_chain.ledger.types import ChallengeStatus, Owner, RunStatus, _Json

if TYPE_CHECKING:
    from pol_chain.ledger.reader import LedgerReader

__all__ = [
    "AttestationRecord",
    "ChallengeHistory",
    "CommitRecord",
    "HistoryEvent",
    "ModelHistory",
    "RunHistory",
    "model_history",
    "run_history",
]


@dataclass(frozen=True)
class HistoryEvent(_Json):
    """One log, for a timeline: ``kind`` is the Solidity event name."""

    kind: str
    block_number: int
    timestamp: int
    tx_hash: bytes
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True)
class CommitRecord(_Json):
    first_index: int
    leaves: list[bytes]
    accumulator: bytes
    manifest_cid: str
    block_number: int
    timestamp: int
    tx_hash: bytes


@dataclass(frozen=True)
class AttestationRecord(_Json):
    challenge_id: int
    verifier: str
    passed: bool
    report_digest: bytes
    report_cid: str
    relayer: str
    block_number: int
    timestamp: int


@dataclass
class ChallengeHistory(_Json):
    challenge_id: int
    run_id: bytes
    challenger: str
    bond: int
    quorum: int
    opened_block: int
    opened_at: int
    reveal_block: int
    seed: bytes | None = None
    attestations: list[AttestationRecord] = field(default_factory=list)
    status: ChallengeStatus = ChallengeStatus.OPEN
    resolved_at: int | None = None


@dataclass
class RunHistory(_Json):
    """A run as rebuilt from logs; ``status`` is recomputed from the events."""

    run_id: bytes
    trainer: str
    spec_digest: bytes
    spec_cid: str
    registered_at: int
    commits: list[CommitRecord] = field(default_factory=list)
    model_digest: bytes | None = None
    model_cid: str | None = None
    finalized_at: int | None = None
    status: RunStatus = RunStatus.REGISTERED
    challenges: list[ChallengeHistory] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)

    @property
    def leaves(self) -> list[bytes]:
        """Every committed leaf, in index order."""
        return [leaf for c in self.commits for leaf in c.leaves]

    @property
    def accumulator(self) -> bytes:
        """The accumulator recomputed in Python from the logged leaves."""
        return accumulator(self.leaves)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["committed_count"] = len(self.leaves)
        out["accumulator"] = "0x" + self.accumulator.hex()
        return out


@dataclass
class ModelHistory(_Json):
    """Every claim on a model digest (finalization order) and the owner they imply."""

    model_digest: bytes
    claims: list[RunHistory]
    owner: Owner | None

    @property
    def events(self) -> list[HistoryEvent]:
        """Every event of every claiming run, in chain order."""
        merged = {(e.block_number, e.log_index): e for r in self.claims for e in r.events}
        return [merged[k] for k in sorted(merged)]


class _Reader:
    """The walk's view of the ledger: a fixed block range, sorted logs."""

    def __init__(self, ledger: LedgerReader, from_block: int | None, to_block: int | None) -> None:
        self.source = ledger
        self.from_block = ledger.deploy_block if from_block is None else from_block
        # one consistent view for the whole walk
        self.to_block = ledger.block_number() if to_block is None else to_block

    def timestamp(self, block: int) -> int:
        return self.source.timestamp(block)

    def logs(self, name: str, **filters: Any) -> list[Any]:
        found = self.source.logs(
            name, from_block=self.from_block, to_block=self.to_block, **filters
        )
        return sorted(found, key=lambda e: (e["blockNumber"], e["logIndex"]))

    def event(self, log: Any) -> HistoryEvent:
        return HistoryEvent(
            kind=log["event"],
            block_number=log["blockNumber"],
            timestamp=self.timestamp(log["blockNumber"]),
            tx_hash=bytes(log["transactionHash"]),
            log_index=log["logIndex"],
            args={k: (bytes(v) if isinstance(v, bytes) else v) for k, v in log["args"].items()},
        )


def _challenge(reader: _Reader, log: Any, events: list[HistoryEvent]) -> ChallengeHistory:
    a = log["args"]
    cid = a["challengeId"]
    ch = ChallengeHistory(
        challenge_id=cid,
        run_id=bytes(a["runId"]),
        challenger=a["challenger"],
        bond=a["bond"],
        quorum=a["quorum"],
        opened_block=log["blockNumber"],
        opened_at=reader.timestamp(log["blockNumber"]),
        reveal_block=a["revealBlock"],
    )
    events.append(reader.event(log))
    for moved in reader.logs("ChallengeRandomnessReanchored", challengeId=cid):
        ch.reveal_block = moved["args"]["newRevealBlock"]
        events.append(reader.event(moved))
    for sealed in reader.logs("ChallengeRandomnessSealed", challengeId=cid):
        ch.seed = bytes(sealed["args"]["seed"])
        ch.reveal_block = sealed["args"]["revealBlock"]
        events.append(reader.event(sealed))
    for vote in reader.logs("Attested", challengeId=cid):
        v = vote["args"]
        ch.attestations.append(
            AttestationRecord(
                challenge_id=cid,
                verifier=v["verifier"],
                passed=v["passed"],
                report_digest=bytes(v["reportDigest"]),
                report_cid=v["reportCid"],
                relayer=v["relayer"],
                block_number=vote["blockNumber"],
                timestamp=reader.timestamp(vote["blockNumber"]),
            )
        )
        events.append(reader.event(vote))
    for done in reader.logs("ChallengeResolved", challengeId=cid):
        ch.status = ChallengeStatus.PASSED if done["args"]["passed"] else ChallengeStatus.FAILED
        ch.resolved_at = reader.timestamp(done["blockNumber"])
        events.append(reader.event(done))
    return ch


def _run(reader: _Reader, run_id: bytes) -> RunHistory:
    regs = reader.logs("RunRegistered", runId=run_id)
    if not regs:
        from pol_chain.ledger.errors import UnknownRun

        raise UnknownRun({"runId": run_id})
    reg = regs[0]
    events = [reader.event(reg)]
    hist = RunHistory(
        run_id=run_id,
        trainer=reg["args"]["trainer"],
        spec_digest=bytes(reg["args"]["specDigest"]),
        spec_cid=reg["args"]["specCid"],
        registered_at=reg["args"]["registeredAt"],
    )
    for log in reader.logs("CheckpointsCommitted", runId=run_id):
        a = log["args"]
        hist.commits.append(
            CommitRecord(
                first_index=a["firstIndex"],
                leaves=[bytes(x) for x in a["leaves"]],
                accumulator=bytes(a["newAccumulator"]),
                manifest_cid=a["manifestCid"],
                block_number=log["blockNumber"],
                timestamp=reader.timestamp(log["blockNumber"]),
                tx_hash=bytes(log["transactionHash"]),
            )
        )
        events.append(reader.event(log))
    for log in reader.logs("RunFinalized", runId=run_id):
        hist.model_digest = bytes(log["args"]["modelDigest"])
        hist.model_cid = log["args"]["modelCid"]
        hist.finalized_at = log["args"]["finalizedAt"]
        hist.status = RunStatus.FINALIZED
        events.append(reader.event(log))
    for log in reader.logs("RunStatusChanged", runId=run_id):
        hist.status = RunStatus(log["args"]["newStatus"])
        events.append(reader.event(log))
    for log in reader.logs("ChallengeOpened", runId=run_id):
        hist.challenges.append(_challenge(reader, log, events))
    hist.events = sorted(events, key=lambda e: (e.block_number, e.log_index))
    return hist


def run_history(
    ledger: LedgerReader,
    run_id: bytes | str,
    from_block: int | None = None,
    to_block: int | None = None,
) -> RunHistory:
    """Rebuild run ``run_id`` from logs between ``from_block`` (default: the deployment
    block) and ``to_block`` (default: the latest block, read once)."""
    return _run(_Reader(ledger, from_block, to_block), to_bytes32(run_id))


def model_history(
    ledger: LedgerReader,
    model_digest: bytes | str,
    from_block: int | None = None,
    to_block: int | None = None,
) -> ModelHistory:
    """Rebuild every claim on ``model_digest`` and its owner from logs (blocks as in
    :func:`run_history`)."""
    reader = _Reader(ledger, from_block, to_block)
    digest = to_bytes32(model_digest)
    claims = [
        _run(reader, bytes(log["args"]["runId"]))
        for log in reader.logs("RunFinalized", modelDigest=digest)
    ]
    owner = next(
        (Owner(c.trainer, c.run_id) for c in claims if c.status is not RunStatus.REFUTED), None
    )
    return ModelHistory(digest, claims, owner)
