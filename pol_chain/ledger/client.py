"""The ``ProofLedger`` transaction client: a :class:`~pol_chain.ledger.reader.LedgerReader`
that also signs (eth-account) and sends (web3.py).

Every view comes from the reader (one read path); this module adds the transactions.
They are signed locally by the client's account; the nonce is chosen, the signed bytes
journaled and the transaction sent under one lock per account — a thread lock, plus, with
a :class:`~pol_chain.ledger.journal.TxJournal`, an inter-process file lock — so many quick
sends (``send_*`` methods, which do not wait) never collide, not even across processes; a
"nonce too low" answer is retried with a fresh nonce. With a journal, every transaction
is recorded before it is broadcast, and a client re-sends on opening (and before it
chooses a nonce) the journaled transactions a node rollback dropped.
``Pending.wait()`` returns the typed result. Every revert becomes the named
:class:`~pol_chain.ledger.errors.ContractRevert` subclass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.logs import DISCARD as _DISCARD
from web3.types import TxReceipt

from pol_chain.commitment import to_bytes32
from pol_chain.ledger.accounts import LOCAL_CHAIN_IDS
from pol_chain.ledger.errors import (
    InsufficientFunds,
    PolchainLedgerError,
    RpcUnreachable,
    TransactionFailed,
    decode_revert,
)
from pol_chain.ledger.journal import ChainKey, ReconcileReport, TxJournal, chain_key
from pol_chain.ledger.reader import VERIFIER_ROLE, LedgerReader
from pol_chain.ledger.types import (
    AttestResult,
    ChallengeStatus,
    CommitResult,
    FinalizeResult,
    OpenedChallenge,
    RegisteredRun,
    SealResult,
    TxInfo,
)

__all__ = [
    "VERIFIER_ROLE",
    "LedgerClient",
    "Pending",
    "connect_web3",
    "load_artifact",
    "sign_attestation",
]

T = TypeVar("T")
Bytes32 = bytes | str
ZERO32 = b"\x00" * 32
GAS_MARGIN = 1.25
NONCE_RETRIES = 5
_NONCE_CLASH = ("nonce too low", "replacement transaction underpriced", "nonce has already")
_KNOWN_TX = ("already imported", "already known")
_log = logging.getLogger(__name__)


@cache
def load_artifact() -> dict[str, Any]:
    """Return the committed compiled artefact (abi, bytecode, compiler, sourceDigest...)."""
    text = resources.files("pol_chain.ledger").joinpath("artifacts/ProofLedger.json").read_text()
    artifact: dict[str, Any] = json.loads(text)
    return artifact


def connect_web3(rpc_url: str, timeout: float = 10.0) -> Web3:
    """Return a Web3 on ``rpc_url`` that answered ``eth_chainId``; else RpcUnreachable."""
    w3 = Web3(
        Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )
    )
    try:
        w3.eth.chain_id  # noqa: B018 - a probe
    except Exception as exc:  # noqa: BLE001 - any transport failure means unreachable
        raise RpcUnreachable(rpc_url, type(exc).__name__) from exc
    return w3


def _typed_data(
    challenge_id: int,
    passed: bool,
    report_digest: Bytes32,
    report_cid: str,
    chain_id: int,
    verifying_contract: str,
) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Attestation": [
                {"name": "challengeId", "type": "uint256"},
                {"name": "passed", "type": "bool"},
                {"name": "reportDigest", "type": "bytes32"},
                {"name": "reportCid", "type": "string"},
            ],
        },
        "primaryType": "Attestation",
        "domain": {
            "name": "ProofLedger",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(verifying_contract),
        },
        "message": {
            "challengeId": challenge_id,
            "passed": passed,
            "reportDigest": to_bytes32(report_digest),
            "reportCid": report_cid,
        },
    }


def sign_attestation(
    account: LocalAccount,
    challenge_id: int,
    passed: bool,
    report_digest: Bytes32,
    report_cid: str,
    *,
    chain_id: int,
    verifying_contract: str,
) -> bytes:
    """Return ``account``'s 65-byte EIP-712 signature of an ``Attestation`` for the ledger
    at ``verifying_contract`` on ``chain_id`` (relay it with ``attest_by_sig``)."""
    message = encode_typed_data(
        full_message=_typed_data(
            challenge_id, passed, report_digest, report_cid, chain_id, verifying_contract
        )
    )
    signed = Account.sign_message(message, account.key)
    return bytes(signed.signature)


def _endpoint(w3: Web3) -> str:
    uri = getattr(w3.provider, "endpoint_uri", None)
    if not uri:
        raise TypeError("the ledger client needs an HTTP provider")
    return str(uri)


class _NonceTracker:
    """The next nonce this process will use for one account on one chain."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_nonce = 0


