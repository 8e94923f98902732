"""Settings → a ready ledger client and artefact store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pol_chain.config import Settings

if TYPE_CHECKING:
    from web3 import Web3

    from pol_chain.ledger import LedgerClient
    from pol_chain.store import ArtefactStore, LocalStore

__all__ = ["ensure_ledger", "open_client", "open_local_store", "open_store"]


def ensure_ledger(
    settings: Settings, *, force: bool = False, w3: Web3 | None = None
) -> tuple[LedgerClient, bool]:
    """Return the recorded ledger of the configured chain, deploying it when missing.

    On a local chain (the embedded Anvil, ids 31337/1337) a new deployment also grants
    the verifier role to dev account ``verifier_account_index``, so the agent works with
    no configuration.
    """
    from pol_chain.ledger import (
        connect_web3,
        dev_account,
        ensure_deployed,
        resolve_account,
    )
    from pol_chain.ledger.accounts import LOCAL_CHAIN_IDS

    if w3 is None:
        w3 = connect_web3(settings.rpc_url or _embedded_url(settings))
    admin = resolve_account(
        w3, keystore=settings.keystore or None, account_index=settings.account_index
    )
    client, deployed_now = ensure_deployed(w3, admin, settings.home, force=force)
    if deployed_now and w3.eth.chain_id in LOCAL_CHAIN_IDS:
        verifier = dev_account(settings.verifier_account_index).address
        if not client.is_verifier(verifier):
            client.grant_verifier(verifier)
    return client, deployed_now


def open_client(
    settings: Settings,
    *,
    account: int | None = None,
    read_only: bool = False,
) -> LedgerClient:
    """Connect to the configured chain as ``account`` (a dev-account index on local chains).

    The embedded default starts (or reuses) Anvil and deploys the ledger on first use.
    """
    from pol_chain.ledger import LedgerClient, connect_web3, load_deployed, resolve_account

    index = settings.account_index if account is None else account
    w3 = connect_web3(settings.rpc_url or _embedded_url(settings))
    signer = (
        None
        if read_only
        else resolve_account(w3, keystore=settings.keystore or None, account_index=index)
    )
    if settings.contract_address:
        return LedgerClient(w3, settings.contract_address, signer)
    if settings.embedded:
        client, _ = ensure_ledger(settings, w3=w3)
        return client if signer is None else client.with_account(signer)
    return load_deployed(w3, signer, settings.home)


def _embedded_url(settings: Settings) -> str:
    from pol_chain.ledger import EmbeddedChain

    return EmbeddedChain(settings.home, port=settings.anvil_port).start()


def open_local_store(settings: Settings) -> LocalStore:
    """The embedded store under ``<home>/store``."""
    from pol_chain.store import LocalStore

    return LocalStore(settings.home / "store")


def open_store(settings: Settings) -> ArtefactStore:
    """The configured store: local, or local first with a persistent queue to Kubo."""
    from pol_chain.store.replicated import open_store as open_configured

    kubo = settings.kubo_api if settings.store_backend == "kubo" else ""
    return open_configured(
        settings.home / "store", kubo_api=kubo or None, kubo_auth=settings.kubo_auth or None
    )
