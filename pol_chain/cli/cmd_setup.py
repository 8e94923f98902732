"""``polchain init``, ``chain up|down|status`` and ``deploy``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pol_chain.cli._context import JsonOpt, current_settings
from pol_chain.cli._output import emit_json, info, table
from pol_chain.config import CONFIG_TEMPLATE, Settings
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.ledger import EmbeddedChain

app = typer.Typer()
chain_app = typer.Typer(
    help="The embedded Anvil chain. Example: polchain chain up", no_args_is_help=True
)
app.add_typer(chain_app, name="chain")


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="Overwrite an existing config file.")] = False,
) -> None:
    """Create the data folder and a commented config file.

    Example: polchain init && $EDITOR .polchain/config.toml
    """
    settings = current_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.config_path
    if path.exists() and not force:
        info(f"{path} exists (use --force to overwrite)")
        return
    path.write_text(CONFIG_TEMPLATE)
    info(f"wrote {path}")


def _chain(settings: Settings) -> EmbeddedChain:
    from pol_chain.ledger import EmbeddedChain

    return EmbeddedChain(settings.home, port=settings.anvil_port)


@chain_app.command("up")
def chain_up(json_out: JsonOpt = False) -> None:
    """Start the embedded Anvil (or reuse the one running); state persists in the data folder.

    Example: polchain chain up
    """
    settings = current_settings()
    if not settings.embedded:
        raise PolchainError(
            f"an external chain is configured ({settings.rpc_url}); nothing to start",
            hint="unset rpc_url / POLCHAIN_RPC_URL to use the embedded Anvil",
        )
    chain = _chain(settings)
    url = chain.start()
    report = chain.reconciled
    result = {
        "url": url,
        "reused": chain.reused,
        "state": str(chain.state_file),
        "restored_good_copy": chain.restored_from is not None,
        "resent": len(report.resent) if report else 0,
        "lost": [e.tx_hash for e in report.lost] if report else [],
    }
    if json_out:
        emit_json(result)
    else:
        info(
            f"{'reusing' if chain.reused else 'started'} Anvil at {url} (state {chain.state_file})"
        )
        if chain.restored_from is not None:
            info(f"the state file was damaged (kept as {chain.restored_from.name}); restored")
        if report:
            info(f"journal: {report.summary()}")


@chain_app.command("down")
def chain_down() -> None:
    """Stop the embedded Anvil cleanly (its state is saved).

    Example: polchain chain down
    """
    stopped = _chain(current_settings()).stop()
    info("Anvil stopped (state saved)" if stopped else "no embedded Anvil was running")


@chain_app.command("status")
def chain_status(json_out: JsonOpt = False) -> None:
    """Show the chain endpoint, chain id, block and the ProofLedger address.

    Example: polchain chain status --json
    """
    from pol_chain.ledger.anvil import rpc_answers
    from pol_chain.ledger.deployments import Deployments
    from pol_chain.ledger.reader import LedgerReader

    settings = current_settings()
    url = settings.rpc_url or _chain(settings).url
    chain_id = rpc_answers(url)
    result: dict[str, object] = {"url": url, "running": chain_id is not None}
    if chain_id is not None:
        dep = Deployments(settings.home).get(chain_id)
        with LedgerReader(url, "0x" + "00" * 20, check_code=False) as reader:
            result["chain_id"] = chain_id
            result["block"] = reader.block_number()
        result["ledger"] = settings.contract_address or (dep.address if dep else None)
    if json_out:
        emit_json(result)
    else:
        table("chain", ["key", "value"], [(k, v) for k, v in result.items()])


@app.command()
def deploy(
    force: Annotated[bool, typer.Option(help="Deploy a new ledger even if one exists.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Deploy the ProofLedger contract (reused when already deployed on that chain).

    Example: polchain deploy
    """
    from pol_chain.compose.context import ensure_ledger
    from pol_chain.ledger import dev_account

    settings = current_settings()
    ledger, deployed_now = ensure_ledger(settings, force=force)
    candidate = dev_account(settings.verifier_account_index).address
    verifier = candidate if ledger.is_verifier(candidate) else None
    result = {
        "chain_id": ledger.chain_id,
        "ledger": ledger.address,
        "deployed_now": deployed_now,
        "verifier": verifier,
    }
    if json_out:
        emit_json(result)
    else:
        verb = "deployed" if deployed_now else "reusing"
        info(f"{verb} ProofLedger at {ledger.address} on chain {ledger.chain_id}")
        if verifier:
            info(f"verifier role: dev account {settings.verifier_account_index} ({verifier})")
