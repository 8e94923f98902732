"""The agent's small persistent state: one row per challenge it has seen, per deployment.

Rows are keyed by a *deployment key* — chain id, ledger address, deployment block and
that block's hash — so a chain that was reset and redeployed at the same address (same
chain id, same address, even the same block number) never shares rows or the scan
cursor with the old one. Each row remembers the challenge's run id and opening block:
a vote is only ever sent for the challenge the row was verified for.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AgentState", "ChallengeRow"]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS challenges (
    deployment TEXT NOT NULL,
    challenge_id INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    opened_block INTEGER NOT NULL,
    status TEXT NOT NULL,          -- seen | verified | attested | closed
    passed INTEGER,
    report_digest TEXT,
    report_cid TEXT,
    report_dir TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    missing_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    next_try REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (deployment, challenge_id)
);
CREATE TABLE IF NOT EXISTS cursor (deployment TEXT PRIMARY KEY, next_block INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class ChallengeRow:
    """What the agent knows of one challenge."""

    challenge_id: int
    run_id: str
    opened_block: int
    status: str
    passed: bool | None
    report_digest: str | None
    report_cid: str | None
    report_dir: str | None
    attempts: int
    missing_attempts: int
    last_error: str
    next_try: float


_COLUMNS = (
    "challenge_id, run_id, opened_block, status, passed, report_digest, report_cid, "
    "report_dir, attempts, missing_attempts, last_error, next_try"
)


class AgentState:
    """SQLite-backed state of one deployment (one file can serve several)."""

    def __init__(self, path: Path, deployment: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.deployment = deployment
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        with self._db:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                # an older layout (keyed by ledger address only) is a cache of the chain:
                # drop it, everything is rebuilt from the chain and votes from hasAttested
                self._db.execute("DROP TABLE IF EXISTS challenges")
                self._db.execute("DROP TABLE IF EXISTS cursor")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def next_block(self, default: int) -> int:
        """The first block not scanned for new challenges yet."""
        row = self._db.execute(
            "SELECT next_block FROM cursor WHERE deployment = ?", (self.deployment,)
        ).fetchone()
        return int(row[0]) if row else default

    def set_next_block(self, block: int) -> None:
        """Record that every block before ``block`` was scanned."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO cursor (deployment, next_block) VALUES (?, ?) "
                "ON CONFLICT(deployment) DO UPDATE SET next_block = excluded.next_block",
                (self.deployment, block),
            )

    def see(self, challenge_id: int, run_id: str, opened_block: int) -> None:
        """Add a challenge (no-op when known)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO challenges "
                "(deployment, challenge_id, run_id, opened_block, status, updated) "
                "VALUES (?, ?, ?, ?, 'seen', ?)",
                (self.deployment, challenge_id, run_id, opened_block, time.time()),
            )

    def forget(self, challenge_id: int) -> None:
        """Drop a row that does not describe the on-chain challenge of that id."""
        with self._lock, self._db:
            self._db.execute(
                "DELETE FROM challenges WHERE deployment = ? AND challenge_id = ?",
                (self.deployment, challenge_id),
            )

    def get(self, challenge_id: int) -> ChallengeRow | None:
        """The row of ``challenge_id``, if seen."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM challenges WHERE deployment = ? AND challenge_id = ?",
            (self.deployment, challenge_id),
        ).fetchone()
        if row is None:
            return None
        return ChallengeRow(
            challenge_id=int(row[0]),
            run_id=str(row[1]),
            opened_block=int(row[2]),
            status=str(row[3]),
            passed=None if row[4] is None else bool(row[4]),
            report_digest=row[5],
            report_cid=row[6],
            report_dir=row[7],
            attempts=int(row[8]),
            missing_attempts=int(row[9]),
            last_error=str(row[10]),
            next_try=float(row[11]),
        )

    def rows(self, *statuses: str) -> list[ChallengeRow]:
        """Rows in ``statuses`` (all when none given), oldest challenge first."""
        ids = self._db.execute(
            "SELECT challenge_id FROM challenges WHERE deployment = ? ORDER BY challenge_id",
            (self.deployment,),
        ).fetchall()
        found = [self.get(int(i[0])) for i in ids]
        return [r for r in found if r is not None and (not statuses or r.status in statuses)]

    def pending(self) -> list[int]:
        """Challenges not attested or closed yet, oldest first."""
        return [r.challenge_id for r in self.rows("seen", "verified")]

    def verified(
        self, challenge_id: int, passed: bool, report_digest: str, report_cid: str, report_dir: str
    ) -> None:
        """Record a finished verification (its report is pinned)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET status = 'verified', passed = ?, report_digest = ?, "
                "report_cid = ?, report_dir = ?, last_error = '', updated = ? "
                "WHERE deployment = ? AND challenge_id = ?",
                (
                    int(passed),
                    report_digest,
                    report_cid,
                    report_dir,
                    time.time(),
                    self.deployment,
                    challenge_id,
                ),
            )

    def mark(self, challenge_id: int, status: str) -> None:
        """Set the status (``seen``, ``verified``, ``attested`` or ``closed``)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET status = ?, updated = ? "
                "WHERE deployment = ? AND challenge_id = ?",
                (status, time.time(), self.deployment, challenge_id),
            )

    def failed_attempt(
        self, challenge_id: int, error: str, *, missing: bool, next_try: float
    ) -> None:
        """Count a failed attempt (``missing``: an artefact was unavailable); the row stays
        pending and is tried again after ``next_try``."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE challenges SET attempts = attempts + 1, "
                "missing_attempts = missing_attempts + ?, last_error = ?, next_try = ?, "
                "updated = ? WHERE deployment = ? AND challenge_id = ?",
                (
                    int(missing),
                    error[:500],
                    next_try,
                    time.time(),
                    self.deployment,
                    challenge_id,
                ),
            )
