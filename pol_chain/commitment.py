"""Commitment definitions shared by every layer: leaf, accumulator, run id and run seed.

Each value is defined exactly once here and mirrored bit for bit by ``ProofLedger.sol``
(``leafOf``, ``runIdOf``, ``runSeedOf``, and the accumulator fold in
``commitCheckpoints``). All encodings are Solidity ``abi.encode`` of static types, i.e.
32-byte big-endian words, hashed with keccak256:

- ``leaf = keccak256(abi.encode(bytes32 runId, uint256 index, uint256 step,
  bytes32 checkpointDigest, bytes32 segmentDigest))``. Leaf 0 is the initial state W0
  (step 0) and has ``segmentDigest = 0x00…00``.
- ``acc_0 = 0x00…00``; ``acc_{n+1} = keccak256(abi.encodePacked(acc_n, leaf_n))``.
- ``runId = keccak256(abi.encode(address trainer, uint256 nonce))``, the nonce being the
  number of runs that trainer registered before.
- ``runSeed = keccak256(abi.encode(uint256 chainId, address ledger, bytes32 runId))``.
- ``challengeSeed = keccak256(abi.encode(bytes32 blockhash, uint256 challengeId))``,
  computed by the contract from a block mined after the challenge was opened.

This module depends on nothing but a keccak implementation, so the proof engine can use
it without knowing anything of chains.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_hash.auto import keccak

ZERO32 = b"\x00" * 32

__all__ = [
    "ZERO32",
    "accumulate",
    "accumulator",
    "challenge_seed",
    "keccak256",
    "leaf",
    "run_id",
    "run_seed",
    "to_bytes32",
]


def keccak256(data: bytes) -> bytes:
    """Return the keccak256 digest (Ethereum's, not SHA3-256) of ``data``."""
    return keccak(data)


def _word_uint(value: int) -> bytes:
    if value < 0 or value >= 1 << 256:
        raise ValueError(f"uint256 out of range: {value}")
    return value.to_bytes(32, "big")


def to_bytes32(value: bytes | str) -> bytes:
    """Coerce ``value`` (32 raw bytes or 0x-prefixed / bare hex) to 32 bytes."""
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            value = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"not a hex string: {value!r}") from exc
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return bytes(value)


def _word_address(address: str | bytes) -> bytes:
    if isinstance(address, str):
        text = address[2:] if address.startswith(("0x", "0X")) else address
        raw = bytes.fromhex(text)
    else:
        raw = bytes(address)
    if len(raw) != 20:
        raise ValueError(f"expected a 20-byte address, got {len(raw)} bytes")
    return b"\x00" * 12 + raw


def leaf(
    run: bytes | str,
    index: int,
    step: int,
    checkpoint_digest: bytes | str,
    segment_digest: bytes | str = ZERO32,
) -> bytes:
    """Return the 32-byte leaf committing checkpoint ``index`` of run ``run``."""
    return keccak256(
        to_bytes32(run)
        + _word_uint(index)
        + _word_uint(step)
        + to_bytes32(checkpoint_digest)
        + to_bytes32(segment_digest)
    )


def accumulate(acc: bytes | str, new_leaf: bytes | str) -> bytes:
    """Fold one leaf into the hash-chain accumulator."""
    return keccak256(to_bytes32(acc) + to_bytes32(new_leaf))


def accumulator(leaves: Iterable[bytes | str], start: bytes | str = ZERO32) -> bytes:
    """Fold ``leaves`` in order into the accumulator, starting from ``start``."""
    acc = to_bytes32(start)
    for item in leaves:
        acc = accumulate(acc, item)
    return acc


def run_id(trainer: str | bytes, nonce: int) -> bytes:
    """Return the run id the ledger assigns to ``trainer``'s ``nonce``-th registration."""
    return keccak256(_word_address(trainer) + _word_uint(nonce))


def run_seed(chain_id: int, ledger_address: str | bytes, run: bytes | str) -> bytes:
    """Return the 32-byte seed every random choice of a run derives from (docs/protocol.md §2)."""
    return keccak256(_word_uint(chain_id) + _word_address(ledger_address) + to_bytes32(run))


def challenge_seed(block_hash: bytes | str, challenge_id: int) -> bytes:
    """Return the segment-selection seed of a challenge from its reveal block's hash."""
    return keccak256(to_bytes32(block_hash) + _word_uint(challenge_id))
