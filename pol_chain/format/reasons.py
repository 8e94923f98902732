"""Reason codes of a verdict, and whose fault each one is (``docs/protocol.md`` §5).

Every reason a report can carry is the *trainer's* to blame: a verifier votes *fail*
only for these. Troubles of the verifier's own (a missing library, local store damage,
an RPC that drops logs) are not reasons: they give no vote and a retry.
"""

from __future__ import annotations

import enum

__all__ = ["V1_REASONS", "Reason"]


class Reason(enum.StrEnum):
    """Why a proof fails verification (the report's ``reasons``)."""

    SPEC_INVALID = "spec_invalid"
    MALFORMED_ARTEFACT = "malformed_artefact"
    MISSING_ARTEFACT = "missing_artefact"
    ARTEFACT_DIGEST = "artefact_digest"
    LEAF_MISMATCH = "leaf_mismatch"
    ACCUMULATOR_MISMATCH = "accumulator_mismatch"
    STEP_MISMATCH = "step_mismatch"
    INIT_MISMATCH = "init_mismatch"
    DATA_ORDER = "data_order"
    MEMBERSHIP = "membership"
    STATE_STRUCTURE = "state_structure"
    REPLAY_DISTANCE = "replay_distance"
    DIRECTION = "direction"
    MODEL_DIGEST_MISMATCH = "model_digest_mismatch"
    CODE_FAILURE = "code_failure"
    LINEAGE = "lineage"

    @property
    def description(self) -> str:
        """One line for people."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[Reason, str] = {
    Reason.SPEC_INVALID: "the run spec is ill-formed or names a task that cannot run",
    Reason.MALFORMED_ARTEFACT: "an artefact is not valid data of its format",
    Reason.MISSING_ARTEFACT: "an artefact was still unavailable after the deadline",
    Reason.ARTEFACT_DIGEST: "an artefact does not hash to its committed digest",
    Reason.LEAF_MISMATCH: "a leaf differs from the committed leaf",
    Reason.ACCUMULATOR_MISMATCH: "the leaves do not fold to the committed accumulator",
    Reason.STEP_MISMATCH: "checkpoint steps do not follow the spec",
    Reason.INIT_MISMATCH: "W0 is not the run seed's init (or the parent model)",
    Reason.DATA_ORDER: "a batch or seed is not the run seed's",
    Reason.MEMBERSHIP: "a data index does not open to the committed dataset root",
    Reason.STATE_STRUCTURE: "a replayed state has other tensors than the checkpoint",
    Reason.REPLAY_DISTANCE: "the replay lands too far from the next checkpoint",
    Reason.DIRECTION: "the replayed update points elsewhere than the claimed one",
    Reason.MODEL_DIGEST_MISMATCH: "the last checkpoint is not the claimed model",
    Reason.CODE_FAILURE: "the committed code bundle fails the same way on every try",
    Reason.LINEAGE: "the parent is not a claim finalized before the run, or the run claims it",
}

V1_REASONS = frozenset(r for r in Reason if r not in (Reason.CODE_FAILURE, Reason.LINEAGE))
"""The reasons a ``polchain-report-v1`` may carry."""
