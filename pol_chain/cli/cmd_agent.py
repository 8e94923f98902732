"""``polchain agent``: the verifier daemon."""

from __future__ import annotations

from typing import Annotated

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

app = typer.Typer()


@app.command()
def agent(
    once: Annotated[bool, typer.Option(help="Handle pending challenges, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    rho: RhoOpt = None,
    cos: CosOpt = None,
    random_segments: RandomOpt = None,
    top_q: TopQOpt = None,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the verifier agent: fetch, replay, pin the report and attest on-chain.

    Example: polchain agent --once
    """
    from pol_chain.agent import ChallengeOutcome, VerifierAgent
    from pol_chain.compose.context import open_ledger, open_store
    from pol_chain.compose.policy import policy_from
    from pol_chain.errors import PolchainError

    settings = current_settings(**policy_overrides(rho, cos, random_segments, top_q))
    index = settings.verifier_account_index if account is None else account
    client = open_ledger(settings, account=index)
    assert client.account is not None
    if not client.is_verifier(client.account.address):
        raise PolchainError(
            f"{client.account.address} does not hold the verifier role on {client.address}",
            hint="the ledger admin grants it (embedded chain: dev account 1 has it)",
        )
    store = open_store(settings)
    verifier = VerifierAgent(
        client,
        store,
        settings.home / "agent",
        policy=policy_from(settings),
        log=None if json_out else info,
    )

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
