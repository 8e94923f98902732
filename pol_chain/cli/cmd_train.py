"""``polchain register``, ``train``, ``commit`` and ``finalize``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.cli._output import emit_json, info
from pol_chain.compose.binding import BINDING_FILE, NotAProofDir, RunBinding
from pol_chain.config import Settings
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.compose.publish import SyncResult
    from pol_chain.ledger import LedgerClient
    from pol_chain.proof import TaskSpec
    from pol_chain.store import ArtefactStore

TASKS = {
    "digits": "pol_chain.tasks.digits:build",
    "resnet20": "pol_chain.tasks.resnet20:build",
}


class TaskNotFound(PolchainError):
    """The task name or entry point does not resolve."""


def task_entry(task: str) -> str:
    """Map a task name (``digits``) or ``module:function`` to an entry point."""
    if task in TASKS:
        return TASKS[task]
    if ":" not in task:
        import difflib

        close = difflib.get_close_matches(task, TASKS, n=1)
        raise TaskNotFound(
            f"unknown task {task!r}",
            hint=f"did you mean {close[0]!r}?"
            if close
            else f"use one of {', '.join(TASKS)} or module:function",
        )
    return task


def build_spec(task: str, epochs: int | None, k: int | None) -> TaskSpec:
    """Build the run spec of ``task`` with the given overrides."""
    from pol_chain.proof import make_spec

    entry = task_entry(task)
    config: dict[str, Any] = {}
    if epochs is not None:
        config["epochs"] = epochs
    if k is not None:
        config["k"] = k
    try:
        return make_spec(entry, config)
    except (ImportError, AttributeError) as exc:
        raise TaskNotFound(
            f"task {entry!r} does not import: {exc}",
            hint="check the module is on PYTHONPATH and the function exists",
        ) from None


def register_spec(
    settings: Settings, spec: TaskSpec, out: Path, account: int | None
) -> tuple[RunBinding, LedgerClient, ArtefactStore]:
    """Store the spec, register a run for it and bind ``out`` to that run."""
    from pol_chain.compose.context import open_client, open_store

    if (out / "manifest.json").exists() or (out / BINDING_FILE).exists():
        raise PolchainError(
            f"{out} already holds a run",
            hint="pick another --out, or continue it with `polchain train --resume`",
        )
    store = open_store(settings)
    client = open_client(settings, account=account)
    spec_bytes = spec.to_bytes()
    spec_cid = store.put_bytes(spec_bytes, name="spec.json")
    registered = client.register_run(spec.digest, spec_cid)
    binding = RunBinding(
        chain_id=client.chain_id,
        ledger=client.address,
        run_id="0x" + registered.run_id.hex(),
        trainer=registered.trainer,
        spec_sha256="0x" + spec.digest.hex(),
        spec_cid=spec_cid,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_bytes(spec_bytes)
    binding.write(out)
    return binding, client, store


def register(
    settings: Settings,
    *,
    task: str,
    out: Path,
    epochs: int | None,
    k: int | None,
    account: int | None,
    json_out: bool,
) -> None:
    """Register a run for ``task`` and write its binding into ``out``."""
    spec = build_spec(task, epochs, k)
    binding, _, _ = register_spec(settings, spec, out, account)
    result = {**binding.__dict__, "run_seed": "0x" + binding.run_seed.hex(), "proof_dir": str(out)}
    if json_out:
        emit_json(result)
    else:
        info(f"registered run {binding.run_id} (trainer {binding.trainer})")
        info(f"run seed {result['run_seed']} — derive every random choice from it")
        info(f"record into {out} with pol_chain.proof.Recorder, then `polchain commit {out}`")


def _open_bound(
    settings: Settings, proof_dir: Path, account: int | None
) -> tuple[RunBinding, LedgerClient, ArtefactStore]:
    from pol_chain.compose.context import open_client, open_store

    binding = RunBinding.read(proof_dir)
    client = open_client(settings, account=account)
    if client.chain_id != binding.chain_id or client.address.lower() != binding.ledger.lower():
        raise PolchainError(
            f"{proof_dir} is bound to ledger {binding.ledger} on chain {binding.chain_id}, "
            f"but the configured ledger is {client.address} on chain {client.chain_id}"
        )
    return binding, client, open_store(settings)


def train(
    settings: Settings,
    *,
    task: str,
    out: Path | None,
    epochs: int | None,
    k: int | None,
    finalize: bool,
    resume: bool,
    account: int | None,
    json_out: bool,
) -> None:
    """Register (or resume) a run, train it with live commits, and finalize it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pol_chain.compose.publish import LivePublisher, Publisher
    from pol_chain.proof import CheckpointRecord, FinalRecord, TaskSpec
    from pol_chain.proof import train as train_loop

    out = out or Path("runs") / task.replace(":", "_").replace(".", "_")
    if resume:
        binding, client, store = _open_bound(settings, out, account)
        spec = TaskSpec.from_bytes((out / "spec.json").read_bytes())
    else:
        spec = build_spec(task, epochs, k)
        binding, client, store = register_spec(settings, spec, out, account)
        if not json_out:
            info(f"registered run {binding.run_id}")
    publisher = Publisher(out, store, client, binding)
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

        def on_record(record: CheckpointRecord | FinalRecord) -> None:
            if isinstance(record, CheckpointRecord):
                state["recorded"] = record.index + 1
                show_checkpoints()

        def on_step(step: int, loss: float | None) -> None:
            if loss is not None:
                state["loss"] = loss
            progress.update(bar, completed=step + 1, loss=state["loss"])

        live = LivePublisher(publisher, on_sync=on_sync)
        try:
            result = train_loop(
                spec,
                out,
                binding.run_id_bytes,
                binding.run_seed,
                listeners=[on_record, live],
                resume=resume,
                on_step=on_step,
            )
        finally:
            last_sync = live.close()  # its last sync runs after the final record
    sync = last_sync if last_sync is not None else publisher.sync()
    final = None
    if finalize:
        final = publisher.finalize()
    summary = {
        "run_id": binding.run_id,
        "trainer": binding.trainer,
        "proof_dir": str(out),
        "model_digest": "0x" + result.model_digest.hex(),
        "model_path": str(out / "model.safetensors"),
        "steps": result.steps,
        "checkpoints": result.checkpoints,
        "committed": sync.committed_after,
        "test_accuracy": result.test_accuracy,
        "train_seconds": round(result.seconds, 3),
        "finalized": final is not None,
    }
    if json_out:
        emit_json(summary)
        return
    acc = f"{result.test_accuracy:.3f}" if result.test_accuracy is not None else "n/a"
    info(
        f"trained {result.steps} steps in {result.seconds:.1f}s, test accuracy {acc}; "
        f"{sync.committed_after} checkpoints committed"
    )
    info(f"model {summary['model_digest']} at {summary['model_path']}")
    if final is None:
        info(f"not finalized: run `polchain finalize {out}` to claim the model")
    else:
        info(f"finalized: claim #{final.claim_index} on the model")


def commit(
    settings: Settings, *, proof_dir: Path, follow: bool, account: int | None, json_out: bool
) -> None:
    """Commit what a proof directory holds beyond the chain; with ``follow``, keep going."""
    from pol_chain.compose.publish import Publisher

    binding, client, store = _open_bound(settings, proof_dir, account)
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


def finalize(settings: Settings, *, run: str, account: int | None, json_out: bool) -> None:
    """Finalize a run from its proof directory (stores the model, claims it)."""
    from pol_chain.compose.publish import Publisher

    proof_dir = Path(run)
    if not proof_dir.is_dir():
        raise NotAProofDir(
            proof_dir,
            "finalize needs the proof directory (it holds the model file to claim)",
        )
    binding, client, store = _open_bound(settings, proof_dir, account)
    final = Publisher(proof_dir, store, client, binding).finalize()
    if json_out:
        emit_json(final)
    else:
        info(f"finalized run {binding.run_id}: claimed model 0x{final.model_digest.hex()}")
