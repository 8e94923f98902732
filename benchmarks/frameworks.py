"""Framework integrations: recording overhead and replay speed (Lightning, HF Trainer).

For the Lightning and Hugging Face paths (the examples' tasks, k = 100): training wall
time with recording ÷ the same training without pol_chain (a plain ``Trainer`` with its
own shuffled loader), and replay speed ÷ training speed (the verifier's full replay of
every segment, ``verify_dir``, against the plain training's steps per second). Then a
GPT-2 of ≥ 20 M parameters with AdamW through the HF path at k = 20: the recording
overhead and the bytes stored per checkpoint.

Each rep runs a pair (plain and recorded, adjacent, alternating which runs first) and
then replays the proof it just recorded. Each ratio is the **median of the per-rep
ratios**: the two sides of a rep run within seconds of each other, so a machine whose
speed drifts over minutes (this one does, by 10 % and more) moves both alike. Beside it,
``fastest`` compares the fastest run of each side (noise only adds time, but one run in
a fast spell decides it).

Beside each wall-clock overhead, ``accounted`` is pol_chain's own cost measured directly
and so free of the machine's noise: the wall time spent in the recording callback's
hooks, in the recorder's construction and in its closing wait (on the training thread),
plus the CPU time of the recorder's writer thread, ÷ the plain training time. On a
machine whose identical runs differ by ±10 %, it is the figure that resolves a
few-percent overhead; it is an upper bound where the writer runs on a core training
leaves idle, and does not see indirect costs (caches, memory bandwidth), which the
wall-clock ratio does.

Prints one JSON object as its last line:
``{"lightning": {"overhead": R, "replay_vs_train": R}, "hf": {"overhead": R,
"replay_vs_train": R}, "hf_20m": {"params": N, "overhead": R, "checkpoint_bytes": N}}``
(each path also carries its ``accounted`` and ``fastest`` ratios)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from pol_chain.format import SPEC_FILE, RunBinding, TaskSpec  # noqa: E402
from pol_chain.proof import Recorder, build_bundle, make_spec  # noqa: E402
from pol_chain.proof.engine import TrainState  # noqa: E402
from pol_chain.proof.policy import Policy  # noqa: E402
from pol_chain.proof.task import configure_determinism  # noqa: E402
from pol_chain.proof.verifier import verify_dir  # noqa: E402

RUN_ID = bytes.fromhex("ab" * 32)
FULL = Policy(full_below=10**6, max_replay_fraction=1.0)


def _register(root: Path, entry: str, config: dict[str, Any]) -> tuple[Path, RunBinding]:
    spec = make_spec(entry, config, project=EXAMPLES)
    proof = Path(tempfile.mkdtemp(prefix="polchain-fw-", dir=root)) / "proof"
    proof.mkdir()
    (proof / SPEC_FILE).write_bytes(spec.to_bytes())
    binding = RunBinding.offline(RUN_ID, spec.digest)
    binding.write(proof)
    return proof, binding


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Meter:
    """pol_chain's own seconds in one recorded run (see the module docstring)."""

    def __init__(self) -> None:
        self.training_thread_s = 0.0
        self.writer_cpu_s = 0.0

    def on_record(self, record: object) -> None:
        """A recorder listener: it runs on the writer thread after each write."""
        self.writer_cpu_s = time.thread_time()

    def timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, adding its wall time to the training thread's share."""

        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.training_thread_s += time.perf_counter() - start

        return run

    def watch(self, callback: Any, hooks: tuple[str, ...]) -> Any:
        """Time these hooks of a framework callback (frameworks look hooks up by name)."""
        for hook in hooks:
            setattr(callback, hook, self.timed(getattr(callback, hook)))
        return callback

    @property
    def seconds(self) -> float:
        return self.training_thread_s + self.writer_cpu_s


def _run_pair(
    plain: Callable[[], None], recorded: Callable[[], None], recorded_first: bool
) -> tuple[float, float]:
    """(plain seconds, recorded seconds), run in the order asked (pairs alternate)."""
    if recorded_first:
        seconds = _timed(recorded)
        return _timed(plain), seconds
    return _timed(plain), _timed(recorded)


