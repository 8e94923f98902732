"""The embedded chain: an Anvil process whose state persists under the data folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx

from pol_chain.errors import PolchainError
from pol_chain.ledger.errors import (
    AnvilNotInstalled,
    AnvilPortTaken,
    AnvilRunsElsewhere,
    AnvilStartFailed,
    ChainStateCorrupt,
)
from pol_chain.ledger.journal import JOURNAL_FILE, ReconcileReport, TxJournal, chain_key
from pol_chain.paths import data_dir, node_modules_dir, node_tool

__all__ = [
    "DEFAULT_PORT",
    "EmbeddedChain",
    "find_anvil",
    "free_port",
    "port_is_free",
    "read_state",
    "rpc_answers",
]

_log = logging.getLogger(__name__)
_CHAIN_META = "embedded_chain"  # the journal's note of which chain this folder runs

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


def _cmdline(pid: int) -> bytes | None:
    """The command line of ``pid`` (None when it cannot be read, e.g. no /proc)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _is_anvil(pid: int) -> bool:
    """Whether ``pid`` runs anvil (True when this cannot be told, e.g. no /proc)."""
    cmdline = _cmdline(pid)
    if cmdline is None:
        return not Path("/proc/self").exists() or Path(f"/proc/{pid}").exists()
    return b"anvil" in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_state(path: Path) -> tuple[bytes, int] | None:
    """The bytes of the Anvil state file ``path`` and its best block number; None when it
    is missing, empty, truncated or not a state dump (Anvil rewrites it in place, so a
    kill during a dump leaves a prefix, or nothing)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "accounts" not in doc:
        return None
    best = doc.get("best_block_number", 0)
    try:
        return data, int(best, 16) if isinstance(best, str) else int(best or 0)
    except (TypeError, ValueError):
        return None


def read_state(path: Path) -> int | None:
    """The best block number of the Anvil state file ``path``, None when it is unusable."""
    loaded = _load_state(path)
    return None if loaded is None else loaded[1]


def _atomic_write(dst: Path, data: bytes) -> None:
    """Write ``data`` to ``dst`` through a temporary file, fsynced, then renamed."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP listener could bind ``host:port`` now (nothing listens there)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _cmdline_port(cmdline: bytes) -> int | None:
    """The ``--port`` an Anvil command line names (None when it names none)."""
    args = cmdline.split(b"\0")
    for flag, value in zip(args, args[1:], strict=False):
        if flag == b"--port" and value.isdigit() and 0 < int(value) < 65536:
            return int(value)
    return None


