"""A read-only ``ProofLedger`` reader over raw JSON-RPC: no web3.py, no eth-account.

``import web3`` alone costs about 1.4 s (eth_account → eth_keyfile → py_ecc), which is
more than the whole budget of a read-only command such as ``polchain history``. This
module talks JSON-RPC directly with :mod:`httpx` (batched where it helps), decodes logs
and view results from the committed ABI (``artifacts/ProofLedger.json``) with a small
codec of its own (eth_abi and eth_utils cost 0.2-0.5 s to import; the codec is tested
against eth_abi) and hashes topics with :mod:`eth_hash`. Named errors come from
:mod:`pol_chain.ledger.errors`, imported only when one is raised. The module imports in
about 0.05 s on top of httpx.

:class:`LedgerReader` provides what :mod:`pol_chain.ledger.history` needs
(:meth:`~LedgerReader.logs`, :meth:`~LedgerReader.timestamp`,
:attr:`~LedgerReader.deploy_block`) — logs are decoded into the same shape web3.py gives
(``args`` with checksummed addresses, ``bytes`` and lists, ``blockNumber``, ``logIndex``,
``transactionHash``) — plus the contract's views (:meth:`~LedgerReader.get_run`,
:meth:`~LedgerReader.owner_of`, :meth:`~LedgerReader.claims_of`,
:meth:`~LedgerReader.get_challenge` …) returning the same dataclasses as
:class:`~pol_chain.ledger.client.LedgerClient`. :func:`open_reader` goes from
:class:`~pol_chain.config.Settings` to a ready reader (starting the embedded Anvil when
nothing answers), failing with the same named errors as the web3 path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from eth_hash.auto import keccak

from pol_chain.commitment import to_bytes32
from pol_chain.ledger.types import (
    ChallengeInfo,
    ClaimInfo,
    Owner,
    RunInfo,
)

if TYPE_CHECKING:
    from pol_chain.config import Settings
    from pol_chain.ledger.errors import PolchainLedgerError

__all__ = [
    "LedgerReader",
    "abi",
    "checksum_address",
    "embedded_url",
    "open_reader",
    "recorded_deployment",
]

Bytes32 = bytes | str


def _ledger_error(name: str, *args: Any) -> PolchainLedgerError:
    """The named error of :mod:`pol_chain.ledger.errors`, imported only when raised: that
    module imports eth_abi and eth_utils (0.2-0.5 s), which the happy path never needs."""
    from pol_chain.ledger import errors

    cls: type[PolchainLedgerError] = getattr(errors, name)
    return cls(*args)


# --------------------------------------------------------------------------- ABI


@cache
def abi() -> list[dict[str, Any]]:
    """The committed ``ProofLedger`` ABI (read once with :mod:`json`)."""
    text = resources.files("pol_chain.ledger").joinpath("artifacts/ProofLedger.json").read_text()
    loaded: list[dict[str, Any]] = json.loads(text)["abi"]
    return loaded


def _canonical(param: Mapping[str, Any]) -> str:
    """The canonical ABI type of a parameter (tuples spelled out as ``(t1,t2)``)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


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
            if name not in filters or filters[name] is None:
                out.append(None)
                continue
            value = filters[name]
            values = value if isinstance(value, list | tuple) else [value]
            words = ["0x" + _encode_static(by_name[name], v).hex() for v in values]
            out.append(words[0] if len(words) == 1 else words)
        while out and out[-1] is None:
            out.pop()
        return out

    def decode(self, log: Mapping[str, Any]) -> dict[str, Any]:
        """Decode a raw ``eth_getLogs`` entry into web3.py's shape."""
        topics = [_unhex(t) for t in log["topics"][1:]]
        args: dict[str, Any] = {}
        for param, topic in zip(self.indexed, topics, strict=True):
            args[str(param["name"])] = _decode_at(_canonical(param), topic, 0)
        values = _decode_seq(self.data_types, _unhex(log["data"]), 0)
        for param, value in zip(self.data, values, strict=True):
            args[str(param["name"])] = value
        ordered = {str(i["name"]): args[str(i["name"])] for i in self.inputs}
        return {
            "event": self.name,
            "args": ordered,
            "address": checksum_address(log["address"]),
            "blockNumber": int(log["blockNumber"], 16),
            "logIndex": int(log["logIndex"], 16),
            "transactionIndex": int(log["transactionIndex"], 16),
            "transactionHash": _unhex(log["transactionHash"]),
            "blockHash": _unhex(log["blockHash"]),
        }


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
        words = [_encode_static(t, a) for t, a in zip(self.input_types, args, strict=True)]
        return self.selector + b"".join(words)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        return _decode_seq(self.output_types, data, 0)


