"""The one read path (JSON-RPC + eth-abi, no web3) decodes what web3 decodes, and the
read-only commands never import web3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ledger_helpers import digest, finalized_run, leaves_for, mine
from web3 import Web3

from pol_chain.compose.context import open_ledger
from pol_chain.config import Settings
from pol_chain.ledger import errors
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.anvil import EmbeddedChain, free_port
from pol_chain.ledger.client import LedgerClient, load_artifact
from pol_chain.ledger.deployments import Deployment, Deployments
from pol_chain.ledger.history import model_history, run_history
from pol_chain.ledger.reader import LedgerReader, abi

ROOT = Path(__file__).resolve().parents[2]
# what the read-only path must not import: web3 (~1.4 s) and eth-account (signing)
HEAVY = ("web3", "eth_account")


def _scenario(w3: Web3, ledger: LedgerClient) -> dict[str, object]:
    """Three claims on one model (one refuted by two votes, one verified), commits in
    several transactions, a sealed seed, a relayed vote, and a run never finalized."""
    model = digest("model-reader")
    thief = ledger.with_account(dev_account(6))
    thief_run = finalized_run(thief, model, checkpoints=2)
    honest = ledger.register_run(digest("spec-r"), "bafyspec-r").run_id
    leaves = leaves_for(honest, 0, 5)
    ledger.commit_checkpoints(honest, 0, leaves[:2], "bafym1")
    ledger.commit_checkpoints(honest, 2, leaves[2:], "bafym2")
    ledger.finalize_run(honest, model, "bafymodel")
    late = finalized_run(ledger.with_account(dev_account(7)), model, checkpoints=1)
    pending = ledger.register_run(digest("spec-p"), "bafyspec-p").run_id

    ledger.set_quorum(2)
    for i in (1, 2):
        ledger.grant_verifier(dev_account(i).address)
    v1, v2 = (ledger.with_account(dev_account(i)) for i in (1, 2))
    refuted = ledger.open_challenge(thief_run).challenge_id
    mine(w3, 1)
    ledger.seal_randomness(refuted)
    v1.attest(refuted, False, digest("r1"), "bafyr1")
    sig = v2.sign_attestation(refuted, False, digest("r2"), "bafyr2")
    ledger.attest_by_sig(refuted, False, digest("r2"), "bafyr2", sig)
    upheld = ledger.open_challenge(honest).challenge_id
    mine(w3, 1)
    v1.attest(upheld, True, digest("r3"), "bafyr3")
    v2.attest(upheld, True, digest("r4"), "bafyr4")
    still_open = ledger.open_challenge(late).challenge_id
    return {
        "model": model,
        "runs": [thief_run, honest, late, pending],
        "challenges": [refuted, upheld, still_open],
    }


def _reader(ledger: LedgerClient) -> LedgerReader:
    url = str(ledger.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    return LedgerReader(url, ledger.address, deploy_block=ledger.deploy_block)


def test_reader_logs_equal_web3_decoding(w3: Web3, ledger: LedgerClient) -> None:
    """Every event the scenario emits decodes exactly as web3.py decodes it."""
    s = _scenario(w3, ledger)
    contract = w3.eth.contract(address=Web3.to_checksum_address(ledger.address), abi=abi())
    names = [i["name"] for i in abi() if i.get("type") == "event"]
    seen = 0
    with _reader(ledger) as reader:
        for name in names:
            ours = reader.logs(name)
            theirs = getattr(contract.events, name).get_logs(from_block=ledger.deploy_block)
            assert len(ours) == len(theirs), name
            for a, b in zip(ours, theirs, strict=True):
                assert a["args"] == dict(b["args"]), name
                assert (a["blockNumber"], a["logIndex"]) == (b["blockNumber"], b["logIndex"])
                assert a["transactionHash"] == bytes(b["transactionHash"])
            seen += len(ours)
        assert seen > 20
        # the history rebuilt from those logs agrees with the contract's views
        model = s["model"]
        assert isinstance(model, bytes)
        hist = model_history(reader, model)
        assert len(hist.claims) == 3 and hist.owner == reader.owner_of(model)
        for claim, view in zip(hist.claims, reader.claims_of(model), strict=True):
            assert (claim.run_id, claim.status) == (view.run_id, view.status)
        for run in s["runs"]:  # type: ignore[attr-defined]
            rebuilt = run_history(reader, run)
            assert len(rebuilt.leaves) == reader.committed_count(run)
            assert rebuilt.accumulator == reader.accumulator_of(run)
            assert run_history(reader, run, from_block=0) == rebuilt
        with pytest.raises(errors.UnknownRun):
            run_history(reader, digest("no-such-run"))


def test_logs_are_paged_within_the_range_limit(w3: Web3, ledger: LedgerClient) -> None:
    s = _scenario(w3, ledger)
    with _reader(ledger) as whole, _reader(ledger) as paged:
        paged.log_range = 2
        model = s["model"]
        assert isinstance(model, bytes)
        assert model_history(paged, model) == model_history(whole, model)


def test_reader_views_equal_client_views(w3: Web3, ledger: LedgerClient) -> None:
    s = _scenario(w3, ledger)
    model = s["model"]
    assert isinstance(model, bytes)
    with _reader(ledger) as reader:
        assert reader.chain_id == ledger.chain_id
        assert reader.address == ledger.address
        assert reader.owner_of(model) == ledger.owner_of(model)
        assert reader.owner_of(digest("nobody")) is None
        assert reader.claims_of(model) == ledger.claims_of(model)
        assert reader.quorum() == ledger.quorum() == 2
        assert reader.challenge_bond() == ledger.challenge_bond()
        for run in s["runs"]:  # type: ignore[attr-defined]
            assert reader.get_run(run) == ledger.get_run(run)
            assert reader.challenges_of(run) == ledger.challenges_of(run)
            assert reader.committed_count(run) == ledger.committed_count(run)
            assert reader.accumulator_of(run) == ledger.accumulator_of(run)
        for cid in s["challenges"]:  # type: ignore[attr-defined]
            assert reader.get_challenge(cid) == ledger.get_challenge(cid)
        with pytest.raises(errors.UnknownRun):
            reader.get_run(digest("no-such-run"))
        with pytest.raises(errors.UnknownChallenge):
            reader.get_challenge(10_000)
        stamps = reader.timestamps([1, 2, 2])
        assert stamps == {b: int(w3.eth.get_block(b)["timestamp"]) for b in (1, 2)}


def test_reader_named_errors(w3: Web3, ledger: LedgerClient, tmp_path: Path) -> None:
    url = str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with pytest.raises(errors.ContractNotDeployed):
        LedgerReader(url, dev_account(3).address)
    with pytest.raises(errors.RpcUnreachable):
        LedgerReader(f"http://127.0.0.1:{free_port()}", ledger.address, timeout=2)

    settings = Settings(home=tmp_path, rpc_url=url)
    with pytest.raises(errors.ContractNotDeployed) as missing:
        open_ledger(settings, read_only=True)
    assert "polchain deploy" in missing.value.hint
    Deployments(tmp_path).record(
        Deployment(
            ledger.chain_id,
            ledger.address,
            ledger.deploy_block,
            str(load_artifact()["sourceDigest"]),
        )
    )
    with open_ledger(settings, read_only=True) as reader:
        assert (reader.address, reader.deploy_block) == (ledger.address, ledger.deploy_block)
    with open_ledger(
        Settings(home=tmp_path / "elsewhere", rpc_url=url, contract_address=ledger.address.lower()),
        read_only=True,
    ) as reader:
        assert reader.address == ledger.address


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    env.update(extra)
    return env


def test_light_path_imports_no_web3() -> None:
    code = (
        f"import sys\nHEAVY = {HEAVY!r}\n"
        "import pol_chain.ledger.reader, pol_chain.ledger.history, pol_chain.ledger\n"
        "import pol_chain.cli.main, pol_chain.cli.cmd_query\n"
        "from pol_chain.ledger import ModelHistory, LedgerReader, RunStatus\n"
        "heavy = sorted(m for m in HEAVY if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_history_command_without_web3(w3: Web3, ledger: LedgerClient, tmp_path: Path) -> None:
    """``polchain history`` and ``owner`` run the light path end to end (no web3 import)
    and print what the web3-based history gives."""
    s = _scenario(w3, ledger)
    model = s["model"]
    assert isinstance(model, bytes)
    url = str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    Deployments(tmp_path).record(
        Deployment(ledger.chain_id, ledger.address, ledger.deploy_block, "test")
    )
    code = (
        f"import sys\nHEAVY = {HEAVY!r}\n"
        "from pol_chain.cli import cmd_query\n"
        f"cmd_query.history(model={'0x' + model.hex()!r}, json_out=True)\n"
        f"cmd_query.owner(model={'0x' + model.hex()!r}, json_out=True)\n"
        "cmd_query.history(model=sys.argv[1], json_out=False)\n"
        "print(sorted(m for m in HEAVY if m in sys.modules), file=sys.stderr)\n"
    )
    run_ref = "0x" + s["runs"][1].hex()  # type: ignore[index]
    out = subprocess.run(
        [sys.executable, "-c", code, run_ref],
        cwd=ROOT,
        env=_clean_env(POLCHAIN_HOME=str(tmp_path), POLCHAIN_RPC_URL=url, COLUMNS="200"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr
    decoder = json.JSONDecoder()
    doc, end = decoder.raw_decode(out.stdout)
    owner_doc, end2 = decoder.raw_decode(out.stdout[end:].lstrip())
    # The scenario's specs are not in any store: the lineage says so instead of failing.
    family = doc.pop("lineage")
    assert family["parents"] == [] and family["children"] == []
    assert family["unreadable_specs"] > 0
    assert doc == json.loads(json.dumps(model_history(ledger, model).to_dict()))
    found = ledger.owner_of(model)
    assert found is not None
    assert owner_doc == {
        "model_digest": "0x" + model.hex(),
        "owner": found.trainer,
        "run_id": "0x" + found.run_id.hex(),
    }
    tables = out.stdout[end:]
    assert "timeline" in tables and "ChallengeResolved" in tables
    assert f"owner: {found.trainer}" in out.stderr


def test_history_command_without_deployment(tmp_path: Path) -> None:
    """The embedded chain with nothing deployed: one-line ContractNotDeployed, no deploy."""
    port = free_port()
    with EmbeddedChain(tmp_path, port=port) as node:
        out = subprocess.run(
            [sys.executable, "-m", "pol_chain.cli", "history", "0x" + "11" * 32],
            cwd=ROOT,
            env=_clean_env(POLCHAIN_HOME=str(tmp_path), POLCHAIN_ANVIL_PORT=str(port)),
            capture_output=True,
            text=True,
        )
        assert node.is_running()
    assert out.returncode == 1, out.stderr
    assert "no ProofLedger contract recorded on chain 31337" in out.stderr
    assert "polchain deploy" in out.stderr
    assert not (tmp_path / "deployments.json").exists()
