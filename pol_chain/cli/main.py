"""The ``polchain`` command: a static table of commands whose modules load lazily.

Like pip, this module imports nothing heavy: each command lives, options and body
together, in one ``pol_chain.cli.cmd_*`` module (a typer app per command group), which
is imported only when that command runs or its help is shown, so ``--help`` stays fast.
Expected errors (:class:`pol_chain.errors.PolchainError`) print one line with a hint and
exit 1 (or their own code); anything else prints one line too, with the traceback only
under ``--debug`` or ``POLCHAIN_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pol_chain.cli import _context

__all__ = ["COMMANDS", "app", "run"]

EXIT_ERROR = 1
EXIT_INTERNAL = 70

COMMANDS: dict[str, str] = {
    "init": "pol_chain.cli.cmd_setup",
    "chain": "pol_chain.cli.cmd_setup",
    "deploy": "pol_chain.cli.cmd_setup",
    "register": "pol_chain.cli.cmd_train",
    "train": "pol_chain.cli.cmd_train",
    "distributed": "pol_chain.cli.cmd_distributed",
    "commit": "pol_chain.cli.cmd_train",
    "finalize": "pol_chain.cli.cmd_train",
    "challenge": "pol_chain.cli.cmd_verify",
    "agent": "pol_chain.cli.cmd_agent",
    "verify": "pol_chain.cli.cmd_verify",
    "calibrate": "pol_chain.cli.cmd_verify",
    "history": "pol_chain.cli.cmd_query",
    "owner": "pol_chain.cli.cmd_query",
    "show": "pol_chain.cli.cmd_query",
    "store": "pol_chain.cli.cmd_store",
    "attack": "pol_chain.cli.cmd_attack",
}
"""Command name → the module whose typer ``app`` declares it (pip's command table)."""


class LazyGroup(TyperGroup):
    """The root group: commands come from :data:`COMMANDS`, imported on first use;
    errors of any command become one line and a fixed exit code."""

    _loaded: dict[str, Any] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = dict.fromkeys(COMMANDS)  # type: ignore[assignment]  # names for "did you mean"

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        if module not in self._loaded:
            self._loaded[module] = typer.main.get_command(importlib.import_module(module).app)
        loaded = self._loaded[module]
        if not hasattr(loaded, "commands"):  # typer gives a module of one command as it
            return loaded
        return loaded.commands.get(cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command; a usage error (bad option value, unknown command) is one line
        and exit code 2, like every other error."""
        from typer._click.exceptions import ClickException, NoArgsIsHelpError

        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except NoArgsIsHelpError as exc:
            exc.show()  # the help text
            sys.exit(exc.exit_code)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f"see '{ctx.command_path} --help'" if ctx is not None else ""
            typer.secho(f"error: {exc.format_message()}", err=True, fg=typer.colors.RED)
            if hint:
                typer.secho(f"hint: {hint}", err=True, fg=typer.colors.YELLOW)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.secho("error: aborted", err=True, fg=typer.colors.RED)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        from pol_chain.errors import PolchainError

        try:
            return super().invoke(ctx)
        except PolchainError as exc:
            _fail(str(exc), exc.hint, exc.exit_code)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", "", 130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
            if type(exc).__module__.startswith("typer") or _is_usage_error(exc):
                raise
            if _context.state.debug:
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with --debug (or POLCHAIN_DEBUG=1) for the traceback and report it",
                EXIT_INTERNAL,
            )


def _is_usage_error(exc: BaseException) -> bool:
    from typer._click.exceptions import ClickException

    return isinstance(exc, ClickException)


def _fail(message: str, hint: str, code: int) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    if hint:
        typer.secho(f"hint: {hint}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(code)


app = typer.Typer(
    name="polchain",
    cls=LazyGroup,
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
    state = _context.state
    state.debug = debug
    state.overrides = {}
    if home is not None:
        os.environ["POLCHAIN_HOME"] = str(home)
        state.overrides["home"] = home
    if rpc_url:
        state.overrides["rpc_url"] = rpc_url
    if keystore:
        state.overrides["keystore"] = keystore
    if contract:
        state.overrides["contract_address"] = contract
    if kubo_api:
        state.overrides["kubo_api"] = kubo_api
        state.overrides["store_backend"] = "kubo"


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
