"""pol_chain proof engine: record a proof-of-learning while training, replay and verify it.

Layers (public facade here; modules below are small and private in spirit):

- the records (spec, manifest, segment, checkpoint metadata, report) live in
  :mod:`pol_chain.format`; :mod:`spec` builds specs, :mod:`task` is the task interface.
- :mod:`seeds` — purpose sub-seeds from the run seed; :mod:`engine` — training step,
  data order, full-state capture/restore.
- :mod:`dataset` — per-sample leaves, Merkle root, membership.
- :mod:`shards` — datasets as committed artefacts: shards, index checks, loading.
- :mod:`serialization` — deterministic safetensors bytes and safe loading.
- :mod:`recorder` / :mod:`loop` — the recorder hooks and the ready loop :func:`train`.
- :mod:`manifest` — proof directory layout, manifest, :class:`ArtefactSource`.
- :mod:`policy`, :mod:`verifier`, :mod:`report`, :mod:`calibration` — challenge policy,
  replay and verification, the report, honest-error calibration.

This package never imports chain or storage code (web3, httpx, ledger, store).
"""

from pol_chain.format import DatasetCommitment, Manifest, TaskSpec
from pol_chain.proof.dataset import (
    LEAF_RULE,
    MerkleTree,
    commit_dataset,
    sample_leaf,
    verify_membership,
)
from pol_chain.proof.errors import (
    IntegrityError,
    MalformedArtefactError,
    MembershipError,
    ProofError,
    RecorderError,
    ResumeError,
    SpecError,
)
from pol_chain.proof.loop import TrainResult, build_bundle, model_digest_of, train
from pol_chain.proof.manifest import (
    ArtefactSource,
    DirectorySource,
    ProofStatus,
    inspect_proof,
    read_manifest,
)
from pol_chain.proof.recorder import CheckpointRecord, FinalRecord, Recorder
from pol_chain.proof.shards import (
    DirectoryShards,
    FolderDataset,
    ShardDataset,
    check_index,
    commit_dataset_shards,
    membership_proof,
    shards_for,
    verify_shard,
)
from pol_chain.proof.spec import make_spec
from pol_chain.proof.task import TaskBundle

__all__ = [
    "LEAF_RULE",
    "ArtefactSource",
    "CheckpointRecord",
    "DatasetCommitment",
    "DirectoryShards",
    "DirectorySource",
    "FinalRecord",
    "FolderDataset",
    "IntegrityError",
    "MalformedArtefactError",
    "Manifest",
    "MembershipError",
    "MerkleTree",
    "ProofError",
    "ProofStatus",
    "Recorder",
    "RecorderError",
    "ResumeError",
    "ShardDataset",
    "SpecError",
    "TaskBundle",
    "TaskSpec",
    "TrainResult",
    "build_bundle",
    "check_index",
    "commit_dataset",
    "commit_dataset_shards",
    "inspect_proof",
    "make_spec",
    "membership_proof",
    "model_digest_of",
    "read_manifest",
    "sample_leaf",
    "shards_for",
    "train",
    "verify_membership",
    "verify_shard",
]
