"""The distributed records parse what they write and refuse what they must (bounded,
typed, versioned), and a run's manifest is dispatched by its format."""

from __future__ import annotations

import json

import pytest

from pol_chain.commitment import ZERO32, leaf
from pol_chain.format import (
    ArtefactRef,
    DistributedPlan,
    Draw,
    FormatError,
    Hello,
    Manifest,
    Metrics,
    Reason,
    RoundRecord,
    RoundsEntry,
    RoundsManifest,
    Submissions,
    UnknownFormat,
    WorkerSubmission,
    WorkerVerdict,
    canonical_json,
    parse_any_manifest,
)
from pol_chain.format.rounds import global_name, round_record_name, submissions_name

RUN, SPEC = b"\x01" * 32, b"\x02" * 32
D = [bytes([i]) * 32 for i in range(3, 12)]


def submissions() -> Submissions:
    return Submissions(
        1,
        0,
        5,
        D[0],
        (
            WorkerSubmission(1, "submitted", D[1], D[2]),
            WorkerSubmission(2, "missing"),
            WorkerSubmission(3, "excluded"),
        ),
    )


def record() -> RoundRecord:
    metrics = Metrics(1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.5)
    return RoundRecord(
        1,
        0,
        5,
        D[0],
        submissions().digest,
        Draw(7, D[3], D[4], 0.25, (1,)),
        (
            WorkerVerdict(1, "accepted", ("random", "norm"), (), "", metrics),
            WorkerVerdict(2, "missing"),
            WorkerVerdict(3, "excluded"),
        ),
        (),
    )


def manifest(rounds: int = 2) -> RoundsManifest:
    m = RoundsManifest.new(RUN, SPEC)
    w0 = ArtefactRef("checkpoints/000000.safetensors", D[5])
    m = m.with_entry(RoundsEntry(0, 0, w0, None, leaf(RUN, 0, 0, w0.sha256, ZERO32)))
    for r in range(1, rounds + 1):
        sub = ArtefactRef(submissions_name(r), bytes([r]) * 32)
        m = m.with_entry(
            RoundsEntry(
                2 * r - 1, 5 * r, None, sub, leaf(RUN, 2 * r - 1, 5 * r, ZERO32, sub.sha256)
            )
        )
        g, rec = (
            ArtefactRef(global_name(r), bytes([40 + r]) * 32),
            ArtefactRef(round_record_name(r), bytes([80 + r]) * 32),
        )
        m = m.with_entry(
            RoundsEntry(2 * r, 5 * r, g, rec, leaf(RUN, 2 * r, 5 * r, g.sha256, rec.sha256))
        )
    return m.with_artefacts([ArtefactRef("rounds/000001/worker-0001.safetensors", D[6])])


def test_records_round_trip() -> None:
    plan = DistributedPlan(4, 5, 10, 0.25, 2, True, 1)
    assert DistributedPlan.from_json(plan.to_json()) == plan
    assert DistributedPlan.of_config(plan.into_config({"k": 3})) == plan
    assert plan.into_config({})["k"] == 5  # a global checkpoint every round
    assert DistributedPlan.of_config({"k": 3}) is None
    hello = Hello(31337, "0x" + "ab" * 20, RUN, SPEC, 2)
    assert Hello.from_bytes(hello.to_bytes()) == hello
    assert Submissions.from_bytes(submissions().to_bytes()) == submissions()
    assert submissions().submitted == [1]
    assert RoundRecord.from_bytes(record().to_bytes()) == record()
    assert record().accepted == [1]
    m = manifest()
    assert RoundsManifest.from_bytes(m.to_bytes()) == m
    assert m.rounds == 2 and m.leaves == [e.leaf for e in m.entries]
    assert [e.kind for e in m.entries] == ["init", "submissions", "global"] * 1 + [
        "submissions",
        "global",
    ]


def test_any_manifest_is_dispatched_by_its_format() -> None:
    assert isinstance(parse_any_manifest(manifest().to_bytes()), RoundsManifest)
    single = Manifest.new(RUN, SPEC, 10, 88)
    assert parse_any_manifest(single.to_bytes()) == single
    with pytest.raises(UnknownFormat):
        parse_any_manifest(canonical_json({"format": "polchain-manifest-v9"}))


