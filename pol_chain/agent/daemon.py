"""The verifier agent's loop: discover challenges, verify, pin the report, attest.

Crash safety: a challenge moves ``seen → verified → attested`` in the agent's SQLite
state. A verification interrupted by a crash is simply redone (it is deterministic).
Before voting the agent asks the contract whether it already voted (``hasAttested``),
so a crash between sending the vote and recording it never yields a second vote, and
the contract refuses one anyway.

Availability: an unreachable store (Kubo down) only delays a challenge. Artefacts that
stay missing for ``max_missing_attempts`` polls fail the run with ``missing_artefact``,
since a trainer who does not publish their proof must not escape refutation.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.agent.html import write_html_report
from pol_chain.agent.state import AgentState
from pol_chain.format import Check, FormatError, Reason, Report, Thresholds

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.proof.policy import Policy
    from pol_chain.store import ArtefactStore

__all__ = ["ChallengeOutcome", "VerifierAgent"]


@dataclass(frozen=True)
class ChallengeOutcome:
    """What the agent did with one challenge in one pass."""

    challenge_id: int
    run_id: str
    status: str  # attested | closed | pending
    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    report_digest: str | None = None
    report_cid: str | None = None
    report_html: str | None = None
    detail: str = ""


class _Unavailable(Exception):
    """Artefacts cannot be fetched right now (``missing`` when the store lacks them)."""

    def __init__(self, message: str, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


class VerifierAgent:
    """Verifies the challenges of one ledger with one verifier account."""

    def __init__(
        self,
        client: LedgerClient,
        store: ArtefactStore,
        work_dir: Path,
        *,
        policy: Policy | None = None,
        device: str | None = None,
        max_missing_attempts: int = 5,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.work_dir = work_dir
        self.policy = policy
        self.device = device or _best_device()
        self.max_missing_attempts = max_missing_attempts
        self.log = log or (lambda _msg: None)
        self.state = AgentState(work_dir / "agent.sqlite", client.address)
        account = client.account
        if account is None:
            raise ValueError("the agent needs a client with a verifier account")
        self.verifier = account.address

    # -- discovery -------------------------------------------------------------------------

    def discover(self) -> list[int]:
        """Record challenges opened since the last scan; return the pending ones."""
        start = self.state.next_block(self.client.deploy_block or 0)
        latest = self.client.block_number()
        if latest >= start:
            for log in self.client.logs("ChallengeOpened", from_block=start, to_block=latest):
                self.state.see(int(log["args"]["challengeId"]), "0x" + log["args"]["runId"].hex())
            self.state.set_next_block(latest + 1)
        return self.state.pending()

    def run_once(self) -> list[ChallengeOutcome]:
        """Handle every pending challenge once."""
        return [self.handle(cid) for cid in self.discover()]

    def run_forever(
        self, poll: float = 2.0, on_outcome: Callable[[ChallengeOutcome], None] | None = None
    ) -> None:
        """Poll for challenges until interrupted."""
        while True:
            for outcome in self.run_once():
                if on_outcome is not None:
                    on_outcome(outcome)
            time.sleep(poll)

    # -- one challenge ---------------------------------------------------------------------

    def handle(self, challenge_id: int) -> ChallengeOutcome:
        """Verify and attest ``challenge_id`` as far as possible now."""
        from pol_chain.ledger import ChallengeStatus

        info = self.client.get_challenge(challenge_id)
        run_hex = "0x" + info.run_id.hex()
        self.state.see(challenge_id, run_hex)
        if info.status is not ChallengeStatus.OPEN:
            self.state.mark(challenge_id, "closed")
            return ChallengeOutcome(
                challenge_id, run_hex, "closed", detail=info.status.name.lower()
            )
        if self.client.has_attested(challenge_id, self.verifier):
            self.state.mark(challenge_id, "attested")
            return self._outcome(challenge_id, "attested", "already voted")
        row = self.state.get(challenge_id)
        assert row is not None
        if row.status == "seen":
            seed = self._seed(challenge_id)
            if seed is None:
                return ChallengeOutcome(challenge_id, run_hex, "pending", detail="seed not ready")
            try:
                self._verify(challenge_id, info.run_id, seed)
            except _Unavailable as exc:
                self.state.failed_attempt(challenge_id, str(exc))
                row = self.state.get(challenge_id)
                assert row is not None
                if not (exc.missing and row.attempts >= self.max_missing_attempts):
                    self.log(f"challenge {challenge_id}: waiting for artefacts ({exc})")
                    return ChallengeOutcome(challenge_id, run_hex, "pending", detail=str(exc))
                self._record_failure(
                    challenge_id, info.run_id, seed, Reason.MISSING_ARTEFACT, str(exc)
                )
        row = self.state.get(challenge_id)
        assert row is not None and row.report_digest and row.report_cid is not None
        self.client.attest(challenge_id, bool(row.passed), row.report_digest, row.report_cid)
        self.state.mark(challenge_id, "attested")
        return self._outcome(challenge_id, "attested", "voted")

    def _outcome(self, challenge_id: int, status: str, detail: str) -> ChallengeOutcome:
        row = self.state.get(challenge_id)
        assert row is not None
        reasons: list[str] = []
        html = None
        if row.report_dir:
            report_json = Path(row.report_dir) / "report.json"
            if report_json.exists():
                try:
                    reasons = Report.from_bytes(report_json.read_bytes()).reason_codes
                except FormatError:
                    reasons = []
            html = str(Path(row.report_dir) / "report.html")
        return ChallengeOutcome(
            challenge_id,
            row.run_id,
            status,
            row.passed,
            reasons,
            row.report_digest,
            row.report_cid,
            html,
            detail,
        )

    def _seed(self, challenge_id: int) -> bytes | None:
        """The challenge seed; on a local chain, mine the reveal block if needed."""
        from pol_chain.ledger.accounts import LOCAL_CHAIN_IDS
        from pol_chain.ledger.errors import SeedExpired, SeedNotReady

        for _ in range(4):
            try:
                return self.client.challenge_seed(challenge_id)
            except SeedNotReady:
                if self.client.chain_id not in LOCAL_CHAIN_IDS:
                    return None
                self.client.mine()
            except SeedExpired:
                self.client.seal_randomness(challenge_id)  # re-anchors to a future block
        return None

    def _verify(self, challenge_id: int, run_id: bytes, seed: bytes) -> None:
        from pol_chain.compose.fetch import fetch_proof
        from pol_chain.proof.verifier import verify

        out_dir = self.work_dir / "reports" / f"challenge-{challenge_id}"
        try:
            fetched = fetch_proof(self.client, self.store, run_id)
            self.log(
                f"challenge {challenge_id}: verifying run 0x{run_id.hex()[:12]}… on {self.device}"
            )
            report = verify(
                fetched.manifest,
                fetched.source,
                challenge_seed=seed,
                policy=self.policy,
                device=self.device,
                out_dir=out_dir,
                **fetched.verify_kwargs(),
            )
        except Exception as exc:  # noqa: BLE001 - classified below
            self._on_error(challenge_id, run_id, seed, exc)
            return
        self._pin(challenge_id, run_id, report, out_dir)

    def _on_error(self, challenge_id: int, run_id: bytes, seed: bytes, exc: Exception) -> None:
        """Store trouble delays (``_Unavailable``); a bad proof fails with a reason code."""
        from pol_chain.proof.errors import MalformedArtefactError, ProofError
        from pol_chain.store import BlockNotFound, KuboUnreachable, StoreError
        from pol_chain.store import IntegrityError as StoreIntegrityError

        if isinstance(exc, KuboUnreachable | ConnectionError | TimeoutError):
            raise _Unavailable(f"store unreachable: {exc}", missing=False) from exc
        if isinstance(exc, BlockNotFound | KeyError):
            raise _Unavailable(f"artefact missing: {exc}", missing=True) from exc
        if isinstance(exc, StoreIntegrityError):
            self._record_failure(challenge_id, run_id, seed, Reason.ARTEFACT_DIGEST, str(exc))
        elif isinstance(exc, MalformedArtefactError):
            self._record_failure(challenge_id, run_id, seed, Reason.MALFORMED_ARTEFACT, str(exc))
        elif isinstance(exc, ProofError):
            self._record_failure(challenge_id, run_id, seed, Reason.SPEC_INVALID, str(exc))
        elif isinstance(exc, StoreError):
            raise _Unavailable(f"store error: {exc}", missing=False) from exc
        else:
            raise exc

    def _record_failure(
        self, challenge_id: int, run_id: bytes, seed: bytes, reason: Reason, why: str
    ) -> None:
        """Fail a run that cannot even be replayed (unavailable or malformed artefacts)."""
        from pol_chain.proof.canonical import atomic_write
        from pol_chain.proof.policy import Policy

        out_dir = self.work_dir / "reports" / f"challenge-{challenge_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        policy = self.policy or Policy()
        report = Report.build(
            run_id=run_id,
            challenge_seed=seed,
            reasons=[reason],
            checks={reason.value: Check(False, (why[:500],))},
            thresholds=Thresholds(rho=policy.rho, c=policy.c),
            policy=policy.to_json(),
        )
        atomic_write(out_dir / "report.json", report.to_bytes())
        (out_dir / "report.png").unlink(missing_ok=True)
        self._pin(challenge_id, run_id, report, out_dir)

    def _pin(self, challenge_id: int, run_id: bytes, report: Report, out_dir: Path) -> None:
        """Write the HTML page, pin report JSON/PNG/HTML, and record the verification."""
        report_json = out_dir / "report.json"
        png = out_dir / "report.png"
        html = write_html_report(
            report,
            png if png.exists() else None,
            out_dir / "report.html",
            {
                "challenge": str(challenge_id),
                "run": "0x" + run_id.hex(),
                "ledger": self.client.address,
                "chain id": str(self.client.chain_id),
                "verifier": self.verifier,
                "device": self.device,
            },
        )
        report_bytes = report_json.read_bytes()
        digest = hashlib.sha256(report_bytes).hexdigest()
        report_cid = self.store.put_bytes(report_bytes, name=f"report-{challenge_id}.json")
        if png.exists():
            self.store.put_file(png, name=f"report-{challenge_id}.png")
        self.store.put_file(html, name=f"report-{challenge_id}.html")
        self.state.verified(challenge_id, report.passed, "0x" + digest, report_cid, str(out_dir))


def _best_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
