"""Registering a run: task names, the spec, the on-chain registration and the binding
of a proof directory to it."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.config import Settings
from pol_chain.errors import PolchainError
from pol_chain.format import BINDING_FILE, MANIFEST_FILE, SPEC_FILE, RunBinding, to_hex

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.proof import TaskSpec
    from pol_chain.store import ArtefactStore

__all__ = [
    "TASKS",
    "BoundRun",
    "TaskNotFound",
    "build_spec",
    "open_bound",
    "register_spec",
    "task_entry",
]

TASKS = {
    "digits": "pol_chain.tasks.digits:build",
    "resnet20": "pol_chain.tasks.resnet20:build",
}

BoundRun = tuple[RunBinding, "LedgerClient", "ArtefactStore"]


class TaskNotFound(PolchainError):
    """The task name or entry point does not resolve."""


def task_entry(task: str) -> str:
    """Map a task name (``digits``) or ``module:function`` to an entry point."""
    if task in TASKS:
        return TASKS[task]
    if ":" not in task:
        close = difflib.get_close_matches(task, TASKS, n=1)
        raise TaskNotFound(
            f"unknown task {task!r}",
            hint=f"did you mean {close[0]!r}?"
            if close
            else f"use one of {', '.join(TASKS)} or module:function",
        )
    return task


def build_spec(task: str, config: Mapping[str, Any] | None = None) -> TaskSpec:
    """Build the run spec of ``task`` with ``config`` overriding the task's defaults."""
    from pol_chain.proof import make_spec

    entry = task_entry(task)
    try:
        return make_spec(entry, dict(config or {}))
    except (ImportError, AttributeError) as exc:
        raise TaskNotFound(
            f"task {entry!r} does not import: {exc}",
            hint="check the module is on PYTHONPATH and the function exists",
        ) from None


def register_spec(settings: Settings, spec: TaskSpec, out: Path, account: int | None) -> BoundRun:
    """Store the spec, register a run for it and bind ``out`` to that run."""
    from pol_chain.compose.context import open_ledger, open_store

    if (out / MANIFEST_FILE).exists() or (out / BINDING_FILE).exists():
        raise PolchainError(
            f"{out} already holds a run",
            hint="pick another --out, or continue it with `polchain train --resume`",
        )
    store = open_store(settings)
    client = open_ledger(settings, account=account)
    spec_bytes = spec.to_bytes()
    spec_cid = store.put_bytes(spec_bytes, name=SPEC_FILE)
    registered = client.register_run(spec.digest, spec_cid)
    binding = RunBinding(
        chain_id=client.chain_id,
        ledger=client.address,
        run_id=to_hex(registered.run_id),
        trainer=registered.trainer,
        spec_sha256=to_hex(spec.digest),
        spec_cid=spec_cid,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_bytes(spec_bytes)
    binding.write(out)
    return binding, client, store


def open_bound(settings: Settings, proof_dir: Path, account: int | None) -> BoundRun:
    """The binding of ``proof_dir`` with a client of its ledger and the store; refuses a
    directory bound to another ledger than the configured one."""
    from pol_chain.compose.context import open_ledger, open_store

    binding = RunBinding.read(proof_dir)
    client = open_ledger(settings, account=account)
    if client.chain_id != binding.chain_id or client.address.lower() != binding.ledger.lower():
        raise PolchainError(
            f"{proof_dir} is bound to ledger {binding.ledger} on chain {binding.chain_id}, "
            f"but the configured ledger is {client.address} on chain {client.chain_id}"
        )
    return binding, client, open_store(settings)
