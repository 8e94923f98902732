"""Errors of the format layer: bytes that do not follow their format."""

from __future__ import annotations

from pol_chain.errors import PolchainError
from pol_chain.format.reasons import Reason

__all__ = ["FormatError", "SpecError", "UnknownFormat"]


class FormatError(PolchainError, ValueError):
    """An artefact is not valid canonical JSON / safetensors of its format.

    ``what`` names the artefact, ``field`` the offending field (dotted path) when one is
    to blame; :attr:`reason` is the report's reason code.
    """

    reason: Reason = Reason.MALFORMED_ARTEFACT

    def __init__(self, what: str, detail: str, *, field: str | None = None) -> None:
        where = f" field {field!r}" if field else ""
        super().__init__(f"malformed artefact {what}:{where} {detail}")
        self.what = what
        self.field = field
        self.detail = detail

    @property
    def code(self) -> str:
        """The reason code as a string (what reports carry)."""
        return self.reason.value


class UnknownFormat(FormatError):
    """An artefact names a format (or version) this parser does not read."""

    def __init__(self, what: str, found: object, accepted: tuple[str, ...]) -> None:
        names = " or ".join(repr(a) for a in accepted)
        super().__init__(
            what,
            f"format {found!r} is not {names} (written by another pol_chain version?)",
            field="format",
        )
        self.found = found
        self.accepted = accepted


class SpecError(FormatError):
    """The run spec is not well-formed (missing fields, non-canonical, unknown task)."""

    reason = Reason.SPEC_INVALID

    def __init__(self, detail: str, *, field: str | None = None, what: str = "spec") -> None:
        super().__init__(what, detail, field=field)
        # keep the message short and human: "spec: ..." rather than "malformed artefact"
        self.args = (f"{what}:{f' field {field!r}' if field else ''} {detail}",)
