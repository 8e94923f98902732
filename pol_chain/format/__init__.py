"""The pol_chain formats: one typed home for every artefact and its references.

Torch-free and chain-free: frozen records, each with one ``to_bytes``/``from_bytes`` (or
``to_json``/``from_json`` for the parts of a larger record) and a format version in
:mod:`.names`. Parsing is validation: untrusted bytes are bounded (size, nesting depth,
counts, ranges) and any violation is a :class:`FormatError` naming the field.

- :mod:`.spec` — :class:`TaskSpec`, :class:`InitRule`, :class:`DatasetCommitment`.
- :mod:`.manifest` — proof directory layout, :class:`Manifest` (local and published forms).
- :mod:`.segment` — :class:`Segment`, :class:`SegmentStep`.
- :mod:`.checkpoint` — :class:`CheckpointMeta`, model metadata, the safetensors header check.
- :mod:`.report` — :class:`Report`, :class:`SegmentResult`, :class:`Check`, :class:`Metrics`.
- :mod:`.reasons` — :class:`Reason`, the verdict's reason codes.
- :mod:`.binding` — :class:`RunBinding`, a proof directory's chain facts.
- :mod:`.dataset` — :class:`DatasetIndex` (a committed dataset), its shards and samples.
- :mod:`.rounds` — distributed training: :class:`DistributedPlan`, :class:`Submissions`,
  :class:`RoundRecord`, :class:`RoundsManifest` (``docs/distributed.md``).
"""

from pol_chain.format._json import (
    JsonObject,
    canonical_json,
    from_hex,
    parse_digest,
    parse_json,
    to_hex,
)
from pol_chain.format.binding import BINDING_FILE, NotAProofDir, RunBinding
from pol_chain.format.bundle import (
    BundleManifest,
    CodeBundle,
    Requirement,
    read_bundle,
    write_bundle,
)
from pol_chain.format.checkpoint import (
    MODEL_META,
    CheckpointMeta,
    TensorInfo,
    check_model_meta,
    metadata_entry,
    model_meta,
    parse_header,
    polchain_meta_of,
)
from pol_chain.format.dataset import (
    DATASET_INDEX_FILE,
    FIELD_DTYPES,
    DatasetIndex,
    FieldSpec,
    SampleKind,
    SampleStructure,
    ShardMeta,
    ShardRef,
    check_shard_header,
    field_names,
    shard_file_name,
    shard_tensor_name,
)
from pol_chain.format.errors import FormatError, SpecError, UnknownFormat
from pol_chain.format.manifest import (
    BUNDLE_FILE,
    DATA_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    PARENT_FILE,
    RECORDER_LOCK_FILE,
    SPEC_FILE,
    ArtefactRef,
    FinalModel,
    Manifest,
    ManifestEntry,
    checkpoint_name,
    require_published,
    segment_name,
)
from pol_chain.format.names import (
    CHECKPOINT_FORMAT,
    DATASET_FORMAT,
    MANIFEST_FORMAT,
    MODEL_FORMAT,
    REPORT_FORMAT,
    SAMPLE_LEAF_RULE,
    SEGMENT_FORMAT,
    SEGMENT_FORMAT_V2,
    SHARD_FORMAT,
    SPEC_FORMAT,
    SPEC_FORMAT_V1,
)
from pol_chain.format.reasons import Reason
from pol_chain.format.report import Check, Metrics, Report, SegmentResult, Thresholds
from pol_chain.format.rounds import (
    PLAN_KEY,
    DistributedPlan,
    Draw,
    Hello,
    RoundRecord,
    RoundsEntry,
    RoundsManifest,
    Submissions,
    WorkerSubmission,
    WorkerVerdict,
    parse_any_manifest,
)
from pol_chain.format.segment import Segment, SegmentStep
from pol_chain.format.spec import (
    ACCUMULATION,
    DatasetCommitment,
    InitRule,
    Locator,
    TaskSpec,
    engine_config_problem,
)

__all__ = [
    "ACCUMULATION",
    "BINDING_FILE",
    "BUNDLE_FILE",
    "DATA_DIR",
    "CHECKPOINT_FORMAT",
    "DATASET_FORMAT",
    "DATASET_INDEX_FILE",
    "FIELD_DTYPES",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MODEL_FILE",
    "PARENT_FILE",
    "RECORDER_LOCK_FILE",
    "PLAN_KEY",
    "MODEL_FORMAT",
    "MODEL_META",
    "REPORT_FORMAT",
    "SAMPLE_LEAF_RULE",
    "SEGMENT_FORMAT",
    "SEGMENT_FORMAT_V2",
    "SHARD_FORMAT",
    "SPEC_FILE",
    "SPEC_FORMAT",
    "SPEC_FORMAT_V1",
    "ArtefactRef",
    "BundleManifest",
    "Check",
    "CheckpointMeta",
    "CodeBundle",
    "DatasetCommitment",
    "DatasetIndex",
    "FieldSpec",
    "DistributedPlan",
    "Draw",
    "FinalModel",
    "FormatError",
    "Hello",
    "InitRule",
    "JsonObject",
    "Locator",
    "Manifest",
    "ManifestEntry",
    "Metrics",
    "NotAProofDir",
    "Reason",
    "Requirement",
    "Report",
    "SampleKind",
    "SampleStructure",
    "ShardMeta",
    "ShardRef",
    "RoundRecord",
    "RoundsEntry",
    "RoundsManifest",
    "RunBinding",
    "SegmentResult",
    "Segment",
    "SegmentStep",
    "SpecError",
    "Submissions",
    "TaskSpec",
    "TensorInfo",
    "Thresholds",
    "UnknownFormat",
    "WorkerSubmission",
    "WorkerVerdict",
    "canonical_json",
    "check_model_meta",
    "check_shard_header",
    "checkpoint_name",
    "field_names",
    "from_hex",
    "metadata_entry",
    "model_meta",
    "parse_any_manifest",
    "parse_digest",
    "parse_header",
    "parse_json",
    "read_bundle",
    "polchain_meta_of",
    "require_published",
    "segment_name",
    "shard_file_name",
    "shard_tensor_name",
    "engine_config_problem",
    "to_hex",
    "write_bundle",
]
