#!/usr/bin/env python3
"""The pol_chain story, end to end through the real ``polchain`` CLI.

A trainer trains the digits task with live commits. Before the trainer finalizes, an
early thief who saw the weights re-registers the public proof under their own run and
claims the model first. The trainer finalizes. A late thief forges a proof that
interpolates to the stolen weights and claims the model last. A challenger challenges
every claim, the verifier agent replays and attests, and ``polchain history`` shows
the honest trainer as owner.

Every step is a subprocess running ``polchain … --json`` against the embedded Anvil
and the local store in a fresh work folder; the outcome is checked from that JSON.
Usage: ``python scripts/story.py [--workdir DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pol_chain.ledger.anvil import free_port

ROOT = Path(__file__).resolve().parent.parent
POLCHAIN = [sys.executable, "-m", "pol_chain.cli"]

TRAINER, VERIFIER, EARLY_THIEF, LATE_THIEF, CHALLENGER = 0, 1, 2, 3, 4


class Story:
    """Runs the CLI in ``workdir`` with its own data folder and Anvil port."""

    def __init__(self, workdir: Path, quiet: bool) -> None:
        self.workdir = workdir
        self.quiet = quiet
        self.env = {
            **os.environ,
            "POLCHAIN_HOME": str(workdir / ".polchain"),
            "POLCHAIN_ANVIL_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": os.environ.get("COLUMNS", "120"),
        }
        self.env.pop("POLCHAIN_RPC_URL", None)
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"\n\033[1m▶ {text}\033[0m", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"  \033[2m{text}\033[0m", file=sys.stderr, flush=True)

    def cli(self, *args: str, json_out: bool = True, check: bool = True) -> Any:
        cmd = [*POLCHAIN, *args] + (["--json"] if json_out else [])
        if not self.quiet:
            print("$ polchain " + " ".join(args), file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE if json_out else sys.stderr,
            stderr=subprocess.PIPE if self.quiet else None,
            text=True,
        )
        self.timings[args[0]] = self.timings.get(args[0], 0.0) + time.perf_counter() - start
        if check and proc.returncode != 0:
            err = proc.stderr or ""
            raise SystemExit(f"polchain {' '.join(args)} failed ({proc.returncode}):\n{err}")
        return json.loads(proc.stdout) if json_out else None

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.say("Set up: data folder, embedded Anvil, ProofLedger")
        self.cli("init", json_out=False)
        self.cli("chain", "up")
        ledger = self.cli("deploy")
        self.note(f"ProofLedger {ledger['ledger']} on chain {ledger['chain_id']}")

        self.say("Trainer trains digits; every checkpoint is stored and committed as it lands")
        honest = self.cli(
            "train", "digits", "--out", "runs/honest", "--no-finalize", "-a", str(TRAINER)
        )
        model = honest["model_path"]
        self.note(
            f"run {honest['run_id'][:18]}…: {honest['steps']} steps, test accuracy "
            f"{honest['test_accuracy']:.3f}, {honest['committed']} checkpoints committed "
            f"while training; model {honest['model_digest'][:18]}…"
        )

        self.say("Early thief (leak before finalization) re-registers the public proof")
        early = self.cli(
            "attack", "copy", "runs/honest", "--out", "runs/early-thief", "-a", str(EARLY_THIEF)
        )
        self.cli("commit", "runs/early-thief", "-a", str(EARLY_THIEF))
        self.cli("finalize", "runs/early-thief", "-a", str(EARLY_THIEF))
        self.note(f"early thief {early['trainer']} claims the model as run {early['run_id'][:18]}…")

        self.say("Trainer finalizes: claims the model")
        self.cli("finalize", "runs/honest", "-a", str(TRAINER))

        self.say("Late thief forges a proof interpolating to the stolen weights")
        late = self.cli("attack", "forge", model, "--out", "runs/late-thief", "-a", str(LATE_THIEF))
        self.cli("commit", "runs/late-thief", "-a", str(LATE_THIEF))
        self.cli("finalize", "runs/late-thief", "-a", str(LATE_THIEF))
        self.note(
            f"late thief {late['trainer']} claims it as run {late['run_id'][:18]}… "
            f"(forgery cost {late['cost']['gradient_steps']} gradient steps)"
        )

        before = self.cli("owner", model)
        self.note(f"owner now: {before['owner']} (the early thief: earliest claim)")
        self.say("Challenger challenges every claim on the model")
        opened = self.cli("challenge", model, "--all", "-a", str(CHALLENGER))

        self.say("Verifier agent fetches, replays and attests")
        verdicts = self.cli("agent", "--once")
        for o in verdicts["outcomes"]:
            verdict = "pass" if o["passed"] else f"fail ({', '.join(o['reasons'])})"
            self.note(f"challenge #{o['challenge_id']} run {o['run_id'][:18]}…: {verdict}")

        self.say("Ownership history")
        self.cli("history", model, json_out=False)
        history = self.cli("history", model)
        owner = self.cli("owner", model)
        statuses = {c["run_id"]: c["status"] for c in history["claims"]}
        result = {
            "ledger": ledger["ledger"],
            "model_digest": honest["model_digest"],
            "honest": {
                "run_id": honest["run_id"],
                "trainer": honest["trainer"],
                "test_accuracy": honest["test_accuracy"],
                "status": statuses.get(honest["run_id"]),
            },
            "early_thief": {
                "run_id": early["run_id"],
                "trainer": early["trainer"],
                "status": statuses.get(early["run_id"]),
            },
            "late_thief": {
                "run_id": late["run_id"],
                "trainer": late["trainer"],
                "status": statuses.get(late["run_id"]),
            },
            "owner_before_challenges": before["owner"],
            "owner": owner["owner"],
            "challenges": [c["challenge_id"] for c in opened["challenges"]],
            "verdicts": [
                {
                    "challenge_id": o["challenge_id"],
                    "run_id": o["run_id"],
                    "passed": o["passed"],
                    "reasons": o["reasons"],
                    "report_html": o["report_html"],
                }
                for o in verdicts["outcomes"]
            ],
            "claim_order": [c["run_id"] for c in history["claims"]],
            "seconds": round(time.perf_counter() - t0, 1),
            "step_seconds": {k: round(v, 2) for k, v in self.timings.items()},
        }
        return result

    def stop(self) -> None:
        subprocess.run(
            [*POLCHAIN, "chain", "down"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            check=False,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "demo",
        help="fresh folder for the story (default: ./demo, wiped first)",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON only")
    args = parser.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    story = Story(args.workdir.resolve(), quiet=args.json)
    try:
        result = story.run()
    finally:
        story.stop()
    ok = (
        result["owner"] == result["honest"]["trainer"]
        and result["honest"]["status"] == "verified"
        and result["early_thief"]["status"] == "refuted"
        and result["late_thief"]["status"] == "refuted"
    )
    result["ok"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(file=sys.stderr)
        print(
            f"owner before challenges: {result['owner_before_challenges']} (the early thief)",
            file=sys.stderr,
        )
        print(f"owner now:               {result['owner']} (the honest trainer)", file=sys.stderr)
        for v in result["verdicts"]:
            who = next(
                k
                for k in ("honest", "early_thief", "late_thief")
                if result[k]["run_id"] == v["run_id"]
            )
            verdict = "pass" if v["passed"] else f"fail ({', '.join(v['reasons'])})"
            print(
                f"challenge #{v['challenge_id']} {who:12s} {verdict}\n  report: {v['report_html']}",
                file=sys.stderr,
            )
        print(f"\nstory {'OK' if ok else 'FAILED'} in {result['seconds']} s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
