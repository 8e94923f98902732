"""``polchain agent``: the verifier daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pol_chain.cli._output import emit_json, info
from pol_chain.config import Settings

if TYPE_CHECKING:
    from pol_chain.proof.policy import Policy


def policy_from(settings: Settings) -> Policy:
    """The verifier policy: engine defaults, overridden by the settings' positive values."""
    from dataclasses import replace

    from pol_chain.proof.policy import Policy

    policy = Policy()
    changes: dict[str, Any] = {}
    if settings.policy_q > 0:
        changes["q"] = settings.policy_q
    if settings.policy_m > 0:
        changes["m"] = settings.policy_m
    if settings.policy_rho > 0:
        changes["rho"] = settings.policy_rho
    if settings.policy_cos > 0:
        changes["c"] = settings.policy_cos
    return replace(policy, **changes) if changes else policy


def agent(
    settings: Settings, *, once: bool, poll: float, account: int | None, json_out: bool
) -> None:
    """Verify challenges and attest; ``once`` handles what is pending and exits."""
    from pol_chain.agent import ChallengeOutcome, VerifierAgent
    from pol_chain.compose.context import open_client, open_store
    from pol_chain.errors import PolchainError

    index = settings.verifier_account_index if account is None else account
    client = open_client(settings, account=index)
    assert client.account is not None
    if not client.is_verifier(client.account.address):
        raise PolchainError(
            f"{client.account.address} does not hold the verifier role on {client.address}",
            hint="the ledger admin grants it (embedded chain: dev account 1 has it)",
        )
    store = open_store(settings)
    agent = VerifierAgent(
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
        outcomes = agent.run_once()
        for outcome in outcomes:
            show(outcome)
        if json_out:
            emit_json({"verifier": client.account.address, "outcomes": outcomes})
        elif not outcomes:
            info("no pending challenges")
        return
    info(f"agent {client.account.address} watching {client.address} (device {agent.device})")
    agent.run_forever(poll, on_outcome=show)