_TRACKERS: weakref.WeakKeyDictionary[Web3, dict[str, _NonceTracker]] = weakref.WeakKeyDictionary()
_TRACKERS_LOCK = threading.Lock()


def _nonce_tracker(w3: Web3, address: str) -> _NonceTracker:
    """One tracker per (connection, account), shared by every client on that connection.

    Keyed by the Web3 object, not the chain id: two local chains (or a restarted one) share
    chain id 31337 but not nonces."""
    with _TRACKERS_LOCK:
        return _TRACKERS.setdefault(w3, {}).setdefault(address, _NonceTracker())


class Pending(Generic[T]):
    """A sent transaction; :meth:`wait` mines-waits and returns the typed result."""

    def __init__(
        self,
        client: LedgerClient,
        tx_hash: bytes,
        tx: dict[str, Any],
        parse: Callable[[TxReceipt, TxInfo], T],
        row: int | None = None,
    ) -> None:
        self.client = client
        self.tx_hash = tx_hash
        self._tx = tx
        self._parse = parse
        self._row = row

    def wait(self, timeout: float = 120.0) -> T:
        """Wait for the receipt; raise the named error if the transaction reverted."""
        w3 = self.client.w3
        try:
            receipt = w3.eth.wait_for_transaction_receipt(
                HexBytes(self.tx_hash), timeout=timeout, poll_latency=0.05
            )
        except TimeExhausted as exc:
            raise TransactionFailed(
                f"transaction 0x{self.tx_hash.hex()} not mined within {timeout:.0f} s"
            ) from exc
        except OSError as exc:  # the node went away while we waited
            raise RpcUnreachable(_endpoint(w3), type(exc).__name__) from exc
        journal = self.client.journal
        if journal is not None and self._row is not None:
            journal.mark(
                self._row, "mined", block=receipt["blockNumber"], ok=receipt["status"] == 1
            )
        if receipt["status"] != 1:
            raise self.client._replay_failure(self._tx, receipt["blockNumber"])
        info = TxInfo(bytes(receipt["transactionHash"]), receipt["blockNumber"], receipt["gasUsed"])
        return self._parse(receipt, info)


