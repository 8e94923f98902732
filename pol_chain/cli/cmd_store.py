"""``polchain store add|get|export|import|push|verify``."""

from __future__ import annotations

from pathlib import Path

from pol_chain.cli._output import emit_json, info
from pol_chain.config import Settings
from pol_chain.errors import PolchainError


def add(settings: Settings, *, file: Path, json_out: bool) -> None:
    """Add a file (streamed, any size) and print its CID."""
    from pol_chain.compose.context import open_store

    if not file.is_file():
        raise PolchainError(f"{file}: no such file")
    cid = open_store(settings).put_file(file, name=file.name)
    if json_out:
        emit_json({"cid": cid, "file": str(file), "bytes": file.stat().st_size})
    else:
        print(cid)


def get(settings: Settings, *, cid: str, out: Path, sha256: str | None) -> None:
    """Fetch ``cid`` into ``out``, verified block by block (and by SHA-256 if given)."""
    from pol_chain.commitment import to_bytes32
    from pol_chain.compose.context import open_store

    expect = to_bytes32(sha256) if sha256 else None
    open_store(settings).get_file(cid, out, expect_sha256=expect)
    info(f"wrote {out}")


def export(settings: Settings, *, cid: str, out: Path) -> None:
    """Write the DAG of ``cid`` as a CARv1 file."""
    from pol_chain.compose.context import open_local_store

    blocks = open_local_store(settings).export_car(cid, out)
    info(f"wrote {out} ({blocks} blocks); import into Kubo with `ipfs dag import {out}`")


def import_car(settings: Settings, *, car: Path) -> None:
    """Import a CAR file (each block checked against its CID)."""
    from pol_chain.compose.context import open_local_store

    if not car.is_file():
        raise PolchainError(f"{car}: no such file")
    roots = open_local_store(settings).import_car(car, name=car.name)
    for root in roots:
        print(root)


def push(settings: Settings, *, cid: str | None, kubo_api: str | None) -> None:
    """Push a CID, or drain the queue of pending pushes, to a Kubo node."""
    from pol_chain.compose.context import open_local_store
    from pol_chain.store import KuboClient, ReplicatedStore

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


def verify(settings: Settings, *, json_out: bool) -> None:
    """Re-hash every block in the local store."""
    from pol_chain.compose.context import open_local_store

    report = open_local_store(settings).verify()
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
