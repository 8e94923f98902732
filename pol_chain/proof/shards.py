"""Datasets as committed artefacts: shards, their index, and loading with checks.

:func:`commit_dataset_shards` streams a map-style dataset (or a folder of files, see
:class:`FolderDataset`) into shard files and returns the :class:`DatasetIndex`
(``pol_chain.format.dataset``). Shards hold ``S`` samples, ``S`` a power of two, shard
``j`` the samples ``j·S ..``; so every shard is one subtree of the dataset's Merkle tree
(:mod:`pol_chain.proof.dataset`, odd nodes carried up) and

    dataset root = MerkleTree(shard roots).root

Why: node ``j`` of level ``l`` of that tree covers the leaves ``[j·2^l, min((j+1)·2^l, N))``
and equals the root of the tree over those leaves alone (by induction: a pair of nodes
is hashed, an odd last node carried up exactly as the standalone tree would). At level
``log2 S`` the nodes are therefore the shard roots, the last partial shard included,
and the levels above are the Merkle tree over them. A verifier checks the index once
(:func:`check_index`), fetches only the shards its samples lie in (:func:`shards_for`),
checks each (:func:`verify_shard`: digest, structure, leaves → shard root), and every
sample of a checked shard is thereby opened to the committed root
(:func:`membership_proof` gives the usual path for :func:`verify_membership`).

Memory stays flat while committing: the shard being read and the one being hashed and
written are held, and of all the leaves only the shard roots are kept. For samples of
8 KiB or more the leaves and the file digest and write run on worker threads while the
next shard is read (``hashlib`` releases the GIL on buffers over 2 KiB).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pol_chain.format import (
    DATASET_INDEX_FILE,
    DatasetCommitment,
    DatasetIndex,
    FormatError,
    SampleStructure,
    ShardMeta,
    ShardRef,
    check_shard_header,
    parse_header,
    shard_file_name,
    shard_tensor_name,
)
from pol_chain.format.checkpoint import MAX_TENSORS
from pol_chain.format.dataset import DTYPE_OF_CODE, MAX_SHARD_SIZE
from pol_chain.proof.dataset import (
    LeafHasher,
    MerkleTree,
    RawField,
    Sample,
    raw_fields,
    rebuild_sample,
    structure_of,
    torch_dtype,
)
from pol_chain.proof.errors import IntegrityError, MembershipError
from pol_chain.proof.serialization import SerializedState

__all__ = [
    "AUTO_SHARD_SAMPLES",
    "DEFAULT_SHARD_BYTES",
    "DirectoryShards",
    "FolderDataset",
    "MapDataset",
    "ShardDataset",
    "check_index",
    "commit_dataset_shards",
    "membership_proof",
    "shards_for",
    "verify_shard",
]

DEFAULT_SHARD_BYTES = 4 * 1024 * 1024
"""Target size of a shard's sample bytes when no ``shard_size`` is given."""
AUTO_SHARD_SAMPLES = 4096
"""Most samples in a shard when no ``shard_size`` is given (small samples: a verifier
fetches less, the committer holds less)."""
_THREAD_BYTES = 8 * 1024
_BLOCK_BYTES = 1 << 20
_PASS_BYTES = 8 * 1024


class MapDataset(Protocol):
    """What :func:`commit_dataset_shards` reads: ``len`` and ``[i]`` (a map-style
    ``torch.utils.data.Dataset``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


# --------------------------------------------------------------------------- folders
class FolderDataset(torch.utils.data.Dataset[Sample]):
    """A folder of files as a dataset, one file per sample, in sorted order of their
    paths relative to ``root`` (subfolders included; names starting with ``.`` skipped):

    - ``*.safetensors``: a dict sample of the file's tensors (read as data only);
    - ``*.npy``: one tensor (``numpy.load(allow_pickle=False)``);
    - any other file: its bytes as one ``uint8`` tensor.

    Every file must give the same structure (kind, names, dtypes), as in any dataset.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        files: list[tuple[str, Path]] = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                path = Path(folder) / name
                if not name.startswith(".") and path.is_file():
                    files.append((path.relative_to(self.root).as_posix(), path))
        self.files = [p for _, p in sorted(files)]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            data = path.read_bytes()
            parse_header(data, str(path))
            return dict(sorted(load(data).items()))
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            return torch.from_numpy(np.ascontiguousarray(array))
        raw = path.read_bytes()
        if not raw:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