class LedgerClient(LedgerReader):
    """A ``ProofLedger`` at ``address`` on ``w3``; ``account`` signs (None: read-only).

    Views are :class:`~pol_chain.ledger.reader.LedgerReader`'s, over the same endpoint.
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        *,
        deploy_block: int = 0,
        check_code: bool = True,
        log_range: int | None = None,
        journal: TxJournal | None = None,
        reconcile: bool = True,
    ) -> None:
        super().__init__(
            _endpoint(w3),
            address,
            deploy_block=deploy_block,
            check_code=check_code,
            log_range=log_range,
        )
        self.w3 = w3
        self.account = account
        self.contract: Contract = w3.eth.contract(
            address=to_checksum_address(self.address), abi=self.abi
        )
        self.journal = journal
        self.reconciled: ReconcileReport | None = None
        self._chain: ChainKey | None = None
        if journal is not None:
            self._chain = chain_key(self)
            if reconcile:
                self.reconcile()

    def reconcile(self) -> ReconcileReport:
        """Check every journaled transaction of this chain by receipt and re-send, in
        order, those a rollback dropped (docs/ledger.md, "Fault model"); on a public
        chain, forget those below the finalized block."""
        if self.journal is None or self._chain is None:
            return ReconcileReport()
        dev = self._chain.chain_id in LOCAL_CHAIN_IDS
        report = self.journal.reconcile(self, self._chain, dev_chain=dev)
        self.reconciled = report
        if report.lost:
            _log.warning("ledger %s: %s", self.url, report.summary())
        if self._chain.chain_id not in LOCAL_CHAIN_IDS:
            with contextlib.suppress(PolchainLedgerError, KeyError, TypeError, ValueError):
                final = self.request("eth_getBlockByNumber", ["finalized", False])
                if final:
                    self.journal.prune(self._chain, int(final["number"], 16))
        return report

    # ---------------------------------------------------------------- setup

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        address: str,
        account: LocalAccount | None = None,
        *,
        deploy_block: int = 0,
    ) -> LedgerClient:
        """Connect to ``rpc_url`` (RpcUnreachable) and the ledger at ``address``
        (ContractNotDeployed)."""
        return cls(connect_web3(rpc_url), address, account, deploy_block=deploy_block)

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        account: LocalAccount,
        *,
        admin: str | None = None,
        journal: TxJournal | None = None,
    ) -> LedgerClient:
        """Deploy a new ledger administered by ``admin`` (default: ``account``)."""
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        # an unbound client (no contract yet) sends the creation transaction
        sender = cls(w3, "0x" + "00" * 20, account, check_code=False, journal=journal)
        ctor = factory.constructor(to_checksum_address(admin or account.address))
        receipt = sender._send_raw(ctor, 0).wait_receipt()
        address = receipt["contractAddress"]
        if address is None:
            raise TransactionFailed("the deployment transaction created no contract")
        return cls(
            w3,
            address,
            account,
            deploy_block=receipt["blockNumber"],
            journal=journal,
            reconcile=False,
        )

    def with_account(self, account: LocalAccount) -> LedgerClient:
        """Return a client for the same ledger (and journal) signing with ``account``."""
        client = LedgerClient(
            self.w3,
            self.address,
            account,
            deploy_block=self.deploy_block,
            check_code=False,
            log_range=self.log_range,
        )
        client.journal, client._chain = self.journal, self._chain
        return client

    # ---------------------------------------------------------- transactions

    def _require_account(self) -> LocalAccount:
        if self.account is None:
            raise PolchainLedgerError(
                "this ledger client is read-only", hint="give it an account to send transactions"
            )
        return self.account

    def _revert_error(self, exc: Exception) -> PolchainLedgerError:
        data = getattr(exc, "data", None)
        if isinstance(data, str | bytes) and len(data) >= 4:
            return decode_revert(self.abi, data)
        text = str(exc)
        if "insufficient funds" in text.lower() or "OutOfFunds" in text:
            if self.account is None:
                return InsufficientFunds("?")
            addr = self.account.address
            return InsufficientFunds(addr, self.w3.eth.get_balance(addr))
        return TransactionFailed(f"the transaction was rejected: {text[:300]}")

    def _replay_failure(self, tx: dict[str, Any], block: int) -> PolchainLedgerError:
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:  # re-run it on the state it was mined on top of
            self.w3.eth.call(call, max(block - 1, 0))  # type: ignore[arg-type]
        except (ContractLogicError, Web3RPCError) as exc:
            return self._revert_error(exc)
        return TransactionFailed("the transaction reverted (out of gas or state changed)")

    @contextlib.contextmanager
    def _account_lock(self, address: str) -> Iterator[None]:
        """The inter-process lock of ``address`` on this chain (none without a journal)."""
        if self.journal is None or self._chain is None:
            yield
            return
        with self.journal.lock(self._chain, address):
            yield

    def _choose_nonce(self, address: str, tracker: _NonceTracker) -> int:
        """The next nonce of ``address``; called under its locks."""
        pending = self.w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
        if self.journal is None or self._chain is None:
            return max(pending, tracker.next_nonce)
        top = self.journal.top_nonce(self._chain, address)
        if top is not None and top >= pending:
            # journaled transactions the node neither mined nor holds: a rollback dropped
            # them; put them back under their own nonces before choosing a new one
            # (all accounts, in sending order: a re-sent vote needs its re-sent challenge)
            dev = self._chain.chain_id in LOCAL_CHAIN_IDS
            report = self.journal.reconcile(self, self._chain, dev_chain=dev)
            if report.lost:
                _log.warning("ledger %s: %s", self.url, report.summary())
            pending = self.w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
            top = self.journal.top_nonce(self._chain, address)
        return max(pending, -1 if top is None else top + 1)

    def _send_raw(self, fn: Any, value: int, gas: int | None = None) -> _RawPending:
        account = self._require_account()
        base: dict[str, Any] = {"from": account.address, "value": value}
        label = str(getattr(fn, "fn_name", "") or "deploy")
        row: int | None = None
        try:
            if gas is None:
                gas = int(fn.estimate_gas(base, block_identifier="pending") * GAS_MARGIN)
            tracker = _nonce_tracker(self.w3, account.address)
            with tracker.lock, self._account_lock(account.address):
                for attempt in range(NONCE_RETRIES):
                    nonce = self._choose_nonce(account.address, tracker)
                    tx = fn.build_transaction({**base, "nonce": nonce, "gas": gas})
                    signed = account.sign_transaction(tx)
                    if self.journal is not None and self._chain is not None:
                        row = self.journal.record(
                            self._chain,
                            account.address,
                            nonce,
                            bytes(signed.hash),
                            bytes(signed.raw_transaction),
                            label,
                        )
                    try:
                        tx_hash = bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
                    except Web3RPCError as exc:
                        text = str(exc).lower()
                        if not any(k in text for k in _KNOWN_TX):
                            self._journal_mark(row, "rejected", str(exc))
                            if attempt + 1 < NONCE_RETRIES and any(k in text for k in _NONCE_CLASH):
                                # another sender (outside our lock) took the nonce
                                tracker.next_nonce = 0
                                time.sleep(0.05 * (attempt + 1))
                                continue
                            raise
                        tx_hash = bytes(signed.hash)  # the node has exactly this one
                    except OSError as exc:
                        if _never_sent(exc):
                            self._journal_mark(row, "rejected", str(exc))
                        raise  # otherwise the journal keeps it: reconciling re-sends it
                    tracker.next_nonce = nonce + 1
                    break
        except (ContractLogicError, Web3RPCError, ValueError) as exc:
            raise self._revert_error(exc) from exc
        except OSError as exc:
            raise RpcUnreachable(_endpoint(self.w3), type(exc).__name__) from exc
        return _RawPending(self, tx_hash, tx, row)

    def _journal_mark(self, row: int | None, status: str, detail: str) -> None:
        if self.journal is not None and row is not None:
            self.journal.mark(row, status, detail=detail)

    def _send(self, fn: Any, parse: Callable[[TxReceipt, TxInfo], T], value: int = 0) -> Pending[T]:
        raw = self._send_raw(fn, value)
        return Pending(self, raw.tx_hash, raw.tx, parse, raw.row)

    def _events(self, receipt: TxReceipt, name: str) -> list[Any]:
        event = getattr(self.contract.events, name)()
        return list(event.process_receipt(receipt, errors=_DISCARD))

    # ------------------------------------------------------------------ runs

    def send_register_run(self, spec_digest: Bytes32, spec_cid: str) -> Pending[RegisteredRun]:
        """Send ``registerRun``; see :meth:`register_run`."""

        def parse(receipt: TxReceipt, info: TxInfo) -> RegisteredRun:
            args = self._events(receipt, "RunRegistered")[0]["args"]
            return RegisteredRun(bytes(args["runId"]), args["trainer"], args["nonce"], info)

        fn = self.contract.functions.registerRun(to_bytes32(spec_digest), spec_cid)
        return self._send(fn, parse)

    def register_run(self, spec_digest: Bytes32, spec_cid: str) -> RegisteredRun:
        """Register a run for this account; its run id fixes the run seed."""
        return self.send_register_run(spec_digest, spec_cid).wait()

    def send_commit_checkpoints(
        self, run_id: Bytes32, first_index: int, leaves: Sequence[Bytes32], manifest_cid: str
    ) -> Pending[CommitResult]:
        """Send ``commitCheckpoints`` without waiting (nonces are managed locally)."""
        rid = to_bytes32(run_id)
        batch = [to_bytes32(x) for x in leaves]

        def parse(receipt: TxReceipt, info: TxInfo) -> CommitResult:
            args = self._events(receipt, "CheckpointsCommitted")[0]["args"]
            return CommitResult(rid, first_index, len(batch), bytes(args["newAccumulator"]), info)

        fn = self.contract.functions.commitCheckpoints(rid, first_index, batch, manifest_cid)
        return self._send(fn, parse)

    def commit_checkpoints(
        self, run_id: Bytes32, first_index: int, leaves: Sequence[Bytes32], manifest_cid: str
    ) -> CommitResult:
        """Commit ``leaves`` as checkpoints ``first_index..`` of ``run_id``."""
        return self.send_commit_checkpoints(run_id, first_index, leaves, manifest_cid).wait()

    def finalize_run(
        self, run_id: Bytes32, model_digest: Bytes32, model_cid: str
    ) -> FinalizeResult:
        """Finalize ``run_id``, claiming ``model_digest``."""
        rid, digest = to_bytes32(run_id), to_bytes32(model_digest)

        def parse(receipt: TxReceipt, info: TxInfo) -> FinalizeResult:
            args = self._events(receipt, "RunFinalized")[0]["args"]
            return FinalizeResult(rid, digest, args["claimIndex"], info)

        fn = self.contract.functions.finalizeRun(rid, digest, model_cid)
        return self._send(fn, parse).wait()

    # ------------------------------------------------------------ challenges

    def open_challenge(self, run_id: Bytes32, bond: int | None = None) -> OpenedChallenge:
        """Open a challenge against a finalized run, paying the bond (read if None)."""
        rid = to_bytes32(run_id)
        value = self.challenge_bond() if bond is None else bond

        def parse(receipt: TxReceipt, info: TxInfo) -> OpenedChallenge:
            args = self._events(receipt, "ChallengeOpened")[0]["args"]
            return OpenedChallenge(
                args["challengeId"], rid, args["revealBlock"], args["bond"], args["quorum"], info
            )

        return self._send(self.contract.functions.openChallenge(rid), parse, value).wait()

    def seal_randomness(self, challenge_id: int) -> SealResult:
        """Seal the challenge's seed (or re-anchor it when its reveal block is too old)."""
        info = self.get_challenge(challenge_id)
        if info.seed is not None:
            return SealResult(challenge_id, info.seed, info.reveal_block, None)

        def parse(receipt: TxReceipt, tx: TxInfo) -> SealResult:
            sealed = self._events(receipt, "ChallengeRandomnessSealed")
            if sealed:
                a = sealed[0]["args"]
                return SealResult(challenge_id, bytes(a["seed"]), a["revealBlock"], tx)
            moved = self._events(receipt, "ChallengeRandomnessReanchored")[0]["args"]
            return SealResult(challenge_id, None, moved["newRevealBlock"], tx)

        fn = self.contract.functions.sealChallengeRandomness(challenge_id)
        return self._send(fn, parse).wait()

    def _parse_attest(
        self, challenge_id: int, passed: bool
    ) -> Callable[[TxReceipt, TxInfo], AttestResult]:
        def parse(receipt: TxReceipt, info: TxInfo) -> AttestResult:
            voter = self._events(receipt, "Attested")[0]["args"]["verifier"]
            resolved = self._events(receipt, "ChallengeResolved")
            status = ChallengeStatus.OPEN
            if resolved:
                ok = resolved[0]["args"]["passed"]
                status = ChallengeStatus.PASSED if ok else ChallengeStatus.FAILED
            return AttestResult(challenge_id, voter, passed, status, info)

        return parse

    def attest(
        self, challenge_id: int, passed: bool, report_digest: Bytes32, report_cid: str
    ) -> AttestResult:
        """Vote on a challenge as this account (must hold the verifier role)."""
        fn = self.contract.functions.attest(
            challenge_id, passed, to_bytes32(report_digest), report_cid
        )
        return self._send(fn, self._parse_attest(challenge_id, passed)).wait()

    def sign_attestation(
        self, challenge_id: int, passed: bool, report_digest: Bytes32, report_cid: str
    ) -> bytes:
        """Sign an attestation for this ledger with this client's account (EIP-712)."""
        return sign_attestation(
            self._require_account(),
            challenge_id,
            passed,
            report_digest,
            report_cid,
            chain_id=self.chain_id,
            verifying_contract=self.address,
        )

    def attest_by_sig(
        self,
        challenge_id: int,
        passed: bool,
        report_digest: Bytes32,
        report_cid: str,
        signature: bytes,
    ) -> AttestResult:
        """Relay a verifier's signed attestation (any account may relay)."""
        fn = self.contract.functions.attestBySig(
            challenge_id, passed, to_bytes32(report_digest), report_cid, signature
        )
        return self._send(fn, self._parse_attest(challenge_id, passed)).wait()

    def withdraw(self) -> TxInfo:
        """Withdraw bonds credited to this account."""
        return self._send(self.contract.functions.withdraw(), lambda _r, info: info).wait()

    # ---------------------------------------------------------------- admin

    def set_quorum(self, quorum: int) -> TxInfo:
        """Set the quorum for challenges opened from now on (admin)."""
        return self._send(self.contract.functions.setQuorum(quorum), lambda _r, i: i).wait()

    def set_bond(self, bond_wei: int) -> TxInfo:
        """Set the challenge bond in wei (admin)."""
        fn = self.contract.functions.setChallengeBond(bond_wei)
        return self._send(fn, lambda _r, i: i).wait()

    def set_max_open_unbonded(self, limit: int) -> TxInfo:
        """Set the most open unbonded challenges per challenger (admin)."""
        fn = self.contract.functions.setMaxOpenUnbondedChallenges(limit)
        return self._send(fn, lambda _r, i: i).wait()

    def grant_verifier(self, verifier: str) -> TxInfo:
        """Grant the verifier role (admin)."""
        fn = self.contract.functions.grantRole(VERIFIER_ROLE, to_checksum_address(verifier))
        return self._send(fn, lambda _r, i: i).wait()

    def revoke_verifier(self, verifier: str) -> TxInfo:
        """Revoke the verifier role (admin)."""
        fn = self.contract.functions.revokeRole(VERIFIER_ROLE, to_checksum_address(verifier))
        return self._send(fn, lambda _r, i: i).wait()


class _RawPending:
    """A sent transaction before parsing (used for deployment)."""

    def __init__(
        self, client: LedgerClient, tx_hash: bytes, tx: dict[str, Any], row: int | None
    ) -> None:
        self.client, self.tx_hash, self.tx, self.row = client, tx_hash, tx, row

    def wait_receipt(self, timeout: float = 120.0) -> TxReceipt:
        pending: Pending[TxReceipt] = Pending(
            self.client, self.tx_hash, self.tx, lambda r, _i: r, self.row
        )
        return pending.wait(timeout)


def _never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection was refused (the request never left)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or "NewConnectionError" in type(cur).__name__:
            return True
        reason = getattr(cur, "reason", None)  # urllib3's MaxRetryError
        todo += [
            cur.__cause__,
            cur.__context__,
            reason if isinstance(reason, BaseException) else None,
        ]
        todo += [a for a in cur.args if isinstance(a, BaseException)]
    return False
