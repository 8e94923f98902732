"""Named errors of the proof engine; each carries a stable reason code."""

from __future__ import annotations

from pol_chain.errors import PolchainError

__all__ = [
    "IntegrityError",
    "MalformedArtefactError",
    "MembershipError",
    "ProofError",
    "RecorderError",
    "ResumeError",
    "SpecError",
]


class ProofError(PolchainError):
    """Base class of every proof-engine error; ``code`` is the report's reason code.

    A :class:`~pol_chain.errors.PolchainError`, so the CLI prints it as one line.
    """

    code = "proof_error"


class SpecError(ProofError, ValueError):
    """The run spec is not well-formed (missing fields, non-canonical, unknown task)."""

    code = "spec_invalid"


class MalformedArtefactError(ProofError, ValueError):
    """An artefact is not valid safetensors / canonical JSON of the expected shape."""

    code = "malformed_artefact"

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"malformed artefact {what}: {detail}")
        self.what = what
        self.detail = detail


class IntegrityError(ProofError):
    """An artefact does not hash to its committed digest, or a leaf does not match."""

    code = "artefact_digest"


class MembershipError(ProofError):
    """A data index does not open to the committed dataset root."""

    code = "membership"


class RecorderError(ProofError, RuntimeError):
    """The recorder's background writer or a subscriber failed."""

    code = "recorder"


class ResumeError(ProofError, RuntimeError):
    """A proof directory cannot be resumed (spec, run or seed differ)."""

    code = "resume"
