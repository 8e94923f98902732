"""The one read path of the ``ProofLedger``: JSON-RPC over :mod:`httpx`, decoded with
:mod:`eth_abi`.

Every reader of the ledger — the CLI's queries, the history walk, the agent, the
publisher, the attacks — goes through :class:`LedgerReader`; the transaction client
(:class:`~pol_chain.ledger.client.LedgerClient`) *is* a reader with signing added. The
reader never imports web3 (about 1.4 s), so read-only commands start fast; ``eth_abi``
(~0.3 s) decodes events and view results from the committed ABI
(``artifacts/ProofLedger.json``), and reverts become the named errors of
:mod:`pol_chain.ledger.errors`.

Logs come back in web3.py's shape (``event``, ``args`` with checksummed addresses,
``bytes`` and lists, ``blockNumber``, ``logIndex``, ``transactionHash``). ``eth_getLogs``
is paged: at most ``log_range`` blocks per request (all at once when None), halving the
window when a node answers that a range is too large, so history works on public RPCs
that limit ranges. Views take a ``block`` to read at a pinned height.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from pol_chain.commitment import to_bytes32
from pol_chain.ledger.errors import (
    ContractNotDeployed,
    PolchainLedgerError,
    RpcUnreachable,
    UnknownRun,
    decode_revert,
)
from pol_chain.ledger.types import ChallengeInfo, ClaimInfo, Owner, RunInfo

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["Block", "LedgerReader", "abi", "checksum_address"]

Bytes32 = bytes | str
Block = int | str
"""A block number, or a tag such as ``"latest"``."""

_RANGE_ERRORS = ("range", "limit", "too many", "exceed", "10000", "query returned more")
VERIFIER_ROLE = keccak(b"VERIFIER_ROLE")


@cache
def abi() -> list[dict[str, Any]]:
    """The committed ``ProofLedger`` ABI (read once)."""
    text = resources.files("pol_chain.ledger").joinpath("artifacts/ProofLedger.json").read_text()
    loaded: list[dict[str, Any]] = json.loads(text)["abi"]
    return loaded


def checksum_address(value: str | bytes) -> str:
    """The EIP-55 checksummed spelling of a 20-byte address (hex text or raw bytes)."""
    raw = bytes(value) if isinstance(value, bytes | bytearray) else _unhex(value)
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    return str(to_checksum_address(raw))


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith(("0x", "0X")) else text)


def _canonical(param: Mapping[str, Any]) -> str:
    """The canonical ABI type of a parameter (tuples spelled out as ``(t1,t2)``)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _shape(abi_type: str, value: Any) -> Any:
    """eth_abi's value in web3.py's shape: checksummed addresses, lists for arrays."""
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return [_shape(inner, v) for v in value]
    if abi_type.startswith("("):
        return tuple(_shape(t, v) for t, v in zip(_split_tuple(abi_type), value, strict=True))
    if abi_type == "address":
        return checksum_address(value)
    return value


def _split_tuple(abi_type: str) -> list[str]:
    """``"(a,(b,c)[],d)"`` → ``["a", "(b,c)[]", "d"]``."""
    body, parts, depth, start = abi_type[1:-1], [], 0, 0
    for pos, char in enumerate(body):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[start:pos])
            start = pos + 1
    parts.append(body[start:])
    return parts


class _Event:
    """One event of the ABI: its topic0 and how to decode a raw log."""

    def __init__(self, item: Mapping[str, Any]) -> None:
        self.name: str = item["name"]
        self.inputs: list[Mapping[str, Any]] = list(item["inputs"])
        types = ",".join(_canonical(i) for i in self.inputs)
        self.topic0: bytes = keccak(f"{self.name}({types})".encode())
        self.indexed = [i for i in self.inputs if i["indexed"]]
        self.data = [i for i in self.inputs if not i["indexed"]]
        self.data_types = [_canonical(i) for i in self.data]

    def topics(self, filters: Mapping[str, Any]) -> list[str | list[str] | None]:
        """The ``topics`` filter of ``eth_getLogs`` for indexed-argument ``filters``."""
        by_name = {str(i["name"]): _canonical(i) for i in self.indexed}
        unknown = set(filters) - set(by_name)
        if unknown:
            raise ValueError(f"{self.name} has no indexed argument {sorted(unknown)}")
        out: list[str | list[str] | None] = ["0x" + self.topic0.hex()]
        for param in self.indexed:
            name = str(param["name"])
            if filters.get(name) is None:
                out.append(None)
                continue
            value = filters[name]
            values = value if isinstance(value, list | tuple) else [value]
            words = [
                "0x" + abi_encode([by_name[name]], [_arg(by_name[name], v)]).hex() for v in values
            ]
            out.append(words[0] if len(words) == 1 else words)
        while out and out[-1] is None:
            out.pop()
        return out

    def decode(self, log: Mapping[str, Any]) -> dict[str, Any]:
        """Decode a raw ``eth_getLogs`` entry into web3.py's shape."""
        topics = [_unhex(t) for t in log["topics"][1:]]
        args: dict[str, Any] = {}
        for param, topic in zip(self.indexed, topics, strict=True):
            kind = _canonical(param)
            args[str(param["name"])] = _shape(kind, abi_decode([kind], topic)[0])
        values = abi_decode(self.data_types, _unhex(log["data"]))
        for param, kind, value in zip(self.data, self.data_types, values, strict=True):
            args[str(param["name"])] = _shape(kind, value)
        return {
            "event": self.name,
            "args": {str(i["name"]): args[str(i["name"])] for i in self.inputs},
            "address": checksum_address(log["address"]),
            "blockNumber": int(log["blockNumber"], 16),
            "logIndex": int(log["logIndex"], 16),
            "transactionIndex": int(log["transactionIndex"], 16),
            "transactionHash": _unhex(log["transactionHash"]),
            "blockHash": _unhex(log["blockHash"]),
        }