# -- Lightning ---------------------------------------------------------------------------
def _lightning_trainer(settings: dict[str, Any], steps: int, callbacks: list[Any]) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        **settings,
        max_steps=steps,
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def lightning_pair(
    root: Path, config: dict[str, Any], recorded_first: bool = False, meter: Meter | None = None
) -> tuple[float, float, Path, RunBinding]:
    """(plain seconds, recorded seconds, proof, binding) for one run of the example."""
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings

    proof, binding = _register(root, "lightning_digits:build", config)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())

    bundle = build_bundle(spec, binding.run_seed)
    settings = trainer_settings(bundle)
    micro = spec.batch_size // spec.accumulation
    epochs = spec.epochs
    plain_loader: Any = torch.utils.data.DataLoader(
        torch.utils.data.ConcatDataset([bundle.data] * epochs), batch_size=micro, shuffle=True
    )
    plain_trainer = _lightning_trainer(settings, spec.total_steps, [])
    plain_model = bundle.model

    def plain() -> None:
        plain_trainer.fit(plain_model, train_dataloaders=plain_loader)

    bundle = build_bundle(spec, binding.run_seed)
    trainer = _lightning_trainer(settings, spec.total_steps, [])

    def recorded() -> None:
        m = meter or Meter()
        rec = m.timed(Recorder)(
            proof,
            spec,
            RUN_ID,
            binding.run_seed,
            state=TrainState.of(bundle),
            listeners=[m.on_record],
        )
        hooks = ("on_train_start", "on_train_batch_start", "on_train_batch_end")
        trainer.callbacks.append(m.watch(PolchainCallback(rec, bundle), hooks))
        trainer.fit(bundle.model, train_dataloaders=train_loader(bundle, rec))
        m.timed(rec.close)(final=True)

    return (*_run_pair(plain, recorded, recorded_first), proof, binding)


# -- Hugging Face ------------------------------------------------------------------------
def hf_pair(
    root: Path, config: dict[str, Any], recorded_first: bool = False, meter: Meter | None = None
) -> tuple[float, float, Path, RunBinding]:
    """(plain seconds, recorded seconds, proof, binding) for one run of the HF example."""
    import transformers

    from pol_chain.integrations.hf import polchain_trainer, training_arguments

    proof, binding = _register(root, "hf_tiny_gpt:build", config)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())

    plain_bundle = build_bundle(spec, binding.run_seed)

    def plain() -> None:  # construction timed on both sides
        transformers.Trainer(
            model=plain_bundle.model,
            args=training_arguments(
                plain_bundle, str(root / "hf-plain"), max_steps=spec.total_steps
            ),
            train_dataset=torch.utils.data.ConcatDataset([plain_bundle.data] * spec.epochs),
            data_collator=torch.utils.data.default_collate,
        ).train()

    bundle = build_bundle(spec, binding.run_seed)

    def recorded() -> None:
        m = meter or Meter()
        rec = m.timed(Recorder)(
            proof,
            spec,
            RUN_ID,
            binding.run_seed,
            state=TrainState.of(bundle),
            listeners=[m.on_record],
        )
        trainer = polchain_trainer(bundle, rec, str(root / "hf-rec"))
        for callback in trainer.callback_handler.callbacks:
            if getattr(callback, "recorder", None) is rec:
                m.watch(callback, ("on_train_begin", "on_step_begin", "on_step_end"))
        trainer.train()
        m.timed(rec.close)(final=True)

    return (*_run_pair(plain, recorded, recorded_first), proof, binding)


def _replay_seconds(proof: Path, binding: RunBinding) -> float:
    start = time.perf_counter()
    report = verify_dir(
        proof, run_id=RUN_ID, run_seed=binding.run_seed, challenge_seed=b"\x05" * 32, policy=FULL
    )
    seconds = time.perf_counter() - start
    if not (report.passed and report.bitwise_identical):
        raise SystemExit(f"replay of {proof} did not pass bitwise: {report.reasons}")
    return seconds