# --------------------------------------------------------------------------- commit
def _auto_shard_size(sample_bytes: int, n_fields: int, size: int, target: int) -> int:
    """The largest power of two ``S`` with ``S × sample_bytes ≤ target`` (at least 1), at
    most :data:`AUTO_SHARD_SAMPLES`, within the format's limits and no larger than the
    dataset needs."""
    limit = min(AUTO_SHARD_SAMPLES, MAX_TENSORS // n_fields, max(1, target // max(1, sample_bytes)))
    limit = min(limit, 1 << max(0, (size - 1).bit_length()))
    return 1 << (limit.bit_length() - 1)


class _Checker:
    """Reads samples as raw fields and checks each has the first one's structure."""

    def __init__(self, structure: SampleStructure) -> None:
        self.kind = structure.kind
        self.dtypes = {f.name: f.dtype for f in structure.fields}
        self.names = [f.name for f in structure.leaf_order]

    def __call__(self, sample: Sample, index: int) -> tuple[RawField, ...]:
        """The sample's fields in leaf (sorted-name) order."""
        kind, fields = raw_fields(sample)
        if kind is not self.kind or fields.keys() != self.dtypes.keys():
            raise ValueError(
                f"sample {index} is a {kind.value} of {sorted(fields)}, but sample 0 is a "
                f"{self.kind.value} of {sorted(self.dtypes)}"
            )
        for name, field in fields.items():
            if field[0] != self.dtypes[name]:
                raise ValueError(
                    f"sample {index} field {name!r} is {field[0]}, "
                    f"but sample 0's is {self.dtypes[name]}"
                )
        return tuple(fields[n] for n in self.names)


Row = tuple[RawField, ...]
"""One sample's fields in leaf (sorted-name) order."""


def _lay_out(start: int, names: Sequence[str], rows: list[Row]) -> SerializedState:
    """The shard file of ``rows`` (samples ``start ..``) in the deterministic layout."""
    buffers = {
        shard_tensor_name(offset, name): (torch_dtype(dtype), shape, data)
        for offset, fields in enumerate(rows)
        for name, (dtype, shape, data) in zip(names, fields, strict=True)
    }
    return SerializedState.from_buffers(buffers, ShardMeta(start, len(rows)).to_json())


def _leaves_root(names: Sequence[str], rows: list[Row]) -> bytes:
    hasher = LeafHasher()
    leaves = []
    for row in rows:
        signature = tuple((name, f[0], f[1]) for name, f in zip(names, row, strict=True))
        leaves.append(hasher.leaf(signature, [f[2] for f in row]))
    return MerkleTree(leaves).root


def _blocks(chunks: Iterable[bytes | memoryview]) -> Iterator[bytes | bytearray | memoryview]:
    """The chunks, with runs of small ones joined into blocks of about 1 MiB (one hash
    update and one write each, with the GIL released); large ones pass uncopied."""
    pending = bytearray()
    for chunk in chunks:
        if len(chunk) >= _PASS_BYTES:
            if pending:
                yield pending
                pending = bytearray()
            yield chunk
        else:
            pending += chunk
            if len(pending) >= _BLOCK_BYTES:
                yield pending
                pending = bytearray()
    if pending:
        yield pending


def _write_file(path: Path | None, state: SerializedState, durable: bool) -> bytes:
    """Write the shard atomically (tmp, rename) while hashing it; return its SHA-256.
    Without a ``path``, only hash it."""
    h = hashlib.sha256()
    if path is None:
        for block in _blocks(state.chunks()):
            h.update(block)
        return h.digest()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        for block in _blocks(state.chunks()):
            h.update(block)
            handle.write(block)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    return h.digest()


def commit_dataset_shards(
    source: MapDataset | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    *,
    shard_size: int | None = None,
    target_shard_bytes: int = DEFAULT_SHARD_BYTES,
    threads: int | None = None,
    durable: bool = True,
) -> DatasetIndex:
    """Commit ``source`` (a map-style dataset, or a folder: :class:`FolderDataset`) as
    shard files ``shard-NNNNNN.safetensors`` in ``out_dir`` and return its index (also
    written there last, as ``dataset.json``). With ``out_dir=None`` nothing is written:
    the index alone (e.g. to check a local dataset against a committed root).

    ``shard_size`` (a power of two) defaults to the largest one whose shards hold about
    ``target_shard_bytes`` of the first sample's size (at most 4096 samples). For shards
    of samples of 8 KiB or more, ``threads`` workers hash the leaves and hash and write
    the file while the next shard is read (default: 2, or 1 on a single core); smaller
    samples are Python-bound and are done where they are read (threads would only
    contend for the GIL). With
    ``durable`` every file is fsynced. Every sample must have the first one's structure
    (``ValueError`` otherwise). Contiguous CPU tensors are read in place, not copied: a
    dataset must not modify a tensor it returned while the commit runs.
    """
    dataset: MapDataset = FolderDataset(source) if isinstance(source, str | os.PathLike) else source
    size = len(dataset)
    if size == 0:
        raise ValueError("cannot commit an empty dataset (its structure is unknown)")
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    kind, first = raw_fields(dataset[0])
    structure = structure_of(kind, first)
    if shard_size is None:
        sample_bytes = sum(len(f[2]) for f in first.values())
        shard_size = _auto_shard_size(sample_bytes, len(first), size, target_shard_bytes)
    elif not 1 <= shard_size <= MAX_SHARD_SIZE or shard_size & (shard_size - 1):
        raise ValueError(f"shard_size {shard_size} is not a power of two in [1, {MAX_SHARD_SIZE}]")
    elif shard_size * len(first) > MAX_TENSORS:
        raise ValueError(f"shard_size {shard_size} × {len(first)} fields exceeds {MAX_TENSORS}")
    check = _Checker(structure)
    first_row = tuple(first[n] for n in check.names)
    del first
    workers = max(1, threads if threads is not None else min(2, os.cpu_count() or 1))
    roots: list[bytes] = []
    digests: list[bytes] = []
    pending: deque[tuple[Future[bytes] | bytes, Future[bytes] | bytes]] = deque()

    def collect() -> None:
        root, digest = pending.popleft()
        roots.append(root if isinstance(root, bytes) else root.result())
        digests.append(digest if isinstance(digest, bytes) else digest.result())

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
        for start in range(0, size, shard_size):
            stop = min(start + shard_size, size)
            rows = [first_row] if start == 0 else []
            rows += [check(dataset[i], i) for i in range(start + len(rows), stop)]
            state = _lay_out(start, check.names, rows)
            path = None if out is None else out / shard_file_name(start // shard_size)
            if state.data_size >= _THREAD_BYTES * len(rows):
                digest = pool.submit(_write_file, path, state, durable)
                pending.append((pool.submit(_leaves_root, check.names, rows), digest))
            else:  # small samples: Python-bound, a thread would only contend for the GIL
                pending.append((_leaves_root(check.names, rows), _write_file(path, state, durable)))
            del rows, state
            while len(pending) >= workers:
                collect()
        while pending:
            collect()
    shards = tuple(
        ShardRef(n * shard_size, min(shard_size, size - n * shard_size), root, digest)
        for n, (root, digest) in enumerate(zip(roots, digests, strict=True))
    )
    index = DatasetIndex(size, MerkleTree(roots).root, shard_size, structure, shards)
    if out is not None:
        tmp = out / f".{DATASET_INDEX_FILE}.tmp"
        tmp.write_bytes(index.to_bytes())
        os.replace(tmp, out / DATASET_INDEX_FILE)
    return index


# --------------------------------------------------------------------------- checks
def check_index(index: DatasetIndex, commitment: DatasetCommitment | None = None) -> None:
    """Check that the shard roots fold to the index's root and the counts add up to its
    size (and, given the spec's ``commitment``, that root, size and leaf rule are its).
    Raises :class:`MembershipError`."""
    held = sum(s.count for s in index.shards)
    if held != index.size:
        raise MembershipError(f"dataset shards hold {held} samples, the index says {index.size}")
    if MerkleTree([s.root for s in index.shards]).root != index.root:
        raise MembershipError("dataset shard roots do not fold to the dataset root")
    own = index.commitment
    if commitment is not None and (commitment.root, commitment.size, commitment.leaf_rule) != (
        own.root,
        own.size,
        own.leaf_rule,
    ):
        raise MembershipError(
            f"dataset index (root 0x{index.root.hex()}, {index.size} samples) is not the "
            f"committed dataset (root 0x{commitment.root.hex()}, {commitment.size} samples)"
        )


def shards_for(index: DatasetIndex, indices: Iterable[int]) -> list[int]:
    """The sorted shard numbers holding the samples ``indices``."""
    numbers: set[int] = set()
    for i in indices:
        if not 0 <= i < index.size:
            raise MembershipError(f"sample {i} outside the dataset of {index.size}")
        numbers.add(i // index.shard_size)
    return sorted(numbers)


def _shard_body(data: bytes) -> memoryview:
    (header_size,) = struct.unpack("<Q", data[:8])
    return memoryview(data)[8 + header_size :]


def verify_shard(index: DatasetIndex, number: int, data: bytes) -> list[bytes]:
    """Check shard ``number``'s bytes against ``index`` and return its samples' leaves:
    the bytes must hash to the shard's SHA-256 (:class:`IntegrityError`), hold exactly
    its samples' fields with the declared dtypes (:class:`FormatError` naming the field),
    and their leaves must fold to the shard's root (:class:`MembershipError`)."""
    what = f"dataset shard {number}"
    if not 0 <= number < len(index.shards):
        raise MembershipError(f"no shard {number} in a dataset of {len(index.shards)} shards")
    ref = index.shards[number]
    data = bytes(data)
    got = hashlib.sha256(data).digest()
    if got != ref.sha256:
        raise IntegrityError(
            f"{what}: bytes hash to 0x{got.hex()}, the index says 0x{ref.sha256.hex()}"
        )
    tensors, metadata = parse_header(data, what)
    layout = check_shard_header(index, number, tensors, metadata, what)
    body = _shard_body(data)
    names = [f.name for f in index.structure.leaf_order]
    hasher = LeafHasher()
    leaves = []
    for infos in layout:
        signature = tuple(
            (n, DTYPE_OF_CODE[i.dtype], i.shape) for n, i in zip(names, infos, strict=True)
        )
        leaves.append(hasher.leaf(signature, (body[i.start : i.end] for i in infos)))
    if MerkleTree(leaves).root != ref.root:
        raise MembershipError(f"{what}: its samples' leaves do not fold to the shard root")
    return leaves


def membership_proof(
    index: DatasetIndex, sample: int, shard_leaves: Sequence[bytes], top: MerkleTree | None = None
) -> list[bytes]:
    """The membership path of ``sample`` to the dataset root (as :meth:`MerkleTree.proof`
    of the whole dataset gives it), from the leaves of its shard (:func:`verify_shard`)
    and the tree over the shard roots (``top``, built when not given)."""
    number = index.shard_of(sample)
    ref = index.shards[number]
    if len(shard_leaves) != ref.count:
        raise MembershipError(f"shard {number} has {ref.count} leaves, got {len(shard_leaves)}")
    if top is None:
        top = MerkleTree([s.root for s in index.shards])
    return MerkleTree(shard_leaves).proof(sample - ref.start) + top.proof(number)


# --------------------------------------------------------------------------- loading
class DirectoryShards:
    """``shard_source`` reading the shard files of a committed dataset folder (as
    :func:`commit_dataset_shards` writes them); the bytes are checked by the reader."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def __call__(self, number: int) -> bytes:
        return (self.folder / shard_file_name(number)).read_bytes()

    def index(self) -> DatasetIndex:
        """The folder's index (``dataset.json``), parsed."""
        return DatasetIndex.from_bytes((self.folder / DATASET_INDEX_FILE).read_bytes())


class ShardDataset(torch.utils.data.Dataset[Sample]):
    """A map-style dataset over committed shards: sample ``i`` in its original structure
    (lists as tuples, numbers as 0-d tensors).

    ``shard_source(number)`` returns a shard's bytes; shards load lazily and the last
    ``cache_size`` stay decoded. With ``verify`` (the default) the index is checked once
    (:func:`check_index`) and every shard loaded is checked (:func:`verify_shard`)
    before use; pass ``verify=False`` only when the source has done both already.
    """

    def __init__(
        self,
        index: DatasetIndex,
        shard_source: Callable[[int], bytes],
        *,
        cache_size: int = 4,
        verify: bool = True,
    ) -> None:
        if verify:
            check_index(index)
        self.index = index
        self.source = shard_source
        self.verify = verify
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self._names = [f.name for f in index.structure.fields]

    def __len__(self) -> int:
        return self.index.size

    def shard(self, number: int) -> dict[str, torch.Tensor]:
        """The decoded tensors of shard ``number`` (loaded, checked and cached)."""
        with self._lock:
            cached = self._cache.get(number)
            if cached is not None:
                self._cache.move_to_end(number)
                return cached
        data = self.source(number)
        if self.verify:
            verify_shard(self.index, number, data)
        else:
            check_shard_header(self.index, number, *parse_header(data, f"shard {number}"))
        from safetensors.torch import load

        try:
            tensors = load(bytes(data))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed artefact
            raise FormatError(f"dataset shard {number}", f"not valid safetensors ({exc})") from None
        with self._lock:
            self._cache[number] = tensors
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return tensors

    def __getitem__(self, index: int) -> Sample:
        if not isinstance(index, int | np.integer) or not 0 <= index < self.index.size:
            raise IndexError(f"sample {index} outside the dataset of {self.index.size}")
        number = int(index) // self.index.shard_size
        tensors = self.shard(number)
        offset = int(index) - self.index.shards[number].start
        fields = {n: tensors[shard_tensor_name(offset, n)] for n in self._names}
        return rebuild_sample(self.index.structure, fields)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
