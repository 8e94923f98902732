"""A JSON-RPC proxy in front of a real node that misbehaves on purpose: it can drop logs
of one event, refuse wide ``eth_getLogs`` ranges, or stop answering (a real HTTP server
in a thread; everything else is forwarded unchanged)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from eth_hash.auto import keccak

__all__ = ["RpcProxy", "event_topic"]


def event_topic(signature: str) -> str:
    """topic0 of an event signature such as ``CheckpointsCommitted(bytes32,...)``."""
    return "0x" + keccak(signature.encode()).hex()


class RpcProxy:
    """Forward JSON-RPC to ``upstream``; see the attributes for the faults it injects."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.drop_topic: str | None = None
        """Drop the first log with this topic0 from every eth_getLogs answer."""
        self.max_range: int | None = None
        """Answer eth_getLogs spanning more blocks than this with a range error."""
        self.down = False
        """Answer every request with HTTP 503."""
        self.requests = 0
        self._http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests += 1
                if proxy.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                payload = json.loads(body)
                calls = payload if isinstance(payload, list) else [payload]
                answers = [proxy._answer(call) for call in calls]
                out = json.dumps(answers if isinstance(payload, list) else answers[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, call: dict[str, Any]) -> dict[str, Any]:
        if call.get("method") == "eth_getLogs" and self.max_range is not None:
            params = call["params"][0]
            start, end = params.get("fromBlock", "0x0"), params.get("toBlock", "latest")
            if end == "latest" or int(end, 16) - int(start, 16) + 1 > self.max_range:
                return {
                    "jsonrpc": "2.0",
                    "id": call.get("id"),
                    "error": {"code": -32005, "message": "query exceeds max block range"},
                }
        answer: dict[str, Any] = self._http.post(self.upstream, json=call).json()
        if call.get("method") == "eth_getLogs" and self.drop_topic is not None:
            logs = answer.get("result") or []
            for pos, log in enumerate(logs):
                if log["topics"][0] == self.drop_topic:
                    answer["result"] = logs[:pos] + logs[pos + 1 :]
                    break
        return answer

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
