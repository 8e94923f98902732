"""Messages between the coordinator (rank 0) and its workers over ``torch.distributed``
point-to-point operations (gloo).

A message is a header tensor ``int64[6] = [MAGIC, kind, round, n0, n1, extra]``
followed, when it carries bytes, by one ``uint8`` tensor of ``n0 + n1`` bytes (two parts:
e.g. a state and a segment). Nothing is pickled — ``torch.distributed``'s object helpers
(``send_object_list`` …) unpickle what they receive and are never used here — and the
receiver checks the magic, the kind, the round and both lengths against its limits
*before* it allocates the payload.

Every receive waits with a deadline, in a thread of its own: gloo's own timeouts are
never used, because a gloo wait that times out closes *every* pair of the process
("Application timeout caused pair closure"). A peer that misses the deadline is
:class:`PeerLost` (its late reply, if any, lands in the abandoned buffer); a peer that
dies fails its pending operations at once ("Connection closed by peer") and is lost too;
the other pairs are untouched. Collectives are never used (they wait for every rank).
The process group's own timeout must therefore be long (:data:`GROUP_TIMEOUT`).

Tags: coordinator → worker messages use tags 1/2 (header/payload, in order);
worker → coordinator submissions of round r use ``1000 + 2r`` / ``1001 + 2r``, so a late
reply can only ever land in its own round's buffers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pol_chain.errors import PolchainError

__all__ = [
    "GROUP_TIMEOUT",
    "HELLO",
    "STOP",
    "SUBMIT",
    "TRAIN",
    "Channel",
    "Limits",
    "Message",
    "PeerLost",
]

MAGIC = 0x706F6C63  # "polc"
HELLO, TRAIN, STOP, SUBMIT = 1, 2, 3, 4
_NAMES = {HELLO: "hello", TRAIN: "train", STOP: "stop", SUBMIT: "submit"}
_DOWN = 1
_UP = 1000
MAX_EXTRA = 10**15
GROUP_TIMEOUT = 7 * 24 * 3600.0
"""Seconds of the process group's own timeout: never reached (every wait is bounded by
a deadline of this module's), long because reaching it closes every pair."""


class PeerLost(PolchainError):
    """A peer died, missed its deadline, or broke the framing: it is out of the run."""

    def __init__(self, rank: int, why: str) -> None:
        super().__init__(f"rank {rank}: {why}")
        self.rank = rank
        self.why = why


@dataclass(frozen=True)
class Limits:
    """Largest parts a receiver accepts (bytes)."""

    first: int
    second: int = 0


@dataclass(frozen=True)
class Message:
    """A received message: its kind, round, byte parts and the ``extra`` word."""

    kind: int
    round: int
    parts: tuple[bytes, bytes]
    extra: int = 0


def _tags(kind: int, round_: int) -> tuple[int, int]:
    if kind == SUBMIT:
        return _UP + 2 * round_, _UP + 2 * round_ + 1
    return _DOWN, _DOWN + 1


_POSTING = threading.Lock()


def _irecv(tensor: torch.Tensor, src: int, tag: int) -> dist.Work:
    with _POSTING:
        try:
            work = dist.irecv(tensor, src, tag=tag)
        except RuntimeError as exc:
            raise PeerLost(src, f"receive failed ({_short(exc)})") from None
    if work is None:
        raise PeerLost(src, "is not in this process group")
    return work


def _wait(work: dist.Work, src: int, what: str) -> None:
    try:
        work.wait()
    except RuntimeError as exc:
        raise PeerLost(src, f"failed ({_short(exc)}) waiting for its {what}") from None


