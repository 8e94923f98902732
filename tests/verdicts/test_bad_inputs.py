"""Bad input of every kind gives one clear line and an exit code that is not 70 (a bug).

Each case is one bad input a user (or a hostile proof) can hand the CLI; the suite is
counted by benchmarks/faults.py (``bad_inputs`` / ``bad_inputs_clean``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cli.helpers import Cli, make_cli

EXIT_INTERNAL = 70
Setup = Callable[[Cli, dict[str, Any]], list[str]]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, dict[str, Any]]]:
    """A project with one honest, finalized digits run in runs/honest."""
    cli = make_cli(tmp_path_factory.mktemp("bad-inputs") / "project")
    run = cli.json("train", "digits", "--epochs", "1", "-k", "22", "--out", "runs/honest")
    cids = json.loads((cli.workdir / "runs/honest/published.json").read_text())
    run["a_cid"] = next(iter(cids.values()))
    yield cli, run
    cli.run("chain", "down", check=False)


def _args(*args: str) -> Setup:
    return lambda _cli, _run: list(args)


def _proof_copy(edit: Callable[[dict[str, Any]], Any]) -> Setup:
    """A copy of the honest proof directory whose manifest ``edit`` mangles."""

    def setup(cli: Cli, _run: dict[str, Any]) -> list[str]:
        import shutil

        dst = cli.workdir / f"mangled-{abs(hash(edit)) % 10**8}"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(cli.workdir / "runs/honest", dst)
        path = dst / "manifest.json"
        value = json.loads(path.read_text())
        out = edit(value)
        path.write_bytes(out if isinstance(out, bytes) else json.dumps(value).encode())
        return ["commit", str(dst)]

    return setup


def _config(text: str) -> Setup:
    def setup(cli: Cli, _run: dict[str, Any]) -> list[str]:
        home = cli.workdir / "bad-config-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(text)
        return ["--home", str(home), "chain", "status"]

    return setup


def _file(name: str, data: bytes, *args: str) -> Setup:
    def setup(cli: Cli, _run: dict[str, Any]) -> list[str]:
        (cli.workdir / name).write_bytes(data)
        return list(args)

    return setup


def _folder(name: str, *args: str) -> Setup:
    def setup(cli: Cli, _run: dict[str, Any]) -> list[str]:
        (cli.workdir / name).mkdir(exist_ok=True)
        return list(args)

    return setup


RUN0 = "0x" + "cd" * 32
MODEL0 = "0x" + "ab" * 32
CASES: dict[str, Setup] = {
    "challenge id negative": _args("show", "challenge", "-1"),
    "challenge id zero": _args("show", "challenge", "0"),
    "challenge id unknown": _args("show", "challenge", "99999"),
    "challenge id not a number": _args("show", "challenge", "abc"),
    "challenge id beyond uint64": _args("show", "challenge", str(2**70)),
    "run id too short": _args("show", "run", "0x1234"),
    "run id unknown": _args("show", "run", RUN0),
    "model with no claims": _args("history", MODEL0),
    "model reference garbage": _args("history", "not-a-model"),
    "owner of garbage": _args("owner", "not-a-model"),
    "seed too short": _args("verify", "runs/honest", "--seed", "0x12"),
    "seed not hex": _args("verify", "runs/honest", "--seed", "zz" * 32),
    "verify an unknown run": _args("verify", RUN0),
    "verify a missing directory": _args("verify", "no-such-dir"),
    "rho negative": _args("verify", "runs/honest", "--rho", "-1"),
    "cos above one": _args("verify", "runs/honest", "--cos", "2"),
    "random segments negative": _args("verify", "runs/honest", "--random", "-1"),
    "top-q negative": _args("verify", "runs/honest", "--top-q", "-5"),
    "challenge a short id": _args("challenge", "0xabc"),
    "challenge garbage": _args("challenge", "not-a-model"),
    "commit an empty directory": _folder("empty", "commit", "empty"),
    "commit a missing directory": _args("commit", "no-such-dir"),
    "finalize a run id (not a directory)": _args("finalize", RUN0),
    "train a module that does not import": _args("train", "no_such_module_xyz:build"),
    "train a misspelt task": _args("train", "digit"),
    "train zero epochs": _args("train", "digits", "--epochs", "0", "--out", "runs/z1"),
    "train k zero": _args("train", "digits", "-k", "0", "--out", "runs/z2"),
    "train negative epochs": _args("train", "digits", "--epochs", "-3", "--out", "runs/z3"),
    "register over an existing run": _args("register", "digits", "--out", "runs/honest"),
    "store get a bad cid": _args("store", "get", "bafy-not-a-cid", "out.bin"),
    "store get with a bad sha256": lambda _c, run: [
        "store",
        "get",
        run["a_cid"],
        "o",
        "--sha256",
        "0x12",
    ],
    "store add a missing file": _args("store", "add", "no-such-file"),
    "store import garbage": _file(
        "garbage.car", b"\x00\xffnot a car" * 10, "store", "import", "garbage.car"
    ),
    "store import a missing file": _args("store", "import", "no-such.car"),
    "store export a bad cid": _args("store", "export", "bafy-bad", "out.car"),
    "store push with no kubo": _args("store", "push"),
    "rpc unreachable": _args("--rpc-url", "http://127.0.0.1:1", "history", MODEL0),
    "keystore missing": _args(
        "--rpc-url", "http://127.0.0.1:1", "--keystore", "/no/such/k.json", "deploy"
    ),
    "agent poll negative": _args("agent", "--poll", "-1", "--once"),
    "agent deadline negative": _args("agent", "--availability-deadline", "-5", "--once"),
    "config not toml": _config("this is [not toml"),
    "config unknown key": _config("[chain]\nno_such_key = 1\n"),
    "config wrong type": _config('[chain]\nanvil_port = "abc"\n'),
    "manifest nested 200000 deep": _proof_copy(lambda v: b"[" * 200_000 + b"]" * 200_000),
    "manifest final of the wrong type": _proof_copy(lambda v: v.update(final=5)),
    "manifest run id not hex": _proof_copy(lambda v: v.update(run_id="0xnothex")),
    "manifest segment null after W0": _proof_copy(lambda v: v["entries"][1].update(segment=None)),
    "manifest checkpoint escapes the directory": _proof_copy(
        lambda v: v["entries"][1]["checkpoint"].update(file="../../etc/passwd")
    ),
    "manifest index huge": _proof_copy(lambda v: v["entries"][1].update(index=2**64)),
    "manifest not json": _proof_copy(lambda v: b"\xff\xfe garbage"),
    "forge a missing model file": _args("attack", "forge", "no-such.safetensors"),
    "copy a missing proof": _args("attack", "copy", "no-such-dir"),
    "calibrate an unknown task": _args("calibrate", "no_such_task"),
    "unknown command": _args("traine", "digits"),
}


def clean_error(proc: subprocess.CompletedProcess[str]) -> str | None:
    """Why ``proc`` is not a clean one-line error, or None when it is."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode in (0, EXIT_INTERNAL):
        return f"exit code {proc.returncode}"
    if "Traceback" in proc.stderr:
        return "traceback"
    if not lines or not lines[0].startswith("error: "):
        return "no 'error:' line first"
    if len(lines) > 3:
        return f"{len(lines)} lines"
    return None


@pytest.mark.fault("bad_input")
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case: str, project: tuple[Cli, dict[str, Any]]) -> None:
    cli, run = project
    args = CASES[case](cli, run)
    proc = cli.run(*args, check=False, timeout=120)
    assert clean_error(proc) is None, f"{case}: {clean_error(proc)}\n{proc.stderr}"


def test_there_are_forty_bad_inputs() -> None:
    assert len(CASES) >= 40
