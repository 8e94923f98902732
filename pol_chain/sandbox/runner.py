"""The verifier's side of the sandbox: :class:`SandboxRunner`.

Each phase (``init``: W0 and the dataset's leaves; ``replay``: the chosen segments) is
one ``bwrap`` run of :mod:`pol_chain.sandbox.child` over a scratch folder. An error of
the task's own code is tried once more in a fresh sandbox; the same error twice is the
bundle's fault (:class:`BundleCodeFailed`, a verdict). Everything else — bubblewrap
missing, a limit hit, a crash that says nothing, an error that changes between tries, a
library missing — is the verifier's trouble (:class:`~pol_chain.proof.errors.CannotVerify`,
no vote).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pol_chain.format import (
    DATASET_INDEX_FILE,
    CodeBundle,
    DatasetIndex,
    FormatError,
    Segment,
    TaskSpec,
    read_bundle,
    shard_file_name,
)
from pol_chain.format.sandbox import ChildError, SandboxJob, SandboxRequest, SandboxStatus
from pol_chain.proof.bundle import check_requirements, extract
from pol_chain.proof.errors import CannotVerify, CodeFailure
from pol_chain.proof.runner import ReplayJob, ReplayResult
from pol_chain.proof.serialization import (
    load_checkpoint_bytes,
    load_model_bytes,
    serialize_state,
)

__all__ = ["BundleCodeFailed", "SandboxRunner", "SandboxUnavailable", "sandbox_command"]

DEFAULT_TIMEOUT = 3600.0
DEFAULT_MEMORY_MB = 16384


class SandboxUnavailable(CannotVerify):
    """This machine cannot start the sandbox (bubblewrap missing or refused)."""


BundleCodeFailed = CodeFailure
"""The committed code fails the same way on every try: the trainer's to blame."""


def _bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "the sandbox needs bubblewrap (bwrap), which is not installed",
            hint="install it (Debian: apt-get install bubblewrap), then retry",
        )
    return found