def _receive(src: int, kinds: tuple[int, ...], limits: Limits, round_: int | None) -> Message:
    """Receive one framed message from ``src`` (blocking; run in a thread)."""
    header = torch.zeros(6, dtype=torch.int64)
    _wait(_irecv(header, src, _tags(kinds[0], round_ or 0)[0]), src, "header")
    magic, kind, rnd, n0, n1, extra = (int(v) for v in header.tolist())
    if magic != MAGIC or kind not in kinds:
        raise PeerLost(src, f"sent a message of kind {kind} (magic {magic:#x})")
    if round_ is not None and rnd != round_:
        raise PeerLost(src, f"sent a {_NAMES[kind]} message for round {rnd}, not {round_}")
    if not (0 <= n0 <= limits.first and 0 <= n1 <= limits.second):
        raise PeerLost(
            src, f"announced {n0} + {n1} bytes, the limits are {limits.first} + {limits.second}"
        )
    if not 0 <= extra <= MAX_EXTRA:
        raise PeerLost(src, f"sent an out-of-range extra word {extra}")
    data = b""
    if n0 + n1:
        body = torch.empty(n0 + n1, dtype=torch.uint8)
        _wait(_irecv(body, src, _tags(kind, rnd)[1]), src, "payload")
        data = body.numpy().tobytes()
    return Message(kind, rnd, (data[:n0], data[n0:]), extra)


class _Receipt(threading.Thread):
    def __init__(self, src: int, kinds: tuple[int, ...], limits: Limits, round_: int | None):
        super().__init__(name=f"polchain-recv-{src}", daemon=True)
        self.args_ = (src, kinds, limits, round_)
        self.result: Message | PeerLost = PeerLost(src, "missed the deadline")

    def run(self) -> None:
        try:
            self.result = _receive(*self.args_)
        except PeerLost as exc:
            self.result = exc


class Channel:
    """Framed, bounded messages with deadlines over the default process group."""

    def __init__(self) -> None:
        # sends in flight per peer: gloo drops a send whose work object is freed
        self._sending: dict[int, list[tuple[torch.Tensor, dist.Work | None]]] = {}

    def send(
        self,
        dst: int,
        kind: int,
        round_: int,
        parts: Sequence[bytes] = (),
        extra: int = 0,
    ) -> None:
        """Send a message to ``dst`` without waiting for it to be received."""
        first = bytes(parts[0]) if len(parts) > 0 else b""
        second = bytes(parts[1]) if len(parts) > 1 else b""
        header = torch.tensor(
            [MAGIC, kind, round_, len(first), len(second), extra], dtype=torch.int64
        )
        keep = self._sending.setdefault(dst, [])
        head_tag, body_tag = _tags(kind, round_)
        try:
            keep.append((header, dist.isend(header, dst, tag=head_tag)))
            if first or second:
                body = torch.frombuffer(bytearray(first + second), dtype=torch.uint8)
                keep.append((body, dist.isend(body, dst, tag=body_tag)))
        except RuntimeError as exc:
            raise PeerLost(dst, f"send failed ({_short(exc)})") from None

    def delivered(self, peer: int) -> None:
        """Forget the sends ``peer`` has answered (it received them)."""
        self._sending.pop(peer, None)

    def gather(
        self,
        sources: Iterable[int],
        kinds: Iterable[int],
        limits: Limits,
        deadline: float,
        round_: int | None = None,
    ) -> dict[int, Message | PeerLost]:
        """Receive one message of one of ``kinds`` (which share their tags) from every
        source, each by ``deadline`` (a :func:`time.monotonic` value); a message, or why
        that source is lost."""
        receipts = {s: _Receipt(s, tuple(kinds), limits, round_) for s in sources}
        for receipt in receipts.values():
            receipt.start()
        out: dict[int, Message | PeerLost] = {}
        for src, receipt in receipts.items():
            receipt.join(max(0.0, deadline - time.monotonic()))
            late = receipt.is_alive()
            out[src] = PeerLost(src, "missed the deadline") if late else receipt.result
        return out

    def recv(
        self,
        src: int,
        kinds: Iterable[int],
        limits: Limits,
        timeout: float,
        round_: int | None = None,
    ) -> Message:
        """Receive one message from ``src`` within ``timeout`` seconds."""
        got = self.gather([src], kinds, limits, time.monotonic() + timeout, round_)[src]
        if isinstance(got, PeerLost):
            raise got
        return got


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "]" in text[:200]:
        text = text.split("]", 1)[1].strip()
    return text[:160]
