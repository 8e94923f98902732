"""Fault scenarios of the chain side: nothing acknowledged is lost (docs/ledger.md, "Fault
model").

Every scenario runs against real parts — a real Anvil in a temporary data folder, the
real compiled ``ProofLedger``, real ``SIGKILL``s of the Anvil process, real ``polchain``
subprocesses — and returns an :class:`Outcome`: whether the fault was survived, whether
any acknowledged data was lost, and for bad inputs whether the error was one clean line.
``tests/faults`` runs each scenario and asserts on it; ``benchmarks/faults.py`` can import
:data:`SCENARIOS` / :func:`run_all` and fold the counts into its summary.

Run: ``.venv/bin/python benchmarks/faults_chain.py [--measure] [NAME ...]``. The last line
printed is one JSON object ``{"scenarios", "faults_survived", "wrong_verdicts",
"data_lost", "agent_stopped", "bad_inputs", "bad_inputs_clean"}``. ``--measure`` also
runs the measurements quoted in docs/ledger.md (kills right after each kind of
transaction with and without the journal; how Anvil writes its state file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pol_chain.errors import PolchainError  # noqa: E402
from pol_chain.ledger.accounts import dev_account  # noqa: E402
from pol_chain.ledger.anvil import EmbeddedChain, free_port, read_state, rpc_answers  # noqa: E402
from pol_chain.ledger.client import LedgerClient, connect_web3  # noqa: E402
from pol_chain.ledger.journal import TxJournal  # noqa: E402
from pol_chain.ledger.types import ChallengeStatus, RunStatus  # noqa: E402

TRAINER, VERIFIER, CHALLENGER = 0, 1, 5


@dataclass
class Outcome:
    """What one scenario showed."""

    scenario: str
    survived: bool
    data_lost: bool
    wrong_verdict: bool = False
    bad_input: bool = False
    clean: bool = True
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def digest(label: str) -> bytes:
    """A deterministic 32-byte value."""
    return hashlib.sha256(label.encode()).digest()


# ------------------------------------------------------------------------ the chain


def kill_anvil(node: EmbeddedChain) -> int:
    """SIGKILL the node's Anvil, reap it, wait until its port is free; its pid."""
    pid = node.pid
    assert pid is not None, "no Anvil to kill"
    os.kill(pid, signal.SIGKILL)
    proc = node._proc
    if proc is not None:
        proc.wait()
        node._proc = None
    else:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while rpc_answers(node.url, timeout=0.2) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


class KillableChain:
    """An embedded chain in ``data`` whose clients journal their transactions."""

    def __init__(self, data: Path, port: int | None = None, *, journal: bool = True) -> None:
        self.data = data
        self.port = port or free_port()
        self.use_journal = journal
        self.node = EmbeddedChain(data, port=self.port)
        self.node.start()
        self.address: str | None = None

    def journal(self) -> TxJournal | None:
        return TxJournal(self.node.journal_path) if self.use_journal else None

    def client(self, account: int = TRAINER) -> LedgerClient:
        """A client of the ledger (deployed by account 0 on first use, verifier granted)."""
        w3 = connect_web3(self.node.url)
        if self.address is None:
            admin = LedgerClient.deploy(w3, dev_account(0), journal=self.journal())
            admin.grant_verifier(dev_account(VERIFIER).address)
            self.address = admin.address
        return LedgerClient(w3, self.address, dev_account(account), journal=self.journal())

    def kill(self) -> None:
        """SIGKILL Anvil (the last second of the chain is lost with it)."""
        kill_anvil(self.node)

    def restart(self) -> EmbeddedChain:
        """Start Anvil again from its state (a new manager, as the next command would)."""
        self.node = EmbeddedChain(self.data, port=self.port)
        self.node.start()
        return self.node

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.node.stop()


