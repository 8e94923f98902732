"""The verifier agent's loop: discover challenges, verify, pin the report, attest.

**The verdict rule** (docs/protocol.md §4). A vote depends on the committed proof alone.
The agent votes *fail* only for what the trainer is to blame for: a report with reasons,
a :class:`~pol_chain.compose.fetch.ProofRefused`, or artefacts still unavailable once
the availability deadline has passed. Everything that is the agent's own trouble — it
cannot run the task here, its store is damaged or down, the RPC fails or its logs
disagree with the contract, an unexpected error — gives **no vote**: the challenge stays
pending, a line says why, and it is tried again (with backoff in the daemon).

**Votes are bound** to the exact on-chain challenge: its id, run id and opening block are
recorded when it is first seen, checked again (with the report's run id and challenge
seed) just before the vote is sent, and the vote is confirmed on chain after it is
mined. State is keyed by deployment (chain id, ledger, deployment block and its hash) and
reconciled with the chain when the agent starts, so a reset chain never reuses old rows.

**Crash safety**: a challenge moves ``seen → verified → attested``; a verification cut
short is redone (it is deterministic); ``hasAttested`` is asked before any vote, so a
crash between sending and recording never yields a second vote, and the contract
refuses one anyway. One challenge's failure never stops the others.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pol_chain.agent.html import write_html_report
from pol_chain.agent.state import AgentState, ChallengeRow
from pol_chain.format import Check, FormatError, Reason, Report, Thresholds, to_hex

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.ledger.types import ChallengeInfo
    from pol_chain.proof.policy import Policy
    from pol_chain.store import ArtefactStore

__all__ = ["DEFAULT_AVAILABILITY_DEADLINE", "ChallengeOutcome", "VerifierAgent"]

DEFAULT_AVAILABILITY_DEADLINE = 3600.0
"""Seconds of chain time after a challenge opens during which missing artefacts only
delay the vote; after it (and at least two tries), they fail the run."""
MAX_BACKOFF = 300.0


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


class _NoVote(Exception):
    """This pass cannot vote on the challenge; ``missing`` when artefacts are missing."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def deployment_key(client: LedgerClient) -> str:
    """Chain id, ledger address, deployment block and that block's hash."""
    block = client.deploy_block or 0
    found = client.block_hash(block)
    return f"{client.chain_id}:{client.address.lower()}:{block}:{to_hex(found or b'')}"


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
        availability_deadline: float = DEFAULT_AVAILABILITY_DEADLINE,
        hide: Sequence[Path] = (),
        calibration: Mapping[str, Mapping[str, float]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.work_dir = work_dir
        self.policy = policy
        self.device = device or _best_device()
        self.hide = [Path(p) for p in hide]
        self.calibration = dict(calibration or {})
        self.availability_deadline = availability_deadline
        self.log = log or (lambda _msg: None)
        account = client.account
        if account is None:
            raise ValueError("the agent needs a client with a verifier account")
        self.verifier = account.address
        self.state = AgentState(work_dir / "agent.sqlite", deployment_key(client))
        self.reconcile()

    # -- state vs chain ----------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the stored state agree with the chain: rewind a cursor beyond the head,
        drop rows that do not describe the on-chain challenge of their id, and reopen a
        recorded vote the chain does not have (e.g. lost in a rollback)."""
        from pol_chain.ledger.errors import UnknownChallenge
        from pol_chain.ledger.types import ChallengeStatus

        head = self.client.block_number()
        if self.state.next_block(0) > head + 1:
            self.log(f"agent state is ahead of the chain (head {head}): rescanning")
            self.state.set_next_block(self.client.deploy_block or 0)
        for row in self.state.rows("seen", "verified", "attested"):
            try:
                info = self.client.get_challenge(row.challenge_id)
            except UnknownChallenge:
                info = None
            if info is None or not _same_challenge(row, info):
                self.log(f"challenge {row.challenge_id}: stored state is stale, dropped")
                self.state.forget(row.challenge_id)
                continue
            voted = self.client.has_attested(row.challenge_id, self.verifier)
            if row.status == "attested" and not voted and info.status is ChallengeStatus.OPEN:
                self.log(f"challenge {row.challenge_id}: our vote is not on chain, voting again")
                self.state.mark(row.challenge_id, "verified" if row.report_digest else "seen")

    # -- discovery -------------------------------------------------------------------------

    def discover(self) -> list[int]:
        """Record challenges opened since the last scan; return the pending ones."""
        start = self.state.next_block(self.client.deploy_block or 0)
        latest = self.client.block_number()
        if latest >= start:
            for log in self.client.logs("ChallengeOpened", from_block=start, to_block=latest):
                args = log["args"]
                self.state.see(
                    int(args["challengeId"]), to_hex(args["runId"]), int(log["blockNumber"])
                )
            self.state.set_next_block(latest + 1)
        return self.state.pending()

    def run_once(self, *, respect_backoff: bool = False) -> list[ChallengeOutcome]:
        """Handle every pending challenge once; one challenge's trouble never stops the
        others (``respect_backoff``: skip those whose retry time has not come)."""
        outcomes = []
        now = time.time()
        for challenge_id in self.discover():
            row = self.state.get(challenge_id)
            if respect_backoff and row is not None and row.next_try > now:
                continue
            try:
                outcomes.append(self.handle(challenge_id))
            except Exception as exc:  # noqa: BLE001 - contained: no vote, retried later
                self._trouble(challenge_id, f"{type(exc).__name__}: {exc}", missing=False)
                outcomes.append(self._pending(challenge_id, f"error, will retry: {exc}"))
        return outcomes

    def run_forever(
        self, poll: float = 2.0, on_outcome: Callable[[ChallengeOutcome], None] | None = None
    ) -> None:
        """Poll for challenges until interrupted; an RPC or store outage only waits."""
        delay = poll
        while True:
            try:
                for outcome in self.run_once(respect_backoff=True):
                    if on_outcome is not None:
                        on_outcome(outcome)
                delay = poll
            except Exception as exc:  # noqa: BLE001 - an outage: wait and try again
                delay = min(MAX_BACKOFF, max(poll, delay * 2))
                self.log(f"agent: {type(exc).__name__}: {exc}; retrying in {delay:.0f} s")
            time.sleep(delay)

    # -- one challenge ---------------------------------------------------------------------

    def handle(self, challenge_id: int) -> ChallengeOutcome:
        """Verify and attest ``challenge_id`` as far as possible now."""
        from pol_chain.ledger.types import ChallengeStatus

        info = self.client.get_challenge(challenge_id)
        row = self.state.get(challenge_id)
        if row is None or not _same_challenge(row, info):
            self.state.forget(challenge_id)
            self.state.see(challenge_id, to_hex(info.run_id), info.opened_at_block)
            row = self.state.get(challenge_id)
            assert row is not None
        if info.status is not ChallengeStatus.OPEN:
            self.state.mark(challenge_id, "closed")
            return ChallengeOutcome(
                challenge_id, row.run_id, "closed", detail=info.status.name.lower()
            )
        if self.client.has_attested(challenge_id, self.verifier):
            self.state.mark(challenge_id, "attested")
            return self._outcome(challenge_id, "attested", "already voted")
        seed = self._seed(challenge_id)
        if seed is None:
            return self._pending(challenge_id, "seed not ready")
        if row.status == "seen":
            try:
                self._verify(challenge_id, info, seed)
            except _NoVote as exc:
                if not (exc.missing and self._past_deadline(challenge_id, info)):
                    self._trouble(challenge_id, str(exc), missing=exc.missing)
                    return self._pending(challenge_id, str(exc))
                self._record_failure(
                    challenge_id, info.run_id, seed, Reason.MISSING_ARTEFACT, str(exc)
                )
        return self._vote(challenge_id, seed)

    def _vote(self, challenge_id: int, seed: bytes) -> ChallengeOutcome:
        """Send the recorded verdict, bound to the challenge as it stands on chain now."""
        row = self.state.get(challenge_id)
        assert row is not None and row.report_digest and row.report_cid is not None
        info = self.client.get_challenge(challenge_id)
        report = self._stored_report(row)
        if (
            not _same_challenge(row, info)
            or report is None
            or to_hex(report.run_id) != row.run_id
            or report.challenge_seed != seed
        ):
            self.log(f"challenge {challenge_id}: stored verdict does not fit it, verifying again")
            self.state.mark(challenge_id, "seen")
            return self._pending(challenge_id, "stored verdict did not match the challenge")
        self.client.attest(challenge_id, bool(row.passed), row.report_digest, row.report_cid)
        if not self.client.has_attested(challenge_id, self.verifier):
            return self._pending(challenge_id, "the vote is not on chain yet; will check again")
        self.state.mark(challenge_id, "attested")
        return self._outcome(challenge_id, "attested", "voted")

    def _past_deadline(self, challenge_id: int, info: ChallengeInfo) -> bool:
        """Whether missing artefacts now fail the run: at least two tries, and the chain's
        time has moved on by the availability deadline since the challenge opened."""
        row = self.state.get(challenge_id)
        tries = (row.missing_attempts if row is not None else 0) + 1
        opened = self.client.timestamp(info.opened_at_block)
        now = self.client.timestamp(self.client.block_number())
        return tries >= 2 and now - opened >= self.availability_deadline

    def _trouble(self, challenge_id: int, why: str, *, missing: bool) -> None:
        row = self.state.get(challenge_id)
        attempts = row.attempts if row is not None else 0
        delay = min(MAX_BACKOFF, 2.0 ** min(attempts, 8))
        self.state.failed_attempt(challenge_id, why, missing=missing, next_try=time.time() + delay)
        self.log(f"challenge {challenge_id}: no vote: {why}")

    def _pending(self, challenge_id: int, detail: str) -> ChallengeOutcome:
        row = self.state.get(challenge_id)
        return ChallengeOutcome(challenge_id, row.run_id if row else "", "pending", detail=detail)

    def _stored_report(self, row: ChallengeRow) -> Report | None:
        if not row.report_dir:
            return None
        path = Path(row.report_dir) / "report.json"
        try:
            data = path.read_bytes()
            if "0x" + hashlib.sha256(data).hexdigest() != row.report_digest:
                return None
            return Report.from_bytes(data)
        except (OSError, FormatError):
            return None

    def _outcome(self, challenge_id: int, status: str, detail: str) -> ChallengeOutcome:
        row = self.state.get(challenge_id)
        assert row is not None
        report = self._stored_report(row)
        html = str(Path(row.report_dir) / "report.html") if row.report_dir else None
        return ChallengeOutcome(
            challenge_id,
            row.run_id,
            status,
            row.passed,
            report.reason_codes if report is not None else [],
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

    def _policy_for(self, spec_bytes: bytes) -> Policy | None:
        """The policy for a proof recorded on ``spec``'s device: the configured one on the
        same kind of device; on another kind, the calibrated thresholds for that pair —
        none means this agent cannot judge the replay (no vote)."""
        from pol_chain.format import TaskSpec
        from pol_chain.proof.errors import CannotVerify
        from pol_chain.proof.policy import Policy

        policy = self.policy or Policy()
        try:
            recorded = str(TaskSpec.from_bytes(spec_bytes).environment.get("device", "cpu"))
        except FormatError:
            return policy  # the verifier reports the spec
        pair = f"{_kind(recorded)}->{_kind(self.device)}"
        if _kind(recorded) == _kind(self.device):
            return policy
        found = self.calibration.get(pair)
        if found is None:
            raise CannotVerify(
                f"the run was recorded on {recorded}, this agent replays on {self.device} "
                f"and has no calibration for {pair}",
                hint="run `polchain calibrate --proof DIR` on an honest proof of that device",
            )
        return replace(policy, rho=float(found["rho"]), c=float(found["c"]))

    def _verify(self, challenge_id: int, info: ChallengeInfo, seed: bytes) -> None:
        """Verify the challenged run and record the verdict; :class:`_NoVote` when this
        pass cannot reach one that depends on the proof alone."""
        from pol_chain.compose.fetch import ProofRefused, fetch_proof
        from pol_chain.compose.replay import check_lineage, fetch_parent, runner_for
        from pol_chain.format import TaskSpec
        from pol_chain.proof.errors import ArtefactUnavailable
        from pol_chain.proof.verifier import verify

        out_dir = self.work_dir / "reports" / f"challenge-{challenge_id}"
        runner = None
        try:
            fetched = fetch_proof(self.client, self.store, info.run_id)
            check_lineage(self.client, fetched.spec_bytes, fetched.history)
            policy = self._policy_for(fetched.spec_bytes)
            self.log(
                f"challenge {challenge_id}: verifying run 0x{info.run_id.hex()[:12]}… "
                f"on {self.device}"
            )
            runner = runner_for(
                fetched.spec_bytes,
                fetched.run_seed,
                fetched.source,
                work_dir=self.work_dir / "sandbox",
                device=self.device,
                hide=self.hide,
            )
            parent = None
            if runner is None:  # a v1 spec: the installed task, if it is the same
                try:
                    parent = fetch_parent(TaskSpec.from_bytes(fetched.spec_bytes), fetched.source)
                except FormatError:
                    parent = None
            report = verify(
                fetched.manifest,
                fetched.source,
                challenge_seed=seed,
                policy=policy,
                device=self.device,
                out_dir=out_dir,
                runner=runner,
                parent_model=parent,
                **fetched.verify_kwargs(),
            )
        except ProofRefused as exc:
            self._record_failure(challenge_id, info.run_id, seed, exc.reason, str(exc))
            return
        except ArtefactUnavailable as exc:
            raise _NoVote(f"waiting for artefacts: {exc}", missing=True) from exc
        except KeyError as exc:  # a store without the block: missing, like the above
            raise _NoVote(f"waiting for artefacts: {exc}", missing=True) from exc
        except Exception as exc:  # noqa: BLE001 - the verifier's trouble, never the trainer's
            raise _NoVote(_trouble_line(exc)) from exc
        finally:
            if runner is not None:
                runner.close()
        self._pin(challenge_id, info.run_id, report, out_dir)

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


def _same_challenge(row: ChallengeRow, info: ChallengeInfo) -> bool:
    return row.run_id == to_hex(info.run_id) and row.opened_block == info.opened_at_block


def _trouble_line(exc: BaseException) -> str:
    """One line saying why this verifier cannot vote now."""
    from pol_chain.proof.errors import CannotVerify
    from pol_chain.store import BlockCorrupted, KuboUnreachable

    if isinstance(exc, CannotVerify):
        return f"cannot verify here: {exc}"
    if isinstance(exc, BlockCorrupted):
        return f"local store damage ({exc}); run `polchain store verify`"
    if isinstance(exc, KuboUnreachable | ConnectionError | TimeoutError):
        return f"store unreachable: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _kind(device: str) -> str:
    """The device kind: ``cuda`` or ``cpu`` (``cuda:1`` → ``cuda``)."""
    return device.split(":", 1)[0]


def _best_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
