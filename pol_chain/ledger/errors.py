"""Named errors of the ledger layer.

Everything a user can cause derives from :class:`PolchainLedgerError` (itself a
:class:`~pol_chain.errors.PolchainError`), so the CLI prints one line and a hint. A revert
of ``ProofLedger`` surfaces as the subclass of :class:`ContractRevert` named after the
Solidity error (``ProofLedgerCheckpointGap`` → :class:`CheckpointGap`), with the error's
arguments in :attr:`ContractRevert.values` and a readable message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eth_abi import decode as abi_decode
from eth_utils import keccak

from pol_chain.errors import PolchainError

__all__ = [
    "AccessControlBadConfirmation",
    "AccessControlUnauthorized",
    "AlreadyAttested",
    "AnvilNotInstalled",
    "AnvilPortTaken",
    "AnvilRunsElsewhere",
    "AnvilStartFailed",
    "BondTooLarge",
    "ChainStateCorrupt",
    "ChallengeClosed",
    "CheckpointGap",
    "CheckpointRewrite",
    "ContractNotDeployed",
    "ContractRevert",
    "EmptyBatch",
    "InsufficientFunds",
    "InvalidQuorum",
    "InvalidSignature",
    "InvalidUnbondedLimit",
    "KeystoreError",
    "NotTrainer",
    "NothingCommitted",
    "NothingToWithdraw",
    "PolchainLedgerError",
    "RpcUnreachable",
    "RunAlreadyFinalized",
    "RunNotChallengeable",
    "SeedExpired",
    "SeedNotReady",
    "SignerNotVerifier",
    "TooManyOpenChallenges",
    "TransactionFailed",
    "UnknownChallenge",
    "UnknownRun",
    "WithdrawFailed",
    "WrongBond",
    "WrongKeystorePassword",
    "ZeroModelDigest",
    "decode_revert",
]

RUN_STATUS = ("None", "Registered", "Finalized", "Verified", "Refuted")
CHALLENGE_STATUS = ("None", "Open", "Passed", "Failed")


class PolchainLedgerError(PolchainError):
    """Base of every expected ledger failure."""


class RpcUnreachable(PolchainLedgerError):
    """No Ethereum JSON-RPC endpoint answers at the URL."""

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"no Ethereum node answers at {url}{detail}",
            hint="start the embedded chain with `polchain chain up` or check --rpc-url",
        )


class ContractNotDeployed(PolchainLedgerError):
    """No ProofLedger code at the recorded (or given) address on this chain."""

    def __init__(self, chain_id: int, address: str | None) -> None:
        self.chain_id = chain_id
        self.address = address
        where = f"at {address}" if address else "recorded"
        super().__init__(
            f"no ProofLedger contract {where} on chain {chain_id}",
            hint="deploy one with `polchain deploy`",
        )


class AnvilNotInstalled(PolchainLedgerError):
    """The ``anvil`` binary is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "anvil (the local Ethereum node) is not installed",
            hint="run scripts/bootstrap.sh, or `npm install @foundry-rs/anvil` in the project",
        )


class AnvilStartFailed(PolchainLedgerError):
    """Anvil was started but did not answer in time."""

    def __init__(self, url: str, log_tail: str) -> None:
        super().__init__(
            f"anvil did not answer at {url}: {log_tail.strip()[-300:] or 'no output'}",
            hint="is the port taken by another program? unset anvil_port in config.toml "
            "and POLCHAIN_ANVIL_PORT (a free port is then picked), or set it to a free port",
        )


class AnvilPortTaken(PolchainLedgerError):
    """Something that is not this data folder's Anvil answers on the embedded chain's port."""

    def __init__(self, url: str, port: int, state_file: str) -> None:
        self.url = url
        self.port = port
        super().__init__(
            f"a node that is not this data folder's Anvil (state {state_file}) answers at "
            f"{url}; refusing to use another folder's chain",
            hint=f"unset anvil_port in config.toml and POLCHAIN_ANVIL_PORT (the folder then "
            f"picks a free port), set it to a free port, or stop what listens on port {port}",
        )


class AnvilRunsElsewhere(PolchainLedgerError):
    """This data folder's Anvil runs on another port than the one configured."""

    def __init__(self, port: int, running: int) -> None:
        self.port = port
        self.running = running
        super().__init__(
            f"this data folder's Anvil runs on port {running}, not the configured {port}; "
            "a second node on the same state would fork the chain",
            hint="`polchain chain down` first to move it, or unset anvil_port to use it",
        )


