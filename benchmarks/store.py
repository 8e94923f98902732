"""Benchmark of the local store against the raw costs it cannot avoid.

put_vs_raw_sha256: put_file throughput ÷ hashlib SHA-256 over the same file (1 MiB reads).
get_vs_raw_read:   verified iter_content throughput ÷ a plain 1 MiB-chunk read of the file.
Both on a file of --mib MiB (default 256) in a temp dir, best of --repeat runs, page cache
warm (the headline figures). The get is also measured cold (both the source file and the
block files dropped from the page cache with posix_fadvise DONTNEED before each run), since
a warm plain read runs at memory speed while a verified read must SHA-256 every byte.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pol_chain.store import LocalStore  # noqa: E402

CHUNK = 1024 * 1024


CPU: dict[str, float] = {}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _best(fn: Callable[[], object], repeat: int, label: str = "") -> float:
    """Best wall time of ``repeat`` runs (and, under ``label``, the least CPU time)."""
    times = []
    for _ in range(repeat):
        c = _cpu()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if label:
            CPU[label] = min(CPU.get(label, float("inf")), _cpu() - c)
    return min(times)


def _drop_cache(paths: list[Path]) -> None:
    """Evict clean pages of ``paths`` from the page cache (no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _best_cold(fn: Callable[[], object], paths: list[Path], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        _drop_cache(paths)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-durable", action="store_true", help="skip fsync (default: fsync)")
    args = ap.parse_args()
    n = args.mib * CHUNK
    tmp = Path(tempfile.mkdtemp(prefix="polchain-store-bench-"))
    try:
        src = tmp / "data.bin"
        with open(src, "wb") as f:
            for i in range(args.mib):
                f.write(hashlib.sha256(i.to_bytes(8, "big")).digest() * (CHUNK // 32))
                if i % 7 == 0:  # keep some blocks distinct in every position
                    f.seek(-32, os.SEEK_CUR)
                    f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())

        def raw_sha256() -> None:
            h = hashlib.sha256()
            with open(src, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)

        def raw_read() -> None:
            with open(src, "rb", buffering=0) as f:
                while f.read(CHUNK):
                    pass

        raw_read()  # warm the page cache
        t_hash = _best(raw_sha256, args.repeat, "raw sha256")
        t_read = _best(raw_read, args.repeat, "raw read")

        put_times = []
        cid = ""
        for i in range(args.repeat):
            root = tmp / f"store{i}"
            with LocalStore(root, durable=not args.no_durable) as store:
                c = _cpu()
                t = time.perf_counter()
                cid = store.put_file(src)
                put_times.append(time.perf_counter() - t)
                CPU["put"] = min(CPU.get("put", float("inf")), _cpu() - c)
            if i < args.repeat - 1:
                shutil.rmtree(root)
        t_put = min(put_times)
        store = LocalStore(root)
        blocks = [p for d in (root / "blocks").iterdir() for p in d.iterdir()]

        def get() -> None:
            for _ in store.iter_content(cid):
                pass

        get()
        t_get = _best(get, args.repeat, "verified get")
        os.sync()  # make every page clean so DONTNEED can drop it
        t_read_cold = _best_cold(raw_read, [src], args.repeat)
        t_get_cold = _best_cold(get, blocks, args.repeat)
        assert store.verify().ok
        store.close()
        mbs = n / 1e6
        print(f"bytes={n} cid={cid}", file=sys.stderr)
        print(
            f"raw sha256 {mbs / t_hash:.0f} MB/s, put {mbs / t_put:.0f} MB/s; "
            f"raw read {mbs / t_read:.0f} MB/s, verified get {mbs / t_get:.0f} MB/s; "
            f"cold: raw read {mbs / t_read_cold:.0f} MB/s, verified get {mbs / t_get_cold:.0f} MB/s; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
            file=sys.stderr,
        )
        print(
            "CPU seconds (least of the runs, all threads): "
            + ", ".join(f"{k} {v:.3f}" for k, v in CPU.items()),
            file=sys.stderr,
        )
        result = {
            "put_vs_raw_sha256": round(t_hash / t_put, 3),
            "get_vs_raw_read": round(t_read / t_get, 3),
            "bytes": n,
            "get_vs_raw_read_cold": round(t_read_cold / t_get_cold, 3),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
