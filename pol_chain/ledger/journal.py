"""The transaction journal: every signed transaction, kept before it is broadcast.

A node can lose transactions it acknowledged. The embedded Anvil writes its state once a
second, so a SIGKILL rolls the chain back by up to a second (docs/ledger.md, "Fault
model"): a finalize the CLI reported, a vote the agent recorded, or a ``registerRun``
whose run id would then be handed out again. :class:`TxJournal` (SQLite, in the data
folder; beside the state for the embedded chain) records the exact signed bytes of each
transaction a :class:`~pol_chain.ledger.client.LedgerClient` sends, *before* it sends
them. :meth:`TxJournal.reconcile` checks every journaled transaction by receipt and
re-broadcasts, in the order they were first sent, the ones a rollback dropped — so a
dropped ``registerRun`` comes back under its nonce (and run id) before a new transaction
can take it. A journaled transaction whose nonce another transaction took is reported
as lost, never silently forgotten.

Rows are keyed by chain (chain id and genesis hash: two local chains share chain id 31337
but not their history) and account. Per (chain, account), :meth:`TxJournal.lock` is an
inter-process lock (``fcntl.flock``) held around nonce choice, journaling and sending.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "JOURNAL_FILE",
    "ChainKey",
    "JournalEntry",
    "ReconcileReport",
    "TxJournal",
    "chain_key",
]

JOURNAL_FILE = "txjournal.sqlite"
BATCH = 200  # receipts asked per JSON-RPC batch

_KNOWN = ("already imported", "already known")
"""Node answers meaning "I have exactly this transaction" (Anvil, geth)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,           -- "<chain id>:<genesis hash>"
    account TEXT NOT NULL,         -- lower-case 0x address
    nonce INTEGER NOT NULL,
    tx_hash TEXT NOT NULL,         -- 0x hex
    raw BLOB NOT NULL,             -- the signed transaction, exactly as broadcast
    label TEXT NOT NULL,           -- the contract function, for reports
    status TEXT NOT NULL,          -- sent | mined | rejected | lost
    block INTEGER,                 -- where it was last seen mined
    ok INTEGER,                    -- its receipt's status when first seen: 1 ok, 0 reverted
    resent INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS txs_open ON txs (chain, status, account, nonce);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_OPEN = ("sent", "mined")


class Rpc(Protocol):
    """The JSON-RPC calls the journal needs (a :class:`~pol_chain.ledger.reader.LedgerReader`)."""

    def request(self, method: str, params: Sequence[Any] = ()) -> Any: ...

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]: ...


@dataclass(frozen=True)
class ChainKey:
    """Which chain a row belongs to: its id and the hash of its genesis block."""

    chain_id: int
    genesis: str

    def __str__(self) -> str:
        return f"{self.chain_id}:{self.genesis}"


def chain_key(rpc: Rpc) -> ChainKey:
    """The :class:`ChainKey` of the node behind ``rpc`` (one batch)."""
    chain_hex, genesis = rpc.batch([("eth_chainId", []), ("eth_getBlockByNumber", ["0x0", False])])
    return ChainKey(int(chain_hex, 16), str(genesis["hash"]).lower())


@dataclass(frozen=True)
class JournalEntry:
    """One journaled transaction."""

    id: int
    account: str
    nonce: int
    tx_hash: str
    raw: bytes = field(repr=False)
    label: str
    status: str
    block: int | None
    ok: bool | None = None


@dataclass
class ReconcileReport:
    """What one :meth:`TxJournal.reconcile` found and did."""

    checked: int = 0
    mined: int = 0
    pending: int = 0
    resent: list[JournalEntry] = field(default_factory=list)
    lost: list[JournalEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resent or self.lost)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = f"{self.checked} journaled transactions checked, {len(self.resent)} re-sent"
        if self.lost:
            labels = ", ".join(f"{e.label} nonce {e.nonce} ({e.tx_hash[:10]}…)" for e in self.lost)
            text += f", {len(self.lost)} LOST: {labels}"
        return text


