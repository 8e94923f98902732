"""Registering a run: task names, the spec, the on-chain registration and the binding
of a proof directory to it."""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.config import Settings
from pol_chain.errors import PolchainError
from pol_chain.format import (
    ACCUMULATION,
    BINDING_FILE,
    BUNDLE_FILE,
    MANIFEST_FILE,
    PLAN_KEY,
    SPEC_FILE,
    FormatError,
    RunBinding,
    engine_config_problem,
    to_hex,
)

if TYPE_CHECKING:
    from pol_chain.compose.lineage import ParentModel
    from pol_chain.format import DatasetCommitment, InitRule
    from pol_chain.ledger import LedgerClient
    from pol_chain.proof import TaskSpec
    from pol_chain.proof.shards import ShardDataset
    from pol_chain.store import ArtefactStore

__all__ = [
    "ENGINE_KEYS",
    "TASKS",
    "BoundRun",
    "ConfigOverrideError",
    "DataSourceError",
    "TaskNotFound",
    "apply_overrides",
    "build_spec",
    "prepare_spec",
    "commit_data",
    "open_bound",
    "open_data",
    "register_spec",
    "store_bundle",
    "task_entry",
]

TASKS = {
    "digits": "pol_chain.tasks.digits:build",
    "resnet20": "pol_chain.tasks.resnet20:build",
}

BoundRun = tuple[RunBinding, "LedgerClient", "ArtefactStore"]


ENGINE_KEYS = ("batch_size", "epochs", "k", ACCUMULATION, PLAN_KEY)
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


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _check_type(path: str, default: Any, value: Any) -> Any:
    if default is None:
        return value
    if value is None:
        raise ConfigOverrideError(
            f"config {path} takes {_a(type(default).__name__)} (default {default!r}), got null"
        )
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
        f"config {path} takes {_a(type(default).__name__)} (default {default!r}), got {value!r}",
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
                hint=f"did you mean {prefix + close[0]!r}?"
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
        unreadable = f"cannot read config file {config_file}"
        too_deep = f"nested more than {MAX_CONFIG_DEPTH} deep"
        try:
            if config_file.stat().st_size > MAX_CONFIG_FILE_BYTES:
                raise ValueError(f"larger than {MAX_CONFIG_FILE_BYTES} bytes")
            text = config_file.read_text()
            loaded = (
                json.loads(text, object_pairs_hook=_unique_keys)
                if config_file.suffix == ".json"
                else tomllib.loads(text)
            )
        except RecursionError:  # the parsers recurse per level: deeper than Python's stack
            raise ConfigOverrideError(f"{unreadable}: {too_deep}") from None
        except (OSError, ValueError) as exc:
            raise ConfigOverrideError(f"{unreadable}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigOverrideError(f"config file {config_file} is not a table/object")
        if _depth(loaded) > MAX_CONFIG_DEPTH:
            raise ConfigOverrideError(f"{unreadable}: {too_deep}")
        merged = loaded
    seen: set[str] = set()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigOverrideError(f"--set {pair!r}: expected KEY=VALUE (e.g. lr.base=0.01)")
        if key in seen:
            raise ConfigOverrideError(f"--set {key} is given twice", hint="give each key once")
        seen.add(key)
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigOverrideError(f"--set {pair!r}: {part} is not a table")
        node[parts[-1]] = _parse_value(raw.strip())
    return merged


MAX_CONFIG_FILE_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 32
"""Limits of a ``--config`` file: a config is a small, shallow table."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a key given twice (as TOML does)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        out[key] = value
    return out


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_CONFIG_DEPTH or not isinstance(value, dict | list):
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(item, level + 1) for item in items), default=level + 1)


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


class DataSourceError(PolchainError):
    """The ``--data`` source is not a folder of samples, a committed dataset folder or a
    ``module:function`` returning a map-style dataset."""


def _open_source(source: str) -> Any:
    """A folder path, or ``module:function`` returning a map-style dataset."""
    path = Path(source)
    if path.is_dir():
        return path
    if ":" in source and not path.exists():
        import importlib

        module, _, name = source.partition(":")
        try:
            return getattr(importlib.import_module(module), name)()
        except Exception as exc:  # noqa: BLE001 - the user's code: reported as bad input
            raise DataSourceError(f"--data {source}: {type(exc).__name__}: {exc}") from None
    raise DataSourceError(
        f"--data {source}: no such folder",
        hint="give a folder of sample files, a committed dataset folder or module:function",
    )


def commit_data(settings: Settings, source: str, out: Path) -> DatasetCommitment:
    """Commit ``source`` as shards into ``out/data`` (a folder holding ``dataset.json`` is
    taken as committed already), put the shards and the index in the store and return
    the spec's dataset commitment (the index located by digest and CID)."""
    import shutil

    from pol_chain.compose.context import open_store
    from pol_chain.format import (
        DATA_DIR,
        DATASET_INDEX_FILE,
        DatasetCommitment,
        DatasetIndex,
        Locator,
        shard_file_name,
    )
    from pol_chain.proof.shards import DirectoryShards, ShardDataset, commit_dataset_shards

    data_dir = out / DATA_DIR
    if (out / MANIFEST_FILE).exists() or (out / BINDING_FILE).exists():
        raise PolchainError(f"{out} already holds a run", hint="pick another --out")
    found = _open_source(source)
    try:
        if isinstance(found, Path) and (found / DATASET_INDEX_FILE).is_file():
            index = DatasetIndex.from_bytes((found / DATASET_INDEX_FILE).read_bytes())
            ShardDataset(index, DirectoryShards(found))  # checks the index
            if found.resolve() != data_dir.resolve():
                data_dir.mkdir(parents=True, exist_ok=True)
                for number in range(len(index.shards)):
                    name = shard_file_name(number)
                    shutil.copyfile(found / name, data_dir / name)
        else:
            index = commit_dataset_shards(found, data_dir)
    except (ValueError, OSError, FormatError) as exc:
        raise DataSourceError(f"--data {source}: cannot commit it: {exc}") from None
    store = open_store(settings)
    cids = {}
    for number, ref in enumerate(index.shards):
        path = data_dir / shard_file_name(number)
        if hashlib.sha256(path.read_bytes()).digest() != ref.sha256:
            raise DataSourceError(f"--data {source}: shard {number} is not the one indexed")
        cids[ref.sha256] = store.put_file(path, name=path.name)
    index = index.with_cids(cids)
    index_bytes = index.to_bytes()
    (data_dir / DATASET_INDEX_FILE).write_bytes(index_bytes)
    cid = store.put_bytes(index_bytes, name=DATASET_INDEX_FILE)
    return DatasetCommitment(
        index.root, index.size, index=Locator(sha256(index_bytes), cid, len(index_bytes))
    )


def open_data(proof_dir: Path) -> ShardDataset:
    """The committed dataset of ``proof_dir`` (its ``data`` folder), checked as it loads."""
    from pol_chain.format import DATA_DIR
    from pol_chain.proof.shards import DirectoryShards, ShardDataset

    shards = DirectoryShards(proof_dir / DATA_DIR)
    return ShardDataset(shards.index(), shards)


def prepare_spec(
    settings: Settings,
    task: str,
    config: Mapping[str, Any],
    out: Path,
    *,
    data: str | None = None,
    parent: str | None = None,
) -> tuple[TaskSpec, ParentModel | None]:
    """The spec of a new run in ``out``: ``data`` committed into ``out/data`` and the
    store (see :func:`commit_data`), ``parent`` (``--from``) resolved to a finalized
    claim and its weights kept in ``out`` (see
    :func:`~pol_chain.compose.lineage.resolve_parent`)."""
    from pol_chain.format import PARENT_FILE

    found = None
    if parent is not None:
        from pol_chain.compose.context import open_ledger, open_store
        from pol_chain.compose.lineage import resolve_parent

        with open_ledger(settings, read_only=True) as ledger:
            found = resolve_parent(ledger, open_store(settings), parent)
    dataset = commit_data(settings, data, out) if data is not None else None
    spec = build_spec(
        task,
        config,
        dataset=dataset,
        init=None if found is None else found.init_rule(),
        samples=open_data(out) if dataset is not None else None,
    )
    if found is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / PARENT_FILE).write_bytes(found.data)
    return spec, found


