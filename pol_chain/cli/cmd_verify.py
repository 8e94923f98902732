"""``polchain challenge``, ``verify`` and ``calibrate``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from pol_chain.cli._context import (
    AccountOpt,
    CosOpt,
    JsonOpt,
    RandomOpt,
    RhoOpt,
    TopQOpt,
    bytes32_option,
    current_settings,
    policy_overrides,
)
from pol_chain.cli._output import emit_json, info, short, table

app = typer.Typer()

EXIT_REJECTED = 3


@app.command()
def challenge(
    target: Annotated[str, typer.Argument(help="Run id, model digest or model file.")],
    all_claims: Annotated[
        bool, typer.Option("--all", help="For a model: challenge every claim on it.")
    ] = False,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Open a challenge against a run (or the claims on a model).

    Example: polchain challenge runs/digits/model.safetensors --all
    """
    from pol_chain.compose.context import open_ledger
    from pol_chain.compose.targets import UnknownTarget, resolve_model, resolve_run
    from pol_chain.ledger.types import RunStatus

    client = open_ledger(current_settings(), account=account)
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


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="Proof directory or run id.")],
    seed: Annotated[
        str | None,
        typer.Option(
            help="Challenge seed (0x + 64 hex) for the random segments.",
            callback=bytes32_option,
        ),
    ] = None,
    full: Annotated[bool, typer.Option(help="Replay every segment.")] = False,
    report_dir: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
    rho: RhoOpt = None,
    cos: CosOpt = None,
    random_segments: RandomOpt = None,
    top_q: TopQOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a proof locally (no transaction is sent).

    Example: polchain verify runs/digits --full
    """
    from pol_chain.agent.html import write_html_report
    from pol_chain.commitment import to_bytes32
    from pol_chain.compose.policy import policy_from
    from pol_chain.proof.verifier import verify as verify_proof

    settings = current_settings(**policy_overrides(rho, cos, random_segments, top_q))
    challenge_seed = to_bytes32(seed) if seed else os.urandom(32)
    policy = policy_from(settings, full=full)
    path = Path(target)
    context: dict[str, str] = {"target": target, "challenge seed": "0x" + challenge_seed.hex()}
    hide = [settings.home] + ([Path(settings.keystore)] if settings.keystore else [])
    if path.is_dir():
        from pol_chain.compose.replay import runner_for
        from pol_chain.format import RunBinding
        from pol_chain.proof.errors import CannotVerify
        from pol_chain.proof.manifest import DirectorySource
        from pol_chain.proof.verifier import verify_dir

        binding = RunBinding.read(path)
        out = report_dir or path / "verification"
        kwargs: dict[str, Any] = {
            "run_id": binding.run_id_bytes,
            "run_seed": binding.run_seed,
            "challenge_seed": challenge_seed,
            "policy": policy,
            "out_dir": out,
        }
        try:  # the code installed here, when it packs to the committed bundle
            report = verify_dir(path, **kwargs)
        except CannotVerify:  # else the directory's own bundle, sandboxed
            source = DirectorySource(path)
            runner = runner_for(
                (path / "spec.json").read_bytes(),
                binding.run_seed,
                source,
                work_dir=settings.home / "sandbox",
                hide=hide,
            )
            if runner is None:
                raise
            try:
                report = verify_dir(path, runner=runner, **kwargs)
            finally:
                runner.close()
        context["run"] = binding.run_id
    else:
        from pol_chain.compose.context import open_ledger, open_store
        from pol_chain.compose.fetch import fetch_proof
        from pol_chain.compose.replay import check_lineage, runner_for
        from pol_chain.compose.targets import resolve_run

        ledger = open_ledger(settings, read_only=True)
        run_id = resolve_run(ledger, target)
        fetched = fetch_proof(ledger, open_store(settings), run_id)
        check_lineage(ledger, fetched.spec_bytes, fetched.history)
        out = report_dir or Path(f"verification-{run_id.hex()[:12]}")
        remote = runner_for(
            fetched.spec_bytes,
            fetched.run_seed,
            fetched.source,
            work_dir=settings.home / "sandbox",
            hide=hide,
        )
        try:
            report = verify_proof(
                fetched.manifest,
                fetched.source,
                challenge_seed=challenge_seed,
                policy=policy,
                out_dir=out,
                runner=remote,
                **fetched.verify_kwargs(),
            )
        finally:
            if remote is not None:
                remote.close()
        context["run"] = "0x" + run_id.hex()
    png = out / "report.png"
    html = write_html_report(report, png if png.exists() else None, out / "report.html", context)
    summary: dict[str, Any] = {
        "verdict": report.verdict,
        "reasons": report.reason_codes,
        "bitwise_identical": report.bitwise_identical,
        "segments": len(report.segments),
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
                    s.index,
                    f"{s.start_step}→{s.end_step}",
                    _num(s.metrics.normalized_error if s.metrics else None),
                    _num(s.metrics.direction_cosine if s.metrics else None),
                    "yes" if s.bitwise_identical else "no",
                    "pass" if s.passed else "FAIL",
                )
                for s in report.segments
            ],
        )
        colour = "green" if report.passed else "red"
        reasons = f" ({', '.join(report.reason_codes)})" if report.reasons else ""
        info(f"verdict: [{colour}]{report.verdict}[/{colour}]{reasons}; report {html}")
    if not report.passed:
        raise typer.Exit(EXIT_REJECTED)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3e}"


@app.command()
def calibrate(
    task: Annotated[str, typer.Argument(help="Task to calibrate on.")] = "digits",
    segments: Annotated[int, typer.Option(help="Segments to replay.", min=1)] = 4,
    proof: Annotated[
        Path | None,
        typer.Option(
            help="Calibrate on this honest proof directory (e.g. recorded on a GPU) "
            "instead of training one here.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Replay on this device.")] = "cpu",
    save: Annotated[
        bool,
        typer.Option(help="Record the recommendation for this device pair (the agent uses it)."),
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Measure honest reproduction error on this hardware and recommend ρ and c.

    Example: polchain calibrate digits --json
    """
    from pol_chain.compose.policy import save_calibration
    from pol_chain.compose.registration import build_spec
    from pol_chain.format import RunBinding, TaskSpec
    from pol_chain.proof import train as train_loop
    from pol_chain.proof.calibration import calibrate as calibrate_proof

    with tempfile.TemporaryDirectory(prefix="polchain-calibrate-") as tmp:
        if proof is None:
            spec = build_spec(task, {"epochs": 1})
            run_id, run_seed = os.urandom(32), os.urandom(32)
            if not json_out:
                steps = spec.total_steps // max(1, spec.epochs)
                info(f"training one epoch of {task} to calibrate on ({steps} steps)")
            train_loop(spec, Path(tmp), run_id, run_seed)
            proof_dir = Path(tmp)
        else:
            proof_dir = proof
            run_seed = RunBinding.read(proof).run_seed
            spec = TaskSpec.from_bytes((proof / "spec.json").read_bytes())
        result = calibrate_proof(proof_dir, run_seed, segments=segments, device=device)
    recorded = str(spec.environment.get("device", "cpu")).split(":")[0]
    pair = f"{recorded}->{device.split(':')[0]}"
    rec = result["recommended"]
    if save:
        result["saved"] = {
            "pair": pair,
            "path": str(save_calibration(current_settings().home, pair, rec["rho"], rec["c"])),
        }
    if json_out:
        emit_json(result)
        return
    honest = result["honest"]
    info(
        f"honest max normalized error {honest['max_normalized_error']:.3e}, "
        f"min direction cosine {honest['min_direction_cosine']:.6f}"
    )
    info(f"bitwise identical replay: {result['bitwise_identical']}")
    info(f"recommended for {pair}: rho = {rec['rho']:.3e}, c = {rec['c']:.4f}")
    if save:
        info(f"saved for the agent in {result['saved']['path']}")
    else:
        info("set them under \\[policy] in the config file (rho, cos)")