@cache
def _events() -> dict[str, _Event]:
    return {i["name"]: _Event(i) for i in abi() if i.get("type") == "event"}


@cache
def _functions() -> dict[str, _Function]:
    return {i["name"]: _Function(i) for i in abi() if i.get("type") == "function"}


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith(("0x", "0X")) else text)


# A minimal ABI codec for the types ProofLedger's views and events use (eth_abi costs
# 0.2-0.5 s to import): it decodes any standard type into what web3.py returns
# (checksummed addresses, ``bytes``, lists for arrays, tuples for structs) and encodes the
# static types that view arguments and indexed topics need.


def checksum_address(value: str | bytes) -> str:
    """The EIP-55 checksummed spelling of a 20-byte address (hex text or raw bytes)."""
    raw = bytes(value) if isinstance(value, bytes | bytearray) else _unhex(value)
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    text = raw.hex()
    nibbles = keccak(text.encode()).hex()[:40]
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(d, 16) >= 8 else c
        for c, d in zip(text, nibbles, strict=True)
    )


def _array(abi_type: str) -> tuple[str, int | None] | None:
    """``("T", None)`` for ``T[]``, ``("T", k)`` for ``T[k]``, None for a non-array."""
    if not abi_type.endswith("]"):
        return None
    cut = abi_type.rindex("[")
    size = abi_type[cut + 1 : -1]
    return abi_type[:cut], (int(size) if size else None)


def _is_dynamic(abi_type: str) -> bool:
    if abi_type in ("string", "bytes"):
        return True
    array = _array(abi_type)
    if array is not None:
        return array[1] is None or _is_dynamic(array[0])
    if abi_type.startswith("("):
        return any(_is_dynamic(t) for t in _split_tuple(abi_type))
    return False


def _head_size(abi_type: str) -> int:
    """Bytes a static type takes in place (32 for anything dynamic: its offset)."""
    if _is_dynamic(abi_type):
        return 32
    array = _array(abi_type)
    if array is not None:
        return (array[1] or 0) * _head_size(array[0])
    if abi_type.startswith("("):
        return sum(_head_size(t) for t in _split_tuple(abi_type))
    return 32


def _word(data: bytes, at: int) -> int:
    if at + 32 > len(data):
        raise ValueError("ABI data too short")
    return int.from_bytes(data[at : at + 32], "big")


def _decode_seq(types: Sequence[str], data: bytes, base: int) -> tuple[Any, ...]:
    """Decode the head/tail encoding of ``types`` starting at ``base``."""
    values: list[Any] = []
    pos = base
    for abi_type in types:
        if _is_dynamic(abi_type):
            values.append(_decode_at(abi_type, data, base + _word(data, pos)))
        else:
            values.append(_decode_at(abi_type, data, pos))
        pos += _head_size(abi_type)
    return tuple(values)


