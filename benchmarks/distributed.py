"""Distributed training across untrusted workers: accuracy, detection and verification cost.

Run: ``.venv/bin/python benchmarks/distributed.py [--rounds R] [--local-steps H]
[--detection-rounds R2]``. Every run is real: 4 worker processes and the coordinator
(this process) on gloo over loopback, a real Anvil ledger (its own, on a free port), the
local store, digits, 1 torch thread per process.

1. **Accuracy** (R rounds, H local steps, p = 0.25): clean (4 honest workers); 1 and 2
   of the 4 sign-flipping, with verification off (every well-formed submission
   aggregated) and on (defaults: replayed with p and when outlying, excluded at the
   2nd rejection). Final test accuracy of each.
2. **Detection** per behaviour (R2 rounds, p = 0.25, worker 4 misbehaving every round,
   never excluded so that every round counts; the copier copies worker 1):
   - ``detection`` (the JSON): the per-round probability that the coordinator catches
     the misbehaving submission, over its draw, for the submissions the run really
     produced: 1 for a submission it replays whatever the draw (an outlier, or one that
     fails the format/step/data-order checks), p for any other, averaged over its
     cheating submissions. Every submission of worker 4 is replayed (by the coordinator
     when it was checked, by this script afterwards when it was not), so which ones
     cheat is measured, never assumed (a stale worker's first round is honest work).
     Unlike the realized frequency, it has no sampling noise from the draw.
   - ``realized``: the fraction of its submissions the run actually rejected;
   - ``over the run``: whether it was rejected at least once (it would then be excluded).
3. **Verification cost**: ``verify_vs_round`` = the coordinator's CPU seconds spent on
   checks, outlier tests, the draw and replays ÷ the CPU seconds the workers spent
   training, summed over the clean run's rounds (torch uses 1 thread per process, so CPU
   seconds are comparable and do not depend on how many processes share the box).

Targets: verified accuracy within 2 points of clean with 2 of 4 Byzantine; every
detection rate ≥ 0.9·p per round and 1.0 over the run; ``verify_vs_round`` ≤ 1.2·p.
The last line printed is one JSON object: ``{"accuracy": {...}, "detection": {...},
"verify_vs_round": R}``; a ``details:`` line before it has the per-run figures.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pol_chain.distributed import (
    DistributedPlan,
    DistributedResult,
    LocalWorkers,
    distributed_spec,
    register_run,
    run_local,
)
from pol_chain.format import (
    SPEC_FILE,
    RoundRecord,
    RunBinding,
    Segment,
    Submissions,
    TaskSpec,
    checkpoint_name,
)
from pol_chain.format.rounds import (
    global_name,
    round_record_name,
    submissions_name,
    worker_segment_name,
    worker_state_name,
)
from pol_chain.ledger.accounts import dev_account
from pol_chain.ledger.anvil import EmbeddedChain, free_port
from pol_chain.ledger.client import LedgerClient, connect_web3
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import Policy
from pol_chain.proof.rounds import check_submission
from pol_chain.proof.serialization import load_checkpoint_bytes
from pol_chain.proof.task import configure_determinism
from pol_chain.store import LocalStore

P = 0.25
WORKERS = 4
BEHAVIOURS = ("sign_flip", "lazy", "stale", "copier", "random", "off_shard")
TARGETS = {"accuracy_gap": 0.02, "detection_per_round": 0.9 * P, "verify_vs_round": 1.2 * P}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One Anvil, one ledger, one store; a fresh run directory per run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.chain = EmbeddedChain(root / "chain", port=free_port())
        self.chain.start()
        self.client = LedgerClient.deploy(connect_web3(self.chain.url), dev_account(0))
        self.store = LocalStore(root / "store")
        self.count = 0

    def run(
        self, plan: DistributedPlan, byzantine: Mapping[int, Sequence[str]]
    ) -> tuple[DistributedResult, Path]:
        self.count += 1
        out = self.root / f"run-{self.count}"
        workers = LocalWorkers(plan.workers, byzantine, log_dir=out / "logs").start()
        spec = distributed_spec("digits", plan)
        binding, spec = register_run(self.client, self.store, spec, out)
        started = time.perf_counter()
        result = run_local(
            spec, binding, out, self.client, self.store, workers=workers, round_timeout=300.0
        )
        _log(
            f"run {self.count}: {plan.rounds} rounds, byzantine {byzantine}, verify "
            f"{plan.verify}: accuracy {result.test_accuracy:.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        return result, out

    def close(self) -> None:
        self.chain.stop()


def _ratio(result: DistributedResult) -> float:
    verify = sum(r.verify_seconds for r in result.rounds)
    train = sum(r.train_seconds for r in result.rounds)
    return verify / train if train > 0 else float("nan")


def _detection(out: Path, result: DistributedResult, rank: int) -> dict[str, Any]:
    """Per-round detection of worker ``rank``'s submissions (see the module docstring)."""
    spec = TaskSpec.from_bytes((out / SPEC_FILE).read_bytes())
    binding = RunBinding.read(out)
    bundle = build_bundle(spec, binding.run_seed)
    policy = Policy()
    expected, realized, replayed_after, honest = [], [], 0, 0
    outlier_rounds = 0
    for summary in result.rounds:
        r = summary.round
        subs = Submissions.from_bytes((out / submissions_name(r)).read_bytes())
        rec = RoundRecord.from_bytes((out / round_record_name(r)).read_bytes())
        sub, verdict = subs.worker(rank), rec.worker(rank)
        if sub is None or verdict is None or sub.status != "submitted":
            continue
        if verdict.status == "rejected":
            cheats = True
        elif verdict.checked_by:  # replayed by the coordinator, and it passed
            cheats = False
        else:  # accepted unchecked: replay it here
            base_name = global_name(r - 1) if r > 1 else checkpoint_name(0)
            base, base_meta = load_checkpoint_bytes((out / base_name).read_bytes(), "base")
            state, _ = load_checkpoint_bytes(
                (out / worker_state_name(r, rank)).read_bytes(), "state"
            )
            seg = Segment.from_bytes((out / worker_segment_name(r, rank)).read_bytes())
            judged = check_submission(bundle, base, base_meta, seg.steps, state, policy, "bench")
            cheats = bool(judged.reasons)
            replayed_after += 1
        if not cheats:  # e.g. a stale worker's first round: honest work, nothing to catch
            honest += 1
            continue
        always = verdict.status == "rejected" and not verdict.checked_by  # format/step/order
        outlier = any(c != "random" for c in verdict.checked_by)
        outlier_rounds += outlier or always
        expected.append(1.0 if (outlier or always) else P)
        realized.append(1.0 if verdict.status == "rejected" else 0.0)
    n = len(expected)
    return {
        "per_round": sum(expected) / n,
        "realized": sum(realized) / n,
        "over_the_run": 1.0 if any(realized) else 0.0,
        "cheating_submissions": n,
        "honest_submissions": honest,
        "outlier_rounds": outlier_rounds,
        "replayed_by_bench": replayed_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--detection-rounds", type=int, default=30)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the chain on a kill
    configure_determinism(True, 1)
    root = Path(tempfile.mkdtemp(prefix="polchain-bench-distributed-"))
    bench = Bench(root)
    details: dict[str, Any] = {"rounds": args.rounds, "local_steps": args.local_steps, "p": P}
    try:

        def plan(verify: bool = True, rounds: int = args.rounds, **kw: Any) -> DistributedPlan:
            return DistributedPlan(
                workers=WORKERS,
                local_steps=args.local_steps,
                rounds=rounds,
                check_probability=P,
                verify=verify,
                **kw,
            )

        accuracy: dict[str, float] = {}
        clean, _ = bench.run(plan(), {})
        accuracy["clean"] = clean.test_accuracy or 0.0
        honest_flags = sum(
            1
            for r in clean.rounds
            for w, why in r.checked.items()
            if any(c != "random" for c in why)
        )
        details["clean"] = {
            "verify_vs_round": _ratio(clean),
            "honest_outlier_flags": f"{honest_flags} of {sum(len(r.submitted) for r in clean.rounds)}",
            "checked_per_round": sum(len(r.checked) for r in clean.rounds) / len(clean.rounds),
            "rejected": sum(len(r.rejected) for r in clean.rounds),
        }
        for count, ranks in ((1, (4,)), (2, (3, 4))):
            byz = {rank: ("sign_flip",) for rank in ranks}
            for verify in (False, True):
                result, _ = bench.run(plan(verify), byz)
                key = f"byzantine_{count}_{'verified' if verify else 'unverified'}"
                accuracy[key] = result.test_accuracy or 0.0
                details[key] = {
                    "verify_vs_round": _ratio(result) if verify else 0.0,
                    "honest_rejected": sum(
                        1 for r in result.rounds for w in r.rejected if w not in ranks
                    ),
                    "byzantine_accepted": sum(
                        1 for r in result.rounds for w in r.accepted if w in ranks
                    ),
                    "excluded": [w for w, s in result.workers.items() if s.state == "excluded"],
                }
        detection: dict[str, float] = {}
        for how in BEHAVIOURS:
            result, out = bench.run(
                plan(rounds=args.detection_rounds, max_rejections=0), {4: (how,)}
            )
            found = _detection(out, result, 4)
            honest_rejected = sum(1 for r in result.rounds for w in r.rejected if w != 4)
            details[f"detection_{how}"] = {**found, "honest_rejected": honest_rejected}
            detection[how] = found["per_round"]
    finally:
        bench.close()
    details["targets"] = TARGETS
    details["root"] = str(root)
    print("details: " + json.dumps(details, sort_keys=True), flush=True)
    print(
        json.dumps(
            {
                "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                "detection": {k: round(v, 4) for k, v in detection.items()},
                "verify_vs_round": round(details["clean"]["verify_vs_round"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