def build_spec(
    task: str,
    config: Mapping[str, Any] | None = None,
    *,
    dataset: DatasetCommitment | None = None,
    init: InitRule | None = None,
    samples: Any = None,
) -> TaskSpec:
    """Build the run spec of ``task`` with ``config`` overriding the task's defaults
    (checked against them: keys, types), training on ``dataset`` when given (a committed
    dataset, see :func:`commit_data`, whose ``samples`` the task is then built on) or the
    data the task builds."""
    import sys

    from pol_chain.proof import make_spec
    from pol_chain.proof.task import resolve_task

    entry = task_entry(task)
    try:
        fn = resolve_task(entry)
        takes = inspect.signature(fn).parameters.get("dataset")
        if dataset is None and takes is not None and takes.default is inspect.Parameter.empty:
            raise PolchainError(
                f"task {entry} trains on a dataset you commit",
                hint="give it with --data FOLDER (or --data module:function)",
            )
        if dataset is not None and takes is None:
            raise PolchainError(
                f"task {entry} takes no dataset argument, so --data has nothing to feed",
                hint="add a `dataset` parameter to the task function, or drop --data",
            )
        defaults = getattr(sys.modules[fn.__module__], "DEFAULT_CONFIG", None)
    except (ImportError, AttributeError) as exc:
        raise TaskNotFound(
            f"task {entry!r} does not import: {exc}",
            hint="run from the folder that holds its module, or put that folder on PYTHONPATH",
        ) from None
    merged = apply_overrides(defaults, config or {}) if defaults is not None else dict(config or {})
    problem = engine_config_problem(merged)  # the spec's own rule, before the task builds
    if problem is not None:
        raise ConfigOverrideError(f"config {problem[0]} {problem[1]}")
    try:
        return make_spec(entry, merged, dataset=dataset, init=init, data=samples)
    except PolchainError:
        raise
    except Exception as exc:  # noqa: BLE001 - the task's own code refused this config
        raise ConfigOverrideError(
            f"task {entry} does not build with this config: {type(exc).__name__}: {exc}",
            hint="check the values given with --set / --config",
        ) from None


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def store_bundle(
    store: ArtefactStore, spec: TaskSpec, code: bytes | None = None
) -> tuple[TaskSpec, bytes | None]:
    """Put the code bundle of a v2 ``spec`` (``code``, or packed from this machine's
    files, which must still pack to the spec's digest) in ``store``; return the spec
    naming its CID and the bundle bytes (a v1 spec: unchanged, None)."""
    if spec.bundle is None:
        return spec, code
    from dataclasses import replace

    from pol_chain.proof.spec import bundle_bytes

    code = bundle_bytes(spec.entry) if code is None else code
    if sha256(code) != spec.bundle.sha256:
        raise PolchainError(
            f"the code of {spec.entry} changed since its spec was made",
            hint="build the spec again (the bundle packs the code as it is now)",
        )
    cid = store.put_bytes(code, name=BUNDLE_FILE)
    return spec.replace(bundle=replace(spec.bundle, cid=cid)), code


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
    spec, code = store_bundle(store, spec, code)
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