def _decode_at(abi_type: str, data: bytes, at: int) -> Any:
    """Decode one value of ``abi_type`` whose encoding starts at ``at``."""
    if abi_type in ("string", "bytes"):
        size = _word(data, at)
        raw = data[at + 32 : at + 32 + size]
        if len(raw) != size:
            raise ValueError("ABI data too short")
        return raw.decode("utf-8") if abi_type == "string" else raw
    array = _array(abi_type)
    if array is not None:
        inner, fixed = array
        if fixed is None:
            return list(_decode_seq([inner] * _word(data, at), data, at + 32))
        return list(_decode_seq([inner] * fixed, data, at))
    if abi_type.startswith("("):
        return _decode_seq(_split_tuple(abi_type), data, at)
    word = _word(data, at)
    if abi_type == "address":
        return checksum_address(word.to_bytes(32, "big")[12:])
    if abi_type == "bool":
        return bool(word)
    if abi_type.startswith("uint"):
        return word
    if abi_type.startswith("int"):
        bits = int(abi_type[3:] or 256)
        word &= (1 << bits) - 1
        return word - (1 << bits) if word >> (bits - 1) else word
    if abi_type.startswith("bytes"):
        return data[at : at + int(abi_type[5:])]
    raise ValueError(f"unsupported ABI type {abi_type}")


def _encode_static(abi_type: str, value: Any) -> bytes:
    """The 32-byte word of a static elementary value (view arguments, indexed topics)."""
    if abi_type == "address":
        raw = bytes(value) if isinstance(value, bytes | bytearray) else _unhex(str(value))
        if len(raw) != 20:
            raise ValueError(f"not a 20-byte address: {value!r}")
        return raw.rjust(32, b"\x00")
    if abi_type == "bool":
        return int(bool(value)).to_bytes(32, "big")
    if abi_type.startswith("uint"):
        number = int(value)
        if number < 0 or number >= 1 << int(abi_type[4:] or 256):
            raise ValueError(f"{value} does not fit {abi_type}")
        return number.to_bytes(32, "big")
    if abi_type.startswith("int"):
        return int(value).to_bytes(32, "big", signed=True)
    if abi_type.startswith("bytes") and abi_type != "bytes":
        raw = bytes(value) if isinstance(value, bytes | bytearray) else _unhex(str(value))
        if len(raw) > int(abi_type[5:]):
            raise ValueError(f"{len(raw)} bytes do not fit {abi_type}")
        return raw.ljust(32, b"\x00")
    raise ValueError(f"the light reader encodes static elementary types only, not {abi_type}")


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


# ------------------------------------------------------------------------ reader


