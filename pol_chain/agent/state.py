"""The agent's small persistent state: one row per challenge it has seen."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AgentState", "ChallengeRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS challenges (
    challenge_id INTEGER NOT NULL,
    ledger TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,          -- seen | verified | attested | closed
    passed INTEGER,
    report_digest TEXT,
    report_cid TEXT,
    report_dir TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (ledger, challenge_id)
);
CREATE TABLE IF NOT EXISTS cursor (ledger TEXT PRIMARY KEY, next_block INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class ChallengeRow:
    """What the agent knows of one challenge."""

    challenge_id: int
    run_id: str
    status: str
    passed: bool | None
    report_digest: str | None
    report_cid: str | None
    report_dir: str | None
    attempts: int
    last_error: str


class AgentState:
    """SQLite-backed state, scoped by ledger address (one file can serve several chains)."""

    def __init__(self, path: Path, ledger: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger.lower()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def next_block(self, default: int) -> int:
        """The first block not scanned for new challenges yet."""
        row = self._db.execute(
            "SELECT next_block FROM cursor WHERE ledger = ?", (self.ledger,)
        ).fetchone()
        return int(row[0]) if row else default

    def set_next_block(self, block: int) -> None:
        """Record that every block before ``block`` was scanned."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO cursor (ledger, next_block) VALUES (?, ?) "
                "ON CONFLICT(ledger) DO UPDATE SET next_block = excluded.next_block",
                (self.ledger, block),
            )

    def see(self, challenge_id: int, run_id: str) -> None:
        """Add a challenge (no-op when known)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO challenges (challenge_id, ledger, run_id, status, updated) "
                "VALUES (?, ?, ?, 'seen', ?)",
                (challenge_id, self.ledger, run_id, time.time()),
            )

    def get(self, challenge_id: int) -> ChallengeRow | None:
        """The row of ``challenge_id``, if seen."""
        row = self._db.execute(
            "SELECT challenge_id, run_id, status, passed, report_digest, report_cid, report_dir, "
            "attempts, last_error FROM challenges WHERE ledger = ? AND challenge_id = ?",
            (self.ledger, challenge_id),
        ).fetchone()
        if row is None:
            return None
        passed = None if row[3] is None else bool(row[3])
        return ChallengeRow(row[0], row[1], row[2], passed, row[4], row[5], row[6], row[7], row[8])

    def pending(self) -> list[int]:
        """Challenges not attested or closed yet, oldest first."""
        rows = self._db.execute(
            "SELECT challenge_id FROM challenges WHERE ledger = ? AND status IN ('seen', 'verified') "
            "ORDER BY challenge_id",
            (self.ledger,),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def verified(
        self, challenge_id: int, passed: bool, report_digest: str, report_cid: str, report_dir: str
    ) -> None:
        """Record a finished verification (its report is pinned)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET status = 'verified', passed = ?, report_digest = ?, "
                "report_cid = ?, report_dir = ?, last_error = '', updated = ? "
                "WHERE ledger = ? AND challenge_id = ?",
                (
                    int(passed),
                    report_digest,
                    report_cid,
                    report_dir,
                    time.time(),
                    self.ledger,
                    challenge_id,
                ),
            )

    def mark(self, challenge_id: int, status: str) -> None:
        """Set the status (``attested`` or ``closed``)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET status = ?, updated = ? WHERE ledger = ? AND challenge_id = ?",
                (status, time.time(), self.ledger, challenge_id),
            )

    def failed_attempt(self, challenge_id: int, error: str) -> None:
        """Count a failed attempt (e.g. the store was unreachable); the row stays pending."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET attempts = attempts + 1, last_error = ?, updated = ? "
                "WHERE ledger = ? AND challenge_id = ?",
                (error[:500], time.time(), self.ledger, challenge_id),
            )
