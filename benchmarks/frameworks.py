"""Framework integrations: recording overhead and replay speed (Lightning, HF Trainer).

For the Lightning and Hugging Face paths (the examples' tasks, k = 100): training wall
time with recording ÷ the same training without pol_chain (a plain ``Trainer`` with its
own shuffled loader), and replay speed ÷ training speed (the verifier's full replay of
every segment, ``verify_dir``, against the plain training's steps per second). Then a
GPT-2 of ≥ 20 M parameters with AdamW through the HF path at k = 20: the recording
overhead and the bytes stored per checkpoint.

Each rep runs a pair (plain and recorded, adjacent, alternating which runs first) and
then replays the proof it just recorded. Both sides of a pair carry the same clock, a
callback that notes the time every ``k`` optimizer steps; each ``k``-step chunk of the
recorded run holds exactly one checkpoint (its capture on the training thread and its
write on the writer thread).

For HF and the 24 M model the headline ``overhead`` is the **steady-state ratio**: the
median chunk time of the recorded runs ÷ that of the plain runs, over all reps (the
first ``k`` steps of every run are left out on both sides), plus pol_chain's fixed cost
per run (the recorder's construction and closing wait, and the writer's CPU for
checkpoint 0, which falls in the left-out chunk) as a share of a plain run.
``steady_p10`` compares the 10th percentiles instead (noise only adds time);
``whole_run`` is the median of the per-rep whole-run ratios, ``fastest`` compares the
fastest whole run of each side.

Lightning's step is 1.7-2.5 ms, so its target is a few tens of microseconds a step,
and this host's interference comes in bursts of a fraction of a second to minutes: two
identical plain runs seconds apart differ by up to ±30 % (0.73-1.65 on one morning), so
no number of separate runs resolves it. Its headline ``overhead`` is **interleaved**:
one long run (5,280 steps, three times) whose ``k``-step chunks alternate between
recording (the recording callback's hooks, its checkpoint and its write, the recorder
started ``k/2`` steps in so each checkpoint falls inside a recording chunk) and not
(those hooks off: Lightning skips them), each recording chunk ÷ the mean of its two
plain neighbours, median over all, plus the fixed share. The chunks compared are a
fraction of a second apart. What it leaves out, the loader (the run's batch sampler in
both halves, against a shuffled one in a plain run: 1.00 measured) and once-a-run costs
(in the fixed share), the cross-run figures above keep (``cross_run``).

Beside each wall-clock overhead, ``accounted`` is pol_chain's own cost measured directly
and so free of the machine's noise: the wall time spent in the recording callback's
hooks, in the recorder's construction and in its closing wait (on the training thread),
plus the CPU time of the recorder's writer thread, ÷ the plain training time. It is an
upper bound where the writer runs on a core training leaves idle, and does not see
indirect costs (caches, the GIL, the framework's dispatch to the callback), which the
wall-clock ratios do. On two cores with two torch threads every second of the writer's
CPU is a second training loses; ``--threads 1`` leaves the writer a core of its own, as a
GPU run or a CPU run with a spare core does.

Prints one JSON object as its last line:
``{"lightning": {"overhead": R, "replay_vs_train": R}, "hf": {"overhead": R,
"replay_vs_train": R}, "hf_20m": {"params": N, "overhead": R, "checkpoint_bytes": N}}``
(each path also carries ``steady_p10``, ``whole_run``, ``fastest``, ``accounted`` and
its chunk count; Lightning its ``cross_run`` and ``interleaved`` ratios)."""

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
from dataclasses import dataclass
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
        self.fixed_s = 0.0  # construction and closing wait, once a run
        self.writer_cpu: list[float] = []  # the writer thread's CPU seconds after each write

    def on_record(self, record: object) -> None:
        """A recorder listener: it runs on the writer thread after each write."""
        self.writer_cpu.append(time.thread_time())

    @property
    def writer_cpu_s(self) -> float:
        return self.writer_cpu[-1] if self.writer_cpu else 0.0

    def timed(self, fn: Callable[..., Any], fixed: bool = False) -> Callable[..., Any]:
        """``fn``, adding its wall time to the training thread's share (and to the fixed
        cost with ``fixed``)."""

        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                self.training_thread_s += seconds
                self.fixed_s += seconds if fixed else 0.0

        return run

    def watch(self, callback: Any, hooks: tuple[str, ...]) -> Any:
        """Time these hooks of a framework callback (frameworks look hooks up by name; a
        hook set to ``None`` stays so)."""
        for hook in hooks:
            fn = getattr(callback, hook)
            if callable(fn):
                setattr(callback, hook, self.timed(fn))
        return callback

    @property
    def seconds(self) -> float:
        return self.training_thread_s + self.writer_cpu_s

    @property
    def fixed_run_s(self) -> float:
        """Once-a-run cost outside the steady chunks: construction, closing, checkpoint 0."""
        return self.fixed_s + (self.writer_cpu[0] if self.writer_cpu else 0.0)


