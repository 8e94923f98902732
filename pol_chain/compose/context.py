"""Settings → a ledger and an artefact store.

:func:`open_ledger` is the one way from settings to a ledger: a web3-free
:class:`~pol_chain.ledger.reader.LedgerReader` for reading, or a
:class:`~pol_chain.ledger.client.LedgerClient` that signs. The embedded default starts
(or reuses) Anvil; a client on it deploys the ledger on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

from pol_chain.config import Settings

if TYPE_CHECKING:
    from web3 import Web3

    from pol_chain.ledger import LedgerClient, LedgerReader
    from pol_chain.ledger.journal import TxJournal
    from pol_chain.store import ArtefactStore, LocalStore

__all__ = [
    "chain_url",
    "ensure_ledger",
    "open_journal",
    "open_ledger",
    "open_local_store",
    "open_store",
]


def chain_url(settings: Settings) -> str:
    """The configured JSON-RPC endpoint; the embedded Anvil is started when needed."""
    if settings.rpc_url:
        return settings.rpc_url
    from pol_chain.ledger import EmbeddedChain

    return EmbeddedChain(settings.home, port=settings.anvil_port).start()


def open_journal(settings: Settings) -> TxJournal:
    """The transaction journal of the configured chain: beside the embedded chain's state,
    else ``<home>/txjournal.sqlite`` (rows keyed by chain and account)."""
    from pol_chain.ledger.journal import JOURNAL_FILE, TxJournal

    if settings.embedded:
        from pol_chain.ledger import EmbeddedChain

        return TxJournal(EmbeddedChain(settings.home, port=settings.anvil_port).journal_path)
    return TxJournal(settings.home / JOURNAL_FILE)


def ensure_ledger(
    settings: Settings, *, force: bool = False, w3: Web3 | None = None
) -> tuple[LedgerClient, bool]:
    """Return the recorded ledger of the configured chain, deploying it when missing.

    On a local chain (the embedded Anvil, ids 31337/1337) a new deployment also grants
    the verifier role to dev account ``verifier_account_index``, so the agent works with
    no configuration.
    """
    from pol_chain.ledger import connect_web3, dev_account, ensure_deployed, resolve_account
    from pol_chain.ledger.accounts import LOCAL_CHAIN_IDS

    if w3 is None:
        w3 = connect_web3(chain_url(settings))
    admin = resolve_account(
        w3.eth.chain_id, keystore=settings.keystore or None, account_index=settings.account_index
    )
    client, deployed_now = ensure_deployed(
        w3, admin, settings.home, force=force, journal=open_journal(settings)
    )
    if settings.log_range is not None:
        client.log_range = settings.log_range
    if deployed_now and client.chain_id in LOCAL_CHAIN_IDS:
        verifier = dev_account(settings.verifier_account_index).address
        if not client.is_verifier(verifier):
            client.grant_verifier(verifier)
    return client, deployed_now


@overload
def open_ledger(
    settings: Settings,
    *,
    read_only: Literal[True],
    account: int | None = None,
    deploy: bool | None = None,
) -> LedgerReader: ...


@overload
def open_ledger(
    settings: Settings,
    *,
    read_only: Literal[False] = False,
    account: int | None = None,
    deploy: bool | None = None,
) -> LedgerClient: ...


def open_ledger(
    settings: Settings,
    *,
    read_only: bool = False,
    account: int | None = None,
    deploy: bool | None = None,
) -> LedgerReader | LedgerClient:
    """The configured ledger: ``settings.contract_address``, else the one recorded for the
    chain in ``<home>/deployments.json``.

    ``read_only`` gives a reader (no web3, never deploys: ContractNotDeployed when none is
    recorded); otherwise a client signing as ``account`` (a dev-account index on local
    chains, default ``settings.account_index``; the keystore elsewhere). ``deploy``
    (default: on the embedded chain) deploys the ledger when none is recorded.
    """
    url = chain_url(settings)
    if read_only:
        return _open_reader(settings, url)
    from pol_chain.ledger import LedgerClient, connect_web3, load_deployed, resolve_account

    w3 = connect_web3(url)
    index = settings.account_index if account is None else account
    signer = resolve_account(
        w3.eth.chain_id, keystore=settings.keystore or None, account_index=index
    )
    if settings.contract_address:
        return LedgerClient(
            w3,
            settings.contract_address,
            signer,
            log_range=settings.log_range,
            journal=open_journal(settings),
        )
    if settings.embedded if deploy is None else deploy:
        client, _ = ensure_ledger(settings, w3=w3)
        return client.with_account(signer)
    client = load_deployed(w3, signer, settings.home, journal=open_journal(settings))
    client.log_range = settings.log_range
    return client


def _open_reader(settings: Settings, url: str) -> LedgerReader:
    from pol_chain.ledger.deployments import Deployments
    from pol_chain.ledger.errors import ContractNotDeployed
    from pol_chain.ledger.reader import LedgerReader, checksum_address

    reader = LedgerReader(
        url,
        settings.contract_address or "0x" + "00" * 20,
        check_code=False,
        log_range=settings.log_range,
    )
    try:
        if not settings.contract_address:
            recorded = Deployments(settings.home).get(reader.chain_id)
            if recorded is None:
                raise ContractNotDeployed(reader.chain_id, None)
            reader.address = checksum_address(recorded.address)
            reader.deploy_block = recorded.block
        reader.check_code()
    except BaseException:
        reader.close()
        raise
    return reader


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
