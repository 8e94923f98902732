"""Calibration (docs/protocol.md §7): honest reproduction error on this hardware → ρ and c.

:func:`calibrate` replays a few segments of an honest proof in one or more modes
(``deterministic``: deterministic algorithms and the recorded thread count;
``nondeterministic``: torch's default kernels and another thread count, a stand-in for
"similar but not identical hardware"), records the normalized error and directional
cosine of each, and the smallest single-step update relative to its segment's update
(what a forger must at least move). It recommends ρ between the two, with the margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pol_chain.format import Segment, TaskSpec
from pol_chain.proof.engine import capture_state, replay_steps
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.manifest import DirectorySource
from pol_chain.proof.serialization import load_checkpoint_bytes
from pol_chain.proof.spec import environment_facts
from pol_chain.proof.task import configure_determinism
from pol_chain.proof.verifier import Comparison, compare_states

__all__ = ["MODES", "calibrate", "replay_segment"]

MODES = ("deterministic", "nondeterministic")


def _delta_norm(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> float:
    total = 0.0
    for k, v in new.items():
        if v.is_floating_point():
            base = old.get(k)
            d = v.double().cpu() - (base.double().cpu() if base is not None else 0.0)
            total += float((d * d).sum())
    return math.sqrt(total)


def replay_segment(
    source: DirectorySource,
    index: int,
    spec: TaskSpec,
    run_seed: bytes,
    device: str = "cpu",
    parent_model: bytes | None = None,
) -> tuple[Comparison, float]:
    """Replay segment ``index`` of a proof directory; return the comparison and the
    smallest single-step update norm ÷ the segment's update norm."""
    entries = source.manifest().entries
    start, smeta = load_checkpoint_bytes(source.get(entries[index - 1].checkpoint.sha256), "start")
    end, _ = load_checkpoint_bytes(source.get(entries[index].checkpoint.sha256), "end")
    segment_ref = entries[index].segment
    assert segment_ref is not None
    seg = Segment.from_bytes(source.get(segment_ref.sha256))
    bundle = build_bundle(spec, run_seed, device, parent_model)
    step_norms: list[float] = []
    prev: list[dict[str, torch.Tensor]] = [start]

    def measure(step: int) -> None:
        cur, _ = capture_state(bundle.model, bundle.optimizer, bundle.scheduler, step)
        step_norms.append(_delta_norm(cur, prev[0]))
        prev[0] = cur

    replayed, _ = replay_steps(bundle, start, smeta, seg.steps, f"segment {index}", measure)
    cmp = compare_states(replayed, end, start)
    seg_norm = cmp.metrics.update_norm or math.inf
    return cmp, min(step_norms) / seg_norm


def calibrate(
    proof_dir: Path | str,
    run_seed: bytes,
    *,
    segments: Sequence[int] | int = 3,
    modes: Sequence[str] = MODES,
    device: str = "cpu",
    threads: int | None = None,
    parent_model: bytes | None = None,
) -> dict[str, Any]:
    """Measure honest reproduction error of ``proof_dir`` here and recommend ρ and c."""
    source = DirectorySource(proof_dir)
    man = source.manifest()
    spec = TaskSpec.from_bytes(source.get(man.spec_sha256))
    n = len(man.entries) - 1
    if isinstance(segments, int):
        picks = sorted(
            {max(1, round(1 + j * (n - 1) / max(1, segments - 1))) for j in range(segments)}
        )
    else:
        picks = list(segments)
    base_threads = threads or int(spec.environment.get("threads", torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    smallest = math.inf
    for mode in modes:
        deterministic = mode == "deterministic"
        configure_determinism(
            deterministic, base_threads if deterministic else max(1, base_threads % 2 + 1)
        )
        for i in picks:
            cmp, ratio = replay_segment(source, i, spec, run_seed, device, parent_model)
            smallest = min(smallest, ratio)
            rows.append(
                {
                    "mode": mode,
                    "segment": i,
                    "bitwise_identical": cmp.bitwise_identical,
                    **cmp.metrics.to_json(),
                }
            )
    configure_determinism(True, base_threads)
    errors = [r["normalized_error"] for r in rows if r["normalized_error"] is not None]
    worst = max(errors) if errors else math.inf
    dirs = [r["direction_cosine"] for r in rows if r["direction_cosine"] is not None]
    min_dir = min(dirs) if dirs else -1.0
    rho = max(10.0 * worst, 1e-4)
    if rho > smallest / 2:
        rho = math.sqrt(max(worst, 1e-12) * smallest)  # geometric middle when tight
    c = max(0.5, min(0.99, 1.0 - 10.0 * (1.0 - min_dir)))
    return {
        "bitwise_identical": {
            m: all(r["bitwise_identical"] for r in rows if r["mode"] == m) for m in modes
        },
        "environment": environment_facts(device, True),
        "honest": {"max_normalized_error": worst, "min_direction_cosine": min_dir},
        "margin": {
            "rho_over_honest": (rho / worst) if worst > 0 else None,
            "smallest_update_over_rho": smallest / rho,
        },
        "recommended": {"c": c, "rho": rho},
        "rows": rows,
        "smallest_step_update_ratio": smallest,
    }
