"""Recording overhead: wall time of training with the recorder ÷ without, interleaved.

Prints one JSON object as its last line:
``{"digits_cnn": {"k10": r, "k100": r}, "resnet20": {"k100": r}, ...}``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import plain_train, recorded_train, setup, spec_for  # noqa: E402

from pol_chain.tasks import DIGITS, RESNET20  # noqa: E402


def ratio(
    spec_kwargs: dict[str, object], entry: str, steps: int, reps: int
) -> tuple[float, list[float]]:
    """Median of per-pair ratios recorded/plain, pairs interleaved (order alternates)."""
    spec = spec_for(entry, **spec_kwargs)
    plain_train(spec, min(steps, 20))  # warm-up
    ratios = []
    for r in range(reps):
        if r % 2 == 0:
            p = plain_train(spec, steps)
            q = recorded_train(spec, steps)
        else:
            q = recorded_train(spec, steps)
            p = plain_train(spec, steps)
        ratios.append(q / p)
        print(f"{entry} {spec_kwargs}: plain {p:.3f}s recorded {q:.3f}s", file=sys.stderr)
    return statistics.median(ratios), ratios


def main() -> None:
    threads = int(os.environ.get("POLCHAIN_BENCH_THREADS", "2"))
    setup(threads=threads)
    out: dict[str, object] = {"digits_cnn": {}, "resnet20": {}, "raw": {}}
    for k in (10, 100):
        # short interleaved pairs (≈ 1 s each) so that load on a shared machine hits both
        med, raw = ratio({"epochs": 20, "k": k}, DIGITS, 300, 11)
        out["digits_cnn"][f"k{k}"] = round(med, 4)  # type: ignore[index]
        out["raw"][f"digits_k{k}"] = [round(x, 4) for x in raw]  # type: ignore[index]
    # CPU ResNet-20 is ~0.6 s/step at batch 32 on 2 cores: batch 8, 400 steps (W0, three
    # checkpoints and the final one: long enough that the per-run flush of the last
    # checkpoint and model file does not dominate), five interleaved pairs
    med, raw = ratio({"batch_size": 8, "k": 100, "train_size": 3200, "epochs": 1}, RESNET20, 400, 5)
    out["resnet20"]["k100"] = round(med, 4)  # type: ignore[index]
    out["raw"]["resnet20_k100"] = [round(x, 4) for x in raw]  # type: ignore[index]
    out["threads"] = threads
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
