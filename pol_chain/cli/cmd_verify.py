"""``polchain challenge``, ``verify`` and ``calibrate``."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from pol_chain.cli._output import emit_json, info, table
from pol_chain.cli.cmd_query import UnknownTarget, resolve_model, resolve_run, short
from pol_chain.config import Settings

EXIT_REJECTED = 3


def challenge(
    settings: Settings, *, target: str, all_claims: bool, account: int | None, json_out: bool
) -> None:
    """Open a challenge against a run, the owner's run of a model, or every claim on it."""
    from pol_chain.compose.context import open_client
    from pol_chain.ledger.types import RunStatus

    client = open_client(settings, account=account)
    path = Path(target)
    try:
        run_ids = [resolve_run(client, target)]
    except UnknownTarget:
        if path.is_dir():
            raise
        digest = resolve_model(client, target)
        claims = client.claims_of(digest)
        if not claims:
            raise UnknownTarget(f"no claims on model {short(digest, 16)}") from None
        live = [c for c in claims if c.status is not RunStatus.REFUTED]
        if all_claims:
            run_ids = [c.run_id for c in live]
        else:
            owner = client.owner_of(digest)
            run_ids = [owner.run_id] if owner else []
        if not run_ids:
            raise UnknownTarget(
                f"every claim on model {short(digest, 16)} is already refuted"
            ) from None
    opened = [client.open_challenge(run_id) for run_id in run_ids]
    if json_out:
        emit_json({"challenges": opened})
        return
    for ch in opened:
        info(
            f"opened challenge #{ch.challenge_id} against run 0x{ch.run_id.hex()} "
            f"(randomness from block {ch.reveal_block}, quorum {ch.quorum})"
        )


def verify(
    settings: Settings,
    *,
    target: str,
    seed: str | None,
    full: bool,
    report_dir: Path | None,
    json_out: bool,
) -> None:
    """Verify a proof directory (no chain needed) or an on-chain run (read-only)."""
    from pol_chain.agent.html import write_html_report
    from pol_chain.cli.cmd_agent import policy_from
    from pol_chain.commitment import to_bytes32
    from pol_chain.proof.verifier import verify as verify_proof

    challenge_seed = to_bytes32(seed) if seed else os.urandom(32)
    policy = policy_from(settings)
    if full:
        policy = replace(policy, full_below=10**9, max_replay_fraction=1.0)
    path = Path(target)
    context: dict[str, str] = {"target": target, "challenge seed": "0x" + challenge_seed.hex()}
    if path.is_dir():
        from pol_chain.compose.binding import RunBinding
        from pol_chain.proof.verifier import verify_dir

        binding = RunBinding.read(path)
        out = report_dir or path / "verification"
        report = verify_dir(
            path,
            run_id=binding.run_id_bytes,
            run_seed=binding.run_seed,
            challenge_seed=challenge_seed,
            policy=policy,
            out_dir=out,
        )
        context["run"] = binding.run_id
    else:
        from pol_chain.compose.context import open_client, open_store
        from pol_chain.compose.fetch import fetch_proof

        client = open_client(settings, read_only=True)
        run_id = resolve_run(client, target)
        fetched = fetch_proof(client, open_store(settings), run_id)
        out = report_dir or Path(f"verification-{run_id.hex()[:12]}")
        report = verify_proof(
            fetched.manifest,
            fetched.source,
            challenge_seed=challenge_seed,
            policy=policy,
            out_dir=out,
            **fetched.verify_kwargs(),
        )
        context["run"] = "0x" + run_id.hex()
    png = out / "report.png"
    html = write_html_report(
        report.data, png if png.exists() else None, out / "report.html", context
    )
    summary: dict[str, Any] = {
        "verdict": report.data["verdict"],
        "reasons": report.reasons,
        "bitwise_identical": report.data.get("bitwise_identical"),
        "segments": len(report.data["segments"]),
        "report_digest": "0x" + report.digest.hex(),
        "report": str(out / "report.json"),
        "html": str(html),
    }
    if json_out:
        emit_json(summary)
    else:
        table(
            "replayed segments",
            ["segment", "steps", "normalized error", "direction cos", "bitwise", "ok"],
            [
                (
                    s["index"],
                    f"{s['start_step']}→{s['end_step']}",
                    _num(s["metrics"].get("normalized_error")),
                    _num(s["metrics"].get("direction_cosine")),
                    "yes" if s.get("bitwise_identical") else "no",
                    "pass" if s["passed"] else "FAIL",
                )
                for s in report.data["segments"]
            ],
        )
        colour = "green" if report.passed else "red"
        reasons = f" ({', '.join(report.reasons)})" if report.reasons else ""
        info(f"verdict: [{colour}]{report.data['verdict']}[/{colour}]{reasons}; report {html}")
    if not report.passed:
        raise typer.Exit(EXIT_REJECTED)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3e}"


def calibrate(settings: Settings, *, task: str, segments: int, json_out: bool) -> None:
    """Train a short honest run here, replay some segments, recommend ρ and c."""
    from pol_chain.cli.cmd_train import build_spec
    from pol_chain.proof import train as train_loop
    from pol_chain.proof.calibration import calibrate as calibrate_proof

    spec = build_spec(task, epochs=1, k=None)
    with tempfile.TemporaryDirectory(prefix="polchain-calibrate-") as tmp:
        run_id, run_seed = os.urandom(32), os.urandom(32)
        if not json_out:
            info(
                f"training one epoch of {task} to calibrate on ({spec.total_steps // max(1, spec.epochs)} steps)"
            )
        train_loop(spec, Path(tmp), run_id, run_seed)
        result = calibrate_proof(Path(tmp), run_seed, segments=segments)
    if json_out:
        emit_json(result)
        return
    rec = result["recommended"]
    honest = result["honest"]
    info(
        f"honest max normalized error {honest['max_normalized_error']:.3e}, "
        f"min direction cosine {honest['min_direction_cosine']:.6f}"
    )
    info(f"bitwise identical replay: {result['bitwise_identical']}")
    info(f"recommended: rho = {rec['rho']:.3e}, c = {rec['c']:.4f}")
    info("set them under \\[policy] in the config file (rho, cos)")
