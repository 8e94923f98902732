"""The sandboxed side: ``python -m pol_chain.sandbox.child WORKDIR MEMORY_MB``.

Trusted code that runs first in the sandbox: it sets its own resource limits, loads the
committed code bundle from ``WORKDIR/code`` in place of anything installed under those
names, then runs one phase of the request in ``WORKDIR/in`` and writes safetensors and a
status in ``WORKDIR/out``. Any error of the task's code is reported, never raised past it.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from pol_chain.format import (
    BundleManifest,
    CheckpointMeta,
    Segment,
    TaskSpec,
    model_meta,
    parse_json,
)
from pol_chain.format.sandbox import ChildError, SandboxRequest, SandboxStatus

GROUP_BYTES = 512 * 1024 * 1024
"""Start checkpoints loaded at once for one replay run (a framework task builds one
trainer per group)."""


def _limit(memory_mb: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class ShardNotHandedIn(Exception):
    """The task's code read a dataset shard the verifier did not put in ``in/data``."""

    def __init__(self, number: int) -> None:
        super().__init__(str(number))
        self.number = number


class _HandedInShards:
    """Shard source over ``in/data``: the shards the verifier fetched and put there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, number: int) -> bytes:
        from pol_chain.format import shard_file_name

        path = self.folder / shard_file_name(number)
        if not path.is_file():
            raise ShardNotHandedIn(number)
        return path.read_bytes()


def _error(exc: BaseException) -> ChildError:
    from pol_chain.proof.errors import missing_module, task_error_kind

    text = str(exc)[:2000]
    if isinstance(exc, ShardNotHandedIn):
        return ChildError("data", "ShardNotHandedIn", str(exc.number))
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ShardNotHandedIn):  # the task's code wrapped it
        return ChildError("data", "ShardNotHandedIn", str(cause.number))
    kind = task_error_kind(exc)
    missing = missing_module(exc)
    if kind == "import" and missing is not None:  # a library this machine lacks
        return ChildError("import", type(missing).__name__, str(missing)[:2000])
    return ChildError(kind, type(exc).__name__, text)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run(work: Path) -> SandboxStatus:
    """Run the request of ``work``; return the status (also on the task's errors)."""
    from pol_chain.proof.bundle import activate
    from pol_chain.proof.runner import InProcessRunner, ReplayJob
    from pol_chain.proof.serialization import load_checkpoint_bytes, serialize_state
    from pol_chain.proof.task import configure_determinism

    inp, out = work / "in", work / "out"
    request = SandboxRequest.from_bytes((inp / "request.json").read_bytes())
    manifest = BundleManifest.from_json(parse_json((inp / "bundle.json").read_bytes(), "bundle"))
    activate(work / "code", manifest)
    spec = TaskSpec.from_bytes((inp / "spec.json").read_bytes())
    parent = (inp / "parent.safetensors").read_bytes() if request.parent else None
    configure_determinism(request.deterministic, request.threads)
    shards = None
    if spec.dataset.sharded:
        from pol_chain.format import DATASET_INDEX_FILE, DatasetIndex
        from pol_chain.proof.shards import ShardDataset

        index = DatasetIndex.from_bytes((inp / "data" / DATASET_INDEX_FILE).read_bytes())
        shards = ShardDataset(index, _HandedInShards(inp / "data"))
    try:
        runner = InProcessRunner(spec, request.run_seed, request.device, parent, shards=shards)
    except Exception as exc:  # noqa: BLE001 - the task's code: reported, not raised
        return SandboxStatus(False, _error(exc))
    if request.phase == "init":
        try:
            w0 = runner.initial_model()
            leaves = runner.sample_leaves()
        except Exception as exc:  # noqa: BLE001
            return SandboxStatus(False, _error(exc))
        _write(out / "w0.safetensors", serialize_state(w0, model_meta()))
        _write(out / "leaves.bin", b"".join(leaves))
        return SandboxStatus(True, size=len(leaves))  # none for committed shards
    jobs: dict[int, ChildError | None] = {}
    for group in _groups(inp, [job.index for job in request.jobs]):
        loaded: list[ReplayJob] = []
        for i in group:
            try:
                start, meta = load_checkpoint_bytes(
                    (inp / f"start-{i}.safetensors").read_bytes(), f"checkpoint {i - 1}"
                )
                seg = Segment.from_bytes((inp / f"segment-{i}.json").read_bytes())
            except Exception as exc:  # noqa: BLE001
                jobs[i] = _error(exc)
                continue
            loaded.append(ReplayJob(i, start, meta, seg.steps))
        try:
            results = runner.replay(loaded)  # a framework task: one trainer for the group
        except Exception:  # noqa: BLE001 - the task's code failed on one of them: which?
            results = {}
            for job in loaded:
                try:
                    results.update(runner.replay([job]))
                except Exception as exc:  # noqa: BLE001
                    jobs[job.index] = _error(exc)
        for job in loaded:
            result = results.get(job.index)
            if result is None:
                continue
            if result.state is None:
                assert result.error is not None
                jobs[job.index] = _error(result.error)
                continue
            end = job.meta.step + len(job.steps)
            end_meta = CheckpointMeta(step=end, scheduler_position=end)
            _write(out / f"end-{job.index}.safetensors", serialize_state(result.state, end_meta))
            jobs[job.index] = None
    return SandboxStatus(True, jobs=jobs)


def _groups(inp: Path, indices: list[int]) -> list[list[int]]:
    """The jobs in groups whose start checkpoints together stay under
    :data:`GROUP_BYTES` (at least one job each): a group is replayed at once."""
    groups: list[list[int]] = []
    size = GROUP_BYTES
    for index in indices:
        path = inp / f"start-{index}.safetensors"
        nbytes = path.stat().st_size if path.exists() else 0
        if not groups or size + nbytes > GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += nbytes
    return groups


def main(argv: list[str]) -> int:
    """Entry point; always writes ``out/status.json`` when it can."""
    work = Path(argv[1])
    _limit(int(argv[2]) if len(argv) > 2 else 0)
    try:
        status = run(work)
    except Exception as exc:  # noqa: BLE001 - the request itself failed
        status = SandboxStatus(False, _error(exc))
    _write(work / "out" / "status.json", status.to_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
