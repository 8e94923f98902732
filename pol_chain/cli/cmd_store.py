"""``polchain store add|get|export|import|push|verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pol_chain.cli._context import JsonOpt, bytes32_option, current_settings
from pol_chain.cli._output import emit_json, info
from pol_chain.errors import PolchainError

app = typer.Typer()
store_app = typer.Typer(
    help="The content-addressed artefact store. Example: polchain store add model.safetensors",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")


@store_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="File to add.")],
    json_out: JsonOpt = False,
) -> None:
    """Add a file to the store and print its CID.

    Example: polchain store add model.safetensors
    """
    from pol_chain.compose.context import open_store

    settings = current_settings()

    if not file.is_file():
        raise PolchainError(f"{file}: no such file")
    cid = open_store(settings).put_file(file, name=file.name)
    if json_out:
        emit_json({"cid": cid, "file": str(file), "bytes": file.stat().st_size})
    else:
        print(cid)


@store_app.command("get")
def get(
    cid: Annotated[str, typer.Argument(help="CID to fetch.")],
    out: Annotated[Path, typer.Argument(help="Where to write the bytes.")],
    sha256: Annotated[
        str | None,
        typer.Option(
            help="Required SHA-256 of the content (0x + 64 hex).", callback=bytes32_option
        ),
    ] = None,
) -> None:
    """Fetch a CID (verified block by block) into a file.

    Example: polchain store get bafy… model.safetensors
    """
    from pol_chain.commitment import to_bytes32
    from pol_chain.compose.context import open_store

    settings = current_settings()
    expect = to_bytes32(sha256) if sha256 else None
    open_store(settings).get_file(cid, out, expect_sha256=expect)
    info(f"wrote {out}")


@store_app.command("export")
def export(
    cid: Annotated[str, typer.Argument(help="Root CID.")],
    out: Annotated[Path, typer.Argument(help="CAR file to write.")],
) -> None:
    """Export a CID's DAG as a CARv1 file (importable into Kubo).

    Example: polchain store export bafy… model.car
    """
    from pol_chain.compose.context import open_local_store

    blocks = open_local_store(current_settings()).export_car(cid, out)
    info(f"wrote {out} ({blocks} blocks); import into Kubo with `ipfs dag import {out}`")


@store_app.command("import")
def import_car(car: Annotated[Path, typer.Argument(help="CAR file to import.")]) -> None:
    """Import a CAR file into the local store.

    Example: polchain store import model.car
    """
    from pol_chain.compose.context import open_local_store

    if not car.is_file():
        raise PolchainError(f"{car}: no such file")
    roots = open_local_store(current_settings()).import_car(car, name=car.name)
    for root in roots:
        print(root)


@store_app.command("push")
def push(
    cid: Annotated[
        str | None, typer.Argument(help="CID to push; none drains the pending queue.")
    ] = None,
    kubo_api: Annotated[str | None, typer.Option(help="Kubo RPC URL.")] = None,
) -> None:
    """Push a CID (or everything queued) to the configured Kubo node.

    Example: polchain store push --kubo-api http://127.0.0.1:5001
    """
    from pol_chain.compose.context import open_local_store
    from pol_chain.store import KuboClient, ReplicatedStore

    settings = current_settings()
    api = kubo_api or settings.kubo_api
    if not api:
        raise PolchainError(
            "no Kubo RPC endpoint configured",
            hint="pass --kubo-api URL or set [store] kubo_api / POLCHAIN_KUBO_API",
        )
    store = ReplicatedStore(
        open_local_store(settings), KuboClient(api, auth=settings.kubo_auth or None)
    )
    if cid is not None:
        root = store.push(cid)
        info(f"pushed {root} to {api}")
        return
    report = store.drain()
    info(f"pushed {len(report.pushed)}, {report.remaining} still queued")
    for cid, why in report.failed.items():
        info(f"  {cid}: {why}")
    if report.unreachable:
        raise PolchainError(
            f"the Kubo node at {api} is unreachable; {report.remaining} CIDs stay queued",
            hint="nothing is lost: run `polchain store push` again when the node is up",
        )


@store_app.command("verify")
def verify(json_out: JsonOpt = False) -> None:
    """Re-hash every block in the local store and report damaged ones.

    Example: polchain store verify
    """
    from pol_chain.compose.context import open_local_store

    report = open_local_store(current_settings()).verify()
    if json_out:
        emit_json(report)
    else:
        info(
            f"checked {report.checked} blocks: {len(report.damaged)} damaged, "
            f"{len(report.missing)} missing under pins"
        )
        for cid in report.damaged:
            info(f"  damaged: {cid}")
    if not report.ok:
        raise PolchainError("the store has damaged or missing blocks", hint="see the list above")
