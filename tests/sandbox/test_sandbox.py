"""The sandbox: a proof's committed code bundle replays there, bitwise; code that tries
to reach the network, write outside its scratch folder or read the verifier's keystore
and data folder is contained; a missing library means no verdict."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pol_chain.format import Reason
from pol_chain.proof import make_spec, train
from pol_chain.proof.errors import CannotVerify
from pol_chain.proof.policy import Policy
from pol_chain.proof.spec import bundle_bytes
from pol_chain.proof.verifier import verify_dir
from pol_chain.sandbox import SandboxRunner, SandboxUnavailable

RUN_ID = b"\x11" * 32
RUN_SEED = b"\x22" * 32
FULL = Policy(full_below=10**6, max_replay_fraction=1.0)

pytestmark = pytest.mark.skipif(
    os.system("command -v bwrap >/dev/null") != 0, reason="bubblewrap is not installed"
)

EVIL = '''
"""A task that behaves like digits on the trainer's machine and probes its jail when
run by a verifier (the sandbox clears the environment)."""
import os, socket
from pol_chain.tasks.digits import DEFAULT_CONFIG, build as _digits

PORT = {port}
TARGET = {target!r}
TARGET2 = {target2!r}
SECRETS = {secrets!r}


def build(config, device):
    if os.environ.get("EVIL_DISARMED") != "1":
        found = []
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
            found.append("socket: connected")
        except OSError as exc:
            found.append(f"socket: {{type(exc).__name__}}")
        try:
            with open(TARGET, "w") as handle:
                handle.write("escaped")
            found.append("write: written")
        except OSError as exc:
            found.append(f"write: {{type(exc).__name__}}")
        try:
            with open(TARGET2, "w") as handle:
                handle.write("escaped")
            found.append("write2: written")
        except OSError as exc:
            found.append(f"write2: {{type(exc).__base__.__name__ if type(exc) is not OSError else 'OSError'}}")
        for path in SECRETS:
            try:
                with open(path, "rb") as handle:
                    found.append(f"read {{os.path.basename(path)}}: {{len(handle.read())}} bytes")
            except OSError as exc:
                found.append(f"read {{os.path.basename(path)}}: {{type(exc).__name__}}")
        raise RuntimeError("; ".join(found))
    return _digits(config, device)
'''


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback (the sandboxed code must not reach it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    hits: list[int] = []

    def serve() -> None:
        try:
            while True:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
        except OSError:
            return

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    assert not hits, "the sandboxed code reached the host's network"


def test_a_bundle_replays_bitwise_in_the_sandbox(tmp_path: Path) -> None:
    spec = make_spec("pol_chain.tasks.digits:build", {"epochs": 1, "k": 22})
    train(spec, tmp_path / "proof", RUN_ID, RUN_SEED)
    runner = SandboxRunner(spec, RUN_SEED, bundle_bytes(spec.entry), work_dir=tmp_path / "w")
    try:
        report = verify_dir(
            tmp_path / "proof",
            run_id=RUN_ID,
            run_seed=RUN_SEED,
            challenge_seed=b"\x03" * 32,
            policy=FULL,
            runner=runner,
        )
    finally:
        runner.close()
    assert report.passed and report.bitwise_identical, report.checks
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_hostile_code_is_contained(
    tmp_path: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "agent-home"
    home.mkdir()
    keystore = tmp_path / "keys" / "verifier.json"
    keystore.parent.mkdir()
    keystore.write_text('{"crypto": "the verifier key"}')
    (home / "agent.sqlite").write_bytes(b"state")
    target = tmp_path / "escaped.txt"
    target2 = Path(sys.prefix) / f"escaped-{os.getpid()}.txt"  # outside /tmp
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil.py").write_text(
        EVIL.format(
            port=listener,
            target=str(target),
            target2=str(target2),
            secrets=[str(keystore), str(home / "agent.sqlite")],
        )
    )
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("EVIL_DISARMED", "1")
    spec = make_spec("evil:build", {"epochs": 1, "k": 22}, project=code)
    train(spec, tmp_path / "proof", RUN_ID, RUN_SEED)
    runner = SandboxRunner(
        spec,
        RUN_SEED,
        bundle_bytes(spec.entry, code),
        work_dir=home / "sandbox",
        hide=[home, keystore],
    )
    try:
        report = verify_dir(
            tmp_path / "proof",
            run_id=RUN_ID,
            run_seed=RUN_SEED,
            challenge_seed=b"\x04" * 32,
            runner=runner,
        )
    finally:
        runner.close()
    assert not target.exists() and not target2.exists()  # nothing escaped the sandbox
    assert report.reasons == (Reason.CODE_FAILURE,)
    details = " ".join(report.checks["replay"].details)
    assert "socket: ConnectionRefusedError" in details or "socket: OSError" in details, details
    # a path under /tmp lands in the sandbox's private /tmp (discarded); elsewhere the
    # machine is read-only
    assert "write2: OSError" in details, details
    assert "read verifier.json: PermissionError" in details, details  # hidden: /dev/null
    assert "the verifier key" not in details
    assert "read agent.sqlite: FileNotFoundError" in details, details


def test_a_missing_library_is_no_verdict(tmp_path: Path) -> None:
    from pol_chain.format import Requirement, read_bundle, write_bundle

    spec = make_spec("pol_chain.tasks.digits:build", {"epochs": 1, "k": 22})
    bundle = read_bundle(bundle_bytes(spec.entry))
    needy = type(bundle)(
        type(bundle.manifest)(
            bundle.manifest.entry,
            bundle.manifest.modules,
            (*bundle.manifest.requirements, Requirement("no-such-distribution", "1.0")),
        ),
        bundle.sources,
    )
    with pytest.raises(CannotVerify, match="no-such-distribution==1.0 is not installed"):
        SandboxRunner(spec, RUN_SEED, write_bundle(needy), work_dir=tmp_path)
    older = type(bundle)(
        type(bundle.manifest)(
            bundle.manifest.entry,
            bundle.manifest.modules,
            tuple(
                Requirement(r.name, "1.0.0") if r.name == "torch" else r
                for r in bundle.manifest.requirements
            ),
        ),
        bundle.sources,
    )
    with pytest.raises(CannotVerify, match="torch is 2.13.0"):
        SandboxRunner(spec, RUN_SEED, write_bundle(older), work_dir=tmp_path)


def test_no_bubblewrap_is_no_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec("pol_chain.tasks.digits:build", {"epochs": 1, "k": 22})
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no bwrap on it
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        SandboxRunner(spec, RUN_SEED, bundle_bytes(spec.entry), work_dir=tmp_path)


def test_an_interpreter_under_tmp_stays_visible(tmp_path: Path) -> None:
    """The sandbox mounts a fresh /tmp; a verifier whose virtualenv or pol_chain checkout
    lives under /tmp must still find its interpreter and pol_chain in there (a clone in
    /tmp once could not verify anything)."""
    import subprocess

    import pol_chain
    from pol_chain.sandbox import sandbox_command

    work = tmp_path / "work"
    work.mkdir()
    package = str(Path(pol_chain.__file__).resolve().parent)
    cmd = sandbox_command(
        work, [sys.executable, "-c", "import pol_chain; print(pol_chain.__file__)"]
    )
    after_tmpfs = cmd[cmd.index("/tmp") :]
    binds = {after_tmpfs[i + 1] for i, a in enumerate(after_tmpfs) if a == "--ro-bind"}
    assert sys.prefix in binds and package in binds
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(package)
