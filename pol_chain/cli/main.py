"""The ``polchain`` command: a static table of commands whose bodies load lazily.

Like pip, this module imports nothing heavy: each command's implementation module
(``pol_chain.cli.cmd_*``) is imported only when that command runs, so ``--help`` stays
fast. Expected errors (:class:`pol_chain.errors.PolchainError`) print one line with a
hint and exit 1; anything else prints one line too, with the traceback only under
``--debug`` or ``POLCHAIN_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "run"]

EXIT_ERROR = 1
EXIT_INTERNAL = 70

app = typer.Typer(
    name="polchain",
    help=(
        "Prove you trained a model: record a proof-of-learning while training, anchor it "
        "on-chain, pin it to IPFS, and let anyone challenge it.\n\n"
        "Example: polchain train digits && polchain history runs/digits/model.safetensors"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
chain_app = typer.Typer(
    help="The embedded Anvil chain. Example: polchain chain up", no_args_is_help=True
)
store_app = typer.Typer(
    help="The content-addressed artefact store. Example: polchain store add model.safetensors",
    no_args_is_help=True,
)
show_app = typer.Typer(
    help="Show one run or challenge. Example: polchain show run 0x1234…", no_args_is_help=True
)
attack_app = typer.Typer(
    help=(
        "Adversaries against proof-of-learning, for research and demos. "
        "Example: polchain attack forge model.safetensors --account 2"
    ),
    no_args_is_help=True,
)
app.add_typer(chain_app, name="chain")
app.add_typer(store_app, name="store")
app.add_typer(show_app, name="show")
app.add_typer(attack_app, name="attack")

_state: dict[str, Any] = {"debug": False, "overrides": {}}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
RhoOpt = Annotated[
    float | None, typer.Option("--rho", help="Max normalized error per segment (policy ρ).")
]
CosOpt = Annotated[
    float | None, typer.Option("--cos", help="Min directional cosine per segment (policy c).")
]
RandomOpt = Annotated[
    int | None, typer.Option("--random", "-m", help="Random segments per challenge (policy m).")
]
TopQOpt = Annotated[int | None, typer.Option("--top-q", help="Top-Q segments per epoch.")]
AccountOpt = Annotated[
    int | None,
    typer.Option("--account", "-a", help="Anvil dev account index (embedded chain only)."),
]


def _policy(rho: float | None, cos: float | None, m: int | None, q: int | None) -> None:
    """Let policy flags override the config file and environment."""
    for key, value in (("policy_rho", rho), ("policy_cos", cos), ("policy_m", m), ("policy_q", q)):
        if value is not None:
            _state["overrides"][key] = value


def _call(module: str, func: str, **kwargs: Any) -> None:
    """Import ``pol_chain.cli.<module>`` and run ``func`` with the settings and kwargs."""
    from pol_chain.errors import PolchainError

    try:
        impl = importlib.import_module(f"pol_chain.cli.{module}")
        from pol_chain.config import load_settings

        settings = load_settings(**_state["overrides"])
        getattr(impl, func)(settings, **kwargs)
    except PolchainError as exc:
        _fail(str(exc), getattr(exc, "hint", ""), getattr(exc, "exit_code", EXIT_ERROR))
    except (typer.Exit, typer.Abort, typer.BadParameter, SystemExit):
        raise
    except KeyboardInterrupt:
        _fail("interrupted", "", 130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if _state["debug"]:
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc}",
            "rerun with --debug (or POLCHAIN_DEBUG=1) for the traceback and report it",
            EXIT_INTERNAL,
        )


def _fail(message: str, hint: str, code: int) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    if hint:
        typer.secho(f"hint: {hint}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(code)


@app.callback()
def _main(
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="POLCHAIN_HOME", help="Data folder (default: ./.polchain)."),
    ] = None,
    rpc_url: Annotated[
        str | None,
        typer.Option(help="EVM JSON-RPC endpoint instead of the embedded Anvil."),
    ] = None,
    keystore: Annotated[
        str | None,
        typer.Option(
            help="Encrypted keystore to sign with (password: POLCHAIN_KEYSTORE_PASSWORD)."
        ),
    ] = None,
    contract: Annotated[
        str | None, typer.Option(help="ProofLedger address (default: the one recorded).")
    ] = None,
    kubo_api: Annotated[
        str | None,
        typer.Option(help="Also pin artefacts to this Kubo RPC (queued while it is down)."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="POLCHAIN_DEBUG", help="Show tracebacks.")
    ] = False,
) -> None:
    """Prove you trained a model: proof-of-learning anchored on-chain."""
    _state["debug"] = debug
    overrides: dict[str, Any] = {}
    if home is not None:
        os.environ["POLCHAIN_HOME"] = str(home)
        overrides["home"] = home
    if rpc_url:
        overrides["rpc_url"] = rpc_url
    if keystore:
        overrides["keystore"] = keystore
    if contract:
        overrides["contract_address"] = contract
    if kubo_api:
        overrides["kubo_api"] = kubo_api
        overrides["store_backend"] = "kubo"
    _state["overrides"] = overrides


# --- setup -------------------------------------------------------------------------------


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="Overwrite an existing config file.")] = False,
) -> None:
    """Create the data folder and a commented config file.

    Example: polchain init && $EDITOR .polchain/config.toml
    """
    _call("cmd_setup", "init", force=force)


@chain_app.command("up")
def chain_up(json_out: JsonOpt = False) -> None:
    """Start the embedded Anvil (or reuse the one running); state persists in the data folder.

    Example: polchain chain up
    """
    _call("cmd_setup", "chain_up", json_out=json_out)


@chain_app.command("down")
def chain_down() -> None:
    """Stop the embedded Anvil cleanly (its state is saved).

    Example: polchain chain down
    """
    _call("cmd_setup", "chain_down")


@chain_app.command("status")
def chain_status(json_out: JsonOpt = False) -> None:
    """Show the chain endpoint, chain id, block and the ProofLedger address.

    Example: polchain chain status --json
    """
    _call("cmd_setup", "chain_status", json_out=json_out)


@app.command()
def deploy(
    force: Annotated[bool, typer.Option(help="Deploy a new ledger even if one exists.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Deploy the ProofLedger contract (reused when already deployed on that chain).

    Example: polchain deploy
    """
    _call("cmd_setup", "deploy", force=force, json_out=json_out)


