"""Wall time of the ``polchain`` CLI: ``--help``, ``history MODEL`` and the whole story.

Run: ``.venv/bin/python benchmarks/cli.py [--runs N] [--workdir DIR]``. It

1. times ``polchain --help`` (median of N runs, N ≥ 5);
2. runs ``scripts/story.py --json --workdir <tmp>`` and times it (``story_s``); when the
   story fails, ``story_s`` is null, the reason is printed on a ``details:`` line, and
   the history target is made here instead: ``polchain train digits --epochs 1`` in a
   fresh data folder with its own Anvil port;
3. brings the story's chain back up (``polchain chain up`` reloads its saved state) and
   times ``polchain history <weights file>`` on the story's model (median of N runs),
   checking once with ``--json`` that the claims are there;
4. stops every Anvil it started (``polchain chain down``).

Targets: ``help_s`` ≤ 0.5 s, ``history_s`` ≤ 1.5 s. Each command is a fresh process, as
a user runs it (``.venv/bin/polchain``), so interpreter start and imports are included.
The last line printed is one JSON object: ``{"help_s", "history_s", "story_s", …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pol_chain.ledger.anvil import free_port

__all__ = ["main", "median_wall"]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
POLCHAIN = (
    [str(VENV_BIN / "polchain")]
    if (VENV_BIN / "polchain").exists()
    else [
        sys.executable,
        "-m",
        "pol_chain.cli",
    ]
)
TARGETS = {"help_s": 0.5, "history_s": 1.5}


def _env(home: Path | None = None, port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    if home is not None:
        env["POLCHAIN_HOME"] = str(home)
    if port is not None:
        env["POLCHAIN_ANVIL_PORT"] = str(port)
    return env


def _run(
    cmd: list[str], env: dict[str, str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}"
        )
    return proc


def median_wall(cmd: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    """Median wall seconds of ``runs`` runs of ``cmd`` (each must succeed)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _run(cmd, env, cwd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _story(workdir: Path) -> tuple[float, dict[str, Any] | None, str]:
    """Run the story: (wall seconds, its JSON or None, why it failed or "")."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "story.py"), "--json", "--workdir", str(workdir)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    result: dict[str, Any] | None = None
    if "{" in proc.stdout:
        try:
            result = json.loads(proc.stdout[proc.stdout.index("{") :])
        except ValueError:
            result = None
    if proc.returncode == 0 and result is not None and result.get("ok"):
        return seconds, result, ""
    if result is not None:  # it ran to the end: its chain state is usable for history
        wrong = {k: result.get(k) for k in ("owner", "honest", "early_thief", "late_thief")}
        why = f"story ran to the end (rc {proc.returncode}) but its outcome check failed: ok=false"
        return seconds, result, f"{why}; {json.dumps(wrong)[-600:]}"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return seconds, None, f"story failed (rc {proc.returncode}): {' | '.join(tail)[-500:]}"


def _train_target(workdir: Path, env: dict[str, str]) -> str:
    """Train + finalize digits (1 epoch) through the CLI; the weights file's path."""
    _run([*POLCHAIN, "init"], env, workdir)
    _run([*POLCHAIN, "chain", "up"], env, workdir)
    out = _run([*POLCHAIN, "train", "digits", "--epochs", "1", "--json"], env, workdir)
    trained = json.loads(out.stdout[out.stdout.index("{") :])
    return str(trained["model_path"])


def _synthetic_target(workdir: Path, home: Path, env: dict[str, str], leaves: int = 40) -> str:
    """The story's chain state built with the ledger API when the CLI cannot train.

    A trainer commits ``leaves`` checkpoints one transaction each (live commits); an early
    thief copies them in one commit and finalizes first; the trainer finalizes; a late
    thief commits a forged proof and finalizes; a challenger challenges the three claims
    and the verifier attests (thieves fail, trainer passes). Returns a weights file whose
    SHA-256 is the claimed model digest."""
    sys.path.insert(0, str(ROOT))
    import hashlib

    from pol_chain import commitment as cm
    from pol_chain.ledger.accounts import dev_account
    from pol_chain.ledger.client import connect_web3
    from pol_chain.ledger.deployments import ensure_deployed

    _run([*POLCHAIN, "chain", "up"], env, workdir)
    port = int(env["POLCHAIN_ANVIL_PORT"])
    w3 = connect_web3(f"http://127.0.0.1:{port}")
    admin, _ = ensure_deployed(w3, dev_account(0), home)
    weights = workdir / "model.safetensors"
    weights.write_bytes(os.urandom(120_000))
    model = hashlib.sha256(weights.read_bytes()).digest()

    def leaf_list(run: bytes, first: int, count: int) -> list[bytes]:
        h = hashlib.sha256
        return [
            cm.leaf(
                run, i, 10 * i, h(b"c%d" % i).digest(), cm.ZERO32 if i == 0 else h(b"s").digest()
            )
            for i in range(first, first + count)
        ]

    honest = admin.register_run(hashlib.sha256(b"spec").digest(), "bafyspec").run_id
    for i in range(leaves):
        admin.commit_checkpoints(honest, i, leaf_list(honest, i, 1), f"bafymanifest{i}")
    early_c = admin.with_account(dev_account(2))
    early = early_c.register_run(hashlib.sha256(b"spec").digest(), "bafyspec").run_id
    early_c.commit_checkpoints(early, 0, leaf_list(early, 0, leaves), "bafycopy")
    early_c.finalize_run(early, model, "bafymodel")
    admin.finalize_run(honest, model, "bafymodel")
    late_c = admin.with_account(dev_account(3))
    late = late_c.register_run(hashlib.sha256(b"spec-forged").digest(), "bafyforged").run_id
    late_c.commit_checkpoints(late, 0, leaf_list(late, 0, leaves), "bafyforged-m")
    late_c.finalize_run(late, model, "bafymodel")
    verifier = admin.with_account(dev_account(1))
    admin.grant_verifier(verifier.account.address)  # type: ignore[union-attr]
    challenger = admin.with_account(dev_account(4))
    opened = [(challenger.open_challenge(r).challenge_id, r) for r in (early, honest, late)]
    w3.provider.make_request("anvil_mine", ["0x2"])  # type: ignore[arg-type]
    for cid, run in opened:
        verifier.attest(cid, run == honest, hashlib.sha256(b"r%d" % cid).digest(), "bafyreport")
    return str(weights)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per median (≥ 5)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    parser.add_argument("--skip-story", action="store_true", help="use the fallback target")
    args = parser.parse_args()
    runs = max(args.runs, 5)
    tmp = Path(tempfile.mkdtemp(prefix="polchain-bench-cli-"))
    workdir = (args.workdir or tmp / "story").resolve()
    details: list[str] = []
    out: dict[str, Any] = {"help_s": None, "history_s": None, "story_s": None}

    _run([*POLCHAIN, "--help"], _env(), ROOT)  # warm the file cache once
    out["help_s"] = round(median_wall([*POLCHAIN, "--help"], _env(), ROOT, runs), 3)

    story: dict[str, Any] | None = None
    if not args.skip_story:
        seconds, story, why = _story(workdir)
        out["story_s"] = None if why else round(seconds, 1)
        if why:
            details.append(why)
            out["story_wall_s"] = round(seconds, 1)  # how long the failing story ran
    port = free_port()
    homes: list[tuple[Path, Path]] = []  # (home, cwd) of every chain this may start
    try:
        if story is not None:
            home, cwd = workdir / ".polchain", workdir
            weights = workdir / "runs" / "honest" / "model.safetensors"
            target = str(weights) if weights.is_file() else str(story["model_digest"])
            out["target"] = "story"
            homes.append((home, cwd))
        else:
            cwd = tmp / "fallback"
            shutil.rmtree(cwd, ignore_errors=True)
            cwd.mkdir(parents=True)
            home = cwd / ".polchain"
            homes.append((home, cwd))
            try:
                target = _train_target(cwd, _env(home, port))
                out["target"] = "polchain train digits --epochs 1 (story unavailable)"
            except RuntimeError as exc:
                details.append(f"fallback train failed too: {str(exc)[-300:]}")
                _run([*POLCHAIN, "chain", "down"], _env(home, port), cwd, check=False)
                cwd = tmp / "synthetic"
                shutil.rmtree(cwd, ignore_errors=True)
                cwd.mkdir(parents=True)
                home = cwd / ".polchain"
                homes.append((home, cwd))
                target = _synthetic_target(cwd, home, _env(home, port))
                out["target"] = "synthetic story state via the ledger API (CLI train unavailable)"
        env = _env(home, port)
        _run([*POLCHAIN, "chain", "up"], env, cwd)
        doc = json.loads(_run([*POLCHAIN, "history", target, "--json"], env, cwd).stdout)
        out["history_claims"] = len(doc["claims"])
        out["history_events"] = sum(len(c["events"]) for c in doc["claims"])
        out["history_s"] = round(median_wall([*POLCHAIN, "history", target], env, cwd, runs), 3)
    finally:
        for home, cwd in homes:
            _run([*POLCHAIN, "chain", "down"], _env(home, port), cwd, check=False)
    out["runs"] = runs
    out["cpus"] = os.cpu_count()
    out["load_1min"] = round(os.getloadavg()[0], 2)
    out["ok"] = all(out[k] is not None and out[k] <= v for k, v in TARGETS.items())
    if args.workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in details:
        print(f"details: {line}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
