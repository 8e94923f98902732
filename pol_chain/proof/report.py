"""Verification report: canonical JSON (digest = SHA-256 of it) and a PNG plot.

Shape (``format = "polchain-report-v1"``)::

    {"bitwise_identical": bool, "challenge_seed": "0x..", "checks": {name: {"ok", "detail"}},
     "environment": {...}, "finalized": bool, "format", "last_index", "model_digest": "0x.."|null,
     "policy": {k, q, m, rho, c, max_replay_fraction, full_below}, "reasons": [codes],
     "run_id", "segments": [{"index", "start_step", "end_step", "selected_by": [...],
        "metrics": {"l1", "l2", "linf", "cosine", "cosine_distance", "normalized_error",
                    "direction_cosine", "update_norm"},
        "bitwise_identical", "passed", "reasons": [...]}],
     "spec_sha256", "thresholds": {"rho", "c"}, "verdict": "pass"|"fail"}

Reason codes: ``spec_invalid``, ``malformed_artefact``, ``missing_artefact``,
``artefact_digest``, ``leaf_mismatch``, ``accumulator_mismatch``, ``step_mismatch``,
``init_mismatch``, ``data_order``, ``membership``, ``state_structure``,
``replay_distance``, ``direction``, ``model_digest_mismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pol_chain.proof.canonical import atomic_write, canonical_json, sha256

__all__ = ["REASONS", "REPORT_FORMAT", "Report", "plot_report"]

REPORT_FORMAT = "polchain-report-v1"
REASONS = (
    "spec_invalid",
    "malformed_artefact",
    "missing_artefact",
    "artefact_digest",
    "leaf_mismatch",
    "accumulator_mismatch",
    "step_mismatch",
    "init_mismatch",
    "data_order",
    "membership",
    "state_structure",
    "replay_distance",
    "direction",
    "model_digest_mismatch",
)


@dataclass(frozen=True)
class Report:
    """A finished report; :attr:`digest` is what goes on-chain."""

    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        """Whether the verdict is ``pass``."""
        return bool(self.data["verdict"] == "pass")

    @property
    def reasons(self) -> list[str]:
        """The reason codes of a failure (empty when passed)."""
        return list(self.data["reasons"])

    def segment(self, index: int) -> dict[str, Any] | None:
        """The entry of replayed segment ``index``, if replayed."""
        for seg in self.data["segments"]:
            if seg["index"] == index:
                return seg  # type: ignore[no-any-return]
        return None

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.data)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON."""
        return sha256(self.to_bytes())

    def write(self, out_dir: Path | str) -> tuple[Path, Path]:
        """Write ``report.json`` and ``report.png`` into ``out_dir``; return both paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "report.json", self.to_bytes())
        png = out / "report.png"
        plot_report(self.data, png)
        return out / "report.json", png


def plot_report(data: dict[str, Any], path: Path) -> None:
    """Plot per-segment normalized error against ρ (log scale) into PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segs = data["segments"]
    rho = float(data["thresholds"]["rho"])
    xs = [s["index"] for s in segs]
    floor = rho * 1e-6
    ys = [
        max(
            floor,
            s["metrics"]["normalized_error"]
            if s["metrics"]["normalized_error"] is not None
            else 1e3,
        )
        for s in segs
    ]
    colors = ["tab:green" if s["passed"] else "tab:red" for s in segs]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.scatter(xs, ys, c=colors, s=24, zorder=3)
    ax.axhline(rho, color="black", linestyle="--", label=f"ρ = {rho:g}")
    ax.set_yscale("log")
    ax.set_xlabel("segment index")
    ax.set_ylabel("normalized error ‖W′−W_{i+1}‖ / ‖W_{i+1}−W_i‖")
    title = f"verdict: {data['verdict']}"
    if data.get("bitwise_identical"):
        title += " (replay bitwise identical; zero errors drawn at the floor)"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
