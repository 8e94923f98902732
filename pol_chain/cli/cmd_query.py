"""``polchain history``, ``owner``, ``show run`` and ``show challenge``.

These commands only read, so they go through the light
:class:`~pol_chain.ledger.reader.LedgerReader` (raw JSON-RPC + eth_abi) and never import
web3 (about 1.4 s): ``polchain history`` answers in well under 1.5 s. Unlike the
transaction commands they never deploy a ledger: with none recorded they fail with
:class:`~pol_chain.ledger.errors.ContractNotDeployed`. :func:`resolve_run` and
:func:`resolve_model` accept either a reader or a web3-backed
:class:`~pol_chain.ledger.client.LedgerClient` (``challenge`` and ``verify`` use them).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pol_chain.cli._output import emit_json, info, table
from pol_chain.config import Settings
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.ledger.reader import LedgerReader
    from pol_chain.ledger.types import RunInfo

__all__ = [
    "RunViews",
    "UnknownTarget",
    "history",
    "owner",
    "resolve_model",
    "resolve_run",
    "short",
    "show_challenge",
    "show_run",
    "when",
]

_HEX32 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class RunViews(Protocol):
    """What resolving a reference needs: a ledger address and its ``getRun`` view
    (a :class:`~pol_chain.ledger.reader.LedgerReader` or a ``LedgerClient``)."""

    @property
    def address(self) -> str: ...

    def get_run(self, run_id: bytes | str) -> RunInfo: ...


class UnknownTarget(PolchainError):
    """A model or run reference resolves to nothing on this ledger."""


def when(timestamp: int | None) -> str:
    """A UTC time for a block timestamp."""
    if not timestamp:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(value: str | bytes | None, n: int = 10) -> str:
    """Shorten a hex value for tables."""
    if value is None:
        return "—"
    text = "0x" + value.hex() if isinstance(value, bytes) else str(value)
    return text if len(text) <= n + 2 else text[: n + 2] + "…"


def _hex32(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def resolve_run(client: RunViews, ref: str) -> bytes:
    """A run id from ``0x…`` or a proof directory's binding."""
    path = Path(ref)
    if path.is_dir():
        from pol_chain.compose.binding import RunBinding

        return RunBinding.read(path).run_id_bytes
    if _HEX32.match(ref):
        run_id = _hex32(ref)
        if _run_exists(client, run_id):
            return run_id
        raise UnknownTarget(f"no run {ref} on ledger {client.address}")
    raise UnknownTarget(
        f"{ref!r} is neither a run id (0x + 64 hex digits) nor a proof directory",
        hint="list runs of a model with `polchain history MODEL`",
    )


def _run_exists(client: RunViews, run_id: bytes) -> bool:
    exists = getattr(client, "run_exists", None)
    if exists is not None:  # the light reader: a log query, no revert to decode
        return bool(exists(run_id))
    from pol_chain.ledger.errors import UnknownRun

    try:
        run = client.get_run(run_id)
    except UnknownRun:
        return False
    return int(run.trainer, 16) != 0


def resolve_model(client: RunViews, ref: str) -> bytes:
    """A model digest from a digest, a weights file, a proof directory or a run id."""
    path = Path(ref)
    if path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.digest()
    if path.is_dir() or (_HEX32.match(ref) and _run_exists(client, _hex32(ref))):
        run = client.get_run(resolve_run(client, ref))
        if run.model_digest is None:
            raise UnknownTarget(f"run {ref} is not finalized: it claims no model yet")
        return run.model_digest
    if _HEX32.match(ref):
        return _hex32(ref)
    raise UnknownTarget(
        f"{ref!r} is not a model digest (0x + 64 hex), a weights file, a proof directory "
        "or a run id"
    )


def _open(settings: Settings) -> LedgerReader:
    """The light reader of the configured ledger (starts the embedded Anvil if needed)."""
    from pol_chain.ledger.reader import open_reader

    return open_reader(settings)


def history(settings: Settings, *, model: str, json_out: bool) -> None:
    """Print every claim on a model with its commits, challenges and the owner."""
    from pol_chain.ledger.history import model_history

    client = _open(settings)
    digest = resolve_model(client, model)
    hist = model_history(client, digest)
    if json_out:
        emit_json(hist.to_dict())
        return
    if not hist.claims:
        raise UnknownTarget(
            f"no claims on model {short(digest, 16)} on ledger {client.address}",
            hint="the model may not be finalized yet, or lives on another chain",
        )
    rows = []
    for pos, claim in enumerate(hist.claims):
        challenges = (
            ", ".join(
                f"#{c.challenge_id} {c.status.name.lower()} ({len(c.attestations)} votes)"
                for c in claim.challenges
            )
            or "—"
        )
        rows.append(
            (
                pos,
                short(claim.run_id),
                short(claim.trainer, 8),
                when(claim.registered_at),
                f"{len(claim.leaves)} in {len(claim.commits)} tx",
                when(claim.finalized_at),
                claim.status.name.lower(),
                challenges,
            )
        )
    table(
        f"model 0x{digest.hex()}",
        ["#", "run", "trainer", "registered", "commits", "finalized", "status", "challenges"],
        rows,
    )
    timeline = _timeline(hist.events)
    table("timeline", ["time (UTC)", "block", "event", "details"], timeline)
    if hist.owner is None:
        info("owner: none (every claim is refuted)")
    else:
        info(f"owner: [bold]{hist.owner.trainer}[/bold] (run {short(hist.owner.run_id, 16)})")


_STATUS = ("none", "registered", "finalized", "verified", "refuted")


