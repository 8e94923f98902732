"""Anyone's training, verified by an agent that has never seen it (docs/guide.md).

A task in a folder of its own (an entry module importing a helper module, trained on a
dataset written here as a folder of files) is trained and finalized by one project; an
agent with another data folder and working directory — the trainer's folder gone by
then — fetches code, data and checkpoints by content address through a Kubo node,
replays them in the sandbox and attests. Then the ways it must not pass or must not
vote: a bundle one byte off its digest, a fine-tune claiming its parent, a library the
agent lacks, a device of another kind.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli.helpers import Cli, make_cli
from safetensors.torch import save_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="the agent's sandbox needs bubblewrap"
)

HELPERS = '''"""Model, optimizer and batching of the cancer task (a module of the trainer's own)."""
import torch
from torch import nn

WEIGHT_DECAY = 1e-4


def make_model(n_in: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=WEIGHT_DECAY)


def collate(samples):
    return torch.stack([s["x"] for s in samples]), torch.stack([s["y"] for s in samples])
'''

TASK = '''"""A small MLP on the breast-cancer data the trainer committed with --data."""
import torch
from torch import nn

import fakelib  # a distribution the trainer has installed
from cancer_helpers import collate, make_model, make_optimizer
from pol_chain.proof.task import TaskBundle

DEFAULT_CONFIG = {"batch_size": 32, "epochs": 2, "k": 6, "lr": 0.05}


def build(config, device, dataset):
    n_in = dataset[0]["x"].numel()  # reads a sample while building: the verifier serves it
    model = make_model(n_in).to(device)
    return TaskBundle(
        model=model,
        optimizer=make_optimizer(model, float(config["lr"]) * fakelib.SCALE),
        loss_fn=nn.functional.cross_entropy,
        dataset=dataset,
        collate=collate,
    )
'''


def _write_dataset(folder: Path) -> int:
    """The breast-cancer data (569 real samples) as one safetensors file per sample."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    folder.mkdir(parents=True)
    for i, (row, label) in enumerate(zip(x, data.target, strict=True)):
        save_file(
            {"x": torch.from_numpy(row.copy()), "y": torch.tensor(int(label))},
            str(folder / f"{i:04d}.safetensors"),
        )
    return len(x)


def _fake_distribution(site: Path) -> None:
    """``fakelib`` 1.0, installed (dist-info and all) in ``site``: only the trainer has it."""
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("SCALE = 1.0\n")
    info = site / "fakelib-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.0\n")
    (info / "RECORD").write_text("")
    (info / "top_level.txt").write_text("fakelib\n")


def _outcomes(agent: Cli, *args: str) -> dict[int, dict[str, Any]]:
    result = agent.json("agent", "--once", *args, timeout=900)
    return {o["challenge_id"]: o for o in result["outcomes"]}


def _challenge(cli: Cli, run_id: str) -> int:
    return int(cli.json("challenge", run_id, "-a", "4")["challenges"][0]["challenge_id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Kubo node, a trainer project with its task folder, and an agent elsewhere."""
    from store.conftest import FakeKubo

    root = tmp_path_factory.mktemp("own-task")
    kubo = FakeKubo(root / "kubo")
    kubo.start()
    api = f"http://127.0.0.1:{kubo.port}"
    project = root / "trainer" / "project"
    project.mkdir(parents=True)
    (project / "cancer_helpers.py").write_text(HELPERS)
    (project / "cancer_task.py").write_text(TASK)
    samples = _write_dataset(project / "samples")
    site = root / "trainer" / "site"
    _fake_distribution(site)
    trainer = make_cli(
        project,
        POLCHAIN_HOME=str(root / "trainer" / "home"),
        POLCHAIN_STORE_BACKEND="kubo",
        POLCHAIN_KUBO_API=api,
        PYTHONPATH=_python_path(site),
    )
    try:
        yield {"root": root, "kubo": kubo, "api": api, "trainer": trainer, "samples": samples}
    finally:
        trainer.run("chain", "down", check=False)
        kubo.stop()


def _python_path(site: Path) -> str:
    """``site`` before the inherited path, with no empty entry (one would put the working
    folder on the path by accident)."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([str(site), *inherited])


def _agent(world: dict[str, Any], name: str, *, fakelib: bool = True) -> Cli:
    """An agent in a folder of its own, on the trainer's chain and Kubo node; with
    ``fakelib`` it has installed (its own copy of) the library the task needs."""
    ledger = world["trainer"].json("chain", "status")
    extra = {}
    if fakelib:
        site = world["root"] / f"{name}-site"
        if not site.exists():
            _fake_distribution(site)
        extra["PYTHONPATH"] = _python_path(site)
    return make_cli(
        world["root"] / name,
        POLCHAIN_RPC_URL=ledger["url"],
        POLCHAIN_CONTRACT_ADDRESS=ledger["ledger"],
        POLCHAIN_STORE_BACKEND="kubo",
        POLCHAIN_KUBO_API=world["api"],
        **extra,
    )


def _swap_bundle(world: dict[str, Any], proof: Path, out: Path) -> str:
    """As a dishonest trainer: register a run whose spec commits the bundle's digest but
    locates a copy with one byte of the helper module changed; train it honestly."""
    from pol_chain.format import BUNDLE_FILE, SPEC_FILE, RunBinding, TaskSpec, to_hex
    from pol_chain.ledger.accounts import dev_account
    from pol_chain.ledger.client import LedgerClient
    from pol_chain.store import KuboClient

    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    code = (proof / BUNDLE_FILE).read_bytes()
    marker = b"WEIGHT_DECAY = 1e-4"
    assert code.count(marker) == 1
    tampered = code.replace(marker, b"WEIGHT_DECAY = 2e-4")  # one byte, same length
    kubo = KuboClient(world["api"])
    assert spec.bundle is not None
    spec = spec.replace(bundle=replace(spec.bundle, cid=kubo.add(tampered)))
    spec_cid = kubo.add(spec.to_bytes())
    binding = RunBinding.read(proof)
    ledger = world["trainer"].json("chain", "status")
    account = next(dev_account(i) for i in range(10) if dev_account(i).address == binding.trainer)
    client = LedgerClient.connect(ledger["url"], ledger["ledger"], account)
    run = client.register_run(spec.digest, spec_cid)
    out.mkdir()
    (out / SPEC_FILE).write_bytes(spec.to_bytes())
    (out / BUNDLE_FILE).write_bytes(code)
    shutil.copytree(proof / "data", out / "data")
    replace(
        binding, run_id=to_hex(run.run_id), spec_sha256=to_hex(spec.digest), spec_cid=spec_cid
    ).write(out)
    world["trainer"].json("train", "cancer_task:build", "--resume", "--out", str(out.name))
    return to_hex(run.run_id)


def test_own_code_and_data_verified_by_a_stranger(world: dict[str, Any]) -> None:
    trainer: Cli = world["trainer"]
    run = trainer.json("train", "cancer_task:build", "--data", "samples", "--out", "cancer")
    assert run["finalized"] and run["committed"] == run["checkpoints"] > 3
    proof = trainer.workdir / "cancer"
    spec = json.loads((proof / "spec.json").read_text())
    assert spec["dataset"]["size"] == world["samples"]
    with tarfile.open(proof / "bundle.tar") as tar:
        names = tar.getnames()
    assert any(n.endswith("cancer_helpers.py") for n in names), names
    assert "fakelib" in {r["name"] for r in json.loads(_bundle_manifest(proof))["requirements"]}
    swapped = _swap_bundle(world, proof, trainer.workdir / "swapped")
    # the trainer's folder is gone: nothing of it can be read from here on
    gone = trainer.workdir.with_name("project-gone")
    trainer.workdir.rename(gone)
    trainer.workdir = gone
    agent = _agent(world, "verifier")
    honest = _challenge(agent, run["run_id"])
    bad = _challenge(agent, swapped)
    outcomes = _outcomes(agent)
    assert outcomes[honest]["status"] == "attested" and outcomes[honest]["passed"], outcomes
    assert outcomes[bad]["status"] == "attested" and not outcomes[bad]["passed"], outcomes
    assert outcomes[bad]["reasons"] == ["artefact_digest"], outcomes[bad]
    assert agent.json("show", "challenge", str(honest))["status"] == "passed"
    world["verified"] = run


def _bundle_manifest(proof: Path) -> str:
    with tarfile.open(proof / "bundle.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("polchain-bundle.json"))
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


@pytest.mark.fault("wrong_verdict")
def test_an_agent_lacking_a_library_or_the_device_does_not_vote(world: dict[str, Any]) -> None:
    if "verified" not in world:  # run alone (benchmarks/faults.py selects fault tests)
        world["verified"] = world["trainer"].json(
            "train", "cancer_task:build", "--data", "samples", "--out", "cancer-alone"
        )
    agent = _agent(world, "verifier-lacking", fakelib=False)
    challenge = _challenge(agent, world["verified"]["run_id"])
    # this agent has no fakelib: the trainer's requirement is missing here
    lacking = _outcomes(agent)[challenge]
    assert lacking["status"] == "pending", lacking
    assert "fakelib" in lacking["detail"], lacking
    wrong_device = _outcomes(_agent(world, "verifier"), "--device", "cuda")[challenge]
    assert wrong_device["status"] == "pending" and "cpu" in wrong_device["detail"], wrong_device
    assert agent.json("show", "challenge", str(challenge))["status"] == "open"


def test_fine_tune_verified_with_lineage_and_no_parent_claim(world: dict[str, Any]) -> None:
    from pol_chain.format import MODEL_FILE, RunBinding
    from pol_chain.ledger.accounts import dev_account
    from pol_chain.ledger.client import LedgerClient

    trainer = world["trainer"]
    parent = trainer.json("train", "digits", "--epochs", "1", "-k", "15", "--out", "parent")
    child = trainer.json(
        "train", "digits", "--from", "parent", "--epochs", "2", "-k", "25",
        "--set", "lr.base=0.01", "--set", "lr.warmup_steps=0", "--out", "child",
    )  # fmt: skip
    assert child["steps"] >= 80 and child["model_digest"] != parent["model_digest"]
    spec = json.loads((trainer.workdir / "child" / "spec.json").read_text())
    assert spec["init"]["model_digest"] == parent["model_digest"]
    assert spec["init"]["run_id"] == parent["run_id"]
    # a thief fine-tunes nothing and claims the parent's own digest
    thief = trainer.json(
        "train", "digits", "--from", parent["model_digest"], "--epochs", "1", "-k", "15",
        "--no-finalize", "--out", "thief",
    )  # fmt: skip
    binding = RunBinding.read(trainer.workdir / "thief")
    ledger = trainer.json("chain", "status")
    account = next(dev_account(i) for i in range(10) if dev_account(i).address == binding.trainer)
    client = LedgerClient.connect(ledger["url"], ledger["ledger"], account)
    parent_file = trainer.workdir / "parent" / MODEL_FILE
    client.finalize_run(binding.run_id_bytes, bytes.fromhex(parent["model_digest"][2:]), "")
    assert parent_file.is_file()
    agent = _agent(world, "verifier-2")
    ours, theirs = _challenge(agent, child["run_id"]), _challenge(agent, thief["run_id"])
    first = _challenge(agent, parent["run_id"])
    outcomes = _outcomes(agent)
    assert outcomes[first]["passed"] and outcomes[ours]["passed"], outcomes
    assert outcomes[theirs]["status"] == "attested" and not outcomes[theirs]["passed"]
    assert outcomes[theirs]["reasons"] == ["lineage"], outcomes[theirs]
    history = trainer.json("history", str(trainer.workdir / "child" / MODEL_FILE))
    assert [p["model_digest"] for p in history["lineage"]["parents"]] == [parent["model_digest"]]
    of_parent = trainer.json("history", parent["model_digest"])
    assert child["run_id"] in {c["run_id"] for c in of_parent["lineage"]["children"]}
    assert of_parent["owner"]["run_id"] == parent["run_id"]  # the thief's later claim loses


@pytest.mark.parametrize("example", ["lightning_digits", "hf_tiny_gpt"])
def test_a_framework_run_is_verified_by_a_stranger_agent(
    world: dict[str, Any], example: str
) -> None:
    """A Lightning / HF Trainer run recorded by the example's own script (a DataLoader
    with 2 workers), stopped early, committed and finalized; a challenge is verified by an agent that has never seen the
    trainer's folder (it replays the committed bundle in its sandbox)."""
    import subprocess
    import sys

    pytest.importorskip("lightning" if example.startswith("lightning") else "transformers")
    trainer: Cli = world["trainer"]
    shutil.copy(EXAMPLES / f"{example}.py", trainer.workdir / f"{example}.py")
    out = f"{example}-proof"
    reg = trainer.json("register", f"{example}:build", "-k", "6", "--out", out)
    subprocess.run(
        [sys.executable, f"{example}.py", out, "--stop-after", "15", "--workers", "2"],
        cwd=trainer.workdir,
        env=trainer.env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert trainer.json("commit", out)["syncs"][-1]["committed_after"] == 4  # 0, 6, 12, 15
    trainer.json("finalize", out)
    agent = _agent(world, "verifier")
    challenge = _challenge(agent, reg["run_id"])
    outcome = _outcomes(agent)[challenge]
    assert outcome["status"] == "attested" and outcome["passed"], outcome