class TxJournal:
    """The journal file at ``path`` (created on first use), safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # recorded means on disk, before the send
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def lock(self, chain: ChainKey, account: str) -> Iterator[None]:
        """Hold the inter-process lock of ``account`` on ``chain`` (blocking)."""
        folder = self.path.parent / "locks"
        folder.mkdir(exist_ok=True)
        name = f"{chain.chain_id}-{chain.genesis[2:14]}-{account.lower()}.lock"
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ------------------------------------------------------------------- rows

    def record(
        self, chain: ChainKey, account: str, nonce: int, tx_hash: bytes, raw: bytes, label: str
    ) -> int:
        """Journal a signed transaction about to be sent; its row id (committed to disk)."""
        now = time.time()
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO txs (chain, account, nonce, tx_hash, raw, label, status, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, 'sent', ?, ?)",
                (str(chain), account.lower(), nonce, "0x" + tx_hash.hex(), raw, label, now, now),
            )
            return int(cur.lastrowid or 0)

    def mark(
        self,
        row: int,
        status: str,
        *,
        block: int | None = None,
        ok: bool | None = None,
        detail: str = "",
    ) -> None:
        """Set a row's status (the block it was mined in; the first receipt status seen)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE txs SET status = ?, block = COALESCE(?, block), ok = COALESCE(ok, ?), "
                "detail = ?, updated = ? WHERE id = ?",
                (status, block, None if ok is None else int(ok), detail[:500], time.time(), row),
            )

    def entries(
        self, chain: ChainKey, account: str | None = None, statuses: Sequence[str] = _OPEN
    ) -> list[JournalEntry]:
        """Rows of ``chain`` (and ``account``) in ``statuses``, in the order they were sent."""
        marks = ",".join("?" * len(statuses))
        sql = (
            "SELECT id, account, nonce, tx_hash, raw, label, status, block, ok FROM txs "
            f"WHERE chain = ? AND status IN ({marks})"
        )
        args: list[Any] = [str(chain), *statuses]
        if account is not None:
            sql += " AND account = ?"
            args.append(account.lower())
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            JournalEntry(
                int(row[0]),
                str(row[1]),
                int(row[2]),
                str(row[3]),
                bytes(row[4]),
                str(row[5]),
                str(row[6]),
                None if row[7] is None else int(row[7]),
                None if row[8] is None else bool(row[8]),
            )
            for row in rows
        ]

    def top_nonce(self, chain: ChainKey, account: str) -> int | None:
        """The highest nonce of ``account``'s open (sent or mined) rows, if any."""
        with self._lock:
            (top,) = self._db.execute(
                "SELECT MAX(nonce) FROM txs WHERE chain = ? AND account = ? "
                "AND status IN ('sent', 'mined')",
                (str(chain), account.lower()),
            ).fetchone()
        return None if top is None else int(top)

    def prune(self, chain: ChainKey, durable_block: int) -> int:
        """Forget mined rows at or below ``durable_block`` (safely on disk); how many."""
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM txs WHERE chain = ? AND status = 'mined' AND block <= ?",
                (str(chain), durable_block),
            )
            return cur.rowcount

    def get_meta(self, key: str) -> str | None:
        """A value the journal's owner stored (e.g. the embedded chain's key)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def adopt(self, old: str, new: ChainKey) -> int:
        """Move every row of chain ``old`` to ``new`` (a chain that lost its whole state
        and restarted empty: its history is replayed onto the new one); how many."""
        with self._lock, self._db:
            cur = self._db.execute("UPDATE txs SET chain = ? WHERE chain = ?", (str(new), old))
            return cur.rowcount

    def counts(self, chain: ChainKey) -> dict[str, int]:
        """Rows of ``chain`` per status."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM txs WHERE chain = ? GROUP BY status", (str(chain),)
            ).fetchall()
        return {str(status): int(n) for status, n in rows}

    # -------------------------------------------------------------- reconcile

    def reconcile(
        self, rpc: Rpc, chain: ChainKey, account: str | None = None, *, dev_chain: bool = False
    ) -> ReconcileReport:
        """Check every open row of ``chain`` (or of ``account``) by receipt; re-broadcast,
        in sending order, each one a rollback dropped (no receipt, not in the node's pool,
        and its nonce not yet used on chain); report as lost each one whose nonce another
        transaction took.

        On a ``dev_chain`` (Anvil) a re-sent transaction is mined no earlier than the block
        it was first mined in (empty blocks are mined up to it), so what depends on block
        numbers — a challenge's reveal block before a vote — replays as it first ran."""
        report = ReconcileReport()
        rows = self.entries(chain, account)
        report.checked = len(rows)
        if not rows:
            return report
        receipts: list[Any] = []
        for start in range(0, len(rows), BATCH):
            part = rows[start : start + BATCH]
            receipts += rpc.batch([("eth_getTransactionReceipt", [e.tx_hash]) for e in part])
        missing: list[JournalEntry] = []
        for entry, receipt in zip(rows, receipts, strict=True):
            if receipt is None:
                missing.append(entry)
            else:
                self._seen_mined(entry, receipt, report)
        if not missing:
            return report
        pooled = rpc.batch([("eth_getTransactionByHash", [e.tx_hash]) for e in missing])
        accounts = sorted({e.account for e in missing})
        counts = rpc.batch([("eth_getTransactionCount", [a, "latest"]) for a in accounts])
        used = {a: int(n, 16) for a, n in zip(accounts, counts, strict=True)}
        blocked: set[str] = set()
        for entry, tx in zip(missing, pooled, strict=True):
            if tx is not None:
                report.pending += 1  # still in the pool: it will be mined
                continue
            if entry.nonce < used[entry.account] or entry.account in blocked:
                why = (
                    "an earlier transaction of the account could not be re-sent"
                    if entry.account in blocked
                    else f"nonce {entry.nonce} was taken by another transaction"
                )
                self.mark(entry.id, "lost", detail=why)
                report.lost.append(entry)
                continue
            if dev_chain and entry.block is not None:
                _mine_up_to(rpc, entry.block)
            try:
                rpc.request("eth_sendRawTransaction", ["0x" + entry.raw.hex()])
            except Exception as exc:  # noqa: BLE001 - the node's reason goes in the report
                if not any(k in str(exc).lower() for k in _KNOWN):
                    self.mark(entry.id, "lost", detail=f"re-send refused: {exc}")
                    report.lost.append(entry)
                    blocked.add(entry.account)  # later nonces would wait on a gap for ever
                    continue
            with self._lock, self._db:
                self._db.execute(
                    "UPDATE txs SET status = 'sent', resent = resent + 1, updated = ? WHERE id = ?",
                    (time.time(), entry.id),
                )
            report.resent.append(entry)
        if dev_chain and report.resent:  # automine: the re-sent ones are mined by now
            again = rpc.batch([("eth_getTransactionReceipt", [e.tx_hash]) for e in report.resent])
            for entry, receipt in zip(report.resent, again, strict=True):
                if receipt is not None:
                    self._seen_mined(entry, receipt, report)
        return report

    def _seen_mined(self, entry: JournalEntry, receipt: Any, report: ReconcileReport) -> None:
        """Record a receipt; a transaction that once succeeded and whose replay reverted
        (the state it depended on is gone) is lost, and reported."""
        block = int(receipt["blockNumber"], 16)
        ok = int(receipt.get("status", "0x1"), 16) == 1
        if entry.ok is True and not ok:
            self.mark(entry.id, "lost", block=block, detail="re-sent after a rollback, reverted")
            report.lost.append(entry)
            return
        report.mined += 1
        if entry.status != "mined" or entry.block != block or entry.ok is None:
            self.mark(entry.id, "mined", block=block, ok=ok)


def _mine_up_to(rpc: Rpc, block: int) -> None:
    """Mine empty blocks so that the next transaction lands in ``block`` or later."""
    head = int(rpc.request("eth_blockNumber"), 16)
    if block - 1 > head:
        with contextlib.suppress(Exception):  # not an Anvil: nothing to do
            rpc.request("anvil_mine", [hex(block - 1 - head)])
