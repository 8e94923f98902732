"""``polchain agent``: the verifier daemon."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pol_chain.cli._context import (
    AccountOpt,
    CosOpt,
    JsonOpt,
    RandomOpt,
    RhoOpt,
    TopQOpt,
    current_settings,
    policy_overrides,
)
from pol_chain.cli._output import emit_json, info

if TYPE_CHECKING:
    from pol_chain.agent import VerifierAgent

app = typer.Typer()


@app.command()
def agent(
    once: Annotated[bool, typer.Option(help="Handle pending challenges, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls.", min=0.0)] = 2.0,
    availability_deadline: Annotated[
        float | None,
        typer.Option(
            help="Seconds after a challenge opens during which missing artefacts only delay "
            "the vote (default 3600; then they fail the run).",
            min=0.0,
        ),
    ] = None,
    rho: RhoOpt = None,
    cos: CosOpt = None,
    random_segments: RandomOpt = None,
    top_q: TopQOpt = None,
    device: Annotated[
        str | None,
        typer.Option(help="Replay on this device (cpu, cuda, cuda:1); default: cuda if visible."),
    ] = None,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the verifier agent: fetch, replay (the proof's code bundle, sandboxed), pin the
    report and attest on-chain.

    Example: polchain agent --once
    """
    from pol_chain.agent import ChallengeOutcome, VerifierAgent
    from pol_chain.agent.daemon import DEFAULT_AVAILABILITY_DEADLINE
    from pol_chain.compose.context import open_ledger, open_store
    from pol_chain.compose.policy import load_calibration, policy_from
    from pol_chain.errors import PolchainError

    settings = current_settings(
        availability_deadline=availability_deadline,
        **policy_overrides(rho, cos, random_segments, top_q),
    )
    index = settings.verifier_account_index if account is None else account
    deadline = (
        DEFAULT_AVAILABILITY_DEADLINE
        if settings.availability_deadline is None
        else settings.availability_deadline
    )

    def start() -> VerifierAgent:
        client = open_ledger(settings, account=index)
        assert client.account is not None
        if not client.is_verifier(client.account.address):
            raise PolchainError(
                f"{client.account.address} does not hold the verifier role on {client.address}",
                hint="the ledger admin grants it (embedded chain: dev account 1 has it)",
            )
        hide = [settings.home] + ([Path(settings.keystore)] if settings.keystore else [])
        return VerifierAgent(
            client,
            open_store(settings),
            settings.home / "agent",
            policy=policy_from(settings),
            device=device,
            availability_deadline=deadline,
            hide=hide,
            calibration=load_calibration(settings.home),
            log=None if json_out else info,
        )

    verifier = start() if once else _started(start, poll)
    client = verifier.client
    assert client.account is not None

    def show(outcome: ChallengeOutcome) -> None:
        if json_out:
            return
        verdict = {True: "[green]pass[/green]", False: "[red]fail[/red]", None: "—"}[outcome.passed]
        line = f"challenge {outcome.challenge_id} (run {outcome.run_id[:12]}…): {outcome.status}"
        if outcome.status == "attested":
            line += f", verdict {verdict}"
            if outcome.reasons:
                line += f" ({', '.join(outcome.reasons)})"
            if outcome.report_html:
                line += f"\n  report: {outcome.report_html}"
        elif outcome.detail:
            line += f" ({outcome.detail})"
        info(line)

    if once:
        outcomes = verifier.run_once()
        for outcome in outcomes:
            show(outcome)
        if json_out:
            emit_json({"verifier": client.account.address, "outcomes": outcomes})
        elif not outcomes:
            info("no pending challenges")
        return
    info(f"agent {client.account.address} watching {client.address} (device {verifier.device})")
    verifier.run_forever(poll, on_outcome=show)


def _started(start: Callable[[], VerifierAgent], poll: float) -> VerifierAgent:
    """The daemon waits out an unreachable chain at start-up (backoff, one line a try)."""
    from pol_chain.ledger.errors import RpcUnreachable

    delay = poll
    while True:
        try:
            return start()
        except RpcUnreachable as exc:
            delay = min(60.0, max(poll, delay * 2))
            info(f"agent: {exc}; retrying in {delay:.0f} s")
            time.sleep(delay)
