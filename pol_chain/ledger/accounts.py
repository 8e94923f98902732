"""Signing accounts: Anvil's dev accounts on a local chain, an encrypted keystore elsewhere."""

from __future__ import annotations

import getpass
import json
import os
import sys
from functools import cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from pol_chain.ledger.errors import KeystoreError, WrongKeystorePassword

__all__ = [
    "ANVIL_MNEMONIC",
    "LOCAL_CHAIN_IDS",
    "PASSWORD_ENV",
    "create_keystore",
    "dev_account",
    "load_keystore",
    "resolve_account",
]

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
"""The mnemonic Anvil (and Hardhat) fund 10 accounts from by default."""

LOCAL_CHAIN_IDS = frozenset({31337, 1337})
"""Chain ids on which dev accounts may be used."""

PASSWORD_ENV = "POLCHAIN_KEYSTORE_PASSWORD"


@cache
def dev_account(index: int = 0) -> LocalAccount:
    """Return Anvil's dev account ``index`` (0 is the deployer/admin by convention)."""
    if index < 0:
        raise ValueError(f"dev account index must be >= 0, got {index}")
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def _password(path: Path, password: str | None) -> str:
    if password is not None:
        return password
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {path}: ")
    raise KeystoreError(
        f"no password for keystore {path}",
        hint=f"set {PASSWORD_ENV} or run interactively to be prompted",
    )


def load_keystore(path: str | Path, password: str | None = None) -> LocalAccount:
    """Decrypt an eth-account (V3) keystore; the password comes from the argument,
    ``$POLCHAIN_KEYSTORE_PASSWORD`` or a prompt, in that order."""
    path = Path(path).expanduser()
    try:
        keyfile = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"keystore {path} is not a readable JSON keystore: {exc}") from exc
    secret = _password(path, password)
    try:
        key = Account.decrypt(keyfile, secret)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongKeystorePassword(str(path)) from exc
        raise KeystoreError(f"keystore {path} cannot be decrypted: {exc}") from exc
    account: LocalAccount = Account.from_key(key)
    return account


def create_keystore(
    path: str | Path,
    password: str,
    private_key: bytes | str | None = None,
    *,
    iterations: int | None = None,
) -> LocalAccount:
    """Write a new (or the given) key encrypted with ``password`` to ``path``; return it.

    ``iterations`` is the scrypt work factor (eth-account's default when None; tests use
    a small power of two for speed)."""
    account: LocalAccount = Account.from_key(private_key) if private_key else Account.create()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Account.encrypt(account.key, password, iterations=iterations)))
    path.chmod(0o600)
    return account


def resolve_account(
    chain_id: int,
    *,
    keystore: str | Path | None = None,
    account_index: int = 0,
    password: str | None = None,
) -> LocalAccount:
    """The signer on chain ``chain_id``: the keystore when given, else Anvil dev account
    ``account_index``, which is only allowed on a local chain (ids 31337 / 1337)."""
    if keystore is not None:
        return load_keystore(keystore, password)
    if chain_id not in LOCAL_CHAIN_IDS:
        raise KeystoreError(
            f"chain {chain_id} is not a local chain: a keystore is needed to sign",
            hint="pass --keystore PATH (password in POLCHAIN_KEYSTORE_PASSWORD)",
        )
    return dev_account(account_index)
