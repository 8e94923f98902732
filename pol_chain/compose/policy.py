"""The verifier policy from settings: engine defaults, then what the settings set."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pol_chain.config import Settings

if TYPE_CHECKING:
    from pol_chain.proof.policy import Policy

__all__ = ["policy_from"]


def policy_from(settings: Settings, *, full: bool = False) -> Policy:
    """The engine's :class:`~pol_chain.proof.policy.Policy` with every policy setting that
    is set (0 included) applied; ``full`` replays every segment."""
    from pol_chain.proof.policy import Policy

    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("q", settings.policy_q),
            ("m", settings.policy_m),
            ("rho", settings.policy_rho),
            ("c", settings.policy_cos),
        )
        if value is not None
    }
    if full:
        changes.update(full_below=10**9, max_replay_fraction=1.0)
    return replace(Policy(), **changes)
