"""GPU check (run once on a lent GPU machine): record ResNet-20 on the GPU, replay there
and on the CPU, and report reproduction errors and the GPU replay/train ratio.

Writes ``$OUT/gpu_check.json`` (or ``--out``) and prints the same JSON as its last line.
Depends on torch, safetensors, numpy, eth-hash (carried as a wheel) and this repository.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from pol_chain.format import Segment  # noqa: E402
from pol_chain.proof import TaskSpec, make_spec  # noqa: E402
from pol_chain.proof.engine import StepSampler, replay_steps, run_step, step_seeds  # noqa: E402
from pol_chain.proof.loop import build_bundle, train  # noqa: E402
from pol_chain.proof.manifest import DirectorySource  # noqa: E402
from pol_chain.proof.policy import Policy  # noqa: E402
from pol_chain.proof.serialization import load_checkpoint_bytes  # noqa: E402
from pol_chain.proof.task import TaskBundle, configure_determinism  # noqa: E402
from pol_chain.proof.verifier import compare_states, verify_dir  # noqa: E402
from pol_chain.tasks import RESNET20  # noqa: E402

RUN_ID = bytes.fromhex("ab" * 32)
RUN_SEED = bytes.fromhex("cd" * 32)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain(spec: TaskSpec, steps: int, device: str) -> float:
    bundle = build_bundle(spec, RUN_SEED, device)
    sampler = StepSampler(RUN_SEED, spec.dataset.size, spec.batch_size, spec.epochs)
    for step, idx in sampler.steps():  # warm-up 5 steps
        if step >= 5:
            break
        run_step(bundle, idx, step_seeds(RUN_SEED, step))
    bundle = build_bundle(spec, RUN_SEED, device)
    _sync(device)
    t = time.perf_counter()
    for step, idx in sampler.steps():
        if step >= steps:
            break
        run_step(bundle, idx, step_seeds(RUN_SEED, step))
    _sync(device)
    return time.perf_counter() - t


def replay_segments(
    src: DirectorySource, bundle: TaskBundle, picks: list[int], device: str
) -> tuple[list[dict[str, Any]], float, int]:
    man = src.manifest()
    rows, seconds, steps = [], 0.0, 0
    for i in picks:
        e0, e1 = man.entries[i - 1], man.entries[i]
        assert e1.segment is not None
        start, meta = load_checkpoint_bytes(src.get(e0.checkpoint.sha256), "start")
        end, _ = load_checkpoint_bytes(src.get(e1.checkpoint.sha256), "end")
        seg = Segment.from_bytes(src.get(e1.segment.sha256))
        _sync(device)
        t = time.perf_counter()
        state, _ = replay_steps(bundle, start, meta, seg.steps)
        _sync(device)
        seconds += time.perf_counter() - t
        steps += len(seg.steps)
        cmp = compare_states(state, end, start)
        rows.append(
            {"segment": i, "bitwise_identical": cmp.bitwise_identical, **cmp.metrics.to_json()}
        )
    return rows, seconds, steps


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r["normalized_error"] for r in rows if r["normalized_error"] is not None]
    dirs = [r["direction_cosine"] for r in rows if r["direction_cosine"] is not None]
    return {
        "bitwise_identical": all(r["bitwise_identical"] for r in rows),
        "max_normalized_error": max(errs) if errs else None,
        "min_direction_cosine": min(dirs) if dirs else None,
        "max_linf": max(r["linf"] for r in rows),
        "segments": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out"))
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = args.device
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    t0 = time.perf_counter()
    configure_determinism(True, 8)
    spec = make_spec(
        RESNET20,
        {"batch_size": args.batch, "train_size": args.batch * args.steps, "epochs": 1, "k": args.k},
        device=dev,
    )
    res["spec"] = {"steps": spec.total_steps, "k": spec.k, "batch_size": spec.batch_size}
    root = Path(tempfile.mkdtemp(prefix="polchain-gpu-"))
    proof = root / "proof"
    try:
        plain_s = plain(spec, spec.total_steps, dev)
        result = train(spec, proof, RUN_ID, RUN_SEED, device=dev, threads=8)
        res["train_plain_s"] = round(plain_s, 3)
        res["train_recorded_s"] = round(result.seconds, 3)
        res["recording_overhead"] = round(result.seconds / plain_s, 4)
        res["test_accuracy"] = result.test_accuracy
        src = DirectorySource(proof)
        n = len(src.manifest().entries) - 1
        # GPU → GPU, deterministic: every segment
        bundle = build_bundle(spec, RUN_SEED, dev)
        rows, secs, steps = replay_segments(src, bundle, list(range(1, n + 1)), dev)
        res["gpu_gpu_deterministic"] = summary(rows)
        res["replay_vs_train_gpu"] = round((steps / secs) / (spec.total_steps / result.seconds), 4)
        res["replay_vs_plain_train_gpu"] = round((steps / secs) / (spec.total_steps / plain_s), 4)
        # GPU → GPU, non-deterministic kernels (cuDNN benchmark on)
        configure_determinism(False, 8)
        bundle = build_bundle(spec, RUN_SEED, dev)
        rows, _, _ = replay_segments(src, bundle, list(range(1, n + 1)), dev)
        res["gpu_gpu_nondeterministic"] = summary(rows)
        configure_determinism(True, 16)
        # GPU → CPU: first and one middle segment
        bundle = build_bundle(spec, RUN_SEED, "cpu")
        rows, cpu_s, cpu_steps = replay_segments(src, bundle, sorted({1, max(1, n // 2)}), "cpu")
        res["gpu_cpu"] = summary(rows)
        res["cpu_replay_steps_per_s"] = round(cpu_steps / cpu_s, 3)
        # the full verifier on the GPU (deterministic), report written beside
        t = time.perf_counter()
        report = verify_dir(
            proof,
            run_id=RUN_ID,
            run_seed=RUN_SEED,
            challenge_seed=b"\x00" * 32,
            device=dev,
            threads=8,
            policy=Policy(full_below=10**6),
            out_dir=out_dir,
        )
        res["verify_gpu"] = {
            "verdict": report.verdict,
            "reasons": report.reason_codes,
            "bitwise_identical": report.bitwise_identical,
            "seconds": round(time.perf_counter() - t, 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(res, sort_keys=True)
    (out_dir / "gpu_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
