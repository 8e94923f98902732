"""Committing a dataset into shards: throughput against raw SHA-256, and peak memory.

What is measured:

1. **Throughput.** :func:`commit_dataset_shards` over an in-memory ``TensorDataset`` of
   ≈ 128 MiB of samples ``(x, y)``, x float32 of a given shape, y an int64 label, with
   the default shard size and threads (2). Timed from the call to its return: reading
   every sample, its leaf, every shard's root, the shard's safetensors layout and file
   SHA-256, the dataset root and the index — with ``out_dir=None``, so no file is
   written (``commit_vs_raw_sha256``), and again writing the shards into a temporary
   folder without fsync (``with_writes_vs_raw``: adds this machine's file-write cost).
   The raw time is one ``hashlib.sha256`` pass over one buffer holding the same sample
   bytes. R = raw time / commit time, best of 3 interleaved runs each. A commitment
   hashes every byte twice (the leaf and the shard file's digest) plus a small cost per
   sample; its worker threads run the two passes on both cores. R is printed per sample
   size; the headline is x of shape (3, 128, 128), 192 KiB samples. ``cpu_vs_raw`` is
   the same ratio of CPU time (all threads): the work done, whatever else runs on the
   machine; two hash passes bound it by 0.5, and on two idle cores the wall-clock R
   approaches twice it.
2. **Memory.** A child process commits N small samples (x float32[16] built from the
   index, y a Python int; 72 bytes) into a temporary folder, with the defaults. Its peak
   RSS (``VmHWM`` of ``/proc/self/status``) minus its RSS just before the call (after
   imports), in MB. Run for 100,000 and 1,000,000 samples: flat means the same peak.

Last line: ``{"commit_vs_raw_sha256": R, "samples": N, "peak_rss_mb": M}`` (R of the
headline size, N = 1,000,000 and M its peak above the interpreter).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from pol_chain.proof.shards import commit_dataset_shards

TOTAL_BYTES = 128 * 1024 * 1024
SHAPES = [(3, 16, 16), (3, 32, 32), (3, 64, 64), (3, 128, 128)]
HEADLINE = (3, 128, 128)


def _ratio(shape: tuple[int, ...], runs: int = 3) -> dict[str, float]:
    per = 4 * int(torch.tensor(shape).prod())
    n = TOTAL_BYTES // per
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, 1000, (n,), generator=gen)
    blob = x.numpy().tobytes() + y.numpy().tobytes()
    raw = commit = written = raw_cpu = commit_cpu = float("inf")
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        hashlib.sha256(blob).digest()
        raw, raw_cpu = min(raw, time.perf_counter() - t), min(raw_cpu, time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        index = commit_dataset_shards(TensorDataset(x, y), None)
        commit = min(commit, time.perf_counter() - t)
        commit_cpu = min(commit_cpu, time.process_time() - c)
        out = Path(tempfile.mkdtemp(prefix="polchain-ds-"))
        try:
            t = time.perf_counter()
            again = commit_dataset_shards(TensorDataset(x, y), out, durable=False)
            written = min(written, time.perf_counter() - t)
        finally:
            shutil.rmtree(out)
        assert again == index
    return {
        "sample_bytes": per + 8,
        "samples": n,
        "shard_size": index.shard_size,
        "raw_mb_s": round(len(blob) / raw / 1e6, 1),
        "commit_mb_s": round(len(blob) / commit / 1e6, 1),
        "commit_vs_raw_sha256": round(raw / commit, 3),
        "with_writes_vs_raw": round(raw / written, 3),
        "cpu_vs_raw": round(raw_cpu / commit_cpu, 3),
    }


_CHILD = """
import re, sys, tempfile, time, shutil
from pathlib import Path
import torch
from pol_chain.proof.shards import commit_dataset_shards

def rss(key):
    text = Path("/proc/self/status").read_text()
    return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) / 1024

class Small(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.base = n, torch.arange(16, dtype=torch.float32)
    def __len__(self):
        return self.n
    def __getitem__(self, i):
        return self.base + i, i % 10

n = int(sys.argv[1])
data = Small(n)
data[0]
out = Path(tempfile.mkdtemp(prefix="polchain-mem-"))
before = rss("VmRSS")
t = time.perf_counter()
index = commit_dataset_shards(data, out, durable=False)
seconds = time.perf_counter() - t
print(rss("VmHWM") - before, seconds, index.shard_size, len(index.shards))
shutil.rmtree(out)
"""


def _memory(n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n)], capture_output=True, text=True, check=True
    ).stdout.split()
    peak, seconds, shard_size, shards = float(out[0]), float(out[1]), int(out[2]), int(out[3])
    return {
        "samples": n,
        "peak_rss_mb": round(peak, 1),
        "seconds": round(seconds, 1),
        "shard_size": shard_size,
        "shards": shards,
    }


def main() -> None:
    torch.set_num_threads(2)
    ratios = {}
    for shape in SHAPES:
        row = _ratio(shape)
        ratios[shape] = row["commit_vs_raw_sha256"]
        print(json.dumps({"x_shape": list(shape), **row}, sort_keys=True), flush=True)
    small = _memory(100_000)
    print(json.dumps(small, sort_keys=True), flush=True)
    big = _memory(1_000_000)
    print(json.dumps(big, sort_keys=True), flush=True)
    print(
        json.dumps(
            {
                "commit_vs_raw_sha256": ratios[HEADLINE],
                "samples": big["samples"],
                "peak_rss_mb": big["peak_rss_mb"],
            }
        )
    )


if __name__ == "__main__":
    main()
