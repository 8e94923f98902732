"""``polchain register``, ``train``, ``commit`` and ``finalize``."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pol_chain.cli._context import AccountOpt, JsonOpt, current_settings
from pol_chain.cli._output import emit_json, info
from pol_chain.errors import PolchainError
from pol_chain.format import MANIFEST_FILE, FormatError, Manifest, NotAProofDir, TaskSpec

if TYPE_CHECKING:
    from pol_chain.compose.publish import Publisher, SyncResult
    from pol_chain.format import RunBinding
    from pol_chain.proof.loop import TrainResult

app = typer.Typer()

TaskArg = Annotated[str, typer.Argument(help="Task name (digits, resnet20) or module:function.")]
EpochsOpt = Annotated[int | None, typer.Option(help="Override the task's epochs.")]
KOpt = Annotated[int | None, typer.Option("-k", help="Checkpoint interval in steps.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config value, checked against the task's config: "
        "--set lr.base=0.01 --set batch_size=64 (values are JSON; repeatable).",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Train on your own dataset, committed as shards and stored: a folder with one "
        "file per sample (.safetensors: a dict of tensors; .npy: a tensor), a folder "
        "already committed (holding dataset.json), or module:function returning a "
        "map-style torch Dataset. The task function gets it as its `dataset` argument.",
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Fine-tune: start from this finalized model (digest, weights file, proof "
        "directory or run id). It must be a claim on the ledger before this run registers.",
    ),
]
ConfigFileOpt = Annotated[
    Path | None,
    typer.Option("--config", help="A TOML or JSON file of config overrides (before --set)."),
]


def _config(
    epochs: int | None, k: int | None, pairs: list[str] | None, config_file: Path | None
) -> dict[str, Any]:
    from pol_chain.compose.registration import ConfigOverrideError, parse_overrides

    config = parse_overrides(pairs or [], config_file)
    for key, flag, value in (("epochs", "--epochs", epochs), ("k", "-k", k)):
        if value is None:
            continue
        if key in config:
            raise ConfigOverrideError(
                f"{key} is given twice: {flag} {value} and {key}={config[key]!r} "
                "(--set or --config)",
                hint="give it once",
            )
        config[key] = value
    return config


def _import_from_here() -> None:
    """Let the task's module import from the working folder, as ``python -m`` would: the
    trainer runs ``polchain train my_task:build`` in the project that holds ``my_task``
    (the console script's own folder is first on the path, not this one)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def _check_resume_settings(task: str, spec: TaskSpec, config: Mapping[str, Any]) -> None:
    """A resume continues the registered run: the task and any config value given with it
    must be the registered ones (the same command again, plus --resume, is fine), else
    the change would be silently ignored."""
    from pol_chain.compose.registration import apply_overrides, task_entry

    try:
        entry = task_entry(task)
    except PolchainError:
        entry = task
    if entry != spec.entry:
        raise PolchainError(
            f"--resume: the run in this folder trains {spec.entry}, not {task}",
            hint=f"polchain train {spec.entry} --out ... --resume",
        )
    changed = _differences(apply_overrides(spec.config, config), spec.config)
    if changed:
        raise PolchainError(
            f"--resume continues the run as registered; it cannot change {', '.join(changed)}",
            hint="drop those settings (the run's are in its spec.json), or register a new "
            "run with another --out",
        )


def _differences(new: Mapping[str, Any], old: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key=new (registered: old)`` for each leaf of ``new`` that differs from ``old``."""
    out = []
    for key in sorted(new):
        value, was = new[key], old.get(key)
        if isinstance(value, Mapping) and isinstance(was, Mapping):
            out += _differences(value, was, f"{prefix}{key}.")
        elif value != was:
            out.append(f"{prefix}{key}={value!r} (registered: {was!r})")
    return out


@dataclass(frozen=True)
class TrainInputs:
    """What a run trains from besides its spec: a parent's weights, a committed dataset."""

    parent_model: bytes | None
    dataset: Any


def _finished(proof_dir: Path) -> Manifest | None:
    """The manifest of ``proof_dir`` when training wrote its final model, else None."""
    try:
        manifest = Manifest.from_bytes((proof_dir / MANIFEST_FILE).read_bytes())
    except (OSError, FormatError):
        return None  # the recorder's resume reports what is wrong
    return manifest if manifest.final is not None else None


def _train_live(
    spec: TaskSpec,
    out: Path,
    binding: RunBinding,
    publisher: Publisher,
    inputs: TrainInputs,
    *,
    resume: bool,
    json_out: bool,
) -> TrainResult:
    """Train with a progress bar while the live publisher commits each checkpoint."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pol_chain.compose.publish import LivePublisher
    from pol_chain.proof import CheckpointRecord, FinalRecord
    from pol_chain.proof import train as train_loop

    state: dict[str, Any] = {"committed": 0, "recorded": 0, "loss": float("nan")}
    with Progress(
        TextColumn("[bold]train[/bold]"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn(
            "checkpoints: {task.fields[committed]} committed, {task.fields[pending]} pending"
        ),
        TimeElapsedColumn(),
        transient=json_out,
        disable=json_out,
    ) as progress:
        bar = progress.add_task(
            "train", total=spec.total_steps, loss=float("nan"), committed=0, pending=0
        )

        def show_checkpoints() -> None:
            pending = max(0, state["recorded"] - state["committed"])
            progress.update(bar, committed=state["committed"], pending=pending)

        def on_sync(result: SyncResult) -> None:
            state["committed"] = result.committed_after
            show_checkpoints()

        def on_error(exc: BaseException, delay: float) -> None:
            progress.console.print(f"publishing failed ({exc}); retrying in {delay:.1f} s")

        def on_record(record: CheckpointRecord | FinalRecord) -> None:
            if isinstance(record, CheckpointRecord):
                state["recorded"] = record.index + 1
                show_checkpoints()

        def on_step(step: int, loss: float | None) -> None:
            if loss is not None:
                state["loss"] = loss
            progress.update(bar, completed=step + 1, loss=state["loss"])

        live = LivePublisher(publisher, on_sync=on_sync, on_error=on_error)
        try:
            result = train_loop(
                spec,
                out,
                binding.run_id_bytes,
                binding.run_seed,
                listeners=[on_record, live],
                resume=resume,
                on_step=on_step,
                parent_model=inputs.parent_model,
                dataset=inputs.dataset,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                live.close(tries=1)  # commit what was recorded; the training error wins
            raise
        live.close()  # its last sync runs after the final record
    return result


@app.command()
def register(
    task: TaskArg,
    out: Annotated[Path, typer.Option(help="Proof directory to create.")] = Path("proof"),
    epochs: EpochsOpt = None,
    k: KOpt = None,
    set_values: SetOpt = None,
    config_file: ConfigFileOpt = None,
    data: DataOpt = None,
    parent: FromOpt = None,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run on-chain before training and write its proof directory binding.

    Use it with the Python recorder in your own training script, then `polchain commit`.
    Example: polchain register digits --out proof && python train.py proof
    """
    from pol_chain.compose.registration import prepare_spec, register_spec

    settings = current_settings()
    _import_from_here()
    config = _config(epochs, k, set_values, config_file)
    spec, _ = prepare_spec(settings, task, config, out, data=data, parent=parent)
    binding, _, _, spec = register_spec(settings, spec, out, account)
    result = {**binding.__dict__, "run_seed": "0x" + binding.run_seed.hex(), "proof_dir": str(out)}
    if json_out:
        emit_json(result)
    else:
        info(f"registered run {binding.run_id} (trainer {binding.trainer})")
        info(f"run seed {result['run_seed']} — derive every random choice from it")
        info(f"record into {out} with pol_chain.proof.Recorder, then `polchain commit {out}`")


@app.command()
def train(
    task: TaskArg,
    out: Annotated[
        Path | None, typer.Option(help="Proof directory (default: runs/<task>).")
    ] = None,
    epochs: EpochsOpt = None,
    k: KOpt = None,
    set_values: SetOpt = None,
    config_file: ConfigFileOpt = None,
    data: DataOpt = None,
    parent: FromOpt = None,
    finalize: Annotated[
        bool, typer.Option(help="Finalize the run (claim the model) when training ends.")
    ] = True,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run in --out from its last checkpoint.")
    ] = False,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a task with live recording: each checkpoint is stored and committed on-chain.

    Example: polchain train digits --epochs 3 -k 20 --set lr.base=0.02
    """
    from pol_chain.compose.lineage import parent_bytes
    from pol_chain.compose.publish import Publisher
    from pol_chain.compose.registration import open_bound, open_data, prepare_spec, register_spec
    from pol_chain.format import SPEC_FILE
    from pol_chain.proof.loop import TrainResult

    settings = current_settings()
    _import_from_here()
    out = out or Path("runs") / task.replace(":", "_").replace(".", "_")
    done: Manifest | None = None
    config = _config(epochs, k, set_values, config_file)
    if resume:
        binding, client, store = open_bound(settings, out, account)
        spec = TaskSpec.from_bytes((out / SPEC_FILE).read_bytes())
        _check_resume_settings(task, spec, config)
        for flag, value in (("--data", data), ("--from", parent)):
            if value is not None and not json_out:
                info(f"{flag} is not read again on --resume: the run goes on as registered")
        done = _finished(out)
    else:
        spec, _ = prepare_spec(settings, task, config, out, data=data, parent=parent)
        binding, client, store, spec = register_spec(settings, spec, out, account)
        if not json_out:
            info(f"registered run {binding.run_id}")
    inputs = TrainInputs(
        parent_bytes(store, spec, out), open_data(out) if spec.dataset.sharded else None
    )
    publisher = Publisher(out, store, client, binding)
    if done is not None:
        # the crash came after the final model was written: only publishing is left
        assert done.final is not None
        if not json_out:
            info(f"training of {out} had finished; publishing what the chain lacks")
        publisher.sync()
        result = TrainResult(
            out, done.final.model.sha256, done.final.step, len(done.entries), 0.0, None
        )
    else:
        result = _train_live(
            spec, out, binding, publisher, inputs, resume=resume, json_out=json_out
        )
    final = None
    if finalize:
        final = publisher.finalize()
    committed = client.committed_count(binding.run_id_bytes)
    summary = {
        "run_id": binding.run_id,
        "trainer": binding.trainer,
        "proof_dir": str(out),
        "model_digest": "0x" + result.model_digest.hex(),
        "model_path": str(out / "model.safetensors"),
        "steps": result.steps,
        "checkpoints": result.checkpoints,
        "committed": committed,
        "test_accuracy": result.test_accuracy,
        "train_seconds": round(result.seconds, 3),
        "finalized": final is not None,
    }
    if json_out:
        emit_json(summary)
        return
    acc = f"{result.test_accuracy:.3f}" if result.test_accuracy is not None else "n/a"
    trained = (
        f"resumed, trained to step {result.steps}" if resume else f"trained {result.steps} steps"
    )
    info(
        f"{trained} in {result.seconds:.1f}s, test accuracy {acc}; {committed} checkpoints committed"
    )
    info(f"model {summary['model_digest']} at {summary['model_path']}")
    if final is None:
        info(f"not finalized: run `polchain finalize {out}` to claim the model")
    else:
        info(f"finalized: claim #{final.claim_index} on the model")


@app.command()
def commit(
    proof_dir: Annotated[Path, typer.Argument(help="Proof directory written by a recorder.")],
    follow: Annotated[
        bool, typer.Option(help="Keep committing new checkpoints until the run finishes.")
    ] = False,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store and commit the checkpoints of a proof directory that are not on-chain yet.

    Safe to rerun after a crash: only what is missing is committed.
    Example: polchain commit proof --follow
    """
    from pol_chain.compose.publish import Publisher
    from pol_chain.compose.registration import open_bound

    binding, client, store = open_bound(current_settings(), proof_dir, account)
    publisher = Publisher(proof_dir, store, client, binding)
    results = []
    while True:
        try:
            result = publisher.sync()
        except NotAProofDir:
            if not follow:
                raise
            time.sleep(1.0)  # training has not written its first checkpoint yet
            continue
        if result.committed_after > result.committed_before or not follow:
            results.append(result)
            if not json_out:
                info(
                    f"committed {result.committed_before}..{result.committed_after - 1} "
                    f"of run {binding.run_id} (manifest {result.manifest_cid})"
                    if result.committed_after > result.committed_before
                    else f"nothing to commit: {result.committed_after} checkpoints on chain"
                )
        done = result.finalized_locally and result.committed_after == result.available
        if not follow or done:
            break
        time.sleep(1.0)
    if json_out:
        emit_json({"run_id": binding.run_id, "syncs": results})
    elif follow:
        info(f"run finished: all {results[-1].committed_after if results else 0} committed")


@app.command()
def finalize(
    run: Annotated[str, typer.Argument(help="Proof directory or run id.")],
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Declare the run's final model: appends a claim on the model digest.

    Example: polchain finalize proof
    """
    from pol_chain.compose.publish import Publisher
    from pol_chain.compose.registration import open_bound

    proof_dir = Path(run)
    if not proof_dir.is_dir():
        raise NotAProofDir(
            proof_dir,
            "finalize needs the proof directory (it holds the model file to claim)",
        )
    binding, client, store = open_bound(current_settings(), proof_dir, account)
    final = Publisher(proof_dir, store, client, binding).finalize()
    if json_out:
        emit_json(final)
    else:
        info(f"finalized run {binding.run_id}: claimed model 0x{final.model_digest.hex()}")