@contextlib.contextmanager
def chain(journal: bool = True) -> Iterator[KillableChain]:
    """A killable chain in a temporary folder, stopped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="polchain-faults-"))
    node = KillableChain(tmp, journal=journal)
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------- kill right after an ack

OPS = ("register", "commit", "finalize", "vote")


def _ack_then_kill(node: KillableChain, op: str, *, settle: bool = True) -> dict[str, Any]:
    """Do everything up to ``op`` (then, with ``settle``, let Anvil dump its state once),
    SIGKILL Anvil the moment ``op`` is acknowledged, restart it, and return what the
    chain then holds."""
    trainer = node.client(TRAINER)
    verifier = node.client(VERIFIER)
    challenger = node.client(CHALLENGER)
    spec, model = digest(f"spec-{op}"), digest(f"model-{op}")
    run = digest("no run yet")
    challenge = 0
    steps = OPS[: OPS.index(op) + 1]
    for step in steps:
        if settle and step == op:
            time.sleep(1.3)  # the state file now holds everything before ``op``
        if step == "register":
            run = trainer.register_run(spec, "bafyspec").run_id
        elif step == "commit":
            trainer.commit_checkpoints(run, 0, [digest("leaf0"), digest("leaf1")], "bafym")
        elif step == "finalize":
            trainer.finalize_run(run, model, "bafymodel")
        else:
            if not settle:
                challenge = challenger.open_challenge(run).challenge_id
                challenger.mine(2)
            verifier.attest(challenge, False, digest("report"), "bafyreport")
        if step == "finalize" and op == "vote" and settle:
            challenge = challenger.open_challenge(run).challenge_id
            challenger.mine(2)
    node.kill()  # right after the acknowledgement: within Anvil's 1 s dump interval
    node.restart()
    reader = node.client(TRAINER)
    report = node.node.reconciled
    facts: dict[str, Any] = {
        "resent": len(report.resent) if report else 0,
        "lost": len(report.lost) if report else 0,
    }
    ok = reader.run_exists(run) and reader.get_run(run).spec_digest == spec
    if ok and op == "commit":
        ok = reader.committed_count(run) == 2
    if ok and op == "finalize":
        owner = reader.owner_of(model)
        ok = owner is not None and owner.run_id == run
    if ok and op == "vote":
        ok = reader.get_challenge(challenge).status is ChallengeStatus.FAILED
        ok = ok and reader.get_run(run).status is RunStatus.REFUTED
    if ok and op == "register":
        # the next registration must get a new run id, never the rolled-back one again
        again = reader.register_run(digest("another spec"), "bafyother").run_id
        facts["run_id_reissued"] = again == run
        ok = again != run
    facts["kept"] = bool(ok)
    return facts


def sigkill_after(op: str, *, settle: bool = True) -> Outcome:
    """SIGKILL the embedded Anvil right after ``op`` was acknowledged (with ``settle``
    False: before Anvil's first dump, so the whole chain is lost and replayed)."""
    with chain() as node:
        facts = _ack_then_kill(node, op, settle=settle)
    kept = facts["kept"]
    name = f"sigkill_after_{op}" if settle else "sigkill_before_first_dump"
    return Outcome(
        name,
        survived=kept,
        data_lost=not kept,
        detail=f"{op} {'kept' if kept else 'LOST'} after SIGKILL + restart "
        f"({facts['resent']} transactions re-sent from the journal)",
        facts=facts,
    )


def damaged_state(kind: str = "truncated") -> Outcome:
    """Anvil killed in the middle of a state dump: the file is left ``kind`` (truncated or
    empty). The good copy is restored and the journal re-sends what came after it."""
    with chain() as node:
        trainer = node.client(TRAINER)
        early = trainer.register_run(digest("early"), "bafy").run_id
        node.node.stop()  # a clean stop: complete dump
        node.restart()  # the good copy is taken now
        trainer = node.client(TRAINER)
        late = trainer.register_run(digest("late"), "bafy").run_id
        trainer.commit_checkpoints(late, 0, [digest("l0")], "bafym")
        trainer.finalize_run(late, digest("late-model"), "bafymodel")
        time.sleep(1.3)  # let Anvil dump once: the state file now holds all of it
        node.kill()
        state = node.node.state_file
        data = state.read_bytes()
        state.write_bytes(b"" if kind == "empty" else data[: len(data) // 2])
        node.restart()
        restored = node.node.restored_from is not None
        reader = node.client(TRAINER)
        kept = (
            reader.run_exists(early)
            and reader.run_exists(late)
            and reader.get_run(late).status is RunStatus.FINALIZED
        )
        facts = {
            "restored": restored,
            "kept": kept,
            "damaged_copy_kept": bool(node.node.restored_from and node.node.restored_from.exists()),
            "resent": len(node.node.reconciled.resent) if node.node.reconciled else 0,
        }
    return Outcome(
        f"damaged_state_{kind}",
        survived=restored and kept,
        data_lost=not kept,
        detail=f"{kind} state file: good copy restored={restored}, "
        f"{facts['resent']} transactions re-sent, everything kept={kept}",
        facts=facts,
    )


def damaged_state_without_copy() -> Outcome:
    """A damaged state file and no good copy: a clear error, the file left untouched."""
    with chain() as node:
        node.client(TRAINER)
        time.sleep(1.3)
        node.kill()
        node.node.good_state_file.unlink(missing_ok=True)
        node.node.state_file.write_bytes(b'{"block": {"number": ')
        try:
            node.restart()
        except PolchainError as exc:
            clean = "good copy" in str(exc) and bool(exc.hint)
            kept = node.node.state_file.read_bytes() == b'{"block": {"number": '
            return Outcome(
                "damaged_state_without_copy",
                survived=clean,
                data_lost=not kept,
                bad_input=True,
                clean=clean,
                detail=str(exc),
            )
    return Outcome("damaged_state_without_copy", False, True, detail="chain started silently")


# --------------------------------------------------------- two processes, one account

_SENDER = textwrap.dedent(
    """
    import json, sys, hashlib
    from pol_chain.ledger.accounts import dev_account
    from pol_chain.ledger.client import LedgerClient, connect_web3
    url, address, journal, label, n = sys.argv[1:6]
    kw = {}
    if journal != "-":
        from pol_chain.ledger.journal import TxJournal
        kw["journal"] = TxJournal(journal)
    client = LedgerClient(connect_web3(url), address, dev_account(0), **kw)
    sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
    runs, errors = [], []
    pending = []
    for i in range(int(n)):
        spec = hashlib.sha256(f"{label}-{i}".encode()).digest()
        try:
            pending.append(client.send_register_run(spec, "bafy"))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    for p in pending:
        try:
            runs.append("0x" + p.wait().run_id.hex())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"runs": runs, "errors": errors}))
    """
)


def two_processes_one_account(journal: bool = True, per_process: int = 15) -> Outcome:
    """Two processes send ``per_process`` registrations each, at once, from one account
    (two ``polchain train``, or train + commit): no nonce may collide."""
    with chain(journal=journal) as node:
        client = node.client(TRAINER)
        before = client.w3.eth.get_transaction_count(dev_account(TRAINER).address)
        jpath = str(node.node.journal_path) if journal else "-"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _SENDER,
                    node.node.url,
                    client.address,
                    jpath,
                    label,
                    str(per_process),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for label in ("a", "b")
        ]
        for proc in procs:  # both connected: start them together
            assert proc.stdout is not None
            proc.stdout.readline()
        for proc in procs:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # it died: its stderr says why
                proc.stdin.write("go\n")
                proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            results.append(json.loads(lines[-1]) if lines else {"runs": [], "errors": [err]})
        runs = [r for res in results for r in res["runs"]]
        errors = [e for res in results for e in res["errors"]]
        on_chain = sum(1 for r in runs if client.run_exists(r))
        after = client.w3.eth.get_transaction_count(dev_account(TRAINER).address)
    want = 2 * per_process
    ok = not errors and len(set(runs)) == want and on_chain == want and after - before == want
    name = "two_processes_one_account" + ("" if journal else "_no_journal")
    return Outcome(
        name,
        survived=ok,
        data_lost=on_chain < len(runs),
        detail=f"{len(set(runs))}/{want} registrations mined, {len(errors)} errors"
        + (f" (first: {errors[0][:120]})" if errors else ""),
        facts={"errors": errors, "runs": len(set(runs)), "nonces_used": after - before},
    )


# ------------------------------------------------------------ publisher and proof dir

_PROOF_CACHE: dict[str, Path] = {}


def trained_proof() -> Path:
    """One small honest digits proof (1 epoch, k = 11), trained once per process."""
    if "src" not in _PROOF_CACHE:
        from dataclasses import replace

        from pol_chain.proof import make_spec, train
        from pol_chain.proof.spec import bundle_bytes
        from pol_chain.store import LocalStore
        from pol_chain.tasks import DIGITS

        tmp = Path(tempfile.mkdtemp(prefix="polchain-faults-proof-"))
        out = tmp / "proof"
        spec = make_spec(DIGITS, {"epochs": 1, "k": 11})
        assert spec.bundle is not None
        # the spec as registration will name it: its bundle's CID (the same in any store)
        cid = LocalStore(tmp / "cids").put_bytes(bundle_bytes(DIGITS))
        spec = spec.replace(bundle=replace(spec.bundle, cid=cid))
        train(spec, out, b"\x11" * 32, b"\x22" * 32, threads=2)
        _PROOF_CACHE["src"] = out
    return _PROOF_CACHE["src"]


def bound_proof(node: KillableChain, out: Path, src: Path | None = None) -> tuple[Any, Any, Any]:
    """Register a run the product's way (``register_spec``: store + journaled client) and
    put a copy of ``src`` re-bound to it in ``out``; (binding, client, store)."""
    from pol_chain.attacks.copying import rebind_proof
    from pol_chain.compose.registration import register_spec
    from pol_chain.config import Settings
    from pol_chain.format import RunBinding, TaskSpec

    src = src or trained_proof()
    spec = TaskSpec.from_bytes((src / "spec.json").read_bytes())
    settings = Settings(home=node.data, anvil_port=node.port)
    binding, client, store, spec = register_spec(settings, spec, out, TRAINER)
    rebind_proof(src, out, binding.run_id_bytes)
    RunBinding.write(binding, out)
    node.address = client.address
    return binding, client, store


def publisher_error_then_recovery() -> Outcome:
    """The chain dies under a live publisher: it logs, backs off, retries, and catches up
    once the chain is back; ``close()`` raises only when the last sync cannot be done."""
    from pol_chain.compose.publish import LivePublisher, Publisher
    from pol_chain.format import Manifest

    with chain() as node:
        out = node.data / "proof"
        binding, client, store = bound_proof(node, out)
        total = len(Manifest.from_bytes((out / "manifest.json").read_bytes()).entries)
        errors: list[str] = []
        live = LivePublisher(
            Publisher(out, store, client, binding),
            on_error=lambda exc, delay: errors.append(type(exc).__name__),
            backoff=0.1,
            max_backoff=0.4,
        )
        node.kill()
        live(None)  # a checkpoint arrives while the chain is down
        deadline = time.monotonic() + 20
        while len(errors) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        node.restart()
        while time.monotonic() < deadline:
            if live.last is not None and live.last.committed_after == total:
                break
            time.sleep(0.05)
        caught_up = live.last is not None and live.last.committed_after == total
        live.close()
        committed = client.committed_count(binding.run_id_bytes)
        # a finalize whose reply was lost is re-run: the same claim, no second transaction
        first = Publisher(out, store, client, binding).finalize()
        again = Publisher(out, store, client, binding).finalize()
        same_claim = (first.claim_index, first.tx.tx_hash) == (again.claim_index, again.tx.tx_hash)
        # the last sync cannot be done: close() must say so
        second = LivePublisher(Publisher(out, store, client, binding), backoff=0.05)
        node.kill()
        raised = ""
        try:
            second.close()
        except PolchainError as exc:
            raised = type(exc).__name__
    ok = len(errors) >= 2 and caught_up and committed == total and bool(raised) and same_claim
    return Outcome(
        "publisher_error_then_recovery",
        survived=ok,
        data_lost=committed < total,
        detail=f"{len(errors)} failed syncs retried, then {committed}/{total} committed; "
        f"close() with the chain down raised {raised or 'nothing'}",
        facts={
            "errors": errors,
            "committed": committed,
            "total": total,
            "close_raised": raised,
            "finalize_idempotent": same_claim,
        },
    )


def truncated_checkpoint() -> Outcome:
    """A checkpoint truncated after it was recorded: refused before anything is committed."""
    from pol_chain.compose.publish import ProofDiverged, Publisher

    with chain() as node:
        out = node.data / "proof"
        binding, client, store = bound_proof(node, out)
        victim = out / "checkpoints" / "000002.safetensors"
        victim.write_bytes(victim.read_bytes()[:1000])
        publisher = Publisher(out, store, client, binding)
        messages = []
        for action in (publisher.sync, publisher.finalize):
            try:
                action()
            except ProofDiverged as exc:
                messages.append(str(exc))
        run = client.get_run(binding.run_id_bytes)
    refused = len(messages) == 2 and all("000002.safetensors" in m for m in messages)
    untouched = run.committed_count == 0 and run.status is RunStatus.REGISTERED
    return Outcome(
        "truncated_checkpoint",
        survived=refused and untouched,
        data_lost=False,
        wrong_verdict=not untouched,  # a committed broken proof would be refuted later
        detail=messages[0] if messages else "committed without complaint",
        facts={"committed": run.committed_count, "status": run.status.name},
    )


def reissued_run_id() -> Outcome:
    """A rollback the journal cannot undo (a client without one) re-issues run id R to
    run B: the publisher refuses to commit proof A under it."""
    from pol_chain.compose.publish import ProofDiverged, Publisher
    from pol_chain.format import RunBinding

    with chain() as node:
        out = node.data / "proof"
        _, client, store = bound_proof(node, node.data / "warmup")  # deploys; store
        bare = LedgerClient(client.w3, client.address, dev_account(2))  # no journal
        snapshot = client.request("evm_snapshot")
        spec_a = (trained_proof() / "spec.json").read_bytes()
        spec_cid = store.put_bytes(spec_a, name="spec.json")
        run_a = bare.register_run(hashlib.sha256(spec_a).digest(), spec_cid).run_id
        client.request("evm_revert", [snapshot])  # the rollback
        # the next process (its own connection and nonce counter) registers run B
        bare = LedgerClient(connect_web3(node.node.url), client.address, dev_account(2))
        run_b = bare.register_run(digest("spec of run B"), "bafyB").run_id
        from pol_chain.attacks.copying import rebind_proof

        rebind_proof(trained_proof(), out, run_a)
        binding = RunBinding(
            chain_id=client.chain_id,
            ledger=client.address,
            run_id="0x" + run_a.hex(),
            trainer=dev_account(2).address,
            spec_sha256="0x" + hashlib.sha256(spec_a).hexdigest(),
            spec_cid=spec_cid,
        )
        binding.write(out)
        message = ""
        try:
            Publisher(out, store, bare, binding).finalize()
        except ProofDiverged as exc:
            message = str(exc)
        run = bare.get_run(run_b)
    reproduced = run_a == run_b
    refused = bool(message) and run.committed_count == 0 and run.status is RunStatus.REGISTERED
    return Outcome(
        "reissued_run_id_refused",
        survived=reproduced and refused,
        data_lost=False,
        wrong_verdict=not refused,
        detail=message or "proof A committed under run B",
        facts={"reissued": reproduced, "committed": run.committed_count},
    )


# ------------------------------------------------------------------------ bad inputs


def foreign_anvil_on_port() -> Outcome:
    """Another folder's Anvil answers on the configured port: refuse it, clearly."""
    from pol_chain.ledger.errors import AnvilPortTaken

    with chain() as other:
        tmp = Path(tempfile.mkdtemp(prefix="polchain-faults-"))
        try:
            EmbeddedChain(tmp, port=other.port).start()
        except AnvilPortTaken as exc:
            clean = "anvil_port" in exc.hint and str(other.port) in str(exc)
            return Outcome(
                "foreign_anvil_on_port", clean, False, bad_input=True, clean=clean, detail=str(exc)
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Outcome(
        "foreign_anvil_on_port",
        False,
        True,
        bad_input=True,
        clean=False,
        detail="reused another folder's chain",
    )


def spam_challenges(limit: int = 8, attempts: int = 50) -> Outcome:
    """50 free challenges from one account: at most ``limit`` are open at a time; a slot
    frees when one resolves."""
    from pol_chain.ledger.errors import TooManyOpenChallenges

    with chain() as node:
        trainer = node.client(TRAINER)
        run = trainer.register_run(digest("spec"), "bafy").run_id
        trainer.commit_checkpoints(run, 0, [digest("leaf")], "bafym")
        trainer.finalize_run(run, digest("model"), "bafymodel")
        spammer = node.client(CHALLENGER)
        opened, refused, error = [], 0, None
        for _ in range(attempts):
            try:
                opened.append(spammer.open_challenge(run).challenge_id)
            except TooManyOpenChallenges as exc:
                refused += 1
                error = exc
        spammer.mine(2)
        node.client(VERIFIER).attest(opened[0], True, digest("r"), "bafyr")
        again = spammer.open_challenge(run).challenge_id  # the resolved one freed a slot
        open_now = spammer.open_unbonded(dev_account(CHALLENGER).address)
    ok = (
        len(opened) == limit
        and refused == attempts - limit
        and error is not None
        and error.values.get("limit") == limit
        and open_now == limit
        and again > opened[-1]
    )
    return Outcome(
        "spam_challenges",
        survived=ok,
        data_lost=False,
        bad_input=True,
        clean=error is not None,
        detail=f"{len(opened)} of {attempts} opened, {refused} refused ({error}); "
        f"a resolved challenge freed a slot",
        facts={"opened": len(opened), "refused": refused, "open_after": open_now},
    )


def _cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    base.update(POLCHAIN_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="160", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "pol_chain.cli", *args],
        cwd=home.parent,
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return (
        proc.returncode not in (0, 70)
        and "Traceback" not in proc.stderr
        and bool(lines)
        and lines[0].startswith("error: ")
        and "internal error" not in proc.stderr
        and len(lines) <= 3
    )


def bad_settings() -> list[Outcome]:
    """Config mistakes print one line and a hint, never "internal error … report it"."""
    tmp = Path(tempfile.mkdtemp(prefix="polchain-faults-")) / "project"
    home = tmp / ".polchain"
    home.mkdir(parents=True)
    outcomes = []
    cases: list[tuple[str, Callable[[], subprocess.CompletedProcess[str]]]] = [
        ("bad_config_port", lambda: _cli(home, "chain", "status")),
        (
            "bad_contract_flag",
            lambda: _cli(home, "--contract", "0x1234", "owner", "0x" + "ab" * 32),
        ),
        (
            "bad_contract_setting",
            lambda: _cli(
                home, "owner", "0x" + "ab" * 32, env={"POLCHAIN_CONTRACT_ADDRESS": "nope"}
            ),
        ),
    ]
    try:
        for name, run in cases:
            config = '[chain]\nanvil_port = "eighty"\n' if name == "bad_config_port" else ""
            (home / "config.toml").write_text(config)
            proc = run()
            clean = _one_line(proc)
            outcomes.append(
                Outcome(
                    name,
                    clean,
                    False,
                    bad_input=True,
                    clean=clean,
                    detail=proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "",
                )
            )
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return outcomes


def resume_after_final_model() -> Outcome:
    """``train`` crashed after the model was written, before finalize: ``--resume`` only
    publishes and finalizes; ``--json`` counts the commits after finalize. Then a SIGKILL
    of Anvil right after the reported finalize: the claim is still there."""
    tmp = Path(tempfile.mkdtemp(prefix="polchain-faults-")) / "project"
    tmp.mkdir(parents=True)
    home = tmp / ".polchain"
    port = str(free_port())
    env = {"POLCHAIN_ANVIL_PORT": port}
    args = ("train", "digits", "--epochs", "1", "-k", "11", "--out", "runs/d", "--json")
    try:
        first = _cli(home, *args, "--no-finalize", env=env)
        if first.returncode != 0:
            return Outcome("resume_after_final_model", False, True, detail=first.stderr[-300:])
        resumed = _cli(home, *args, "--resume", env=env)
        summary = json.loads(resumed.stdout) if resumed.returncode == 0 else {}
        node = EmbeddedChain(home, port=int(port))
        if summary.get("finalized"):
            kill_anvil(node)  # right after the CLI reported the finalize
        owner = _cli(
            home, "owner", summary.get("model_digest", "0x" + "00" * 32), "--json", env=env
        )
        claimed = owner.returncode == 0 and json.loads(owner.stdout).get("run_id") == summary.get(
            "run_id"
        )
        with contextlib.suppress(Exception):
            EmbeddedChain(home, port=int(port)).stop()
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    checkpoints = summary.get("checkpoints")
    ok = bool(summary.get("finalized")) and summary.get("committed") == checkpoints and claimed
    return Outcome(
        "resume_after_final_model",
        survived=ok,
        data_lost=bool(summary.get("finalized")) and not claimed,
        detail=(resumed.stderr.strip().splitlines() or [""])[-1]
        if resumed.returncode
        else f"resumed: finalized, {summary.get('committed')}/{checkpoints} committed; "
        f"claim kept after SIGKILL: {claimed}",
        facts={"summary": summary, "claimed": claimed},
    )


# ------------------------------------------------------------------------ measurement


def measure_rollback(trials: int = 10) -> dict[str, dict[str, int]]:
    """Kill Anvil right after each kind of transaction (the chain before it dumped to
    disk), ``trials`` times, with and without the journal; how many were lost."""
    lost: dict[str, dict[str, int]] = {}
    for journal in (False, True):
        key = "journal" if journal else "state_interval_only"
        lost[key] = {}
        for op in OPS:
            n = 0
            for _ in range(trials):
                with chain(journal=journal) as node:
                    n += not _ack_then_kill(node, op)["kept"]
            lost[key][op] = n
    return lost


def measure_state_writes(seconds: float = 6.0) -> dict[str, Any]:
    """Watch Anvil's state file while transactions flow: does a rename replace it (atomic)
    or is it rewritten in place, and how often is it caught incomplete?"""
    with chain(journal=False) as node:
        client = node.client(TRAINER)
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                client.send_register_run(digest(f"s{i}"), "bafy")
                i += 1

        worker = threading.Thread(target=load)
        worker.start()
        inodes: set[int] = set()
        reads = bad = 0
        sizes: list[int] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(FileNotFoundError):
                inodes.add(node.node.state_file.stat().st_ino)
                reads += 1
                bad += read_state(node.node.state_file) is None
                sizes.append(node.node.state_file.stat().st_size)
        stop.set()
        worker.join()
    return {
        "reads": reads,
        "incomplete_reads": bad,
        "inodes_seen": len(inodes),
        "state_bytes": [min(sizes), max(sizes)] if sizes else [],
        "atomic": len(inodes) > 1 and bad == 0,
    }


# ----------------------------------------------------------------------------- run

SCENARIOS: dict[str, Callable[[], Outcome | list[Outcome]]] = {
    **{f"sigkill_after_{op}": (lambda op=op: sigkill_after(op)) for op in OPS},  # type: ignore[misc]
    "sigkill_before_first_dump": lambda: sigkill_after("vote", settle=False),
    "damaged_state_truncated": lambda: damaged_state("truncated"),
    "damaged_state_empty": lambda: damaged_state("empty"),
    "damaged_state_without_copy": damaged_state_without_copy,
    "two_processes_one_account": two_processes_one_account,
    "two_processes_one_account_no_journal": lambda: two_processes_one_account(journal=False),
    "publisher_error_then_recovery": publisher_error_then_recovery,
    "truncated_checkpoint": truncated_checkpoint,
    "reissued_run_id_refused": reissued_run_id,
    "foreign_anvil_on_port": foreign_anvil_on_port,
    "spam_challenges": spam_challenges,
    "bad_settings": bad_settings,
    "resume_after_final_model": resume_after_final_model,
}


def run_all(names: list[str] | None = None) -> list[Outcome]:
    """Run the named scenarios (default: all); a scenario that crashes counts as not
    survived."""
    outcomes: list[Outcome] = []
    for name in names or list(SCENARIOS):
        start = time.perf_counter()
        try:
            got = SCENARIOS[name]()
        except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported as such
            got = Outcome(name, False, False, detail=f"crashed: {type(exc).__name__}: {exc}")
        for outcome in got if isinstance(got, list) else [got]:
            outcome.seconds = round(time.perf_counter() - start, 2)
            outcomes.append(outcome)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """The counts ``benchmarks/faults.py`` reports."""
    bad = [o for o in outcomes if o.bad_input]
    return {
        "scenarios": len(outcomes),
        "faults_survived": sum(o.survived for o in outcomes),
        "wrong_verdicts": sum(o.wrong_verdict for o in outcomes),
        "data_lost": sum(o.data_lost for o in outcomes),
        "agent_stopped": 0,
        "bad_inputs": len(bad),
        "bad_inputs_clean": sum(o.clean for o in bad),
    }


def main(argv: list[str]) -> None:
    measure = "--measure" in argv
    names = [a for a in argv if not a.startswith("--")] or None
    outcomes = run_all(names)
    for o in outcomes:
        mark = "ok  " if o.survived and not o.data_lost else "FAIL"
        print(f"{mark} {o.scenario:40s} {o.seconds:6.1f}s  {o.detail[:150]}")
    if measure:
        print("measure: " + json.dumps({"rollback_lost_of_10": measure_rollback()}))
        print("measure: " + json.dumps({"state_writes": measure_state_writes()}))
    print("details: " + json.dumps([asdict(o) for o in outcomes], default=str)[:20000])
    print(json.dumps(summary(outcomes)))


if __name__ == "__main__":
    main(sys.argv[1:])
