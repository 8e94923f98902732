"""The light ledger reader (raw JSON-RPC, no web3) agrees with the web3-based client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ledger_helpers import digest, finalized_run, leaves_for, mine
from web3 import Web3

from pol_chain.config import Settings
from pol_chain.ledger import errors
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.anvil import EmbeddedChain, free_port
from pol_chain.ledger.client import LedgerClient, load_artifact
from pol_chain.ledger.deployments import Deployment, Deployments
from pol_chain.ledger.history import LogSource, model_history, run_history
from pol_chain.ledger.reader import LedgerReader, open_reader

ROOT = Path(__file__).resolve().parents[2]
# what the read-only path must not import: web3 (~1.4 s) and, on the happy path, eth_abi
# and eth_utils (0.2-0.5 s; pol_chain.ledger.errors loads them only when an error is raised)
HEAVY = ("web3", "eth_account", "eth_abi", "eth_utils")


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


def test_reader_history_equals_web3_history(w3: Web3, ledger: LedgerClient) -> None:
    s = _scenario(w3, ledger)
    model = s["model"]
    assert isinstance(model, bytes)
    with _reader(ledger) as reader:
        assert isinstance(reader, LogSource)
        assert not isinstance(ledger, LogSource)
        light, heavy = model_history(reader, model), model_history(ledger, model)
        assert len(light.claims) == 3 and light.owner is not None
        assert light.to_dict() == heavy.to_dict()
        assert light == heavy  # same Python types too (the CLI's tables print them)
        assert [e.kind for e in light.events] == [e.kind for e in heavy.events]
        for run in s["runs"]:  # type: ignore[attr-defined]
            assert run_history(reader, run).to_dict() == run_history(ledger, run).to_dict()
            assert run_history(reader, run, from_block=0) == run_history(ledger, run)
        empty = digest("no-such-model")
        assert model_history(reader, empty).to_dict() == model_history(ledger, empty).to_dict()
        with pytest.raises(errors.UnknownRun):
            run_history(reader, digest("no-such-run"))


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
        open_reader(settings)
    assert "polchain deploy" in missing.value.hint
    Deployments(tmp_path).record(
        Deployment(
            ledger.chain_id,
            ledger.address,
            ledger.deploy_block,
            str(load_artifact()["sourceDigest"]),
        )
    )
    with open_reader(settings) as reader:
        assert (reader.address, reader.deploy_block) == (ledger.address, ledger.deploy_block)
    with open_reader(
        Settings(home=tmp_path / "elsewhere", rpc_url=url, contract_address=ledger.address.lower())
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
        "from pol_chain.config import load_settings\n"
        "from pol_chain.cli import cmd_query\n"
        "s = load_settings()\n"
        f"cmd_query.history(s, model={'0x' + model.hex()!r}, json_out=True)\n"
        f"cmd_query.owner(s, model={'0x' + model.hex()!r}, json_out=True)\n"
        "cmd_query.history(s, model=sys.argv[1], json_out=False)\n"
        "print(sorted(m for m in HEAVY if m in sys.modules), file=sys.stderr)\n"
    )
    run_ref = "0x" + s["runs"][1].hex()  # type: ignore[index]
    out = subprocess.run(
        [sys.executable, "-c", code, run_ref],
        cwd=ROOT,
        env=_clean_env(POLCHAIN_HOME=str(tmp_path), POLCHAIN_RPC_URL=url, COLUMNS="200"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr
    decoder = json.JSONDecoder()
    doc, end = decoder.raw_decode(out.stdout)
    owner_doc, end2 = decoder.raw_decode(out.stdout[end:].lstrip())
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


def _web3_shape(abi_type: str, value: object) -> object:
    """eth_abi's decoded value as web3.py shapes it (checksummed addresses, lists)."""
    from eth_utils import to_checksum_address

    from pol_chain.ledger.reader import _array, _split_tuple

    array = _array(abi_type)
    if array is not None:
        return [_web3_shape(array[0], v) for v in value]  # type: ignore[attr-defined]
    if abi_type.startswith("("):
        parts = _split_tuple(abi_type)
        return tuple(_web3_shape(t, v) for t, v in zip(parts, value, strict=True))  # type: ignore[call-overload]
    if abi_type == "address":
        return to_checksum_address(str(value))
    return value


CODEC_CASES: list[tuple[str, object]] = [
    ("uint256", 2**256 - 1),
    ("uint8", 4),
    ("int256", -(2**255)),
    ("int8", -3),
    ("bool", True),
    ("bool", False),
    ("address", "0x" + "ab" * 20),
    ("bytes32", bytes(range(32))),
    ("bytes4", b"\x01\x02\x03\x04"),
    ("string", "héllo, ledger"),
    ("string", ""),
    ("bytes", b"\x00" * 33),
    ("bytes32[]", [digest("a"), digest("b"), digest("c")]),
    ("uint256[]", []),
    ("uint256[2]", [7, 8]),
    ("string[]", ["a", "", "bafy" * 20]),
    ("(bytes32,address,uint256,uint8)[]", [(digest("r"), "0x" + "cd" * 20, 5, 3)] * 2),
    (
        "(address,bytes32,uint256,uint8,uint256,bytes32,bytes32,uint256)",
        ("0x" + "01" * 20, digest("s"), 1, 2, 3, digest("a"), digest("m"), 4),
    ),
    ("(string,uint256[])[]", [("x", [1, 2]), ("yy", [])]),
]


@pytest.mark.parametrize(("abi_type", "value"), CODEC_CASES)
def test_codec_matches_eth_abi(abi_type: str, value: object) -> None:
    """The reader's own decoder agrees with eth_abi (as web3 shapes it), alone and in a
    head/tail sequence after a dynamic value."""
    from eth_abi import decode, encode

    from pol_chain.ledger.reader import _decode_seq, _encode_static, _is_dynamic

    types = ["string", abi_type, "uint256"]
    values = ["lead", value, 99]
    data = encode(types, values)
    expected = tuple(_web3_shape(t, v) for t, v in zip(types, decode(types, data), strict=True))
    assert _decode_seq(types, data, 0) == expected
    if not _is_dynamic(abi_type) and "[" not in abi_type and "(" not in abi_type:
        assert _encode_static(abi_type, value) == encode([abi_type], [value])


def test_checksum_matches_eth_utils() -> None:
    from eth_utils import to_checksum_address

    from pol_chain.ledger.reader import checksum_address

    for i in range(50):
        raw = digest(f"addr-{i}")[:20]
        assert checksum_address(raw) == to_checksum_address(raw)
        assert checksum_address("0x" + raw.hex()) == to_checksum_address(raw)
