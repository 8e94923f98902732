"""The verifier policy from settings: engine defaults, then what the settings set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.config import Settings

if TYPE_CHECKING:
    from pol_chain.proof.policy import Policy

__all__ = ["CALIBRATION_FILE", "load_calibration", "policy_from", "save_calibration"]

CALIBRATION_FILE = "calibration.json"


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


def load_calibration(home: Path) -> dict[str, dict[str, float]]:
    """Calibrated thresholds by device pair (``"cuda->cpu": {"rho", "c"}``) saved by
    ``polchain calibrate``; empty when there are none or the file is unreadable."""
    import json

    try:
        data = json.loads((home / CALIBRATION_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for pair, values in data.items():
        if isinstance(values, dict) and {"rho", "c"} <= set(values):
            try:
                out[str(pair)] = {"rho": float(values["rho"]), "c": float(values["c"])}
            except (TypeError, ValueError):
                continue
    return out


def save_calibration(home: Path, pair: str, rho: float, c: float) -> Path:
    """Record the thresholds calibrated for replaying ``pair`` (``"cuda->cpu"``)."""
    import json

    data = load_calibration(home)
    data[pair] = {"c": c, "rho": rho}
    home.mkdir(parents=True, exist_ok=True)
    path = home / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