def measure(
    name: str,
    pair: Callable[..., tuple[float, float, Path, RunBinding]],
    root: Path,
    config: dict[str, Any],
    reps: int,
    replay: bool = True,
) -> dict[str, Any]:
    """The overhead (recorded ÷ plain) and the replay ratio (plain ÷ replay), each the
    median over ``reps`` reps of one rep's ratio, with the fastest-run ratios beside."""
    recorded_s, plain_s, accounted, replayed = [], [], [], []
    proof = root
    pair(root, {**config, "epochs": 1})  # warm-up: imports, allocator, first-call costs
    for rep in range(reps):
        meter = Meter()
        plain, recorded, proof, binding = pair(
            root, config, recorded_first=rep % 2 == 1, meter=meter
        )
        recorded_s.append(recorded)
        plain_s.append(plain)
        accounted.append(meter.seconds / plain)
        if replay:
            replayed.append(_replay_seconds(proof, binding))
        print(
            f"{name}: plain {plain:.2f}s recorded {recorded:.2f}s "
            + (f"replay {replayed[-1]:.2f}s " if replay else "")
            + f"(pol_chain's own {meter.training_thread_s:.3f}s on the training thread, "
            f"{meter.writer_cpu_s:.3f}s writer CPU)",
            file=sys.stderr,
        )
    out: dict[str, Any] = {
        "overhead": _median_ratio(recorded_s, plain_s),
        "fastest": round(min(recorded_s) / min(plain_s), 3),
        "accounted": round(1 + statistics.median(accounted), 3),
        "proof": proof,
    }
    if replayed:
        out["replay_vs_train"] = _median_ratio(plain_s, replayed)
        out["replay_fastest"] = round(min(plain_s) / min(replayed), 3)
    shown = {k: v for k, v in out.items() if k != "proof"}
    print(f"{name}: {json.dumps(shown, sort_keys=True)}", file=sys.stderr)
    return out


def _median_ratio(top: list[float], bottom: list[float]) -> float:
    return round(statistics.median(a / b for a, b in zip(top, bottom, strict=True)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="reps (pair + replay) per path")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--only",
        default="lightning,hf,hf_20m",
        help="comma-separated paths to measure (default: all three)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    warnings.simplefilter("ignore")
    for name in ("lightning.pytorch", "transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    configure_determinism(True)
    result: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="polchain-bench-fw-"))
    try:
        if "lightning" in only:
            lightning_epochs = 2 if args.quick else 40  # 44 steps an epoch
            result["lightning"] = measure(
                "lightning", lightning_pair, root, {"epochs": lightning_epochs, "k": 100}, args.reps
            )
            result["lightning"].pop("proof")
        if "hf" in only:
            hf_epochs = 4 if args.quick else 30  # 24 steps an epoch
            result["hf"] = measure("hf", hf_pair, root, {"epochs": hf_epochs, "k": 100}, args.reps)
            result["hf"].pop("proof")
        if "hf_20m" in only:
            result["hf_20m"] = measure_20m(root, max(1, args.reps - 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


def measure_20m(root: Path, reps: int) -> dict[str, Any]:
    """The ≥ 20 M-parameter GPT-2 with AdamW through the HF path at k = 20."""
    big = {
        "epochs": 3,
        "k": 20,
        "layers": 6,
        "width": 576,
        "heads": 8,
        "block": 64,
        "batch_size": 8,
        "grad_accumulation": 1,
    }
    big_bundle = build_bundle(make_spec("hf_tiny_gpt:build", big, project=EXAMPLES), b"\0" * 32)
    params = sum(p.numel() for p in big_bundle.model.parameters())
    del big_bundle
    stats = measure("hf_20m", hf_pair, root, big, reps, replay=False)
    # full states (W0, before any optimizer step, has no AdamW moments)
    files = sorted((stats.pop("proof") / "checkpoints").iterdir())[1:]
    sizes = [f.stat().st_size for f in files]
    return {
        "params": params,
        "overhead": stats["overhead"],
        "fastest": stats["fastest"],
        "accounted": stats["accounted"],
        "checkpoint_bytes": int(statistics.median(sizes)),
    }


if __name__ == "__main__":
    main()
