"""Registering a run: task names, the spec, the on-chain registration and the binding
of a proof directory to it."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.config import Settings
from pol_chain.errors import PolchainError
from pol_chain.format import BINDING_FILE, BUNDLE_FILE, MANIFEST_FILE, SPEC_FILE, RunBinding, to_hex

if TYPE_CHECKING:
    from pol_chain.ledger import LedgerClient
    from pol_chain.proof import TaskSpec
    from pol_chain.store import ArtefactStore

__all__ = [
    "ENGINE_KEYS",
    "TASKS",
    "BoundRun",
    "ConfigOverrideError",
    "TaskNotFound",
    "apply_overrides",
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


ENGINE_KEYS = ("batch_size", "epochs", "k", "grad_accumulation")
"""Config keys every task takes (the engine reads them) even when its defaults omit them."""


class TaskNotFound(PolchainError):
    """The task name or entry point does not resolve."""


class ConfigOverrideError(PolchainError):
    """A ``--set`` or ``--config`` value does not fit the task's config."""


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a string


def _check_type(path: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigOverrideError(f"config {path} takes true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if (
        isinstance(default, float)
        and not isinstance(value, bool)
        and isinstance(value, int | float)
    ):
        return float(value)
    if isinstance(default, type(value)) and not isinstance(default, int | float):
        return value
    raise ConfigOverrideError(
        f"config {path} takes a {type(default).__name__} (default {default!r}), got {value!r}",
        hint="values are JSON: --set lr.base=0.01 --set nesterov=true --set name=word",
    )


def apply_overrides(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], *, prefix: str = ""
) -> dict[str, Any]:
    """``defaults`` with ``overrides`` (nested mappings merged key by key), each key and
    type checked against the defaults (the engine's keys are always allowed)."""
    out = dict(defaults)
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in out and not (not prefix and key in ENGINE_KEYS):
            close = difflib.get_close_matches(key, list(out), n=1)
            raise ConfigOverrideError(
                f"the task's config has no key {path!r}",
                hint=f"did you mean {prefix}{close[0]!r}?"
                if close
                else f"its keys: {', '.join(sorted(out))}",
            )
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = apply_overrides(current, value, prefix=f"{path}.")
        else:
            out[key] = _check_type(path, current, value)
    return out


def parse_overrides(pairs: list[str], config_file: Path | None = None) -> dict[str, Any]:
    """``--config FILE`` (TOML or JSON) then ``--set a.b=VALUE`` pairs as one nested mapping."""
    import json
    import tomllib

    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            text = config_file.read_text()
            loaded = json.loads(text) if config_file.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigOverrideError(f"cannot read config file {config_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigOverrideError(f"config file {config_file} is not a table/object")
        merged = loaded
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigOverrideError(f"--set {pair!r}: expected KEY=VALUE (e.g. lr.base=0.01)")
        node = merged
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigOverrideError(f"--set {pair!r}: {part} is not a table")
        node[parts[-1]] = _parse_value(raw.strip())
    return merged


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
    """Build the run spec of ``task`` with ``config`` overriding the task's defaults
    (checked against them: keys, types)."""
    import sys

    from pol_chain.proof import make_spec
    from pol_chain.proof.task import resolve_task

    entry = task_entry(task)
    try:
        fn = resolve_task(entry)
        defaults = getattr(sys.modules[fn.__module__], "DEFAULT_CONFIG", None)
        merged = (
            apply_overrides(defaults, config or {}) if defaults is not None else dict(config or {})
        )
        return make_spec(entry, merged)
    except (ImportError, AttributeError) as exc:
        raise TaskNotFound(
            f"task {entry!r} does not import: {exc}",
            hint="check the module is on PYTHONPATH and the function exists",
        ) from None


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def register_spec(
    settings: Settings,
    spec: TaskSpec,
    out: Path,
    account: int | None,
    *,
    code: bytes | None = None,
) -> tuple[RunBinding, LedgerClient, ArtefactStore, TaskSpec]:
    """Store the code bundle (``code``, or packed from this machine's files) and the spec,
    register a run for it and bind ``out`` to that run; return the binding, ledger, store
    and the spec as registered (naming the bundle's CID)."""
    from pol_chain.compose.context import open_ledger, open_store

    if (out / MANIFEST_FILE).exists() or (out / BINDING_FILE).exists():
        raise PolchainError(
            f"{out} already holds a run",
            hint="pick another --out, or continue it with `polchain train --resume`",
        )
    store = open_store(settings)
    client = open_ledger(settings, account=account)
    if spec.bundle is not None:  # store the code bundle and name its CID in the spec
        from dataclasses import replace

        from pol_chain.proof.spec import bundle_bytes

        code = bundle_bytes(spec.entry) if code is None else code
        if sha256(code) != spec.bundle.sha256:
            raise PolchainError(
                f"the code of {spec.entry} changed since its spec was made",
                hint="build the spec again (the bundle packs the code as it is now)",
            )
        cid = store.put_bytes(code, name=BUNDLE_FILE)
        spec = spec.replace(bundle=replace(spec.bundle, cid=cid))
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
    if code is not None:
        (out / BUNDLE_FILE).write_bytes(code)
    binding.write(out)
    return binding, client, store, spec


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