class ChainStateCorrupt(PolchainLedgerError):
    """The embedded chain's state file is empty or unparseable and no good copy exists."""

    def __init__(self, state_file: str, why: str) -> None:
        self.state_file = state_file
        super().__init__(
            f"the embedded chain's state {state_file} is unusable ({why}) and there is no "
            "good copy to restore",
            hint="move the file away to start a new, empty chain (it is kept untouched)",
        )


class KeystoreError(PolchainLedgerError):
    """The keystore file is missing, unreadable, or no password was given."""


class WrongKeystorePassword(KeystoreError):
    """The password does not decrypt the keystore."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"wrong password for keystore {path}",
            hint="set POLCHAIN_KEYSTORE_PASSWORD to the keystore's password",
        )


class InsufficientFunds(PolchainLedgerError):
    """The sending account cannot pay for gas (and value)."""

    def __init__(self, address: str, balance_wei: int | None = None) -> None:
        self.address = address
        self.balance_wei = balance_wei
        bal = "" if balance_wei is None else f" (balance {balance_wei / 1e18:.6g} ETH)"
        super().__init__(
            f"account {address} has insufficient funds for this transaction{bal}",
            hint="fund the account, or use an Anvil dev account on a local chain",
        )


class TransactionFailed(PolchainLedgerError):
    """A transaction failed without a decodable reason."""


# --------------------------------------------------------------------------- reverts


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


class ContractRevert(PolchainLedgerError):
    """A ``ProofLedger`` call reverted with a custom error."""

    solidity_name: ClassVar[str] = ""
    template: ClassVar[str] = "contract reverted"
    values: dict[str, Any]

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values = dict(values or {})
        shown = {k: _hex(v) for k, v in self.values.items()}
        for key in ("status",):
            if key in self.values and isinstance(self.values[key], int):
                table = CHALLENGE_STATUS if type(self) is ChallengeClosed else RUN_STATUS
                shown[key] = table[self.values[key]]
        super().__init__(self.template.format(**shown))


_REGISTRY: dict[str, type[ContractRevert]] = {}


def _revert(solidity_name: str, template: str) -> Any:
    def wrap(cls: type[ContractRevert]) -> type[ContractRevert]:
        cls.solidity_name = solidity_name
        cls.template = template
        _REGISTRY[solidity_name] = cls
        return cls

    return wrap


@_revert("ProofLedgerUnknownRun", "unknown run {runId}")
class UnknownRun(ContractRevert):
    """No run has this id."""


@_revert("ProofLedgerNotTrainer", "{account} is not the trainer of run {runId} ({trainer} is)")
class NotTrainer(ContractRevert):
    """Only the run's trainer may do this."""


@_revert("ProofLedgerEmptyBatch", "no leaves given for run {runId}")
class EmptyBatch(ContractRevert):
    """A commit carried no leaves."""


@_revert(
    "ProofLedgerCheckpointGap",
    "checkpoint gap in run {runId}: next index is {expectedIndex}, got {firstIndex}",
)
class CheckpointGap(ContractRevert):
    """``firstIndex`` skips checkpoints."""


@_revert(
    "ProofLedgerCheckpointRewrite",
    "checkpoint {firstIndex} of run {runId} is already committed (next index is {expectedIndex})",
)
class CheckpointRewrite(ContractRevert):
    """``firstIndex`` would rewrite committed checkpoints."""


@_revert("ProofLedgerRunAlreadyFinalized", "run {runId} is already finalized")
class RunAlreadyFinalized(ContractRevert):
    """The run is finalized: no more commits, no second finalize."""


@_revert("ProofLedgerNothingCommitted", "run {runId} has no committed checkpoint to finalize")
class NothingCommitted(ContractRevert):
    """Finalize before any commit."""


@_revert("ProofLedgerZeroModelDigest", "the model digest of run {runId} is zero")
class ZeroModelDigest(ContractRevert):
    """The model digest must not be zero."""


@_revert(
    "ProofLedgerRunNotChallengeable",
    "run {runId} cannot be challenged while {status} (only Finalized or Verified runs)",
)
class RunNotChallengeable(ContractRevert):
    """Only finalized (or verified) runs can be challenged."""


@_revert("ProofLedgerWrongBond", "the challenge bond is {required} wei, {sent} wei was sent")
class WrongBond(ContractRevert):
    """``msg.value`` must equal the challenge bond."""


@_revert("ProofLedgerUnknownChallenge", "unknown challenge {challengeId}")
class UnknownChallenge(ContractRevert):
    """No challenge has this id."""


