"""``polchain distributed``: verified data-parallel training across untrusted workers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pol_chain.cli._context import AccountOpt, JsonOpt, current_settings
from pol_chain.cli._output import emit_json, info, table

app = typer.Typer()

BYZANTINE_HELP = (
    "Make worker RANK misbehave, for tests and demos (off by default): random, sign_flip, "
    "scale, lazy, stale, copier, off_shard, slow; RANK=B1,B2 cycles by round. Repeatable."
)


@app.command()
def distributed(
    task: Annotated[str, typer.Argument(help="Task name (digits, resnet20) or module:function.")],
    workers: Annotated[int, typer.Option("--workers", "-n", help="Worker processes N.")] = 4,
    local_steps: Annotated[int, typer.Option(help="Local steps H per worker and round.")] = 5,
    check_probability: Annotated[
        float,
        typer.Option("--check-probability", "-p", help="Chance p that a submission is replayed."),
    ] = 0.25,
    rounds: Annotated[int, typer.Option(help="Rounds R.")] = 10,
    byzantine: Annotated[
        list[str] | None,
        typer.Option("--byzantine", metavar="RANK=BEHAVIOUR", help=BYZANTINE_HELP),
    ] = None,
    max_rejections: Annotated[
        int, typer.Option(help="Exclude a worker at its Kth rejection (0: never).")
    ] = 2,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check submissions (off: a baseline).")
    ] = True,
    round_timeout: Annotated[
        float, typer.Option(help="Seconds a round waits for submissions.")
    ] = 120.0,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<task>-distributed).")
    ] = None,
    finalize: Annotated[bool, typer.Option(help="Claim the final model on-chain.")] = True,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a task on N worker processes of this machine (gloo on loopback); every round
    is committed on-chain before a p-fraction of the work (and every outlier) is replayed.

    Example: polchain distributed digits --workers 4 --local-steps 5 --check-probability 0.25 --rounds 10 --byzantine 4=sign_flip
    """
    from pol_chain.distributed.flags import parse_byzantine
    from pol_chain.format import DistributedPlan

    plan = DistributedPlan(
        workers=workers,
        local_steps=local_steps,
        rounds=rounds,
        check_probability=check_probability,
        max_rejections=max_rejections,
        verify=verify,
    )
    misbehave = parse_byzantine(byzantine or [], workers)  # bad flags fail before any import

    from pol_chain.compose.registration import register_spec
    from pol_chain.distributed import LocalWorkers, distributed_spec, run_local

    out = out or Path("runs") / f"{task.replace(':', '_').replace('.', '_')}-distributed"
    local = LocalWorkers(workers, misbehave, log_dir=out / "logs").start()
    try:
        spec = distributed_spec(task, plan)
        binding, client, store, spec = register_spec(current_settings(), spec, out, account)
    except BaseException:
        local.stop(timeout=0.1)
        raise
    if not json_out:
        info(
            f"registered run {binding.run_id}; {workers} workers, {rounds} rounds of {local_steps} steps"
        )
    result = run_local(
        spec,
        binding,
        out,
        client,
        store,
        workers=local,
        round_timeout=round_timeout,
        finalize=finalize,
        log=None if json_out else info,
    )
    if json_out:
        emit_json(result.to_json())
        return
    table(
        "workers",
        ["rank", "behaviour", "accepted", "rejected", "checked", "missing", "state"],
        [
            (
                w.rank,
                ",".join(misbehave.get(w.rank, ("honest",))),
                w.accepted,
                w.rejected,
                w.checked,
                w.missing,
                w.state + (f" ({w.why})" if w.why else ""),
            )
            for w in result.workers.values()
        ],
    )
    acc = f"{result.test_accuracy:.3f}" if result.test_accuracy is not None else "n/a"
    info(f"model 0x{result.model_digest.hex()} (test accuracy {acc}) in {out}")
    if result.finalized:
        info(f"finalized; verify it with `polchain verify {binding.run_id}`")
