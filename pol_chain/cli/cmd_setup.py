"""``polchain init``, ``chain up|down|status`` and ``deploy``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pol_chain.cli._output import emit_json, info, table
from pol_chain.config import CONFIG_TEMPLATE, Settings
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.ledger import EmbeddedChain


def init(settings: Settings, *, force: bool) -> None:
    """Create the data folder and its commented config file."""
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


def chain_up(settings: Settings, *, json_out: bool) -> None:
    """Start or reuse the embedded Anvil."""
    if not settings.embedded:
        raise PolchainError(
            f"an external chain is configured ({settings.rpc_url}); nothing to start",
            hint="unset rpc_url / POLCHAIN_RPC_URL to use the embedded Anvil",
        )
    chain = _chain(settings)
    url = chain.start()
    result = {"url": url, "reused": chain.reused, "state": str(chain.state_file)}
    if json_out:
        emit_json(result)
    else:
        info(
            f"{'reusing' if chain.reused else 'started'} Anvil at {url} (state {chain.state_file})"
        )


def chain_down(settings: Settings) -> None:
    """Stop the embedded Anvil."""
    stopped = _chain(settings).stop()
    info("Anvil stopped (state saved)" if stopped else "no embedded Anvil was running")


def chain_status(settings: Settings, *, json_out: bool) -> None:
    """Show the endpoint, chain id, block and ledger address."""
    from pol_chain.ledger import Deployments
    from pol_chain.ledger.anvil import rpc_answers

    url = settings.rpc_url or _chain(settings).url
    chain_id = rpc_answers(url)
    result: dict[str, object] = {"url": url, "running": chain_id is not None}
    if chain_id is not None:
        from pol_chain.ledger import connect_web3

        w3 = connect_web3(url)
        result["chain_id"] = chain_id
        result["block"] = w3.eth.block_number
        dep = Deployments(settings.home).get(chain_id)
        result["ledger"] = settings.contract_address or (dep.address if dep else None)
    if json_out:
        emit_json(result)
    else:
        table("chain", ["key", "value"], [(k, v) for k, v in result.items()])


def deploy(settings: Settings, *, force: bool, json_out: bool) -> None:
    """Deploy the ProofLedger once per chain and record its address."""
    from pol_chain.compose.context import ensure_ledger
    from pol_chain.ledger import dev_account

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
