"""Content-addressed artefact store (knows nothing of PyTorch or chains).

Layers: :mod:`.cid` (CIDs, varints) → :mod:`.unixfs` (dag-pb/UnixFS encoding, balanced
tree builder) → :mod:`.car` (CARv1 I/O) → :mod:`.local` (:class:`LocalStore`, the embedded
store) and :mod:`.kubo` (:class:`KuboClient`, Kubo RPC over httpx) → :mod:`.replicated`
(:class:`ReplicatedStore`: local first, persistent push queue to Kubo). :class:`ArtefactStore`
is the interface the CLI uses. CIDs follow the UnixFS 2025 profile (CIDv1, raw leaves,
1 MiB chunks, 1024-wide balanced tree, SHA-256), identical to ``ipfs-car pack --no-wrap``.
"""

from __future__ import annotations

from .base import ArtefactStore, Digest
from .cid import CID
from .errors import (
    BlockCorrupted,
    BlockNotFound,
    CarError,
    CidError,
    ContentMismatch,
    IntegrityError,
    KuboError,
    KuboUnreachable,
    NotAFile,
    StoreError,
)
from .kubo import KuboClient
from .local import GcReport, LocalStore, VerifyReport
from .replicated import DrainReport, PushQueue, QueueEntry, ReplicatedStore, open_store

__all__ = [
    "CID",
    "ArtefactStore",
    "BlockCorrupted",
    "BlockNotFound",
    "CarError",
    "CidError",
    "ContentMismatch",
    "Digest",
    "DrainReport",
    "GcReport",
    "IntegrityError",
    "KuboClient",
    "KuboError",
    "KuboUnreachable",
    "LocalStore",
    "NotAFile",
    "PushQueue",
    "QueueEntry",
    "ReplicatedStore",
    "StoreError",
    "VerifyReport",
    "open_store",
]
