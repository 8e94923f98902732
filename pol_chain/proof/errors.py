"""Named errors of the proof engine; each carries a stable reason code.

Malformed artefacts and ill-formed specs are format errors
(:class:`pol_chain.format.FormatError`, :class:`pol_chain.format.SpecError`); the names
below re-export them so engine callers need one import.
"""

from __future__ import annotations

from typing import Literal

from pol_chain.errors import PolchainError
from pol_chain.format.errors import FormatError, SpecError
from pol_chain.format.reasons import Reason

__all__ = [
    "ArtefactUnavailable",
    "CannotVerify",
    "CodeFailure",
    "IntegrityError",
    "MalformedArtefactError",
    "MembershipError",
    "ProofError",
    "RecorderError",
    "ResumeError",
    "SpecError",
    "TaskErrorKind",
    "missing_module",
    "task_error_kind",
]

MalformedArtefactError = FormatError
"""An artefact is not valid safetensors / canonical JSON of its format."""


class ProofError(PolchainError):
    """Base class of the proof engine's own errors; :attr:`code` is the reason code.

    A :class:`~pol_chain.errors.PolchainError`, so the CLI prints it as one line.
    """

    reason: Reason | None = None

    @property
    def code(self) -> str:
        """The report's reason code (``proof_error`` for errors that are not a verdict)."""
        return self.reason.value if self.reason is not None else "proof_error"


class IntegrityError(ProofError):
    """An artefact does not hash to its committed digest, or a leaf does not match."""

    reason = Reason.ARTEFACT_DIGEST


class MembershipError(ProofError):
    """A data index does not open to the committed dataset root."""

    reason = Reason.MEMBERSHIP


class RecorderError(ProofError, RuntimeError):
    """The recorder's background writer or a subscriber failed."""


class ResumeError(ProofError, RuntimeError):
    """A proof directory cannot be resumed (spec, run or seed differ)."""


class CannotVerify(ProofError):
    """Verification could not be completed for a reason that is not the trainer's to blame
    (this verifier lacks the task's code or the parent model, its device cannot run it …):
    no verdict, and a verifier must not vote on it (docs/protocol.md §4)."""


class ArtefactUnavailable(CannotVerify):
    """An artefact the proof commits to cannot be had from the source right now; whether
    that is the trainer's fault depends on the availability deadline, which the caller
    applies."""

    def __init__(self, what: str, digest: bytes) -> None:
        super().__init__(f"{what} (sha256 0x{digest.hex()}) is not available")
        self.what = what
        self.digest = digest


class CodeFailure(ProofError):
    """The proof's committed code fails the same way on every try (or writes malformed
    results): a verdict against the run, not the verifier's trouble."""

    reason = Reason.CODE_FAILURE


TaskErrorKind = Literal["memory", "import", "format", "code"]
"""Whose trouble an exception of a task's code is: this machine's (``memory``: it ran out;
``import``: it lacks a library), the proof's data (``format``), or the code's own."""


def missing_module(exc: BaseException) -> ImportError | None:
    """The ImportError behind ``exc`` (raised, or wrapped by whoever caught it), if any."""
    current: BaseException | None = exc
    for _ in range(16):
        if current is None:
            break
        if isinstance(current, ImportError):
            return current
        current = current.__cause__ or current.__context__
    return None


def task_error_kind(exc: BaseException) -> TaskErrorKind:
    """Classify an exception raised by a task's code (docs/protocol.md §4: only what the
    code does the same way on every try counts against the run)."""
    text = str(exc)[:2000]
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text:
        return "memory"
    if missing_module(exc) is not None:
        return "import"
    if isinstance(exc, FormatError):
        return "format"
    return "code"
