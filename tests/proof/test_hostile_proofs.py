"""Hostile proofs get a verdict or no vote, never an exception out of the verifier or an
allocation that takes it down: seeds erased from a segment, a spec claiming 2^36 samples,
a committed config the task's own code refuses."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pol_chain.format import canonical_json
from pol_chain.proof import engine
from pol_chain.proof.errors import CannotVerify, CodeFailure
from pol_chain.proof.report import Report
from pol_chain.proof.runner import run_task_code
from pol_chain.proof.verifier import verify_dir

from .helpers import CHALLENGE, RUN_ID, RUN_SEED, recommit


def _verify(proof: Path) -> Report:
    return verify_dir(
        proof,
        run_id=RUN_ID,
        run_seed=RUN_SEED,
        challenge_seed=CHALLENGE,
        committed_leaves=recommit(proof),
        threads=2,
    )


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_bytes())
    edit(obj)
    path.write_bytes(canonical_json(obj))


def test_a_segment_without_its_seeds_fails_data_order_unreplayed(proof_copy: Path) -> None:
    _edit_json(proof_copy / "segments/000002.json", lambda s: s["steps"][3].update(seeds={}))
    report = _verify(proof_copy)
    assert not report.passed
    seg = report.segment(2)
    assert seg is not None and seg.reasons == ("data_order",) and seg.metrics is None
    assert all(s.passed for s in report.segments if s.index != 2)


def test_a_spec_claiming_a_huge_dataset_fails_membership_without_allocating(
    proof_copy: Path,
) -> None:
    _edit_json(proof_copy / "spec.json", lambda s: s["dataset"].update(size=1 << 36))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = _verify(proof_copy)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not report.passed and "membership" in report.reasons
    assert report.checks["membership"].ok is False
    assert grown_mib < 512  # a permutation of 2^36 samples would be 512 GiB


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr.kind", "bogus"), ("dropout", 2.0), ("momentum", -1.0)],
)
def test_a_config_the_tasks_code_refuses_fails_code_failure(
    proof_copy: Path, key: str, value: object
) -> None:
    def edit(spec: dict[str, Any]) -> None:
        *parents, leaf = key.split(".")
        node = spec["config"]
        for name in parents:
            node = node[name]
        node[leaf] = value

    _edit_json(proof_copy / "spec.json", edit)
    report = _verify(proof_copy)
    assert not report.passed and report.reasons == ("code_failure",)
    assert report.checks["replay"].ok is False


def test_a_data_order_this_machine_cannot_hold_is_no_vote(
    honest_proof: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ORDER_BYTES_PER_SAMPLE", 1 << 40)
    with pytest.raises(CannotVerify, match="data order"):
        verify_dir(honest_proof, run_id=RUN_ID, run_seed=RUN_SEED, challenge_seed=CHALLENGE)


class _Flaky:
    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "built"


def test_task_code_errors_are_judged_like_the_sandbox_judges_them() -> None:
    same = _Flaky(ValueError("bad lr"), ValueError("bad lr"))
    with pytest.raises(CodeFailure, match="bad lr"):
        run_task_code("build the task", same)
    assert same.calls == 2
    with pytest.raises(CannotVerify, match="two different ways"):
        run_task_code("build the task", _Flaky(ValueError("a"), OSError("b")))
    with pytest.raises(CannotVerify, match="MemoryError"):
        run_task_code("build the task", _Flaky(MemoryError()))
    with pytest.raises(CannotVerify, match="ModuleNotFoundError"):
        run_task_code("build the task", _Flaky(ModuleNotFoundError("No module named 'x'")))
    once = _Flaky(RuntimeError("transient"))
    assert run_task_code("build the task", once) == "built" and once.calls == 2
