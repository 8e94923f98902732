"""The root of pol_chain's expected errors.

Every layer raises its own named errors; the ones a user can cause or fix derive from
:class:`PolchainError`, so the CLI prints them as one line (plus a hint) and exits with
a fixed code instead of a traceback.
"""

from __future__ import annotations

__all__ = ["PolchainError"]


class PolchainError(Exception):
    """An expected failure with a one-line message and an optional hint for the user."""

    hint: str = ""
    exit_code: int = 1

    def __init__(self, message: str = "", *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint
