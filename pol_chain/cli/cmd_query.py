"""``polchain history``, ``owner``, ``show run`` and ``show challenge``.

These commands only read, so they go through the web3-free
:class:`~pol_chain.ledger.reader.LedgerReader` (``open_ledger(..., read_only=True)``):
``polchain history`` answers well under 1.5 s. Unlike the transaction commands they
never deploy a ledger: with none recorded they fail with
:class:`~pol_chain.ledger.errors.ContractNotDeployed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pol_chain.cli._context import ChallengeIdArg, JsonOpt, current_settings
from pol_chain.cli._output import emit_json, info, short, table, when

if TYPE_CHECKING:
    from pol_chain.ledger.reader import LedgerReader

app = typer.Typer()
show_app = typer.Typer(
    help="Show one run or challenge. Example: polchain show run 0x1234…", no_args_is_help=True
)
app.add_typer(show_app, name="show")


def _open() -> LedgerReader:
    """The reader of the configured ledger (starts the embedded Anvil if needed)."""
    from pol_chain.compose.context import open_ledger

    return open_ledger(current_settings(), read_only=True)


@app.command()
def history(
    model: Annotated[str, typer.Argument(help="Model digest, model file or run id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a model's full history: claims, commits, challenges, attestations, owner, and
    its lineage (the model it was fine-tuned from, the runs fine-tuned from it).

    Example: polchain history runs/digits/model.safetensors
    """
    from pol_chain.compose.context import open_store
    from pol_chain.compose.lineage import lineage
    from pol_chain.compose.targets import UnknownTarget, resolve_model
    from pol_chain.ledger.history import model_history

    client = _open()
    digest = resolve_model(client, model)
    hist = model_history(client, digest)
    family = lineage(client, open_store(current_settings()), digest)
    if json_out:
        emit_json({**hist.to_dict(), "lineage": family.to_dict()})
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
    for link in family.parents:
        info(f"fine-tuned from model {short(link.model_digest, 16)} (run {short(link.run_id, 16)})")
    for link in family.children:
        info(f"fine-tuned into run {short(link.run_id, 16)} (model {short(link.model_digest, 16)})")
    if family.unreadable_specs:
        info(f"lineage may be incomplete: {family.unreadable_specs} run specs not in the store")
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


@app.command()
def owner(
    model: Annotated[str, typer.Argument(help="Model digest, model file or run id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a model's current owner (earliest-finalized claim not refuted).

    Example: polchain owner 0xab12…
    """
    from pol_chain.compose.targets import resolve_model

    client = _open()
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


@show_app.command("run")
def show_run(
    run: Annotated[str, typer.Argument(help="Run id (0x…) or proof directory.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a run: trainer, spec, commits, status, challenges.

    Example: polchain show run 0x1234…
    """
    from pol_chain.compose.targets import resolve_run
    from pol_chain.ledger.history import run_history

    client = _open()
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


@show_app.command("challenge")
def show_challenge(
    challenge_id: ChallengeIdArg,
    json_out: JsonOpt = False,
) -> None:
    """Show a challenge: run, seed, votes, outcome.

    Example: polchain show challenge 1
    """
    from pol_chain.compose.targets import UnknownTarget
    from pol_chain.ledger.errors import UnknownChallenge

    client = _open()
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
