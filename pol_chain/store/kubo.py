"""Kubo RPC client over httpx (``ipfshttpclient`` refuses every Kubo newer than 0.8).

Kubo's RPC is POST-only (a GET gets 405). Errors come back as JSON
``{"Message": ..., "Code": ..., "Type": "error"}`` (HTTP 500 for ``Code`` 0); they raise
:class:`KuboError`. Connection failures, timeouts and 429/502/503/504 are retried with
exponential backoff, then raise :class:`KuboUnreachable` (its ``cause`` holds the last
transport error or the last 429/5xx :class:`KuboError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

from .base import normalize_sha256
from .car import CarReader
from .cid import CID
from .errors import IntegrityError, KuboError, KuboUnreachable
from .unixfs import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from .local import LocalStore

__all__ = ["KuboClient"]

_RETRY_STATUS = frozenset({429, 502, 503, 504})
_RETRY_EXC = (httpx.TransportError,)


class KuboClient:
    """Client of a Kubo node's RPC API (``/api/v0``), or of a pinning service speaking it.

    ``auth`` is sent as the ``Authorization`` header (e.g. ``"Bearer …"`` or ``"Basic …"``);
    it is never logged. ``retries`` is the number of extra attempts after a transient
    failure, waiting ``backoff * 2**attempt`` seconds (capped at 10 s) in between.
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:5001",
        *,
        auth: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        base = self.api_url if self.api_url.endswith("/api/v0") else self.api_url + "/api/v0"
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = auth
        self.retries = max(0, retries)
        self.backoff = backoff
        self.chunk_size = chunk_size
        self._client = httpx.Client(base_url=base, headers=hdrs, timeout=timeout)

    def __repr__(self) -> str:
        return f"KuboClient({self.api_url!r})"

    def __enter__(self) -> KuboClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # ------------------------------------------------------------------ transport
    @staticmethod
    def _raise_for(endpoint: str, resp: httpx.Response) -> None:
        if resp.status_code < 300:
            return
        body: Any = None
        message = resp.text.strip()
        code: int | None = None
        try:
            body = resp.json()
            if isinstance(body, dict):
                message = str(body.get("Message", message))
                raw_code = body.get("Code")
                code = int(raw_code) if raw_code is not None else None
        except (ValueError, json.JSONDecodeError):
            pass
        raise KuboError(endpoint, resp.status_code, message or resp.reason_phrase, code, body)

    @contextlib.contextmanager
    def _post(
        self,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        *,
        file: tuple[str, Path | bytes] | None = None,
    ) -> Iterator[httpx.Response]:
        """POST with retries; yield the (streaming) response once its status is OK."""
        clean = {
            k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in (params or {}).items()
            if v is not None
        }
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(10.0, self.backoff * 2 ** (attempt - 1)))
            with contextlib.ExitStack() as stack:
                files = None
                if file is not None:
                    name, payload = file
                    content: bytes | BinaryIO = (
                        payload
                        if isinstance(payload, bytes)
                        else stack.enter_context(open(payload, "rb"))
                    )
                    files = {"file": (name, content, "application/octet-stream")}
                try:
                    request = self._client.build_request(
                        "POST", "/" + endpoint, params=clean, files=files
                    )
                    resp = self._client.send(request, stream=True)
                except _RETRY_EXC as exc:
                    last = exc
                    continue
                stack.callback(resp.close)
                if resp.status_code in _RETRY_STATUS:
                    last = KuboError(endpoint, resp.status_code, resp.reason_phrase)
                    continue
                if resp.status_code >= 300:
                    resp.read()
                    self._raise_for(endpoint, resp)
                yield resp
                return
        raise KuboUnreachable(self.api_url, self.retries + 1, last)

    def _json(self, endpoint: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._post(endpoint, params) as resp:
            resp.read()
            try:
                return resp.json()
            except ValueError as exc:
                raise KuboError(endpoint, resp.status_code, f"bad JSON: {exc}") from exc

    @staticmethod
    def _ndjson(endpoint: str, resp: httpx.Response) -> list[dict[str, Any]]:
        out = []
        for line in resp.iter_lines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise KuboError(endpoint, resp.status_code, f"bad NDJSON line {line!r}") from exc
            if isinstance(obj, dict) and obj.get("Type") == "error":
                raise KuboError(endpoint, resp.status_code, str(obj.get("Message")), None, obj)
            out.append(obj)
        return out

    # ------------------------------------------------------------------ RPC
    def version(self) -> dict[str, Any]:
        """``/version``: ``{"Version": ..., "Commit": ..., "Repo": ..., ...}``."""
        result = self._json("version")
        if not isinstance(result, dict) or "Version" not in result:
            raise KuboError("version", 200, f"unexpected reply {result!r}")
        return result

    def add(self, data: bytes | str | os.PathLike[str], *, pin: bool = True) -> str:
        """``/add`` bytes or a file with the store's profile; return the root CID.

        Parameters: ``cid-version=1``, ``raw-leaves=true``, ``chunker=size-<chunk>``.
        (Kubo's own default width is 174 links unless its ``Import`` config says 1024, e.g.
        with the ``unixfs-v1-2025`` profile; :meth:`push` does not depend on it.)
        """
        params = {
            "cid-version": 1,
            "raw-leaves": True,
            "chunker": f"size-{self.chunk_size}",
            "pin": pin,
            "quieter": False,
        }
        payload: Path | bytes = data if isinstance(data, bytes) else Path(data)
        name = "data" if isinstance(payload, bytes) else payload.name
        with self._post("add", params, file=(name, payload)) as resp:
            lines = self._ndjson("add", resp)
        hashes = [line["Hash"] for line in lines if isinstance(line, dict) and "Hash" in line]
        if not hashes:
            raise KuboError("add", 200, f"no Hash in reply {lines!r}")
        return str(hashes[-1])

    def cat(self, cid: str, *, expect_sha256: bytes | str | None = None) -> bytes:
        """``/cat``: the content as the node serves it.

        Blocks are **not** checked here (the node does the reassembly); pass
        ``expect_sha256`` or use :meth:`fetch` for verified content.
        """
        want = normalize_sha256(expect_sha256)
        with self._post("cat", {"arg": cid}) as resp:
            data = resp.read()
        if want is not None and hashlib.sha256(data).digest() != want:
            raise IntegrityError(
                f"content of {cid} from Kubo", "0x" + want.hex(), hashlib.sha256(data).hexdigest()
            )
        return data

    def pin_add(self, cid: str) -> list[str]:
        """``/pin/add`` (recursive); return the pinned CIDs."""
        result = self._json("pin/add", {"arg": cid, "recursive": True})
        return [str(p) for p in result.get("Pins", [])]

    def pin_rm(self, cid: str) -> list[str]:
        """``/pin/rm``; return the unpinned CIDs."""
        result = self._json("pin/rm", {"arg": cid})
        return [str(p) for p in result.get("Pins", [])]

    def pin_ls(self, cid: str | None = None, *, type: str = "recursive") -> dict[str, str]:
        """``/pin/ls``: ``{cid: pin type}`` (for one CID: raises KuboError if not pinned)."""
        result = self._json("pin/ls", {"arg": cid, "type": type})
        keys = result.get("Keys", {}) if isinstance(result, dict) else {}
        return {str(k): str(v.get("Type", "")) for k, v in keys.items()}

    def is_pinned(self, cid: str) -> bool:
        """Whether ``cid`` is pinned on the node (``pin/ls`` error → not pinned)."""
        try:
            return bool(self.pin_ls(cid))
        except KuboError as exc:
            if "not pinned" in exc.message:
                return False
            raise

    def dag_import(
        self, car: str | os.PathLike[str] | bytes, *, pin_roots: bool = True
    ) -> list[str]:
        """``/dag/import`` a CAR; return the roots the node reports (raises on a pin error)."""
        payload: Path | bytes = car if isinstance(car, bytes) else Path(car)
        with self._post(
            "dag/import", {"pin-roots": pin_roots, "stats": False}, file=("dag.car", payload)
        ) as resp:
            lines = self._ndjson("dag/import", resp)
        roots: list[str] = []
        for line in lines:
            root = line.get("Root") if isinstance(line, dict) else None
            if not root:
                continue
            if root.get("PinErrorMsg"):
                raise KuboError("dag/import", 200, f"pinning failed: {root['PinErrorMsg']}")
            roots.append(str(root["Cid"]["/"]))
        return roots

    def dag_export(self, cid: str, dest: str | os.PathLike[str] | BinaryIO) -> None:
        """``/dag/export``: stream the DAG of ``cid`` as a CAR into ``dest``."""
        with self._post("dag/export", {"arg": cid}) as resp:
            if hasattr(dest, "write"):
                for chunk in resp.iter_bytes(1 << 20):
                    dest.write(chunk)  # type: ignore[union-attr]
                return
            with open(dest, "wb") as f:  # type: ignore[arg-type]
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)

    # ------------------------------------------------------------------ with a LocalStore
    def push(self, store: LocalStore, cid: str) -> str:
        """Copy the DAG of ``cid`` from ``store`` to the node (CAR + ``dag/import``, pinned).

        Raises :class:`IntegrityError` if the root the node reports is not ``cid``. The CAR
        is staged in the system temp folder (outside the store, where gc cannot touch it).
        """
        want = CID.parse(cid)
        fd, tmp = tempfile.mkstemp(prefix=".push-", suffix=".car")
        os.close(fd)
        try:
            store.export_car(str(want), tmp)
            roots = self.dag_import(tmp, pin_roots=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        got = [CID.parse(r) for r in roots]
        if not any(r.to_v1() == want.to_v1() for r in got):
            raise IntegrityError(f"root reported by Kubo for {cid}", str(want), repr(roots))
        return str(want)

    def fetch(self, store: LocalStore, cid: str) -> str:
        """Copy the DAG of ``cid`` from the node into ``store`` (``dag/export``).

        Every block is checked against its CID on import, the CAR's root must be ``cid``
        and the DAG must be complete; otherwise :class:`IntegrityError` and nothing is pinned.
        """
        want = CID.parse(cid)
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", suffix=".car")
        os.close(fd)
        try:
            self.dag_export(str(want), tmp)
            with open(tmp, "rb") as f:
                roots = CarReader(f).roots
            if [r.to_v1() for r in roots] != [want.to_v1()]:
                raise IntegrityError(f"CAR roots from Kubo for {cid}", str(want), repr(roots))
            store.import_car(tmp, pin=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return str(want)