def sandbox_command(
    work: Path,
    argv: Sequence[str],
    *,
    hide: Sequence[Path] = (),
    gpu: bool = False,
) -> list[str]:
    """The ``bwrap`` command running ``argv`` with ``work`` its only writable folder and
    every path of ``hide`` hidden (an empty folder or file in its place)."""
    cmd = [
        _bwrap(),
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    cmd += ["--dev-bind", "/dev", "/dev"] if gpu else ["--dev", "/dev"]
    libraries = _library_path(hide)
    for entry in _visible_paths(libraries):  # read-only, also where the fresh /tmp hid it
        cmd += ["--ro-bind", entry, entry]
    for path in hide:
        if path.is_dir():
            cmd += ["--tmpfs", str(path)]
        elif path.exists():
            cmd += ["--ro-bind", "/dev/null", str(path)]
    cmd += [
        "--bind", str(work), str(work),
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", "PYTHONNOUSERSITE", "1",
    ]  # fmt: skip
    if libraries:  # the verifier's own libraries outside the interpreter's site-packages
        cmd += ["--setenv", "PYTHONPATH", libraries]
    cmd += ["--chdir", str(work), "--", *argv]
    return cmd


def _visible_paths(libraries: str) -> list[str]:
    """The interpreter (its prefixes: a virtualenv may live under /tmp), its import path,
    pol_chain itself (an editable install maps it to its source folder) and
    ``libraries``: what the child must see although the sandbox mounts a fresh /tmp."""
    package = str(Path(__file__).resolve().parents[1])
    entries = [sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path, package]
    entries += libraries.split(os.pathsep) if libraries else []
    out: list[str] = []
    for entry in entries:
        if entry and entry not in out and Path(entry).exists():
            out.append(entry)
    return out


def _library_path(hide: Sequence[Path]) -> str:
    """This process's ``PYTHONPATH`` minus empty entries and hidden folders: the child
    must find the libraries the requirements check found here, and nothing hidden."""
    hidden = [Path(h).resolve() for h in hide]
    kept = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and not any(Path(entry).resolve().is_relative_to(h) for h in hidden):
            kept.append(entry)
    return os.pathsep.join(kept)


class SandboxRunner:
    """Runs a proof's committed code bundle in a sandbox (see the module docstring).

    ``code`` is the bundle's bytes (already checked against the committed digest);
    ``hide`` lists the paths the child must not see (the verifier's data folder, its
    keystore). A spec with a committed dataset needs its ``index`` and ``shards`` (shard
    number → its bytes, checked against the index): the shards of the replayed samples
    are handed in, and any other the code reads is fetched and handed in on a rerun.
    Raises :class:`~pol_chain.format.FormatError` for a bundle that is not one and
    :class:`CannotVerify` when a required library is missing here.
    """

    def __init__(
        self,
        spec: TaskSpec,
        run_seed: bytes,
        code: bytes,
        *,
        work_dir: Path,
        device: str = "cpu",
        parent_model: bytes | None = None,
        hide: Sequence[Path] = (),
        deterministic: bool = True,
        threads: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        index: DatasetIndex | None = None,
        shards: Callable[[int], bytes] | None = None,
    ) -> None:
        if spec.dataset.sharded and (index is None or shards is None):
            raise ValueError("a spec with a committed dataset needs its index and shards")
        self.bundle: CodeBundle = read_bundle(code)
        if self.bundle.manifest.entry != spec.entry:
            raise FormatError(
                "code bundle", f"its entry {self.bundle.manifest.entry!r} is not the spec's"
            )
        check_requirements(self.bundle)
        _bwrap()
        self.spec, self.run_seed, self.device = spec, bytes(run_seed), device
        self.deterministic, self.threads = deterministic, threads
        self.hide = [Path(p).resolve() for p in hide]
        self.timeout, self.memory_mb = timeout, memory_mb
        self.root = Path(work_dir).resolve() / f"sandbox-{uuid.uuid4().hex[:12]}"
        self._parent = parent_model
        self._init: tuple[dict[str, torch.Tensor], list[bytes]] | None = None
        self._index, self._shards = index, shards
        self._data: dict[str, bytes] = {}  # in/data files handed to every run
        if index is not None:
            self._data[DATASET_INDEX_FILE] = index.to_bytes()

    def _hand_in(self, number: int) -> None:
        """Add dataset shard ``number`` to what every later run gets."""
        assert self._index is not None and self._shards is not None
        if not 0 <= number < len(self._index.shards):
            raise BundleCodeFailed(f"the committed code read dataset shard {number}, not one")
        name = shard_file_name(number)
        if name in self._data:
            raise CannotVerify(f"dataset shard {number} was handed in and still not read")
        self._data[name] = self._shards(number)

    # -- one sandboxed run -------------------------------------------------------------

    def _prepare(self, request: SandboxRequest, inputs: dict[str, bytes]) -> Path:
        work = self.root / f"run-{uuid.uuid4().hex[:8]}"
        (work / "in").mkdir(parents=True)
        (work / "out").mkdir()
        extract(self.bundle, work / "code")
        files = {
            "request.json": request.to_bytes(),
            "spec.json": self.spec.to_bytes(),
            "bundle.json": self.bundle.manifest.to_bytes(),
            **inputs,
        }
        if self._parent is not None:
            files["parent.safetensors"] = self._parent
        for name, data in files.items():
            (work / "in" / name).write_bytes(data)
        if self._data:
            (work / "in" / "data").mkdir()
            for name, data in self._data.items():
                (work / "in" / "data" / name).write_bytes(data)
        return work

    def _launch(self, work: Path) -> SandboxStatus:
        argv = [sys.executable, "-m", "pol_chain.sandbox.child", str(work), str(self.memory_mb)]
        cmd = sandbox_command(work, argv, hide=self.hide, gpu=self.device.startswith("cuda"))
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise CannotVerify(
                f"the sandboxed replay ran past its {self.timeout:.0f} s limit"
            ) from None
        status_file = work / "out" / "status.json"
        if not status_file.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            if proc.returncode and "bwrap" in " ".join(tail):
                raise SandboxUnavailable(f"the sandbox did not start: {' '.join(tail)}")
            raise CannotVerify(
                f"the sandboxed process ended (code {proc.returncode}) without a status: "
                + " ".join(tail)[-300:]
            )
        try:
            return SandboxStatus.from_bytes(status_file.read_bytes())
        except FormatError as exc:
            raise BundleCodeFailed(f"the sandboxed code wrote a malformed status: {exc}") from None

    def _missing_shard(self, status: SandboxStatus) -> int | None:
        """The shard the code asked for and did not get (a ``data`` error), if any."""
        errors = [status.error, *status.jobs.values()]
        for error in errors:
            if error is not None and error.kind == "data":
                try:
                    return int(error.message)
                except ValueError:
                    raise BundleCodeFailed("the sandbox reported a malformed shard") from None
        return None

    def _launch_with_data(
        self, request: SandboxRequest, inputs: dict[str, bytes]
    ) -> tuple[Path, SandboxStatus]:
        """Launch; while the code reads a shard not handed in, hand it in and relaunch."""
        limit = len(self._index.shards) if self._index is not None else 0
        for _ in range(limit + 1):
            work = self._prepare(request, inputs)
            status = self._launch(work)
            missing = self._missing_shard(status)
            if missing is None:
                return work, status
            self._hand_in(missing)
        raise CannotVerify("the committed code kept asking for more dataset shards")

    def _run(self, request: SandboxRequest, inputs: dict[str, bytes]) -> tuple[Path, SandboxStatus]:
        """Run once; an error of the task's code runs again in a fresh sandbox."""
        first: ChildError | None = None
        for _ in range(2):
            work, status = self._launch_with_data(request, inputs)
            error = status.error
            if status.ok or error is None or error.kind not in ("code", "format"):
                break
            if first is not None and (first.type, first.message) == (error.type, error.message):
                raise BundleCodeFailed(
                    f"the committed code fails the same way twice: {error.type}: {error.message}"
                )
            first = error
        else:
            raise CannotVerify(
                "the committed code failed twice, differently (not reproducible here)"
            )
        if not status.ok and status.error is not None:
            self._trouble(status.error)
        return work, status

    @staticmethod
    def _trouble(error: ChildError) -> None:
        if error.kind == "memory":
            raise CannotVerify(f"the replay ran out of memory here: {error.message}")
        if error.kind == "import":
            raise CannotVerify(
                f"the task's code needs a library this machine lacks: {error.message}"
            )
        if error.kind == "format":
            raise FormatError("proof", error.message)
        raise CannotVerify(f"the sandboxed run failed: {error.type}: {error.message}")

    # -- the TaskRunner protocol ---------------------------------------------------------

    def _initialized(self) -> tuple[dict[str, torch.Tensor], list[bytes]]:
        if self._init is None:
            request = SandboxRequest(
                "init",
                self.run_seed,
                self.device,
                self.deterministic,
                self.threads,
                self._parent is not None,
            )
            work, status = self._run(request, {})
            w0 = load_model_bytes((work / "out" / "w0.safetensors").read_bytes(), "sandboxed W0")
            raw = (work / "out" / "leaves.bin").read_bytes()
            if status.size is None or len(raw) != 32 * status.size:
                raise BundleCodeFailed("the sandboxed code reported a dataset of another size")
            self._init = (w0, [raw[i : i + 32] for i in range(0, len(raw), 32)])
        return self._init

    def initial_model(self) -> dict[str, torch.Tensor]:
        """W0 as the committed code builds it from the run seed."""
        return dict(self._initialized()[0])

    def dataset_size(self) -> int:
        """Samples of the task's dataset."""
        return len(self._initialized()[1])

    def sample_leaves(self) -> list[bytes]:
        """Leaves of the task's samples."""
        return list(self._initialized()[1])

    def replay(self, jobs: Sequence[ReplayJob]) -> dict[int, ReplayResult]:
        """Replay every job in one sandboxed run (a second one when the task's code
        failed on a job: the same failure twice is the bundle's fault)."""
        if self._index is not None:
            from pol_chain.proof.shards import shards_for

            used = {j for job in jobs for st in job.steps for j in st.indices}
            for number in shards_for(self._index, [j for j in used if j < self._index.size]):
                if shard_file_name(number) not in self._data:
                    self._hand_in(number)
        inputs: dict[str, bytes] = {}
        for job in jobs:
            inputs[f"start-{job.index}.safetensors"] = serialize_state(dict(job.start), job.meta)
            end = job.meta.step + len(job.steps)
            inputs[f"segment-{job.index}.json"] = Segment.of(job.index, end, job.steps).to_bytes()
        request = SandboxRequest(
            "replay",
            self.run_seed,
            self.device,
            self.deterministic,
            self.threads,
            self._parent is not None,
            tuple(SandboxJob(j.index) for j in jobs),
        )
        previous: dict[int, tuple[str, str]] | None = None
        for _ in range(2):
            work, status = self._run(request, inputs)
            failed = {
                i: (e.type, e.message)
                for i, e in status.jobs.items()
                if e is not None and e.kind == "code"
            }
            if not failed:
                break
            if previous is not None:
                same = {i: f for i, f in failed.items() if previous.get(i) == f}
                if not same:
                    raise CannotVerify("the committed code failed twice, differently")
                index, (kind, message) = sorted(same.items())[0]
                raise BundleCodeFailed(
                    f"segment {index}: the committed code fails the same way twice: "
                    f"{kind}: {message}"
                )
            previous = failed
        return {job.index: self._result(work, status, job.index) for job in jobs}

    def _result(self, work: Path, status: SandboxStatus, index: int) -> ReplayResult:
        if index not in status.jobs:
            raise BundleCodeFailed(f"the sandboxed code left no result for segment {index}")
        error = status.jobs[index]
        if error is not None:
            if error.kind == "format":
                return ReplayResult(error=FormatError(f"segment {index}", error.message))
            self._trouble(error)
        data = (work / "out" / f"end-{index}.safetensors").read_bytes()
        try:
            state, _ = load_checkpoint_bytes(data, f"replayed segment {index}")
        except FormatError as exc:
            raise BundleCodeFailed(f"the sandboxed code wrote a malformed state: {exc}") from None
        return ReplayResult(state=state)

    def close(self) -> None:
        """Remove the scratch folders."""
        shutil.rmtree(self.root, ignore_errors=True)
