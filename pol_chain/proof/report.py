"""Writing a verification report: its canonical JSON and a PNG plot.

The report record is :class:`pol_chain.format.Report`; this module draws it.
"""

from __future__ import annotations

from pathlib import Path

from pol_chain.format import Report
from pol_chain.proof.canonical import atomic_write

__all__ = ["Report", "plot_report", "write_report"]


def write_report(report: Report, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", report.to_bytes())
    png = out / "report.png"
    plot_report(report, png)
    return out / "report.json", png


def plot_report(report: Report, path: Path) -> None:
    """Plot per-segment normalized error against ρ (log scale) into PNG ``path``; a
    segment that could not be replayed (no metrics) is drawn at the top, in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rho = report.thresholds.rho
    floor, ceiling = rho * 1e-6, max(rho * 1e3, 1.0)
    xs, ys, colors = [], [], []
    for seg in report.segments:
        error = seg.metrics.normalized_error if seg.metrics is not None else None
        xs.append(seg.index)
        ys.append(ceiling if error is None else min(ceiling, max(floor, error)))
        colors.append("tab:green" if seg.passed else "tab:red")
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.scatter(xs, ys, c=colors, s=24, zorder=3)
    ax.axhline(rho, color="black", linestyle="--", label=f"ρ = {rho:g}")
    ax.set_yscale("log")
    ax.set_xlabel("segment index")
    ax.set_ylabel("normalized error ‖W′−W_{i+1}‖ / ‖W_{i+1}−W_i‖")
    title = f"verdict: {report.verdict}"
    if report.bitwise_identical:
        title += " (replay bitwise identical; zero errors drawn at the floor)"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