def _arg(abi_type: str, value: Any) -> Any:
    """A Python value eth_abi encodes as ``abi_type`` (hex text → bytes for bytesN)."""
    if abi_type.startswith("bytes") and isinstance(value, str):
        return _unhex(value)
    if abi_type == "address" and isinstance(value, bytes | bytearray):
        return checksum_address(bytes(value))
    return value


class _Function:
    """One function of the ABI: selector, argument and result types."""

    def __init__(self, item: Mapping[str, Any]) -> None:
        self.name: str = item["name"]
        self.input_types = [_canonical(i) for i in item["inputs"]]
        self.output_types = [_canonical(o) for o in item["outputs"]]
        signature = f"{self.name}({','.join(self.input_types)})"
        self.selector: bytes = keccak(signature.encode())[:4]

    def encode(self, args: Sequence[Any]) -> bytes:
        if len(args) != len(self.input_types):
            raise TypeError(f"{self.name} takes {len(self.input_types)} arguments")
        values = [_arg(t, a) for t, a in zip(self.input_types, args, strict=True)]
        return self.selector + abi_encode(self.input_types, values)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        values = abi_decode(self.output_types, data)
        return tuple(_shape(t, v) for t, v in zip(self.output_types, values, strict=True))


@cache
def _events() -> dict[str, _Event]:
    return {i["name"]: _Event(i) for i in abi() if i.get("type") == "event"}


@cache
def _functions() -> dict[str, _Function]:
    return {i["name"]: _Function(i) for i in abi() if i.get("type") == "function"}


