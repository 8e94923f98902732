"""Replay speed vs training speed (steps/s of verifier replay ÷ of training), same task.

Trains a recorded run, then times the verifier replaying every segment (restore from
checkpoint, the steps, state capture and comparison included). Prints one JSON object
as its last line: ``{"replay_vs_train": r, ...}`` (r for ResNet-20; digits beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RUN_ID, RUN_SEED, plain_train, setup, spec_for  # noqa: E402

from pol_chain.proof.loop import train  # noqa: E402
from pol_chain.proof.policy import Policy  # noqa: E402
from pol_chain.proof.verifier import verify_dir  # noqa: E402
from pol_chain.tasks import DIGITS, RESNET20  # noqa: E402


def measure(entry: str, steps: int, **config: object) -> dict[str, float]:
    """Train ``steps`` recorded steps, replay all segments; return rates and ratios."""
    spec = spec_for(entry, **config)
    root = Path(tempfile.mkdtemp(prefix="polchain-replay-"))
    try:
        plain_train(spec, min(steps, 20))  # warm-up
        plain = plain_train(spec, steps)
        rec = train(
            spec, root / "p", RUN_ID, RUN_SEED, max_steps=steps, threads=torch.get_num_threads()
        ).seconds
        t = time.perf_counter()
        report = verify_dir(
            root / "p",
            run_id=RUN_ID,
            run_seed=RUN_SEED,
            challenge_seed=b"\x00" * 32,
            policy=Policy(full_below=10**6),
        )
        verify_s = time.perf_counter() - t
        replay_s = verify_s  # whole verification: integrity, membership, replay, report
        assert report.passed and report.bitwise_identical, report.reasons
        return {
            "replay_steps_per_s": round(steps / replay_s, 2),
            "replay_vs_train": round((steps / replay_s) / (steps / rec), 4),
            "replay_vs_plain_train": round((steps / replay_s) / (steps / plain), 4),
            "train_steps_per_s": round(steps / rec, 2),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    setup(threads=int(os.environ.get("POLCHAIN_BENCH_THREADS", "2")))
    # 400 steps so that per-run fixed costs (task build, dataset root) do not dominate
    res = measure(RESNET20, 400, batch_size=8, k=50, train_size=3200, epochs=1)
    dig = measure(DIGITS, 800, epochs=20, k=100)
    print(
        json.dumps(
            {"digits_cnn": dig, "replay_vs_train": res["replay_vs_train"], "resnet20": res},
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