def _timeline(events: list[Any]) -> list[tuple[str, int | str, str, str]]:
    """One row per event; consecutive commits of one run fold into one row."""
    rows: list[tuple[str, int | str, str, str]] = []
    pending: list[Any] = []

    def flush() -> None:
        if not pending:
            return
        first, last = pending[0], pending[-1]
        count = sum(len(e.args.get("leaves", [])) for e in pending)
        blocks = (
            str(first.block_number)
            if len(pending) == 1
            else f"{first.block_number}–{last.block_number}"
        )
        rows.append(
            (
                when(first.timestamp),
                blocks,
                "CheckpointsCommitted",
                f"run {short(first.args.get('runId'))}: {count} checkpoints in {len(pending)} tx",
            )
        )
        pending.clear()

    for event in events:
        if event.kind == "CheckpointsCommitted":
            if pending and pending[-1].args.get("runId") != event.args.get("runId"):
                flush()
            pending.append(event)
            continue
        flush()
        rows.append((when(event.timestamp), event.block_number, event.kind, _event_summary(event)))
    flush()
    return rows


def _event_summary(event: Any) -> str:
    """A short, readable line for one ledger event."""
    a = event.args
    run = f"run {short(a.get('runId'))}"
    cid = a.get("challengeId")
    if event.kind == "RunRegistered":
        return f"{run} by {short(a.get('trainer'), 8)}"
    if event.kind == "RunFinalized":
        return f"{run} claims model {short(a.get('modelDigest'))}"
    if event.kind == "RunStatusChanged":
        old, new = int(a.get("oldStatus", 0)), int(a.get("newStatus", 0))
        return f"{run}: {_STATUS[old]} → {_STATUS[new]}"
    if event.kind == "ChallengeOpened":
        return f"#{cid} on {run} by {short(a.get('challenger'), 8)}"
    if event.kind == "ChallengeRandomnessSealed":
        return f"#{cid} seed {short(a.get('seed'))} (block {a.get('revealBlock')})"
    if event.kind == "Attested":
        vote = "pass" if a.get("passed") else "fail"
        return f"#{cid} {short(a.get('verifier'), 8)} votes {vote}, report {short(a.get('reportCid'), 14)}"
    if event.kind == "ChallengeResolved":
        outcome = "passed" if a.get("passed") else "failed"
        return f"#{cid} {outcome} ({a.get('passVotes')} pass / {a.get('failVotes')} fail)"
    parts = []
    for key in sorted(a):
        value = a[key]
        if isinstance(value, bytes):
            value = short(value)
        elif isinstance(value, list):
            value = f"[{len(value)}]"
        elif isinstance(value, str) and len(value) > 20:
            value = short(value, 12)
        parts.append(f"{key}={value}")
    return " ".join(parts)


def owner(settings: Settings, *, model: str, json_out: bool) -> None:
    """Print the current owner of a model."""
    client = _open(settings)
    digest = resolve_model(client, model)
    found = client.owner_of(digest)
    result = {
        "model_digest": "0x" + digest.hex(),
        "owner": found.trainer if found else None,
        "run_id": "0x" + found.run_id.hex() if found else None,
    }
    if json_out:
        emit_json(result)
    elif found is None:
        claims = client.claims_of(digest)
        info("no owner: " + ("every claim is refuted" if claims else "no claims on this model"))
    else:
        info(f"{found.trainer} (run 0x{found.run_id.hex()})")


def show_run(settings: Settings, *, run: str, json_out: bool) -> None:
    """Print one run."""
    from pol_chain.ledger.history import run_history

    client = _open(settings)
    hist = run_history(client, resolve_run(client, run))
    if json_out:
        emit_json(hist.to_dict())
        return
    rows: list[tuple[str, Any]] = [
        ("run", "0x" + hist.run_id.hex()),
        ("trainer", hist.trainer),
        ("status", hist.status.name.lower()),
        ("spec", f"0x{hist.spec_digest.hex()} ({hist.spec_cid})"),
        ("registered", when(hist.registered_at)),
        ("checkpoints", f"{len(hist.leaves)} in {len(hist.commits)} commits"),
        ("accumulator", "0x" + hist.accumulator.hex()),
        ("model", "0x" + hist.model_digest.hex() if hist.model_digest else "—"),
        ("finalized", when(hist.finalized_at)),
    ]
    for c in hist.challenges:
        rows.append(
            (
                f"challenge #{c.challenge_id}",
                f"{c.status.name.lower()}, {len(c.attestations)} votes",
            )
        )
    table("run", ["field", "value"], rows)


def show_challenge(settings: Settings, *, challenge_id: int, json_out: bool) -> None:
    """Print one challenge."""
    from pol_chain.ledger.errors import UnknownChallenge

    client = _open(settings)
    try:
        ch = client.get_challenge(challenge_id)
    except UnknownChallenge:
        raise UnknownTarget(f"no challenge {challenge_id} on ledger {client.address}") from None
    if json_out:
        emit_json(ch.to_dict())
        return
    table(
        f"challenge {challenge_id}",
        ["field", "value"],
        [
            ("run", "0x" + ch.run_id.hex()),
            ("challenger", ch.challenger),
            ("bond (wei)", ch.bond),
            ("opened at block", ch.opened_at_block),
            ("reveal block", ch.reveal_block),
            ("seed", "0x" + ch.seed.hex() if ch.seed else "not sealed yet"),
            ("votes", f"{ch.pass_votes} pass / {ch.fail_votes} fail (quorum {ch.quorum})"),
            ("status", ch.status.name.lower()),
        ],
    )