class LedgerReader:
    """Read the ``ProofLedger`` at ``address`` through the JSON-RPC endpoint ``rpc_url``.

    One keep-alive HTTP connection, batched requests for block timestamps, logs decoded
    from the committed ABI. ``deploy_block`` is where log queries start by default;
    ``log_range`` caps the blocks of one ``eth_getLogs`` request. With ``check_code`` the
    constructor asks the node for the chain id and the contract's code in one batch and
    raises :class:`~pol_chain.ledger.errors.ContractNotDeployed` when there is none.
    """

    account: LocalAccount | None = None
    """The signer: none for a reader (a :class:`~pol_chain.ledger.client.LedgerClient`
    sets its own)."""

    def __init__(
        self,
        rpc_url: str,
        address: str,
        *,
        deploy_block: int = 0,
        timeout: float = 10.0,
        check_code: bool = True,
        log_range: int | None = None,
    ) -> None:
        self.url = rpc_url
        try:
            self.address: str = checksum_address(address)
        except ValueError:
            raise PolchainLedgerError(
                f"{address!r} is not a contract address (0x and 40 hex digits)",
                hint="pass the ProofLedger address printed by `polchain deploy`",
            ) from None
        self.deploy_block = deploy_block
        self.log_range = log_range
        self.abi = abi()
        # certificates are loaded only for https: building the default TLS context costs
        # ~0.1 s for nothing on a plain-http node
        self._http = httpx.Client(timeout=timeout, verify=rpc_url.startswith("https:"))
        self._times: dict[int, int] = {}
        self._chain_id: int | None = None
        if check_code:
            try:
                self.check_code()
            except BaseException:
                self.close()
                raise

    def check_code(self) -> None:
        """Raise ContractNotDeployed unless the ledger's address holds code (one batch
        with the chain id; RpcUnreachable when nothing answers)."""
        chain_hex, code = self.batch(
            [("eth_chainId", []), ("eth_getCode", [self.address, "latest"])]
        )
        self._chain_id = int(chain_hex, 16)
        if not _unhex(code):
            raise ContractNotDeployed(self._chain_id, self.address)

    # ------------------------------------------------------------ transport

    def close(self) -> None:
        """Close the HTTP connection."""
        self._http.close()

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, payload: Any) -> Any:
        try:
            reply = self._http.post(self.url, json=payload)
            reply.raise_for_status()
            return reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RpcUnreachable(self.url, type(exc).__name__) from exc

    def _result(self, answer: Mapping[str, Any], method: str) -> Any:
        error = answer.get("error")
        if error is None:
            if "result" not in answer:
                raise RpcUnreachable(self.url, f"no answer to {method}")
            return answer.get("result")
        data = error.get("data") if isinstance(error, Mapping) else None
        if isinstance(data, Mapping):  # some nodes nest it: {"data": {"data": "0x…"}}
            data = data.get("data")
        if method == "eth_call" and isinstance(data, str) and len(_unhex(data)) >= 4:
            raise decode_revert(self.abi, data)
        message = error.get("message", error) if isinstance(error, Mapping) else error
        raise PolchainLedgerError(f"{method} failed at {self.url}: {message}")

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; its ``result`` (named errors for reverts and failures)."""
        answer = self._post({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        if not isinstance(answer, Mapping):
            raise RpcUnreachable(self.url, f"malformed answer to {method}")
        return self._result(answer, method)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several JSON-RPC calls in one HTTP request; their results in order."""
        if not calls:
            return []
        if len(calls) == 1:
            return [self.request(*calls[0])]
        payload = [
            {"jsonrpc": "2.0", "id": n, "method": method, "params": list(params)}
            for n, (method, params) in enumerate(calls)
        ]
        answers = self._post(payload)
        if not isinstance(answers, list):  # a node without batch support
            return [self.request(method, params) for method, params in calls]
        by_id = {a.get("id"): a for a in answers if isinstance(a, Mapping)}
        return [self._result(by_id.get(n, {}), calls[n][0]) for n in range(len(calls))]

    # ---------------------------------------------------------------- chain

    @property
    def chain_id(self) -> int:
        """The chain id (asked once)."""
        if self._chain_id is None:
            self._chain_id = int(self.request("eth_chainId"), 16)
        return self._chain_id

    def probe(self) -> int | None:
        """The chain id when a node answers at :attr:`url`, else None (never raises)."""
        try:
            answer = self._http.post(
                self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
            )
            self._chain_id = int(answer.json()["result"], 16)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return self._chain_id

    def block_number(self) -> int:
        """The latest block number."""
        return int(self.request("eth_blockNumber"), 16)

    def block_hash(self, block: int) -> bytes | None:
        """The hash of ``block`` (None when the node does not know it)."""
        found = self.request("eth_getBlockByNumber", [hex(block), False])
        return _unhex(found["hash"]) if found else None

    def timestamps(self, blocks: Iterable[int]) -> dict[int, int]:
        """Timestamps of ``blocks``; the uncached ones are fetched in one batch."""
        wanted = sorted(set(blocks))
        missing = [b for b in wanted if b not in self._times]
        found = self.batch([("eth_getBlockByNumber", [hex(b), False]) for b in missing])
        for number, block in zip(missing, found, strict=True):
            if block is None:
                raise PolchainLedgerError(f"block {number} is unknown to {self.url}")
            self._times[number] = int(block["timestamp"], 16)
        return {b: self._times[b] for b in wanted}

    def timestamp(self, block: int) -> int:
        """The timestamp of ``block`` (cached)."""
        if block not in self._times:
            self.timestamps([block])
        return self._times[block]

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks: development chains only (Anvil, Ganache, Hardhat)."""
        for _ in range(blocks):
            self.request("evm_mine")

    # ----------------------------------------------------------------- logs

    def logs(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Every ``name`` event of the ledger from ``from_block`` (default: the deployment
        block) to ``to_block`` (default: the latest), indexed arguments equal to
        ``filters`` (a list means any of), decoded, in chain order. Paged by
        :attr:`log_range`; their block timestamps are fetched in the same go."""
        event = _events()[name]
        start = self.deploy_block if from_block is None else from_block
        end = self.block_number() if to_block is None else to_block
        topics = event.topics(filters)
        raw: list[Any] = []
        window = self.log_range or max(1, end - start + 1)
        pos = start
        while pos <= end:
            upto = min(end, pos + window - 1)
            params = {
                "address": self.address,
                "fromBlock": hex(pos),
                "toBlock": hex(upto),
                "topics": topics,
            }
            try:
                raw.extend(self.request("eth_getLogs", [params]))
            except PolchainLedgerError as exc:
                if window > 1 and any(w in str(exc).lower() for w in _RANGE_ERRORS):
                    window = max(1, (upto - pos + 1) // 2)  # the node limits ranges: halve
                    continue
                raise
            pos = upto + 1
        found = [event.decode(log) for log in raw if not log.get("removed")]
        found.sort(key=lambda e: (e["blockNumber"], e["logIndex"]))
        self.timestamps(e["blockNumber"] for e in found)
        return found

    # ---------------------------------------------------------------- views

    def call(self, function: str, *args: Any, block: Block = "latest") -> tuple[Any, ...]:
        """``eth_call`` a view of the ledger at ``block``; its decoded outputs (a revert
        raises the named :class:`~pol_chain.ledger.errors.ContractRevert`)."""
        fn = _functions()[function]
        tag = block if isinstance(block, str) else hex(block)
        data = self.request(
            "eth_call", [{"to": self.address, "data": "0x" + fn.encode(args).hex()}, tag]
        )
        return fn.decode(_unhex(data))

    def get_run(self, run_id: Bytes32, *, block: Block = "latest") -> RunInfo:
        """The run ``run_id`` (UnknownRun when absent)."""
        rid = to_bytes32(run_id)
        (r,) = self.call("getRun", rid, block=block)
        return RunInfo.from_tuple(rid, r)

    def run_exists(self, run_id: Bytes32) -> bool:
        """Whether run ``run_id`` was registered."""
        try:
            return int(self.get_run(run_id).trainer, 16) != 0
        except UnknownRun:
            return False

    def claims_of(self, model_digest: Bytes32, *, block: Block = "latest") -> list[ClaimInfo]:
        """Every claim on ``model_digest`` in finalization order."""
        (rows,) = self.call("claimsOf", to_bytes32(model_digest), block=block)
        return [ClaimInfo.from_tuple(r) for r in rows]

    def owner_of(self, model_digest: Bytes32, *, block: Block = "latest") -> Owner | None:
        """The earliest-finalized non-refuted claim on ``model_digest``; None if none."""
        trainer, rid = self.call("ownerOf", to_bytes32(model_digest), block=block)
        if int(trainer, 16) == 0:
            return None
        return Owner(trainer, bytes(rid))

    def get_challenge(self, challenge_id: int, *, block: Block = "latest") -> ChallengeInfo:
        """The challenge ``challenge_id`` (UnknownChallenge when absent)."""
        (c,) = self.call("getChallenge", challenge_id, block=block)
        return ChallengeInfo.from_tuple(challenge_id, c)

    def challenges_of(self, run_id: Bytes32) -> list[int]:
        """Ids of every challenge against ``run_id``, oldest first."""
        (ids,) = self.call("challengesOf", to_bytes32(run_id))
        return list(ids)

    def committed_count(self, run_id: Bytes32, *, block: Block = "latest") -> int:
        """How many checkpoints ``run_id`` has committed."""
        (count,) = self.call("committedCount", to_bytes32(run_id), block=block)
        return int(count)

    def accumulator_of(self, run_id: Bytes32, *, block: Block = "latest") -> bytes:
        """The on-chain accumulator of ``run_id``."""
        (acc,) = self.call("accumulatorOf", to_bytes32(run_id), block=block)
        return bytes(acc)

    def has_attested(self, challenge_id: int, verifier: str) -> bool:
        """Whether ``verifier`` voted on ``challenge_id``."""
        (voted,) = self.call("hasAttested", challenge_id, checksum_address(verifier))
        return bool(voted)

    def is_verifier(self, account: str) -> bool:
        """Whether ``account`` holds the verifier role."""
        (ok,) = self.call("hasRole", VERIFIER_ROLE, checksum_address(account))
        return bool(ok)

    def challenge_seed(self, challenge_id: int) -> bytes:
        """The challenge's seed (sealed, or computable now); SeedNotReady / SeedExpired."""
        (seed,) = self.call("challengeSeed", challenge_id)
        return bytes(seed)

    def run_seed(self, run_id: Bytes32) -> bytes:
        """``keccak256(abi.encode(chainId, ledger, runId))`` computed by the contract."""
        (seed,) = self.call("runSeedOf", to_bytes32(run_id))
        return bytes(seed)

    def quorum(self) -> int:
        """Votes needed to resolve challenges opened now."""
        (q,) = self.call("quorum")
        return int(q)

    def challenge_bond(self) -> int:
        """The challenge bond in wei."""
        (b,) = self.call("challengeBond")
        return int(b)

    def max_open_unbonded(self) -> int:
        """The most open unbonded challenges one challenger may hold at a time."""
        (n,) = self.call("maxOpenUnbondedChallenges")
        return int(n)

    def open_unbonded(self, challenger: str) -> int:
        """The open challenges ``challenger`` opened without a bond."""
        (n,) = self.call("openUnbondedChallenges", checksum_address(challenger))
        return int(n)

    def pending_withdrawal(self, payee: str) -> int:
        """Wei withdrawable by ``payee``."""
        (p,) = self.call("pendingWithdrawal", checksum_address(payee))
        return int(p)