# --- training and commits -------------------------------------------------------------------


@app.command()
def register(
    task: Annotated[str, typer.Argument(help="Task name (digits, resnet20) or module:function.")],
    out: Annotated[Path, typer.Option(help="Proof directory to create.")] = Path("proof"),
    epochs: Annotated[int | None, typer.Option(help="Override the task's epochs.")] = None,
    k: Annotated[int | None, typer.Option("-k", help="Checkpoint interval in steps.")] = None,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run on-chain before training and write its proof directory binding.

    Use it with the Python recorder in your own training script, then `polchain commit`.
    Example: polchain register digits --out proof && python train.py proof
    """
    _call(
        "cmd_train",
        "register",
        task=task,
        out=out,
        epochs=epochs,
        k=k,
        account=account,
        json_out=json_out,
    )


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="Task name (digits, resnet20) or module:function.")],
    out: Annotated[
        Path | None, typer.Option(help="Proof directory (default: runs/<task>).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the task's epochs.")] = None,
    k: Annotated[int | None, typer.Option("-k", help="Checkpoint interval in steps.")] = None,
    finalize: Annotated[
        bool, typer.Option(help="Finalize the run (claim the model) when training ends.")
    ] = True,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run in --out from its last checkpoint.")
    ] = False,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a task with live recording: each checkpoint is stored and committed on-chain.

    Example: polchain train digits --epochs 3 -k 20
    """
    _call(
        "cmd_train",
        "train",
        task=task,
        out=out,
        epochs=epochs,
        k=k,
        finalize=finalize,
        resume=resume,
        account=account,
        json_out=json_out,
    )


@app.command()
def commit(
    proof_dir: Annotated[Path, typer.Argument(help="Proof directory written by a recorder.")],
    follow: Annotated[
        bool, typer.Option(help="Keep committing new checkpoints until the run finishes.")
    ] = False,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store and commit the checkpoints of a proof directory that are not on-chain yet.

    Safe to rerun after a crash: only what is missing is committed.
    Example: polchain commit proof --follow
    """
    _call(
        "cmd_train",
        "commit",
        proof_dir=proof_dir,
        follow=follow,
        account=account,
        json_out=json_out,
    )


@app.command()
def finalize(
    run: Annotated[str, typer.Argument(help="Proof directory or run id.")],
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Declare the run's final model: appends a claim on the model digest.

    Example: polchain finalize proof
    """
    _call("cmd_train", "finalize", run=run, account=account, json_out=json_out)


# --- challenges and verification --------------------------------------------------------


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
    _call(
        "cmd_verify",
        "challenge",
        target=target,
        all_claims=all_claims,
        account=account,
        json_out=json_out,
    )


@app.command()
def agent(
    once: Annotated[bool, typer.Option(help="Handle pending challenges, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    rho: RhoOpt = None,
    cos: CosOpt = None,
    random_segments: RandomOpt = None,
    top_q: TopQOpt = None,
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the verifier agent: fetch, replay, pin the report and attest on-chain.

    Example: polchain agent --once
    """
    _policy(rho, cos, random_segments, top_q)
    _call("cmd_agent", "agent", once=once, poll=poll, account=account, json_out=json_out)


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="Proof directory or run id.")],
    seed: Annotated[
        str | None, typer.Option(help="Challenge seed (0x…32 bytes) for the random segments.")
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
    _policy(rho, cos, random_segments, top_q)
    _call(
        "cmd_verify",
        "verify",
        target=target,
        seed=seed,
        full=full,
        report_dir=report_dir,
        json_out=json_out,
    )


@app.command()
def calibrate(
    task: Annotated[str, typer.Argument(help="Task to calibrate on.")] = "digits",
    segments: Annotated[int, typer.Option(help="Segments to replay.")] = 4,
    json_out: JsonOpt = False,
) -> None:
    """Measure honest reproduction error on this hardware and recommend ρ and c.

    Example: polchain calibrate digits --json
    """
    _call("cmd_verify", "calibrate", task=task, segments=segments, json_out=json_out)


# --- queries -----------------------------------------------------------------------------------


@app.command()
def history(
    model: Annotated[str, typer.Argument(help="Model digest, model file or run id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a model's full history: claims, commits, challenges, attestations, owner.

    Example: polchain history runs/digits/model.safetensors
    """
    _call("cmd_query", "history", model=model, json_out=json_out)


@app.command()
def owner(
    model: Annotated[str, typer.Argument(help="Model digest, model file or run id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a model's current owner (earliest-finalized claim not refuted).

    Example: polchain owner 0xab12…
    """
    _call("cmd_query", "owner", model=model, json_out=json_out)


@show_app.command("run")
def show_run(
    run_id: Annotated[str, typer.Argument(help="Run id (0x…) or proof directory.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a run: trainer, spec, commits, status, challenges.

    Example: polchain show run 0x1234…
    """
    _call("cmd_query", "show_run", run=run_id, json_out=json_out)


@show_app.command("challenge")
def show_challenge(
    challenge_id: Annotated[int, typer.Argument(help="Challenge id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a challenge: run, seed, votes, outcome.

    Example: polchain show challenge 1
    """
    _call("cmd_query", "show_challenge", challenge_id=challenge_id, json_out=json_out)


# --- store ------------------------------------------------------------------------------------


@store_app.command("add")
def store_add(
    file: Annotated[Path, typer.Argument(help="File to add.")],
    json_out: JsonOpt = False,
) -> None:
    """Add a file to the store and print its CID.

    Example: polchain store add model.safetensors
    """
    _call("cmd_store", "add", file=file, json_out=json_out)


@store_app.command("get")
def store_get(
    cid: Annotated[str, typer.Argument(help="CID to fetch.")],
    out: Annotated[Path, typer.Argument(help="Where to write the bytes.")],
    sha256: Annotated[str | None, typer.Option(help="Required SHA-256 of the content.")] = None,
) -> None:
    """Fetch a CID (verified block by block) into a file.

    Example: polchain store get bafy… model.safetensors
    """
    _call("cmd_store", "get", cid=cid, out=out, sha256=sha256)


@store_app.command("export")
def store_export(
    cid: Annotated[str, typer.Argument(help="Root CID.")],
    out: Annotated[Path, typer.Argument(help="CAR file to write.")],
) -> None:
    """Export a CID's DAG as a CARv1 file (importable into Kubo).

    Example: polchain store export bafy… model.car
    """
    _call("cmd_store", "export", cid=cid, out=out)


@store_app.command("import")
def store_import(car: Annotated[Path, typer.Argument(help="CAR file to import.")]) -> None:
    """Import a CAR file into the local store.

    Example: polchain store import model.car
    """
    _call("cmd_store", "import_car", car=car)


@store_app.command("push")
def store_push(
    cid: Annotated[
        str | None, typer.Argument(help="CID to push; none drains the pending queue.")
    ] = None,
    kubo_api: Annotated[str | None, typer.Option(help="Kubo RPC URL.")] = None,
) -> None:
    """Push a CID (or everything queued) to the configured Kubo node.

    Example: polchain store push --kubo-api http://127.0.0.1:5001
    """
    _call("cmd_store", "push", cid=cid, kubo_api=kubo_api)


@store_app.command("verify")
def store_verify(json_out: JsonOpt = False) -> None:
    """Re-hash every block in the local store and report damaged ones.

    Example: polchain store verify
    """
    _call("cmd_store", "verify", json_out=json_out)


# --- attacks --------------------------------------------------------------------------


@attack_app.command("forge")
def attack_forge(
    model: Annotated[Path, typer.Argument(help="Stolen model weights (safetensors).")],
    out: Annotated[Path, typer.Option(help="Where to write the forged proof.")] = Path("forged"),
    task: Annotated[str, typer.Option(help="Task the model belongs to.")] = "digits",
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run and forge a proof that interpolates to stolen weights.

    Example: polchain attack forge runs/digits/model.safetensors --account 2
    """
    _call(
        "cmd_attack",
        "forge",
        model=model,
        out=out,
        task=task,
        account=account,
        json_out=json_out,
    )


@attack_app.command("copy")
def attack_copy(
    proof_dir: Annotated[Path, typer.Argument(help="Someone else's proof directory.")],
    out: Annotated[Path, typer.Option(help="Where to write the copied proof.")] = Path("copied"),
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run and re-bind someone's public proof to it (proof copying, 6.8).

    Example: polchain attack copy runs/digits --account 2
    """
    _call("cmd_attack", "copy", proof_dir=proof_dir, out=out, account=account, json_out=json_out)


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