def test_published_form_carries_every_cid() -> None:
    m = manifest().with_final(ArtefactRef("model.safetensors", D[8]))
    cids = {ref.sha256: f"bafy{i}" for i, ref in enumerate(m.refs())}
    pub = m.published(cids, "bafyspec")
    assert pub.is_published and not m.is_published
    assert pub.cids() == cids
    assert RoundsManifest.from_bytes(pub.to_bytes()) == pub


def edit(data: bytes, change: object) -> bytes:
    value = json.loads(data)
    change(value)  # type: ignore[operator]
    return canonical_json(value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda v: v["entries"][1].update(index=3), "entries[1].index"),
        (lambda v: v["entries"][2].update(step=6), "entries[2].step"),
        (lambda v: v["entries"][3].update(step=5), "entries[3].step"),
        (
            lambda v: v["entries"][1].update(checkpoint=v["entries"][0]["checkpoint"]),
            "entries[1].checkpoint",
        ),
        (lambda v: v["entries"][2].update(record=None), "entries[2].checkpoint"),
        (lambda v: v.update(extra=1), "extra"),
        (lambda v: v["artefacts"][0].update(file="../../etc/passwd"), "artefacts[0].file"),
        (
            lambda v: v.update(final={"index": 3, "model": v["artefacts"][0], "step": 10}),
            "final.index",
        ),
    ],
)
def test_manifest_refuses_inconsistent_structure(change: object, field: str) -> None:
    with pytest.raises(FormatError) as err:
        RoundsManifest.from_bytes(edit(manifest().to_bytes(), change))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (lambda v: v["workers"][0].update(rank=0), "workers[0].rank"),
        (lambda v: v["workers"].reverse(), "workers"),
        (lambda v: v["workers"][1].update(state_sha256="0x" + "00" * 32), "workers"),
        (lambda v: v["workers"][0].update(status="maybe"), "status"),
        (lambda v: v.update(round=-1), "round"),
    ],
)
def test_submissions_refuse_bad_fields(data: object, field: str) -> None:
    with pytest.raises(FormatError) as err:
        Submissions.from_bytes(edit(submissions().to_bytes(), data))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (lambda v: v["workers"][0].update(reasons=["replay_distance"]), "reasons"),
        (lambda v: v["workers"][0].update(reasons=["no_such_reason"]), "workers[0].reasons[0]"),
        (lambda v: v["workers"][0].update(checked_by=["hunch"]), "checked_by"),
        (lambda v: v["draw"].update(probability=1.5), "draw.probability"),
        (lambda v: v["draw"].update(picked=[2, 1]), "draw.picked"),
        (lambda v: v.update(aggregation="median"), "aggregation"),
        (lambda v: v["workers"][0].update(detail="x" * 501), "workers[0].detail"),
    ],
)
def test_round_record_refuses_bad_fields(data: object, field: str) -> None:
    with pytest.raises(FormatError) as err:
        RoundRecord.from_bytes(edit(record().to_bytes(), data))
    assert err.value.field == field


def test_rejection_needs_reasons_and_plan_bounds() -> None:
    assert WorkerVerdict(1, "rejected", (), (Reason.DATA_ORDER,)).reasons == (Reason.DATA_ORDER,)
    with pytest.raises(FormatError):
        WorkerVerdict(1, "rejected")
    for bad in ({"workers": 0}, {"check_probability": -0.1}, {"threads": 0}, {"verify": 1}):
        with pytest.raises(FormatError):
            DistributedPlan(**{"workers": 2, "local_steps": 1, "rounds": 1, **bad})  # type: ignore[arg-type]
    value = DistributedPlan(2, 1, 1).to_json()
    value["format"] = "polchain-distributed-plan-v0"
    with pytest.raises(UnknownFormat):
        DistributedPlan.from_json(value)


def test_parsers_bound_their_input() -> None:
    with pytest.raises(FormatError, match="exceed the limit"):
        Hello.from_bytes(b"{" + b" " * (1 << 17) + b"}")
    deep = b"[" * 40 + b"]" * 40
    with pytest.raises(FormatError, match="nested deeper"):
        Submissions.from_bytes(deep)
    with pytest.raises(FormatError, match="canonical"):
        RoundRecord.from_bytes(json.dumps(record().to_json(), indent=1).encode())
