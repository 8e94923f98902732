"""What every command shares: the global options' overrides, the settings they give,
and the option declarations several commands use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from pol_chain.config import Settings

__all__ = [
    "AccountOpt",
    "ChallengeIdArg",
    "CosOpt",
    "JsonOpt",
    "RandomOpt",
    "RhoOpt",
    "TopQOpt",
    "bytes32_option",
    "current_settings",
    "policy_overrides",
    "state",
]


@dataclass
class _State:
    """Set by the root callback (``--home``, ``--rpc-url`` …) before a command runs."""

    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


state = _State()


def current_settings(**overrides: Any) -> Settings:
    """The settings for this invocation: config file < environment < global options <
    ``overrides`` (the command's own flags; None means not given)."""
    from pol_chain.config import load_settings

    return load_settings(**{**state.overrides, **overrides})


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
AccountOpt = Annotated[
    int | None,
    typer.Option("--account", "-a", help="Anvil dev account index (embedded chain only)."),
]
RhoOpt = Annotated[
    float | None, typer.Option("--rho", help="Max normalized error per segment (policy ρ).")
]
CosOpt = Annotated[
    float | None, typer.Option("--cos", help="Min directional cosine per segment (policy c).")
]
RandomOpt = Annotated[
    int | None,
    typer.Option("--random", "-m", help="Random segments per challenge (policy m, 0: none)."),
]
TopQOpt = Annotated[int | None, typer.Option("--top-q", help="Top-Q segments per epoch.")]


def bytes32_option(value: str | None) -> str | None:
    """Check a ``0x`` + 64 hex option (a seed, a digest) at parse time."""
    if value is None:
        return None
    from pol_chain.format import parse_digest

    try:
        parse_digest(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


ChallengeIdArg = Annotated[
    int, typer.Argument(help="Challenge id (counting from 1).", min=1, max=2**64 - 1)
]


def policy_overrides(
    rho: float | None, cos: float | None, m: int | None, q: int | None
) -> dict[str, Any]:
    """Settings overrides from the policy flags (only those given)."""
    return {
        key: value
        for key, value in (
            ("policy_rho", rho),
            ("policy_cos", cos),
            ("policy_m", m),
            ("policy_q", q),
        )
        if value is not None
    }
