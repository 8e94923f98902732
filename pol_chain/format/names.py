"""Every name and domain string of the pol_chain formats, spelled once.

Artefact formats carry their name in a ``format`` field (JSON) or in the ``polchain``
metadata entry (safetensors); hashing domains prefix what they hash so that one kind of
digest can never be mistaken for another. A new field is a new version: the name changes
and the parser of the old name either still reads the old bytes or refuses them with a
message that says which version it expected (see ``docs/protocol.md``).
"""

from __future__ import annotations

__all__ = [
    "BINDING_FORMAT",
    "BUNDLE_FORMAT",
    "CHALLENGE_DOMAIN",
    "CHECKPOINT_FORMAT",
    "DATASET_FORMAT",
    "DRAW_DOMAIN",
    "HELLO_FORMAT",
    "MANIFEST_FORMAT",
    "MODEL_FORMAT",
    "PLAN_FORMAT",
    "REPORT_FORMAT",
    "REPORT_FORMAT_V1",
    "ROUND_FORMAT",
    "ROUNDS_MANIFEST_FORMAT",
    "SAMPLE_LEAF_RULE",
    "SANDBOX_FORMAT",
    "SEED_DOMAIN",
    "SEGMENT_FORMAT",
    "SEGMENT_FORMAT_V2",
    "SHARD_FORMAT",
    "SPEC_FORMAT",
    "SPEC_FORMAT_V1",
    "SUBMISSIONS_FORMAT",
]

SPEC_FORMAT = "polchain-spec-v2"
"""Specs with a code bundle, dataset index and parent locators (what pol_chain writes)."""
SPEC_FORMAT_V1 = "polchain-spec-v1"
"""Specs with the entry module's source digest (read, never written)."""
MANIFEST_FORMAT = "polchain-manifest-v1"
SEGMENT_FORMAT = "polchain-segment-v1"
SEGMENT_FORMAT_V2 = "polchain-segment-v2"
"""Segments with several micro-batches per step (gradient accumulation)."""
CHECKPOINT_FORMAT = "polchain-checkpoint-v1"
MODEL_FORMAT = "polchain-model-v1"
REPORT_FORMAT = "polchain-report-v2"
"""Reports; v2 adds the reasons ``code_failure`` and ``lineage``."""
REPORT_FORMAT_V1 = "polchain-report-v1"
BINDING_FORMAT = "polchain-binding-v1"
BUNDLE_FORMAT = "polchain-bundle-v1"
"""The manifest inside a code bundle."""
SANDBOX_FORMAT = "polchain-sandbox-v1"
"""Requests and statuses crossing the sandbox boundary."""
DATASET_FORMAT = "polchain-dataset-v1"
"""A committed dataset's index (canonical JSON): root, size, structure, shards."""
SHARD_FORMAT = "polchain-shard-v1"
"""One shard of a committed dataset (safetensors metadata)."""

# distributed training across untrusted workers (docs/distributed.md)
PLAN_FORMAT = "polchain-distributed-plan-v1"
HELLO_FORMAT = "polchain-distributed-hello-v1"
SUBMISSIONS_FORMAT = "polchain-submissions-v1"
ROUND_FORMAT = "polchain-round-v1"
ROUNDS_MANIFEST_FORMAT = "polchain-rounds-manifest-v1"

SAMPLE_LEAF_RULE = "polchain-sample-v1"
"""Per-sample dataset leaf rule (the spec's ``dataset.leaf_rule``)."""

SEED_DOMAIN = b"polchain-seed-v1\x00"
"""Domain of the purpose sub-seeds derived from a run seed."""

CHALLENGE_DOMAIN = b"polchain-challenge-v1\x00"
"""Domain of the random segment draw from a challenge seed."""

DRAW_DOMAIN = b"polchain-draw-v1\x00"
"""Domain of a distributed round's draw of the workers to replay."""
