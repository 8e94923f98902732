"""Every format record: round trip, canonical bytes (golden files), unknown versions and
malformed fields refused with a clear message naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pol_chain.format import (
    ArtefactRef,
    Check,
    CheckpointMeta,
    DatasetCommitment,
    FormatError,
    InitRule,
    JsonObject,
    Locator,
    Manifest,
    ManifestEntry,
    Metrics,
    Reason,
    Report,
    RunBinding,
    Segment,
    SegmentResult,
    SegmentStep,
    SpecError,
    TaskSpec,
    Thresholds,
    UnknownFormat,
    canonical_json,
    checkpoint_name,
    parse_json,
    segment_name,
)

Golden = Callable[[str, bytes], None]
D = [bytes([i]) * 32 for i in range(16)]


def _spec() -> TaskSpec:
    return TaskSpec(
        entry="pol_chain.tasks.digits:build",
        source_sha256=D[1],
        config={"batch_size": 32, "epochs": 2, "k": 10, "lr": {"base": 0.05}},
        init=InitRule(),
        dataset=DatasetCommitment(D[2], 1438),
        environment={"device": "cpu", "torch": "2.13.0"},
    )


def _spec_v2() -> TaskSpec:
    return TaskSpec(
        entry="mytask:build",
        config={"batch_size": 32, "epochs": 2, "grad_accumulation": 2, "k": 10},
        init=InitRule.parent(D[12], run_id=D[13], model_cid="bafymodel"),
        dataset=DatasetCommitment(D[2], 1438, index=Locator(D[14], "bafyindex")),
        environment={"device": "cpu"},
        bundle=Locator(D[15], "bafybundle", 4096),
    )


def _manifest() -> Manifest:
    man = Manifest.new(D[3], D[4], 10, 88)
    man = man.with_entry(ManifestEntry(0, 0, ArtefactRef(checkpoint_name(0), D[5]), None, D[6]))
    man = man.with_entry(
        ManifestEntry(
            1,
            10,
            ArtefactRef(checkpoint_name(1), D[7]),
            ArtefactRef(segment_name(1), D[8]),
            D[9],
        )
    )
    return man.with_final(ArtefactRef("model.safetensors", D[10]))


def _segment() -> Segment:
    steps = [SegmentStep(t, (t, t + 1, 1437), {"augment": 7 * t, "dropout": 9}) for t in range(3)]
    return Segment.of(1, 3, steps)


def _segment_v2() -> Segment:
    steps = [SegmentStep.of(t, [(t, 5), (9, 1437)], {"dropout": t}) for t in range(10, 12)]
    return Segment.of(2, 12, steps)


def _report() -> Report:
    metrics = Metrics(1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.5)
    seg = SegmentResult(1, 0, 10, ("first", "last"), metrics, True, True, ())
    return Report.build(
        run_id=D[3],
        challenge_seed=D[11],
        reasons=[],
        segments=[seg],
        checks={"init": Check(), "integrity": Check()},
        thresholds=Thresholds(rho=0.01, c=0.99),
        policy={"m": 30, "q": 1},
        environment={"device": "cpu"},
        spec_sha256=D[4],
        model_digest=D[10],
        finalized=True,
        last_index=1,
    )


def _binding() -> RunBinding:
    return RunBinding(
        31337, "0x" + "ab" * 20, "0x" + "cd" * 32, "0x" + "ef" * 20, "0x" + "01" * 32, "bafy"
    )


RECORDS: dict[str, tuple[Callable[[], Any], Callable[[bytes], Any]]] = {
    "spec.json": (_spec, TaskSpec.from_bytes),
    "spec-v2.json": (_spec_v2, TaskSpec.from_bytes),
    "manifest.json": (_manifest, Manifest.from_bytes),
    "segment.json": (_segment, Segment.from_bytes),
    "segment-v2.json": (_segment_v2, Segment.from_bytes),
    "report.json": (_report, Report.from_bytes),
    "binding.json": (_binding, RunBinding.from_bytes),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_round_trip_and_golden_bytes(name: str, golden: Golden) -> None:
    build, parse = RECORDS[name]
    record = build()
    data = record.to_bytes()
    assert data == canonical_json(json.loads(data))  # canonical
    assert parse(data) == record  # round trip
    assert parse(data).to_bytes() == data
    golden(name, data)


def test_published_manifest_round_trip(golden: Golden) -> None:
    local = _manifest()
    assert not local.is_published
    cids = {d: f"bafk{i}" for i, d in enumerate(D)}
    published = local.published(cids, "bafyspec")
    assert published.is_published and published.spec_cid == "bafyspec"
    assert published.cids() == {D[5]: "bafk5", D[7]: "bafk7", D[8]: "bafk8", D[10]: "bafk10"}
    assert Manifest.from_bytes(published.to_bytes()) == published
    assert published.leaves == local.leaves
    golden("manifest-published.json", published.to_bytes())


def test_manifest_bytes_are_its_canonical_json_in_every_form() -> None:
    """The manifest's bytes are spliced from each entry's cached encoding: the same bytes
    as encoding the whole, whether empty, growing, finalized or published (whose entries
    are new objects: no stale cache)."""
    empty = Manifest.new(D[3], D[4], 10, 88)
    local = _manifest()
    growing = Manifest.new(D[3], D[4], 10, 88).with_entry(local.entries[0])
    for entry in local.entries:
        assert entry.canonical == canonical_json(entry.to_json())  # cached before published
    published = local.published({d: f"bafk{i}" for i, d in enumerate(D)}, "bafyspec")
    for man in (empty, growing, local, local.truncated(1, keep_final=False), published):
        assert man.to_bytes() == canonical_json(man.to_json())
        assert Manifest.from_bytes(man.to_bytes()) == man


def test_checkpoint_meta_round_trip(golden: Golden) -> None:
    meta = CheckpointMeta(step=20, scheduler_position=20, lr=(0.05, None))
    obj = JsonObject(json.loads(canonical_json(meta.to_json())), "checkpoint")
    assert CheckpointMeta.from_json(obj) == meta
    golden("checkpoint-meta.json", canonical_json(meta.to_json()))


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_unknown_version_is_refused_clearly(name: str) -> None:
    build, parse = RECORDS[name]
    value = build().to_json()
    old = value["format"]
    value["format"] = old[: old.rindex("-v")] + "-v9"
    with pytest.raises(FormatError) as info:
        parse(canonical_json(value))
    assert "format" in str(info.value) and old in str(info.value)
    assert isinstance(info.value, UnknownFormat) or info.value.field == "format"


# field path, mutation → the error must name that field
MALFORMED: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    ("spec.json", "config.k", lambda v: v["config"].update(k=0)),
    ("spec.json", "task.source_sha256", lambda v: v["task"].update(source_sha256="0x12")),
    ("spec.json", "init.kind", lambda v: v["init"].update(kind="magic")),
    ("spec.json", "dataset.size", lambda v: v["dataset"].update(size="many")),
    ("spec.json", "task.entry", lambda v: v["task"].update(entry="no function")),
    ("manifest.json", "entries[1].index", lambda v: v["entries"][1].update(index=5)),
    ("manifest.json", "entries[0].leaf", lambda v: v["entries"][0].update(leaf=7)),
    (
        "manifest.json",
        "entries[1].checkpoint.file",
        lambda v: v["entries"][1]["checkpoint"].update(file="../../etc/passwd"),
    ),
    (
        "manifest.json",
        "entries[0].segment",
        lambda v: v["entries"][0].update(segment=v["entries"][1]["segment"]),
    ),
    ("manifest.json", "final.index", lambda v: v["final"].update(index=0)),
    ("manifest.json", "run_id", lambda v: v.update(run_id=None)),
    ("manifest.json", "k", lambda v: v.update(k=True)),
    ("manifest.json", "extra", lambda v: v.update(extra=1)),
    (
        "segment.json",
        "steps[1].indices[0]",
        lambda v: v["steps"][1]["indices"].__setitem__(0, 2**63),
    ),
    ("segment.json", "steps[0].indices[1]", lambda v: v["steps"][0]["indices"].__setitem__(1, -1)),
    (
        "segment.json",
        "steps[2].seeds.dropout",
        lambda v: v["steps"][2]["seeds"].update(dropout="x"),
    ),
    ("segment.json", "steps", lambda v: v.update(end_step=99)),
    ("report.json", "verdict", lambda v: v.update(verdict="maybe")),
    ("report.json", "reasons[0]", lambda v: v.update(reasons=["not_a_reason"], verdict="fail")),
    (
        "report.json",
        "segments[0].metrics.l2",
        lambda v: v["segments"][0]["metrics"].update(l2="big"),
    ),
    ("binding.json", "chain_id", lambda v: v.update(chain_id=-1)),
]


@pytest.mark.parametrize(
    ("name", "field", "mutate"), MALFORMED, ids=[f"{n}:{f}" for n, f, _ in MALFORMED]
)
def test_malformed_field_is_refused_with_its_name(
    name: str, field: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    build, parse = RECORDS[name]
    value = build().to_json()
    mutate(value)
    with pytest.raises(FormatError) as info:
        parse(canonical_json(value))
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)


def test_spec_errors_are_spec_errors() -> None:
    value: dict[str, Any] = _spec().to_json()
    value["config"]["epochs"] = 0
    with pytest.raises(SpecError) as info:
        TaskSpec.from_bytes(canonical_json(value))
    assert info.value.reason is Reason.SPEC_INVALID


def test_non_canonical_and_hostile_json_is_refused_fast() -> None:
    data = _segment().to_bytes()
    with pytest.raises(FormatError, match="canonical"):
        Segment.from_bytes(data.replace(b'{"end_step"', b'{ "end_step"'))
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(FormatError, match="nested deeper"):
        parse_json(deep, "manifest", canonical=False)
    with pytest.raises(FormatError, match="exceed the limit"):
        parse_json(b"[" + b"0," * 1000 + b"0]", "x", max_bytes=100)
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_json(b'{"a": NaN}', "x", canonical=False)
    # brackets inside strings do not count towards the depth
    assert parse_json(b'["' + b"[" * 100 + b'"]', "x", canonical=False) == ["[" * 100]
    assert parse_json(b'["\\\\", "[["]', "x", canonical=False) == ["\\", "[["]


def test_unversioned_bindings_still_read() -> None:
    binding = _binding()
    old = json.dumps(
        {k: v for k, v in binding.to_json().items() if k != "format"}, indent=2, sort_keys=True
    ).encode()
    assert RunBinding.from_bytes(old) == binding


def test_report_verdict_follows_from_reasons() -> None:
    report = _report()
    assert report.passed and report.bitwise_identical
    failed = Report.build(
        run_id=D[3],
        challenge_seed=D[11],
        reasons=[Reason.DATA_ORDER, Reason.DATA_ORDER, Reason.DIRECTION],
        checks={},
        thresholds=Thresholds(0.01, 0.99),
    )
    assert failed.verdict == "fail" and failed.reason_codes == ["data_order", "direction"]
    with pytest.raises(FormatError):
        Report(D[3], D[11], "pass", (Reason.DIRECTION,), {}, (), Thresholds(0.01, 0.99))


def test_old_reports_and_segments_parse() -> None:
    from format.conftest import GOLDEN

    old_report = Report.from_bytes((GOLDEN / "report-v1.json").read_bytes())
    assert old_report.passed and old_report.to_json()["format"] == "polchain-report-v2"
    old_segment = Segment.from_bytes((GOLDEN / "segment.json").read_bytes())
    assert old_segment.to_bytes() == (GOLDEN / "segment.json").read_bytes()  # v1 stays v1
    assert all(st.single for st in old_segment.steps)
    new_segment = _segment_v2()
    assert new_segment.to_json()["format"] == "polchain-segment-v2"
    assert [list(b) for b in new_segment.steps[0].batches] == [[10, 5], [9, 1437]]
    old_spec = TaskSpec.from_bytes((GOLDEN / "spec.json").read_bytes())
    assert old_spec.version == 1 and old_spec.to_bytes() == (GOLDEN / "spec.json").read_bytes()
    with pytest.raises(FormatError):  # a v1 report may not carry a v2 reason
        value = json.loads((GOLDEN / "report-v1.json").read_bytes())
        value.update(verdict="fail", reasons=["code_failure"])
        Report.from_bytes(canonical_json(value))