class Clock:
    """The times of every ``k``-th optimizer step of one run (both sides carry one)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    @property
    def chunks(self) -> list[float]:
        """Seconds of each ``k``-step chunk after the first."""
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


@dataclass
class Pair:
    """One rep: the plain and the recorded run, their clocks, the proof recorded."""

    plain_s: float
    recorded_s: float
    plain: Clock
    recorded: Clock
    proof: Path
    binding: RunBinding


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


def _lightning_clock(clock: Clock, micro_batches: int) -> Any:
    """A callback marking ``clock`` every ``micro_batches`` micro-batches (after the
    recording callback, which comes first in the list)."""
    import lightning.pytorch as pl

    class ClockCallback(pl.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, *args: Any) -> None:
            if (args[-1] + 1) % micro_batches == 0:
                clock.mark()

    callback = ClockCallback()
    for hook in (
        "on_train_batch_start",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_before_zero_grad",
    ):
        setattr(callback, hook, None)  # Lightning skips hooks that are not callable
    return callback


def lightning_pair(
    root: Path, config: dict[str, Any], recorded_first: bool = False, meter: Meter | None = None
) -> Pair:
    """One rep of the Lightning example: plain and recorded."""
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings

    proof, binding = _register(root, "lightning_digits:build", config)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    every = spec.k * spec.accumulation

    bundle = build_bundle(spec, binding.run_seed)
    settings = trainer_settings(bundle)
    micro = spec.batch_size // spec.accumulation
    epochs = spec.epochs
    plain_loader: Any = torch.utils.data.DataLoader(
        torch.utils.data.ConcatDataset([bundle.data] * epochs), batch_size=micro, shuffle=True
    )
    plain_clock, recorded_clock = Clock(), Clock()
    plain_trainer = _lightning_trainer(
        settings, spec.total_steps, [_lightning_clock(plain_clock, every)]
    )
    plain_model = bundle.model

    def plain() -> None:
        plain_trainer.fit(plain_model, train_dataloaders=plain_loader)

    bundle = build_bundle(spec, binding.run_seed)
    trainer = _lightning_trainer(settings, spec.total_steps, [])

    def recorded() -> None:
        m = meter or Meter()
        rec = m.timed(Recorder, fixed=True)(
            proof,
            spec,
            RUN_ID,
            binding.run_seed,
            state=TrainState.of(bundle),
            listeners=[m.on_record],
        )
        hooks = ("on_train_start", "on_train_batch_start", "on_train_batch_end", "on_train_end")
        trainer.callbacks.append(m.watch(PolchainCallback(rec, bundle), hooks))
        trainer.callbacks.append(_lightning_clock(recorded_clock, every))
        trainer.fit(bundle.model, train_dataloaders=train_loader(bundle, rec))
        m.timed(rec.close, fixed=True)(final=True)

    plain_s, recorded_s = _run_pair(plain, recorded, recorded_first)
    return Pair(plain_s, recorded_s, plain_clock, recorded_clock, proof, binding)


def lightning_interleaved(root: Path, config: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(recording chunks, plain chunks): one long run of the example whose ``k``-step
    chunks alternate between recording (the recording callback's hooks, its checkpoint
    and write) and not (those hooks ``None``, which Lightning does not call), so that the
    two sides run a fraction of a second apart. A measuring device, not a proof: the
    recorder sees only the recording chunks' steps. It starts ``k/2`` steps in, so each
    checkpoint (capture and the writer's work after it) falls inside a recording chunk."""
    from pol_chain.integrations.lightning import PolchainCallback, train_loader, trainer_settings

    proof, binding = _register(root, "lightning_digits:build", config)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    bundle = build_bundle(spec, binding.run_seed)
    rec = Recorder(proof, spec, RUN_ID, binding.run_seed, state=TrainState.of(bundle))
    lead = spec.k // 2
    callback = PolchainCallback(rec, bundle)
    hooks = {name: getattr(callback, name) for name in ("on_train_batch_start",)}
    chunks: dict[bool, list[float]] = {True: [], False: []}
    clock = Clock()
    every = spec.k * spec.accumulation

    def switch(recording: bool) -> None:
        for name, hook in hooks.items():
            setattr(callback, name, hook if recording else None)

    def toggle() -> None:
        clock.mark()
        recording = len(clock.marks) % 2 == 1  # the chunk that starts now
        switch(recording)

    switch(False)
    toggler = _lightning_clock(clock, every)
    toggler.on_train_batch_end = lambda *args: toggle() if (args[-1] + 1) % every == 0 else None

    def lead_in(*hook_args: Any) -> None:
        # after the recording callback's checks (which refuse a recorder past step 0);
        # the steps' indices are not the loader's: a measuring device, not a proof
        sampler = rec.sampler()
        for _ in range(lead):
            rec.on_step_end(sampler.micro_batches(rec.step))

    toggler.on_train_start = lead_in
    steps = spec.total_steps - lead  # the recorder ends at the run's last step
    trainer = _lightning_trainer(trainer_settings(bundle), steps, [callback, toggler])
    trainer.fit(bundle.model, train_dataloaders=train_loader(bundle, rec))
    rec.close(final=False)
    for index, seconds in enumerate(clock.chunks):
        chunks[index % 2 == 0].append(seconds)  # chunk 0 after the first mark records
    return chunks[True], chunks[False]


