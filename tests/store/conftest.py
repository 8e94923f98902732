"""Fixtures for the store tests: oracle tools, stores, and an in-process fake Kubo RPC."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pol_chain.paths import node_tool
from pol_chain.store import LocalStore
from pol_chain.store.car import CarReader, write_car
from pol_chain.store.cid import CID

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def ipfs_car() -> Path:
    tool = node_tool("ipfs-car")
    if tool is None:
        pytest.skip("ipfs-car not installed (run scripts/bootstrap.sh to get the npm tools)")
    return tool


@pytest.fixture(scope="session")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node not installed")
    return exe


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "store")
    yield s
    s.close()


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """Extract the first file part of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" in part:
            headers, _, data = part.partition(b"\r\n\r\n")
            if b"filename=" in headers:
                return data[:-2] if data.endswith(b"\r\n") else data
    raise ValueError("no file part")


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read a request body, sized or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(out)
            out += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class FakeKubo:
    """A Kubo RPC that keeps blocks in memory and answers as Kubo's RPC docs describe.

    POST only (GET → 405 plain text); errors as HTTP 500 ``{"Message", "Code": 0,
    "Type": "error"}``. ``fail_next`` makes the next N requests answer 503 (transient).
    ``/add`` builds the DAG with pol_chain's own builder in a scratch store (the CIDs
    themselves are checked against ipfs-car elsewhere).
    """

    def __init__(self, scratch: Path, auth: str | None = None) -> None:
        self.blocks: dict[bytes, bytes] = {}  # digest -> data
        self.pins: dict[str, str] = {}
        self.auth = auth
        self.fail_next = 0
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.scratch = LocalStore(scratch)
        self.lie_root: str | None = None
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -- server lifecycle
    def start(self, port: int = 0) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(("GET", self.path, {}))
                self._send(405, b"405 - Method Not Allowed\n", "text/plain; charset=utf-8")

            def do_POST(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                q = parse_qs(url.query)
                body = _read_body(self)
                fake.requests.append(("POST", url.path, q))
                if fake.auth is not None and self.headers.get("Authorization") != fake.auth:
                    self._send(401, b"401 - Unauthorized\n", "text/plain")
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    self._send(503, b"503 Service Unavailable", "text/plain")
                    return
                try:
                    status, out, ctype = fake.handle(url.path, q, body, self.headers)
                except KeyError as exc:
                    err = {"Message": str(exc.args[0]), "Code": 0, "Type": "error"}
                    status, out, ctype = 500, json.dumps(err).encode(), "application/json"
                self._send(status, out, ctype)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- RPC
    def _complete(self, cid: CID) -> bool:
        data = self.blocks.get(cid.digest)
        if data is None:
            return False
        if cid.codec == 0x70:
            from pol_chain.store.unixfs import decode_pbnode

            return all(self._complete(link.cid) for link in decode_pbnode(data).links)
        return True

    def handle(
        self, path: str, q: dict[str, list[str]], body: bytes, headers: Any
    ) -> tuple[int, bytes, str]:
        arg = q.get("arg", [""])[0]
        if path == "/api/v0/version":
            out = {
                "Version": "0.38.1",
                "Commit": "",
                "Repo": "16",
                "System": "amd64/linux",
                "Golang": "go1.24",
            }
            return 200, json.dumps(out).encode(), "application/json"
        if path == "/api/v0/add":
            data = _multipart_file(body, headers["Content-Type"])
            cid = self.scratch.put_bytes(data)
            for c, block in self.scratch.iter_dag(cid):
                self.blocks[c.digest] = block
            if q.get("pin", ["true"])[0] == "true":
                self.pins[cid] = "recursive"
            line = {"Name": "data", "Hash": cid, "Size": str(len(data))}
            return 200, (json.dumps(line) + "\n").encode(), "application/x-ndjson"
        if path == "/api/v0/cat":
            c = CID.parse(arg)
            if not self._complete(c):
                raise KeyError(f"block was not found locally (offline): ipld: could not find {arg}")
            content = self.scratch_get(c)
            return 200, content, "text/plain"
        if path == "/api/v0/pin/add":
            if not self._complete(CID.parse(arg)):
                raise KeyError(f"pin: block was not found locally (offline): {arg}")
            self.pins[arg] = "recursive"
            return 200, json.dumps({"Pins": [arg]}).encode(), "application/json"
        if path == "/api/v0/pin/rm":
            if arg not in self.pins:
                raise KeyError("not pinned or pinned indirectly")
            del self.pins[arg]
            return 200, json.dumps({"Pins": [arg]}).encode(), "application/json"
        if path == "/api/v0/pin/ls":
            if arg:
                if arg not in self.pins:
                    raise KeyError(f"path '{arg}' is not pinned")
                keys = {arg: {"Type": "recursive", "Name": ""}}
            else:
                keys = {k: {"Type": v, "Name": ""} for k, v in self.pins.items()}
            return 200, json.dumps({"Keys": keys}).encode(), "application/json"
        if path == "/api/v0/dag/import":
            import io

            car = CarReader(io.BytesIO(_multipart_file(body, headers["Content-Type"])))
            for c, block in car:
                if hashlib.sha256(block).digest() != c.digest:
                    raise KeyError(f"import failed after block {c}: hash mismatch")
                self.blocks[c.digest] = block
            lines = []
            for r in car.roots:
                root = self.lie_root or str(r)
                msg = "" if self._complete(r) else "block was not found locally"
                if not msg and q.get("pin-roots", ["true"])[0] == "true":
                    self.pins[str(r)] = "recursive"
                lines.append(json.dumps({"Root": {"Cid": {"/": root}, "PinErrorMsg": msg}}))
            return 200, ("\n".join(lines) + "\n").encode(), "application/x-ndjson"
        if path == "/api/v0/dag/export":
            import io

            c = CID.parse(arg)
            if not self._complete(c):
                raise KeyError(f"block was not found locally (offline): {arg}")
            buf = io.BytesIO()
            write_car(buf, [c], self._dag(c))
            return 200, buf.getvalue(), "application/vnd.ipld.car"
        return 404, b"404 page not found", "text/plain"

    def _dag(self, c: CID) -> Iterator[tuple[CID, bytes]]:
        from pol_chain.store.unixfs import decode_pbnode

        data = self.blocks[c.digest]
        yield c, data
        if c.codec == 0x70:
            for link in decode_pbnode(data).links:
                yield from self._dag(link.cid)

    def scratch_get(self, c: CID) -> bytes:
        out = bytearray()
        for child, data in self._dag(c):
            if child.codec == 0x55:
                out += data
        return bytes(out)


@pytest.fixture
def fake_kubo(tmp_path: Path) -> Iterator[FakeKubo]:
    fk = FakeKubo(tmp_path / "fake-kubo-scratch")
    fk.start()
    yield fk
    fk.stop()
    fk.scratch.close()


FakeKuboFactory = Callable[..., FakeKubo]
