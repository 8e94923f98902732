"""One call from settings to a ready :class:`LedgerClient`: the embedded Anvil by default,
or any EVM endpoint with a keystore."""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from pol_chain.ledger.accounts import LOCAL_CHAIN_IDS, dev_account, load_keystore
from pol_chain.ledger.anvil import DEFAULT_PORT, EmbeddedChain
from pol_chain.ledger.client import LedgerClient, connect_web3
from pol_chain.ledger.deployments import ensure_deployed, load_deployed
from pol_chain.ledger.errors import KeystoreError

__all__ = ["open_ledger", "resolve_account"]


def resolve_account(
    w3: Web3,
    *,
    keystore: str | Path | None = None,
    account_index: int = 0,
    password: str | None = None,
) -> LocalAccount:
    """The signer: the keystore when given, else Anvil dev account ``account_index``,
    which is only allowed on a local chain (ids 31337 / 1337)."""
    if keystore is not None:
        return load_keystore(keystore, password)
    chain_id = w3.eth.chain_id
    if chain_id not in LOCAL_CHAIN_IDS:
        raise KeystoreError(
            f"chain {chain_id} is not a local chain: a keystore is needed to sign",
            hint="pass --keystore PATH (password in POLCHAIN_KEYSTORE_PASSWORD)",
        )
    return dev_account(account_index)


def open_ledger(
    rpc_url: str | None = None,
    *,
    data: str | Path | None = None,
    keystore: str | Path | None = None,
    account_index: int = 0,
    port: int = DEFAULT_PORT,
    deploy_if_missing: bool = False,
    read_only: bool = False,
) -> LedgerClient:
    """Connect to ``rpc_url`` (or start/reuse the embedded Anvil on ``port`` with state in
    ``data``) and return the ledger recorded for that chain in ``data/deployments.json``.

    Raises RpcUnreachable, AnvilNotInstalled, ContractNotDeployed (unless
    ``deploy_if_missing``), KeystoreError / WrongKeystorePassword.
    """
    if rpc_url is None:
        rpc_url = EmbeddedChain(data, port=port).start()
    w3 = connect_web3(rpc_url)
    account = (
        None if read_only else resolve_account(w3, keystore=keystore, account_index=account_index)
    )
    if deploy_if_missing and account is not None:
        client, _ = ensure_deployed(w3, account, data)
        return client
    return load_deployed(w3, account, data)
