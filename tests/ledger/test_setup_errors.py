"""Embedded chain, deployments, persistence, compiled artefact, and one-line setup errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from ledger_helpers import digest
from web3 import Web3

from pol_chain.compose.context import open_ledger
from pol_chain.config import Settings
from pol_chain.ledger import errors
from pol_chain.ledger.accounts import create_keystore, dev_account, load_keystore, resolve_account
from pol_chain.ledger.anvil import EmbeddedChain, find_anvil, free_port, rpc_answers
from pol_chain.ledger.client import LedgerClient, connect_web3
from pol_chain.ledger.deployments import Deployment, Deployments, ensure_deployed, load_deployed
from pol_chain.ledger.types import RunStatus

ROOT = Path(__file__).resolve().parents[2]


def test_chain_state_survives_restart(tmp_path: Path) -> None:
    node = EmbeddedChain(tmp_path, port=free_port())
    node.start()
    try:
        w3 = connect_web3(node.url)
        ledger, fresh = ensure_deployed(w3, dev_account(0), tmp_path)
        assert fresh
        run = ledger.register_run(digest("spec"), "bafyspec").run_id
        ledger.commit_checkpoints(run, 0, [digest("leaf")], "m")
        block = w3.eth.block_number
    finally:
        assert node.stop()
    assert node.state_file.is_file() and not node.pid_file.exists()

    again = EmbeddedChain(tmp_path, port=node.port)
    again.start()
    try:
        assert not again.reused
        w3 = connect_web3(again.url)
        assert w3.eth.block_number >= block
        reloaded, fresh = ensure_deployed(w3, dev_account(0), tmp_path)
        assert not fresh and reloaded.address == ledger.address
        info = reloaded.get_run(run)
        assert info.status is RunStatus.REGISTERED and info.committed_count == 1
        # a second manager on the same port reuses the running node
        third = EmbeddedChain(tmp_path, port=node.port)
        third.start()
        assert third.reused
    finally:
        again.stop()


def test_a_folder_without_a_port_finds_one_and_keeps_it(tmp_path: Path) -> None:
    """With no anvil_port a data folder never fails on a taken port (before: the default
    8545 held by another folder's Anvil refused every command): it moves to a free port,
    remembers it, and every later manager finds its node there; a port the user fixed
    that differs from the running node's is refused rather than forking its state."""
    import socket

    other = EmbeddedChain(tmp_path / "other", port=free_port())
    other.start()
    squatter = socket.socket()  # a listener that does not speak JSON-RPC
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    mine = tmp_path / "mine"
    try:
        for taken in (other.port, squatter.getsockname()[1]):
            node = EmbeddedChain(mine)
            node.port_file.parent.mkdir(parents=True, exist_ok=True)
            node.port_file.write_text(f"{taken}\n")  # the port it had is someone else's now
            node = EmbeddedChain(mine)
            assert node.port == taken
            node.start()
            try:
                assert node.port != taken and not node.reused
                assert int(node.port_file.read_text()) == node.port
                assert rpc_answers(node.url) == 31337
                found = EmbeddedChain(mine)
                assert found.port == node.port  # from the running node's command line
                assert found.start() == node.url and found.reused
                with pytest.raises(errors.AnvilRunsElsewhere, match="would fork"):
                    EmbeddedChain(mine, port=free_port()).start()
            finally:
                assert node.stop()
            assert EmbeddedChain(mine).port == node.port  # remembered when stopped
        assert EmbeddedChain(tmp_path / "other").start() == other.url  # untouched
    finally:
        squatter.close()
        other.stop()


def test_unreachable_rpc_is_one_clear_error() -> None:
    with pytest.raises(errors.RpcUnreachable, match="no Ethereum node answers at"):
        LedgerClient.connect(f"http://127.0.0.1:{free_port()}", "0x" + "11" * 20)


def test_no_contract_at_recorded_address(w3: Web3, tmp_path: Path) -> None:
    with pytest.raises(errors.ContractNotDeployed) as info:
        load_deployed(w3, None, tmp_path)
    assert "deploy" in info.value.hint
    Deployments(tmp_path).record(Deployment(w3.eth.chain_id, "0x" + "22" * 20, 0, ""))
    with pytest.raises(errors.ContractNotDeployed, match="no ProofLedger contract at 0x2222"):
        load_deployed(w3, None, tmp_path)
    assert "polchain deploy" in errors.ContractNotDeployed(1, None).hint


def test_anvil_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLCHAIN_NODE_MODULES", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.AnvilNotInstalled) as info:
        find_anvil()
    assert "bootstrap.sh" in info.value.hint and "@foundry-rs/anvil" in info.value.hint
    with pytest.raises(errors.AnvilNotInstalled):
        EmbeddedChain(tmp_path, port=free_port()).start()


def test_keystore_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    made = create_keystore(path, "right", dev_account(9).key, iterations=2**10)
    assert made.address == dev_account(9).address
    assert load_keystore(path, "right").address == made.address
    monkeypatch.setenv("POLCHAIN_KEYSTORE_PASSWORD", "right")
    assert load_keystore(path).address == made.address
    monkeypatch.setenv("POLCHAIN_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(errors.WrongKeystorePassword, match="wrong password"):
        load_keystore(path)
    with pytest.raises(errors.KeystoreError, match="does not exist"):
        load_keystore(tmp_path / "missing.json", "x")


def test_unfunded_account(session_ledger: LedgerClient) -> None:
    broke = session_ledger.with_account(Account.create())
    with pytest.raises(errors.InsufficientFunds, match="insufficient funds"):
        broke.register_run(digest("spec"), "bafyspec")


def test_committed_artifact_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile_contracts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_open_ledger_on_embedded_chain(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(home=tmp_path, anvil_port=port)
    with pytest.raises(errors.ContractNotDeployed):
        open_ledger(settings, deploy=False)
    node = EmbeddedChain(tmp_path, port=port)
    try:
        assert node.is_running()  # started by the first call, detached
        client = open_ledger(settings, deploy=True)
        again = open_ledger(settings, account=3)
        assert again.address == client.address
        assert again.account is not None and again.account.address == dev_account(3).address
        assert open_ledger(settings, read_only=True).account is None
    finally:
        assert node.stop()


def test_remote_chain_needs_keystore(tmp_path: Path) -> None:
    node = EmbeddedChain(tmp_path, port=free_port(), chain_id=4242)
    with node:
        w3 = connect_web3(node.url)
        with pytest.raises(errors.KeystoreError, match="keystore is needed"):
            resolve_account(w3.eth.chain_id)
        path = tmp_path / "k.json"
        create_keystore(path, "pw", dev_account(2).key, iterations=2**10)
        signer = resolve_account(w3.eth.chain_id, keystore=path, password="pw")
        assert signer.address == dev_account(2).address


def test_node_gone_mid_session(tmp_path: Path) -> None:
    node = EmbeddedChain(tmp_path, port=free_port())
    with node:
        ledger = LedgerClient.deploy(connect_web3(node.url), dev_account(0))
    with pytest.raises(errors.RpcUnreachable, match=str(node.port)):
        ledger.get_run(digest("x"))
    with pytest.raises(errors.RpcUnreachable):
        ledger.register_run(digest("spec"), "bafyspec")


def test_every_contract_error_has_a_python_class() -> None:
    from pol_chain.ledger.client import load_artifact
    from pol_chain.ledger.errors import _REGISTRY

    names = {e["name"] for e in load_artifact()["abi"] if e["type"] == "error"}
    ours = {n for n in names if n.startswith(("ProofLedger", "AccessControl"))}
    assert ours <= set(_REGISTRY), ours - set(_REGISTRY)


def test_stale_pid_file_never_kills_another_program(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        node = EmbeddedChain(tmp_path, port=free_port())
        node.chain_dir.mkdir(parents=True)
        node.pid_file.write_text(f"{sleeper.pid}\n")
        assert node.stop() is False
        assert sleeper.poll() is None and not node.pid_file.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