def measure_interleaved(root: Path, config: dict[str, Any], runs: int) -> dict[str, Any]:
    """The median of every recording chunk ÷ its plain neighbours over ``runs`` runs of
    :func:`lightning_interleaved`."""
    ratios: list[float] = []
    for _ in range(runs):
        recording, plain = lightning_interleaved(root, config)
        ratios += _interleaved_ratios(recording, plain)
        print(
            f"lightning interleaved: recording chunks {statistics.median(recording):.4f}s, "
            f"plain {statistics.median(plain):.4f}s ({len(recording)}, {len(plain)} chunks)",
            file=sys.stderr,
        )
    if not ratios:
        raise SystemExit(f"lightning: a run of {config} has too few k-step chunks to interleave")
    return {"interleaved": round(statistics.median(ratios), 3), "interleaved_chunks": len(ratios)}


def _interleaved_ratios(recording: list[float], plain: list[float]) -> list[float]:
    """Each recording chunk ÷ the mean of the plain chunks either side of it (a drift
    that is linear over three chunks cancels)."""
    return [
        on / ((plain[i] + plain[i + 1]) / 2)
        for i, on in enumerate(recording[1:])
        if i + 1 < len(plain)
    ]


# -- Hugging Face ------------------------------------------------------------------------
def _hf_clock(clock: Clock, k: int) -> Any:
    """A ``TrainerCallback`` marking ``clock`` every ``k`` optimizer steps."""
    import transformers

    class ClockCallback(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % k == 0:
                clock.mark()

    return ClockCallback()


def hf_pair(
    root: Path, config: dict[str, Any], recorded_first: bool = False, meter: Meter | None = None
) -> Pair:
    """One rep of the HF example: plain and recorded."""
    import transformers

    from pol_chain.integrations.hf import polchain_trainer, training_arguments

    proof, binding = _register(root, "hf_tiny_gpt:build", config)
    spec = TaskSpec.from_bytes((proof / SPEC_FILE).read_bytes())
    plain_clock, recorded_clock = Clock(), Clock()

    plain_bundle = build_bundle(spec, binding.run_seed)

    def plain() -> None:  # construction timed on both sides
        transformers.Trainer(
            model=plain_bundle.model,
            args=training_arguments(
                plain_bundle, str(root / "hf-plain"), max_steps=spec.total_steps
            ),
            train_dataset=torch.utils.data.ConcatDataset([plain_bundle.data] * spec.epochs),
            data_collator=torch.utils.data.default_collate,
            callbacks=[_hf_clock(plain_clock, spec.k)],
        ).train()

    bundle = build_bundle(spec, binding.run_seed)

    def recorded() -> None:
        m = meter or Meter()
        rec = m.timed(Recorder, fixed=True)(
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
        trainer.add_callback(_hf_clock(recorded_clock, spec.k))
        trainer.train()
        m.timed(rec.close, fixed=True)(final=True)

    plain_s, recorded_s = _run_pair(plain, recorded, recorded_first)
    return Pair(plain_s, recorded_s, plain_clock, recorded_clock, proof, binding)


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
    pair: Callable[..., Pair],
    root: Path,
    config: dict[str, Any],
    reps: int,
    replay: bool = True,
) -> dict[str, Any]:
    """The overhead (recorded ÷ plain: steady-state, whole-run, fastest, accounted) and
    the replay ratio (plain ÷ replay) over ``reps`` reps (see the module docstring)."""
    recorded_s, plain_s, accounted, replayed, fixed = [], [], [], [], []
    plain_chunks: list[float] = []
    recorded_chunks: list[float] = []
    proof = root
    pair(root, {**config, "epochs": 1})  # warm-up: imports, allocator, first-call costs
    for rep in range(reps):
        meter = Meter()
        result = pair(root, config, recorded_first=rep % 2 == 1, meter=meter)
        proof = result.proof
        recorded_s.append(result.recorded_s)
        plain_s.append(result.plain_s)
        plain_chunks += result.plain.chunks
        recorded_chunks += result.recorded.chunks
        accounted.append(meter.seconds / result.plain_s)
        fixed.append(meter.fixed_run_s)
        if replay:
            replayed.append(_replay_seconds(proof, result.binding))
        print(
            f"{name}: plain {result.plain_s:.2f}s recorded {result.recorded_s:.2f}s "
            + (f"replay {replayed[-1]:.2f}s " if replay else "")
            + f"(pol_chain's own {meter.training_thread_s:.3f}s on the training thread, "
            f"{meter.writer_cpu_s:.3f}s writer CPU; chunk medians "
            f"{_median_or_nan(result.plain.chunks):.4f}s / "
            f"{_median_or_nan(result.recorded.chunks):.4f}s)",
            file=sys.stderr,
        )
    if not plain_chunks or not recorded_chunks:
        raise SystemExit(f"{name}: a run of {config} has fewer than two k-step chunks to time")
    chunks_a_run = len(plain_chunks) / reps + 1  # the left-out first chunk counts here
    fixed_share = statistics.median(fixed) / (chunks_a_run * statistics.median(plain_chunks))
    out: dict[str, Any] = {
        "overhead": round(
            statistics.median(recorded_chunks) / statistics.median(plain_chunks) + fixed_share,
            3,
        ),
        "steady_p10": round(_percentile(recorded_chunks, 10) / _percentile(plain_chunks, 10), 3),
        "fixed_share": round(fixed_share, 4),
        "chunks": len(plain_chunks),
        "whole_run": _median_ratio(recorded_s, plain_s),
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


def _median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="reps (pair + replay) per path")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--only",
        default="lightning,hf,hf_20m",
        help="comma-separated paths to measure (default: all three)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for training and replay (default: torch's own, the cores); "
        "fewer than the cores leaves the recorder's writer thread a core of its own",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    warnings.simplefilter("ignore")
    for name in ("lightning.pytorch", "transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    configure_determinism(True, args.threads)
    result: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="polchain-bench-fw-"))
    try:
        k = 20 if args.quick else 100  # a quick run still has a few k-step chunks
        if "lightning" in only:
            lightning_epochs = 2 if args.quick else 40  # 44 steps an epoch
            stats = measure(
                "lightning", lightning_pair, root, {"epochs": lightning_epochs, "k": k}, args.reps
            )
            stats.pop("proof")
            long_run = {"epochs": 4 if args.quick else 120, "k": k}  # 5,280 steps: 52 chunks
            interleaved = measure_interleaved(root, long_run, runs=1 if args.quick else 3)
            stats["cross_run"] = stats["overhead"]
            stats["overhead"] = round(interleaved["interleaved"] + stats["fixed_share"], 3)
            result["lightning"] = {**stats, **interleaved}
        if "hf" in only:
            hf_epochs = 4 if args.quick else 30  # 24 steps an epoch
            result["hf"] = measure("hf", hf_pair, root, {"epochs": hf_epochs, "k": k}, args.reps)
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
        **{key: stats[key] for key in ("overhead", "steady_p10", "whole_run", "fastest")},
        "accounted": stats["accounted"],
        "chunks": stats["chunks"],
        "checkpoint_bytes": int(statistics.median(sizes)),
    }


if __name__ == "__main__":
    main()