class EmbeddedChain:
    """Start (or reuse) Anvil on ``host:port`` with state in ``<data>/chain/``.

    With no ``port`` the folder picks its own: the port of its Anvil when one runs, else
    the one it used last (``chain/anvil.port``), else 8545; when that is taken by anything
    else, a free port. The port it starts on is remembered, so a folder keeps its URL.
    A given ``port`` is used as it is, and a node there that is not this folder's is
    refused.

    ``start()`` reuses the node answering at the URL only when it is this folder's own
    Anvil (its pid file names a live process whose command line names this state file);
    anything else there is :class:`~pol_chain.ledger.errors.AnvilPortTaken`. Otherwise it
    checks the state file (Anvil rewrites it in place every second, so a SIGKILL can leave
    it empty or truncated): a good one is copied to ``anvil-state.good.json``; a bad one
    is set aside and the good copy restored. It then runs ``anvil --state <state>
    --state-interval 1`` detached, writes ``anvil.pid``, waits until it answers and
    reconciles the transaction journal (:mod:`pol_chain.ledger.journal`): transactions
    the restart rolled back are re-sent, in order, before ``start()`` returns. ``stop()``
    sends SIGTERM so Anvil dumps its state, and waits for it to exit.
    """

    ROTATE_EVERY = 30.0
    """Seconds between refreshes of the good copy while a running chain is reused."""

    def __init__(
        self,
        data: str | Path | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        chain_id: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data = (Path(data) if data is not None else data_dir()).resolve()
        self.fixed_port = port is not None
        self.host = host
        self.port = port if port is not None else self._known_port()
        self.chain_id = chain_id
        self.extra_args = extra_args
        self.reused = False
        self.restored_from: Path | None = None  # a damaged state file, set aside
        self.reconciled: ReconcileReport | None = None  # the journal check of the last start
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
    def good_state_file(self) -> Path:
        """The last state file that parsed, kept to restore a damaged one."""
        return self.chain_dir / "anvil-state.good.json"

    @property
    def journal_path(self) -> Path:
        """The transaction journal of this chain (beside its state)."""
        return self.chain_dir / JOURNAL_FILE

    @property
    def pid_file(self) -> Path:
        return self.chain_dir / "anvil.pid"

    @property
    def log_file(self) -> Path:
        return self.chain_dir / "anvil.log"

    @property
    def port_file(self) -> Path:
        """The port this folder's Anvil last started on (an automatic port's memory)."""
        return self.chain_dir / "anvil.port"

    def _running_port(self) -> int | None:
        """The port of this folder's live Anvil (from its command line), if one runs."""
        pid = self._recorded_pid()
        if pid is None or not _alive(pid):
            return None
        cmdline = _cmdline(pid)
        if cmdline is None or str(self.state_file).encode() not in cmdline.split(b"\0"):
            return None
        return _cmdline_port(cmdline)

    def _known_port(self) -> int:
        running = self._running_port()
        if running is not None:
            return running
        with contextlib.suppress(OSError, ValueError):
            port = int(self.port_file.read_text().strip())
            if 0 < port < 65536:
                return port
        return DEFAULT_PORT

    @property
    def pid(self) -> int | None:
        """The pid of the Anvil this manager (or the pid file) knows of."""
        return self._proc.pid if self._proc is not None else self._recorded_pid()

    def is_running(self) -> bool:
        """Whether a node answers at :attr:`url`."""
        return rpc_answers(self.url) is not None

    def is_ours(self) -> bool:
        """Whether the pid file names a live Anvil running on this folder's state file."""
        pid = self.pid
        if pid is None or not _alive(pid):
            return False
        cmdline = _cmdline(pid)
        if cmdline is None:
            return not Path("/proc/self").exists()  # cannot tell: trust the pid file
        return str(self.state_file).encode() in cmdline.split(b"\0")

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialize starts (and reuse checks) of this folder's chain across processes."""
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.chain_dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def start(self, timeout: float = 20.0) -> str:
        """Start Anvil unless this folder's own answers already; return the URL."""
        with self._start_lock():
            running = self._running_port()
            if running is not None and running != self.port:
                if self.fixed_port:  # a second Anvil on one state file would fork it
                    raise AnvilRunsElsewhere(self.port, running)
                self.port = running
            if self.is_running():
                if not self.is_ours():
                    if self.fixed_port:
                        raise AnvilPortTaken(self.url, self.port, str(self.state_file))
                    self.port = free_port()
                else:
                    self.reused = True
                    with contextlib.suppress(OSError):  # best effort: never fails a command
                        self._refresh_good_copy()
                    return self.url
            elif not self.fixed_port and not port_is_free(self.port, self.host):
                self.port = free_port()  # a listener that does not speak JSON-RPC
            binary = find_anvil()
            durable = self._check_state()
            self._launch(binary, timeout)
            with contextlib.suppress(OSError):  # only a later start's preference
                _atomic_write(self.port_file, f"{self.port}\n".encode())
            self._reconcile(durable)
            return self.url

    def _check_state(self) -> int | None:
        """Validate the state file before Anvil loads it; return its best block."""
        state, good = self.state_file, self.good_state_file
        if not state.exists():
            spare = _load_state(good)
            if spare is None:
                return None  # a new chain (or one killed before its first dump)
            _atomic_write(state, spare[0])  # the state file vanished: the good copy stands in
            _log.warning("%s was missing; restored the good copy at block %d", state, spare[1])
            return spare[1]
        loaded = _load_state(state)
        if loaded is not None:
            try:
                _atomic_write(good, loaded[0])
            except OSError as exc:  # e.g. a full disk: start anyway, without a fresh copy
                _log.warning("could not refresh %s: %s", good, exc)
            return loaded[1]
        why = "empty" if state.stat().st_size == 0 else "truncated or not JSON"
        spare = _load_state(good)
        if spare is None:
            raise ChainStateCorrupt(str(state), why)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        kept = state.with_name(f"anvil-state.damaged-{stamp}.json")
        os.replace(state, kept)
        _atomic_write(state, spare[0])
        good_best = spare[1]
        self.restored_from = kept
        _log.warning(
            "%s was %s (kept as %s); restored the good copy at block %d",
            state,
            why,
            kept.name,
            good_best,
        )
        return good_best

    def _refresh_good_copy(self) -> None:
        """Copy the running chain's state to the good copy when that is stale and the
        state file parses now (never while Anvil is half-way through a dump)."""
        good, state = self.good_state_file, self.state_file
        try:
            if time.time() - good.stat().st_mtime < self.ROTATE_EVERY:
                return
            if state.stat().st_mtime <= good.stat().st_mtime:
                return
        except FileNotFoundError:
            if not state.exists():
                return
        loaded = _load_state(state)  # the bytes that parsed are the ones kept
        if loaded is None:
            return  # mid-dump: try again next time
        _atomic_write(good, loaded[0])
        if self.journal_path.exists():
            with contextlib.suppress(PolchainError, OSError, ValueError):
                self._prune(loaded[1])

    def _launch(self, binary: Path, timeout: float) -> None:
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
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
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
                return
            time.sleep(0.05)
        self._kill()
        raise AnvilStartFailed(self.url, self._log_tail(log_start))

    def _reconcile(self, durable: int | None) -> None:
        """Re-send what the restart rolled back; forget rows the good copy holds."""
        from pol_chain.ledger.reader import LedgerReader

        journal = TxJournal(self.journal_path)
        try:
            with LedgerReader(self.url, "0x" + "00" * 20, check_code=False) as rpc:
                key = chain_key(rpc)
                before = journal.get_meta(_CHAIN_META)
                if before is not None and before != str(key) and durable is None:
                    # Anvil died before its first dump: the chain restarted empty (a new
                    # genesis). Its journaled history is replayed onto the new chain.
                    moved = journal.adopt(before, key)
                    _log.warning("embedded chain lost its state; replaying %d transactions", moved)
                journal.set_meta(_CHAIN_META, str(key))
                self.reconciled = journal.reconcile(rpc, key, dev_chain=True)
                if durable is not None:
                    journal.prune(key, durable)
        finally:
            journal.close()
        if self.reconciled.lost:
            _log.warning("embedded chain restarted: %s", self.reconciled.summary())

    def _prune(self, durable: int) -> None:
        from pol_chain.ledger.reader import LedgerReader

        journal = TxJournal(self.journal_path)
        try:
            with LedgerReader(self.url, "0x" + "00" * 20, check_code=False) as rpc:
                key = chain_key(rpc)
                journal.reconcile(rpc, key, dev_chain=True)  # marks what is mined
                journal.prune(key, durable)
        finally:
            journal.close()

    def _log_tail(self, start: int = 0) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(start)
                return log.read().decode(errors="replace")[-2000:]
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
