"""Manifest rewrite cost per checkpoint as a run grows.

The recorder's writer thread rewrites ``manifest.json`` after every checkpoint (it holds
the GIL while it encodes), so the cost of one encoding at n entries is paid n times a run.
This measures, in one run, ``Manifest.to_bytes()`` (each entry's bytes cached and
spliced) against encoding the whole ``to_json()`` again, at n = 100, 1,000 and 5,000
checkpoints. Last line one JSON object:
``{"n1000": {"spliced_ms": t, "full_ms": t, "full_vs_spliced": r}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from pol_chain.format import (
    ArtefactRef,
    Manifest,
    ManifestEntry,
    canonical_json,
    checkpoint_name,
    segment_name,
)


def _grown(n: int) -> Manifest:
    man = Manifest.new(os.urandom(32), os.urandom(32), 100, 100 * n)
    for i in range(n):
        segment = None if i == 0 else ArtefactRef(segment_name(i), os.urandom(32))
        entry = ManifestEntry(
            i, 100 * i, ArtefactRef(checkpoint_name(i), os.urandom(32)), segment, os.urandom(32)
        )
        man = man.with_entry(entry)
        man.to_bytes()  # as the recorder does after each checkpoint: caches the entry
    return man


def _ms(fn: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    for n in (100, 1000, 5000):
        man = _grown(n)
        assert man.to_bytes() == canonical_json(man.to_json())
        spliced = _ms(man.to_bytes, args.reps)
        full = _ms(lambda m=man: canonical_json(m.to_json()), args.reps)
        out[f"n{n}"] = {
            "bytes": len(man.to_bytes()),
            "spliced_ms": round(spliced, 3),
            "full_ms": round(full, 3),
            "full_vs_spliced": round(full / spliced, 1),
        }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