class LedgerReader:
    """Read the ``ProofLedger`` at ``address`` through the JSON-RPC endpoint ``rpc_url``.

    Read-only and light: one keep-alive HTTP connection, batched requests for block
    timestamps, logs decoded from the committed ABI. ``deploy_block`` is where log
    queries start by default. With ``check_code`` the constructor asks the node for the
    chain id and the contract's code in one batch and raises
    :class:`~pol_chain.ledger.errors.ContractNotDeployed` when there is none.
    """

    def __init__(
        self,
        rpc_url: str,
        address: str,
        *,
        deploy_block: int = 0,
        timeout: float = 10.0,
        check_code: bool = True,
    ) -> None:
        self.url = rpc_url
        self.address: str = checksum_address(address)
        self.deploy_block = deploy_block
        self.abi = abi()
        # certificates are loaded only for https: building the default TLS context costs
        # ~0.1 s, a third of this module's budget, for nothing on a plain-http node
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
        with the chain id, RpcUnreachable when nothing answers)."""
        chain_hex, code = self.batch(
            [("eth_chainId", []), ("eth_getCode", [self.address, "latest"])]
        )
        self._chain_id = int(chain_hex, 16)
        if not _unhex(code):
            raise _ledger_error("ContractNotDeployed", self._chain_id, self.address)

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
            raise _ledger_error("RpcUnreachable", self.url, type(exc).__name__) from exc

    def _result(self, answer: Mapping[str, Any], method: str) -> Any:
        error = answer.get("error")
        if error is None:
            return answer.get("result")
        data = error.get("data") if isinstance(error, Mapping) else None
        if isinstance(data, Mapping):  # some nodes nest it: {"data": {"data": "0x…"}}
            data = data.get("data")
        if method == "eth_call" and isinstance(data, str) and len(_unhex(data)) >= 4:
            from pol_chain.ledger.errors import decode_revert

            raise decode_revert(self.abi, data)
        message = error.get("message", error) if isinstance(error, Mapping) else error
        raise _ledger_error("PolchainLedgerError", f"{method} failed at {self.url}: {message}")

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; its ``result`` (named errors for reverts and failures)."""
        answer = self._post({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
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

    def timestamps(self, blocks: Iterable[int]) -> dict[int, int]:
        """Timestamps of ``blocks``; the uncached ones are fetched in one batch."""
        wanted = sorted(set(blocks))
        missing = [b for b in wanted if b not in self._times]
        found = self.batch([("eth_getBlockByNumber", [hex(b), False]) for b in missing])
        for number, block in zip(missing, found, strict=True):
            if block is None:
                raise _ledger_error("PolchainLedgerError", f"block {number} is unknown")
            self._times[number] = int(block["timestamp"], 16)
        return {b: self._times[b] for b in wanted}

    def timestamp(self, block: int) -> int:
        """The timestamp of ``block`` (cached)."""
        if block not in self._times:
            self.timestamps([block])
        return self._times[block]

    # ----------------------------------------------------------------- logs

    def logs(
        self, name: str, *, from_block: int | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Every ``name`` event of the ledger (indexed arguments equal to ``filters``; a
        list means any of), decoded, in chain order. Their block timestamps are fetched
        in the same go (one batch) so :meth:`timestamp` answers from the cache."""
        event = _events()[name]
        start = self.deploy_block if from_block is None else from_block
        params = {
            "address": self.address,
            "fromBlock": hex(start),
            "toBlock": "latest",
            "topics": event.topics(filters),
        }
        raw = self.request("eth_getLogs", [params])
        found = [event.decode(log) for log in raw if not log.get("removed")]
        found.sort(key=lambda e: (e["blockNumber"], e["logIndex"]))
        self.timestamps(e["blockNumber"] for e in found)
        return found

    # ---------------------------------------------------------------- views

    def call(self, function: str, *args: Any, block: str | int = "latest") -> tuple[Any, ...]:
        """``eth_call`` a view of the ledger; its decoded outputs (a revert raises the
        named :class:`~pol_chain.ledger.errors.ContractRevert`)."""
        fn = _functions()[function]
        tag = block if isinstance(block, str) else hex(block)
        data = self.request(
            "eth_call", [{"to": self.address, "data": "0x" + fn.encode(args).hex()}, tag]
        )
        return fn.decode(_unhex(data))

    def get_run(self, run_id: Bytes32) -> RunInfo:
        """The run ``run_id`` (UnknownRun when absent)."""
        rid = to_bytes32(run_id)
        (r,) = self.call("getRun", rid)
        return RunInfo.from_tuple(rid, r)

    def run_exists(self, run_id: Bytes32) -> bool:
        """Whether run ``run_id`` was registered (from its ``RunRegistered`` log: unlike
        ``getRun`` this does not revert for an unknown id)."""
        return bool(self.logs("RunRegistered", runId=to_bytes32(run_id)))

    def claims_of(self, model_digest: Bytes32) -> list[ClaimInfo]:
        """Every claim on ``model_digest`` in finalization order."""
        (rows,) = self.call("claimsOf", to_bytes32(model_digest))
        return [ClaimInfo.from_tuple(r) for r in rows]

    def owner_of(self, model_digest: Bytes32) -> Owner | None:
        """The earliest-finalized non-refuted claim on ``model_digest``; None if none."""
        trainer, rid = self.call("ownerOf", to_bytes32(model_digest))
        if int(trainer, 16) == 0:
            return None
        return Owner(trainer, bytes(rid))

    def get_challenge(self, challenge_id: int) -> ChallengeInfo:
        """The challenge ``challenge_id`` (UnknownChallenge when absent)."""
        (c,) = self.call("getChallenge", challenge_id)
        return ChallengeInfo.from_tuple(challenge_id, c)

    def challenges_of(self, run_id: Bytes32) -> list[int]:
        """Ids of every challenge against ``run_id``, oldest first."""
        (ids,) = self.call("challengesOf", to_bytes32(run_id))
        return list(ids)

    def committed_count(self, run_id: Bytes32) -> int:
        """How many checkpoints ``run_id`` has committed."""
        (count,) = self.call("committedCount", to_bytes32(run_id))
        return int(count)

    def accumulator_of(self, run_id: Bytes32) -> bytes:
        """The on-chain accumulator of ``run_id``."""
        (acc,) = self.call("accumulatorOf", to_bytes32(run_id))
        return bytes(acc)

    def quorum(self) -> int:
        """Votes needed to resolve challenges opened now."""
        (q,) = self.call("quorum")
        return int(q)

    def challenge_bond(self) -> int:
        """The challenge bond in wei."""
        (b,) = self.call("challengeBond")
        return int(b)


# ---------------------------------------------------------------------- settings


def recorded_deployment(home: str | Path, chain_id: int) -> tuple[str, int] | None:
    """``(address, block)`` recorded for ``chain_id`` in ``<home>/deployments.json``.

    Reads the file :class:`~pol_chain.ledger.deployments.Deployments` writes, without
    importing that module (it pulls web3)."""
    path = Path(home) / "deployments.json"
    if not path.exists():
        return None
    try:
        rows = json.loads(path.read_text())
    except ValueError as exc:
        raise _ledger_error("PolchainLedgerError", f"{path} is not valid JSON: {exc}") from exc
    row = rows.get(str(chain_id)) if isinstance(rows, dict) else None
    if not isinstance(row, dict) or "address" not in row:
        return None
    return str(row["address"]), int(str(row.get("block", 0)))


def embedded_url(port: int) -> str:
    """The JSON-RPC URL of the embedded Anvil on ``port`` (as
    :attr:`~pol_chain.ledger.anvil.EmbeddedChain.url` spells it)."""
    return f"http://127.0.0.1:{port}"


def open_reader(settings: Settings, *, timeout: float = 10.0) -> LedgerReader:
    """A reader of the configured ledger: ``settings.contract_address``, else the one
    recorded for the chain in ``<home>/deployments.json``.

    The node is ``settings.rpc_url``, else the embedded Anvil on ``settings.anvil_port``,
    started (:class:`~pol_chain.ledger.anvil.EmbeddedChain`) only when nothing answers.
    Raises RpcUnreachable, AnvilNotInstalled / AnvilStartFailed (embedded chain) and
    ContractNotDeployed (nothing recorded, or no code at the address). Unlike
    :func:`~pol_chain.compose.context.open_client` it never deploys.
    """
    url = settings.rpc_url or embedded_url(settings.anvil_port)
    address = settings.contract_address or "0x" + "00" * 20
    reader = LedgerReader(url, address, timeout=timeout, check_code=False)
    try:
        chain_id = reader.probe()
        if chain_id is None:
            if settings.rpc_url:
                raise _ledger_error("RpcUnreachable", url, "no answer to eth_chainId")
            from pol_chain.ledger.anvil import EmbeddedChain

            EmbeddedChain(settings.home, port=settings.anvil_port).start()
            chain_id = reader.chain_id
        if not settings.contract_address:
            recorded = recorded_deployment(settings.home, chain_id)
            if recorded is None:
                raise _ledger_error("ContractNotDeployed", chain_id, None)
            reader.address = checksum_address(recorded[0])
            reader.deploy_block = recorded[1]
        reader.check_code()
    except BaseException:
        reader.close()
        raise
    return reader
