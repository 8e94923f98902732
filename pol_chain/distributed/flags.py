"""The ``--byzantine RANK=BEHAVIOUR`` flag (torch-free, so the CLI checks it at once);
the behaviours themselves are :mod:`pol_chain.distributed.behaviours`."""

from __future__ import annotations

from collections.abc import Sequence

from pol_chain.errors import PolchainError

__all__ = ["BEHAVIOURS", "UnknownBehaviour", "parse_byzantine"]

BEHAVIOURS = (
    "honest",
    "random",
    "sign_flip",
    "scale",
    "lazy",
    "stale",
    "copier",
    "off_shard",
    "slow",
)


class UnknownBehaviour(PolchainError):
    """A ``--byzantine`` value names no behaviour or no worker."""


def parse_byzantine(items: Sequence[str], workers: int) -> dict[int, tuple[str, ...]]:
    """``["2=sign_flip", "3=lazy,honest"]`` → ``{2: ("sign_flip",), 3: ("lazy", "honest")}``."""
    out: dict[int, tuple[str, ...]] = {}
    for item in items:
        rank_text, sep, names = item.partition("=")
        if not sep or not rank_text.strip().isdigit():
            raise UnknownBehaviour(
                f"--byzantine takes RANK=BEHAVIOUR, got {item!r}",
                hint=f"e.g. --byzantine 2=sign_flip (behaviours: {', '.join(BEHAVIOURS)})",
            )
        rank = int(rank_text)
        if not 1 <= rank <= workers:
            raise UnknownBehaviour(f"--byzantine {item}: workers are ranks 1..{workers}")
        chosen = tuple(n.strip() for n in names.split(",") if n.strip())
        bad = [n for n in chosen if n not in BEHAVIOURS]
        if not chosen or bad:
            raise UnknownBehaviour(
                f"unknown behaviour {bad[0] if bad else names!r}",
                hint=f"use one of {', '.join(BEHAVIOURS)}",
            )
        out[rank] = chosen
    return out