@_revert(
    "ProofLedgerSeedNotReady",
    "randomness of challenge {challengeId} is not available yet: reveal block {revealBlock} "
    "is not mined before block {currentBlock}",
)
class SeedNotReady(ContractRevert):
    """The reveal block has not been mined yet."""


@_revert(
    "ProofLedgerSeedExpired",
    "reveal block {revealBlock} of challenge {challengeId} is older than 256 blocks; "
    "call seal_randomness to re-anchor it",
)
class SeedExpired(ContractRevert):
    """The reveal block fell out of the blockhash window."""


@_revert("ProofLedgerChallengeClosed", "challenge {challengeId} is already resolved ({status})")
class ChallengeClosed(ContractRevert):
    """The challenge has reached its quorum."""


@_revert(
    "ProofLedgerAlreadyAttested", "verifier {verifier} already voted on challenge {challengeId}"
)
class AlreadyAttested(ContractRevert):
    """One vote per verifier per challenge."""


@_revert("ProofLedgerInvalidSignature", "the attestation signature is malformed")
class InvalidSignature(ContractRevert):
    """The EIP-712 signature does not parse."""


@_revert(
    "ProofLedgerSignerNotVerifier",
    "the attestation was signed by {signer}, which is not a verifier "
    "(forged, or signed for another chain or contract)",
)
class SignerNotVerifier(ContractRevert):
    """The recovered signer lacks the verifier role."""


@_revert("ProofLedgerInvalidQuorum", "invalid quorum {quorum} (must be 1..65535)")
class InvalidQuorum(ContractRevert):
    """Quorum out of range."""


@_revert(
    "ProofLedgerTooManyOpenChallenges",
    "{challenger} already has {open} open challenges without a bond (at most {limit}); "
    "wait for one to resolve, or ask the admin for a higher limit",
)
class TooManyOpenChallenges(ContractRevert):
    """The per-challenger limit on open unbonded challenges is reached."""


@_revert("ProofLedgerInvalidUnbondedLimit", "invalid limit {limit} (must be 1..4294967295)")
class InvalidUnbondedLimit(ContractRevert):
    """The limit on open unbonded challenges must be at least one."""


@_revert("ProofLedgerBondTooLarge", "bond {bond} wei does not fit in 128 bits")
class BondTooLarge(ContractRevert):
    """Bond out of range."""


@_revert("ProofLedgerNothingToWithdraw", "nothing to withdraw for {payee}")
class NothingToWithdraw(ContractRevert):
    """No credited bond."""


@_revert("ProofLedgerWithdrawFailed", "sending {amount} wei to {payee} failed")
class WithdrawFailed(ContractRevert):
    """The payee rejected the transfer."""


@_revert(
    "AccessControlUnauthorizedAccount",
    "{account} lacks the role {neededRole} needed for this call",
)
class AccessControlUnauthorized(ContractRevert):
    """The caller lacks the role (verifier or admin)."""


@_revert("AccessControlBadConfirmation", "an account can only renounce its own roles")
class AccessControlBadConfirmation(ContractRevert):
    """``renounceRole`` called for another account."""


def _role_name(role: bytes) -> str:
    names = {keccak(text="VERIFIER_ROLE"): "VERIFIER_ROLE", b"\x00" * 32: "DEFAULT_ADMIN_ROLE"}
    return names.get(role, "0x" + role.hex())


class _ErrorTable:
    """Selector → (class, argument names, argument types), built once from an ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.entries: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            names = [i["name"] for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            self.entries[selector] = (item["name"], names, types)


_TABLES: dict[int, _ErrorTable] = {}


def decode_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> PolchainLedgerError:
    """Turn revert data into the named error (``TransactionFailed`` when unknown)."""
    if data is None:
        return TransactionFailed("the transaction reverted without a reason")
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    table = _TABLES.setdefault(id(abi), _ErrorTable(abi))
    entry = table.entries.get(raw[:4])
    if entry is None:
        return TransactionFailed(f"the transaction reverted (data 0x{raw.hex()[:80]})")
    name, names, types = entry
    values = dict(zip(names, abi_decode(types, raw[4:]), strict=True))
    cls = _REGISTRY.get(name)
    if cls is None:
        return TransactionFailed(f"the transaction reverted with {name}({values})")
    if cls is AccessControlUnauthorized and "neededRole" in values:
        values["neededRole"] = _role_name(values["neededRole"])
    return cls(values)
