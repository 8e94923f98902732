"""Spec, seeds, dataset commitment and deterministic safetensors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pol_chain.format import canonical_json, parse_json
from pol_chain.proof import (
    LEAF_RULE,
    MalformedArtefactError,
    SpecError,
    TaskSpec,
    commit_dataset,
    make_spec,
    sample_leaf,
    verify_membership,
)
from pol_chain.proof.canonical import sha256
from pol_chain.proof.direct_io import STAGE_BYTES, write_direct
from pol_chain.proof.engine import RunBatchSampler, StepSampler, step_seeds
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.recorder import SEED_BLOCK, Recorder
from pol_chain.proof.seeds import derive_seed, epoch_permutation
from pol_chain.proof.serialization import (
    digest_state,
    load_state_bytes,
    serialize_state,
    write_state,
)
from pol_chain.proof.task import check_source
from pol_chain.tasks import DIGITS


def test_spec_is_canonical_and_round_trips(spec: TaskSpec) -> None:
    raw = spec.to_bytes()
    assert raw == canonical_json(spec.to_json()) and b" " not in raw
    again = TaskSpec.from_bytes(raw)
    assert again.digest == spec.digest == sha256(raw)
    assert spec.dataset.leaf_rule == LEAF_RULE and spec.dataset.size == 1438
    assert spec.total_steps == 88  # 1438 // 32 = 44 steps per epoch


def test_bad_specs_are_named_errors(spec: TaskSpec) -> None:
    raw = spec.to_bytes()
    with pytest.raises(SpecError):
        TaskSpec.from_bytes(raw.replace(b'{"config"', b'{ "config"'))  # not canonical
    with pytest.raises(SpecError):
        TaskSpec.from_bytes(raw.replace(b'"kind":"seeded"', b'"kind":"magic"'))
    with pytest.raises(SpecError):
        spec.replace(config={"k": 0})
    with pytest.raises(SpecError):
        TaskSpec.from_bytes(b"NaN")
    with pytest.raises(SpecError):
        check_source(spec.replace(entry="pol_chain.tasks.digits:nope"))
    with pytest.raises(SpecError):
        check_source(spec.replace(source_sha256=b"\x00" * 32))
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_seeds_differ_by_purpose_and_counter() -> None:
    seed = b"\x05" * 32
    values = {
        derive_seed(seed, p, c)
        for p in ("init", "data-order", "augment", "dropout")
        for c in range(3)
    }
    assert len(values) == 12 and all(0 <= v < 2**63 for v in values)
    assert derive_seed(seed, "init") != derive_seed(b"\x06" * 32, "init")


def test_micro_batches_cut_each_epochs_permutation_in_order() -> None:
    seed = b"\x07" * 32
    sampler = StepSampler(seed, size=50, batch_size=8, epochs=3, accumulation=2)
    assert sampler.total_steps == 18  # 6 steps an epoch, the last 2 samples dropped
    for step in (13, 2, 17, 0, 6):  # out of order and across epochs
        batches = sampler.micro_batches(step)
        assert [len(b) for b in batches] == [4, 4]
        assert batches[0] + batches[1] == sampler.batch(step).tolist()
    for epoch in range(3):
        order = [i for s in range(6) for b in sampler.micro_batches(6 * epoch + s) for i in b]
        assert order == epoch_permutation(seed, epoch, 50)[:48].tolist()
    loader_order = list(RunBatchSampler(StepSampler(seed, 50, 8, 3, 2), start=5))
    assert len(loader_order) == 26
    assert loader_order == [b for s in range(5, 18) for b in sampler.micro_batches(s)]


def test_recorder_gives_each_steps_own_seeds_across_seed_blocks(
    tmp_path: Path, spec: TaskSpec
) -> None:
    seed = b"\x08" * 32
    bundle = build_bundle(spec, seed)
    rec = Recorder(tmp_path / "p", spec, b"\x01" * 32, seed, bundle.model, bundle.optimizer)
    try:
        for step in (0, SEED_BLOCK - 1, SEED_BLOCK, 3, 2 * SEED_BLOCK + 5, SEED_BLOCK):
            seeds = rec.step_seeds(step)
            assert seeds == step_seeds(seed, step)
            seeds["dropout"] = -1  # a copy: the recorder's own stays intact
            assert rec.step_seeds(step) == step_seeds(seed, step)
    finally:
        rec.close(final=False)


def test_steps_in_the_runs_own_order_record_the_same_bytes_as_explicit_ones(
    tmp_path: Path,
) -> None:
    """``on_step_end()`` (the run's own micro-batches and seeds, expanded by the writer
    thread) and ``on_step_end(micro_batches)`` write byte-identical proofs, mixed too."""
    spec = make_spec(DIGITS, {"epochs": 2, "k": 10, "grad_accumulation": 2})
    seed = b"\x09" * 32
    proofs = []
    for name, explicit in (("explicit", lambda s: True), ("mixed", lambda s: s % 7 == 3)):
        bundle = build_bundle(spec, seed)
        out = tmp_path / name
        rec = Recorder(out, spec, b"\x01" * 32, seed, bundle.model, bundle.optimizer)
        sampler = rec.sampler()
        for step in range(25):  # 2 full segments and a partial one
            if explicit(step):
                rec.on_step_end(sampler.micro_batches(step))
            else:
                rec.on_step_end()
        rec.close(final=True)
        proofs.append(out)
    files = sorted(p.relative_to(proofs[0]) for p in proofs[0].rglob("*") if p.is_file())
    assert len([f for f in files if f.parts[0] == "segments"]) == 3
    for rel in files:
        assert (proofs[0] / rel).read_bytes() == (proofs[1] / rel).read_bytes(), rel
    assert sorted(p.relative_to(proofs[1]) for p in proofs[1].rglob("*") if p.is_file()) == files

    bundle = build_bundle(spec, seed)
    rec = Recorder(tmp_path / "bad", spec, b"\x01" * 32, seed, bundle.model, bundle.optimizer)
    try:
        with pytest.raises(ValueError, match="own seeds"):
            rec.on_step_end(seeds=step_seeds(seed, 0))
    finally:
        rec.close(final=False)


def test_sample_leaf_binds_label_bytes_dtype_and_shape() -> None:
    x, y = torch.zeros(1, 8, 8), torch.tensor(3)
    base = sample_leaf(x, y)
    assert sample_leaf(x, torch.tensor(4)) != base
    x2 = x.clone()
    x2[0, 7, 7] = 1e-30
    assert sample_leaf(x2, y) != base
    assert sample_leaf(x.double(), y) != base
    assert sample_leaf(x.reshape(8, 8), y) != base


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 17])
def test_membership_proofs(n: int) -> None:
    x, y = torch.randn(n, 4), torch.arange(n)
    commitment, tree = commit_dataset(x, y)
    for i in range(n):
        leaf = sample_leaf(x[i], y[i])
        assert verify_membership(leaf, i, n, tree.proof(i), commitment.root)
        assert not verify_membership(leaf, (i + 1) % n, n, tree.proof(i), commitment.root) or n == 1
        assert not verify_membership(
            sample_leaf(x[i] + 1, y[i]), i, n, tree.proof(i), commitment.root
        )
    assert not verify_membership(sample_leaf(x[0], y[0]), n, n, [], commitment.root)


def test_state_bytes_are_deterministic_and_valid_safetensors() -> None:
    from safetensors.torch import load

    a = {"w": torch.randn(3, 4), "b": torch.arange(5), "s": torch.tensor(1.5, dtype=torch.float64)}
    b = {k: a[k].clone() for k in reversed(list(a))}
    meta = {"step": 4, "format": "x"}
    raw = serialize_state(a, meta)
    assert raw == serialize_state(b, dict(reversed(list(meta.items()))))
    assert sha256(raw) == digest_state(a, meta)
    assert all(torch.equal(load(raw)[k], a[k]) for k in a)
    tensors, got = load_state_bytes(raw, "x")
    assert got == meta and all(torch.equal(tensors[k], a[k]) for k in a)


def _large_state() -> dict[str, torch.Tensor]:
    """Over two staging buffers of direct I/O, its length no multiple of a block."""
    gen = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(4_500_000, generator=gen),
        "odd": torch.arange(1001, dtype=torch.int16),
        "b": torch.randn(7, 3, generator=gen).to(torch.bfloat16),
    }


@pytest.mark.parametrize("direct", [True, False, None])
@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_state_files_hold_the_same_bytes_direct_or_buffered(
    tmp_path: Path, direct: bool | None, where: str
) -> None:
    import tempfile

    if where == "shm" and not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    root = Path(tempfile.mkdtemp(dir="/dev/shm")) if where == "shm" else tmp_path
    try:
        state, meta = _large_state(), {"step": 9}
        raw = serialize_state(state, meta)
        assert len(raw) > 2 * STAGE_BYTES and len(raw) % 4096
        digest = write_state(root / "c.safetensors", state, meta, direct=direct)
        assert (root / "c.safetensors").read_bytes() == raw
        assert digest == sha256(raw)
        assert sorted(p.name for p in root.iterdir()) == ["c.safetensors"]  # no tmp left
    finally:
        if where == "shm":
            import shutil

            shutil.rmtree(root)


def test_direct_writes_bypass_the_page_cache_and_match_buffered_bytes(tmp_path: Path) -> None:
    raw = serialize_state(_large_state(), {"step": 1})
    chunks = [memoryview(raw)[i : i + 1_000_003] for i in range(0, len(raw), 1_000_003)]
    if not write_direct(tmp_path / "d", chunks):
        pytest.skip("this file system refuses O_DIRECT")
    assert (tmp_path / "d").read_bytes() == raw
    assert write_direct(tmp_path / "e", []) and (tmp_path / "e").read_bytes() == b""


def test_state_files_are_written_buffered_where_there_is_no_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delattr(os, "O_DIRECT", raising=False)  # as on macOS
    state = _large_state()
    assert not write_direct(tmp_path / "d", [b"x"]) and not (tmp_path / "d").exists()
    digest = write_state(tmp_path / "c", state, {}, direct=True)
    assert (tmp_path / "c").read_bytes() == serialize_state(state, {})
    assert digest == sha256(serialize_state(state, {}))


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.sentinel), "w"))


def test_pickles_and_torch_save_files_are_inert(tmp_path: Path) -> None:
    sentinel = tmp_path / "PWNED"
    payloads = [pickle.dumps(_Payload(sentinel))]
    path = tmp_path / "t.pt"
    torch.save({"x": _Payload(sentinel)}, path)
    payloads.append(path.read_bytes())
    for data in payloads:
        with pytest.raises(MalformedArtefactError):
            load_state_bytes(data, "artefact")
        with pytest.raises(MalformedArtefactError):
            parse_json(data, "artefact")
    assert not sentinel.exists()


def test_restore_state_does_not_alias_the_checkpoint(honest_proof: Path, spec: TaskSpec) -> None:
    from pol_chain.proof.engine import restore_state, run_step
    from pol_chain.proof.loop import build_bundle

    from .helpers import RUN_SEED, load_checkpoint

    state, meta = load_checkpoint(honest_proof, 5)
    before = {k: v.clone() for k, v in state.items()}
    bundle = build_bundle(spec, RUN_SEED)
    restore_state(bundle.model, bundle.optimizer, bundle.scheduler, state, meta, "ckpt 5")
    run_step(bundle, torch.arange(32), {"augment": 1, "dropout": 2})
    assert all(torch.equal(state[k], before[k]) for k in state)


def test_seed_global_rng_leaves_the_state_torch_manual_seed_leaves() -> None:
    """The per-step seeding skips torch.manual_seed's lazy accelerator queue (a stack
    trace per call) but must leave the very same generator state: old proofs replay."""
    import torch

    from pol_chain.proof.seeds import seed_global_rng

    for seed in (0, 1, 2**63 - 1, 123456789):
        torch.manual_seed(seed)
        expected = torch.get_rng_state()
        draw = torch.rand(4)
        torch.manual_seed(seed + 1)
        seed_global_rng(seed)
        assert torch.equal(torch.get_rng_state(), expected)
        assert torch.equal(torch.rand(4), draw)


def test_installed_distributions_are_rescanned_when_an_import_path_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from pol_chain.proof.bundle import installed_distributions

    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    before = installed_distributions()
    assert "polchain_fake_mod" not in before
    assert installed_distributions() is before  # no change: no second scan
    info = tmp_path / "polchain_fake_dist-1.0.dist-info"
    info.mkdir()  # what installing a distribution does to its site directory
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: polchain-fake-dist\nVersion: 1.0\n"
    )
    (info / "top_level.txt").write_text("polchain_fake_mod\n")
    after = installed_distributions()
    assert after["polchain_fake_mod"] == ["polchain-fake-dist"]
