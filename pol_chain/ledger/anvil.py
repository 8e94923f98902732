"""The embedded chain: an Anvil process whose state persists under the data folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from pol_chain.ledger.errors import AnvilNotInstalled, AnvilStartFailed
from pol_chain.paths import data_dir, node_modules_dir, node_tool

__all__ = ["DEFAULT_PORT", "EmbeddedChain", "find_anvil", "free_port", "rpc_answers"]

DEFAULT_PORT = 8545


def find_anvil() -> Path:
    """Return the anvil binary (the npm platform package first); raise AnvilNotInstalled."""
    env = os.environ.get("POLCHAIN_ANVIL")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise AnvilNotInstalled()
    direct = node_modules_dir() / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if direct.is_file():
        return direct
    found = node_tool("anvil")
    if found is None:
        raise AnvilNotInstalled()
    return found


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rpc_answers(url: str, timeout: float = 1.0) -> int | None:
    """Return the chain id answering at ``url``, or None when nothing answers."""
    try:
        reply = httpx.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=timeout,
        )
        return int(reply.json()["result"], 16)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _is_anvil(pid: int) -> bool:
    """Whether ``pid`` runs anvil (True when this cannot be told, e.g. no /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"anvil" in cmdline


class EmbeddedChain:
    """Start (or reuse) Anvil on ``host:port`` with state in ``<data>/chain/``.

    ``start()`` returns at once when a node already answers at the URL; otherwise it runs
    ``anvil --state <data>/chain/anvil-state.json --state-interval 1`` detached, writes
    ``anvil.pid`` and waits until it answers. ``stop()`` sends SIGTERM so Anvil dumps its
    state, and waits for it to exit.
    """

    def __init__(
        self,
        data: str | Path | None = None,
        *,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        chain_id: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data = Path(data) if data is not None else data_dir()
        self.port = port
        self.host = host
        self.chain_id = chain_id
        self.extra_args = extra_args
        self.reused = False
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The chain's JSON-RPC URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def chain_dir(self) -> Path:
        return self.data / "chain"

    @property
    def state_file(self) -> Path:
        return self.chain_dir / "anvil-state.json"

    @property
    def pid_file(self) -> Path:
        return self.chain_dir / "anvil.pid"

    @property
    def log_file(self) -> Path:
        return self.chain_dir / "anvil.log"

    def is_running(self) -> bool:
        """Whether a node answers at :attr:`url`."""
        return rpc_answers(self.url) is not None

    def start(self, timeout: float = 20.0) -> str:
        """Start Anvil unless one answers already; return the URL."""
        if self.is_running():
            self.reused = True
            return self.url
        binary = find_anvil()
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--state",
            str(self.state_file),
            "--state-interval",
            "1",
        ]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        cmd += list(self.extra_args)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if rpc_answers(self.url, timeout=0.5) is not None:
                return self.url
            time.sleep(0.05)
        self._kill()
        raise AnvilStartFailed(self.url, self._log_tail())

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the Anvil this manager (or its pid file) started; True if one stopped."""
        pid = self._proc.pid if self._proc is not None else self._recorded_pid()
        if pid is None:
            return False
        if self._proc is None and not _is_anvil(pid):
            self.pid_file.unlink(missing_ok=True)  # stale: the pid now names another program
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    break
            else:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break  # our own child (started by another manager here): reaped
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True

    def __enter__(self) -> EmbeddedChain:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.reused:
            self.stop()
