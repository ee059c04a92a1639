"""The durable job table: SQLite in WAL mode, one connection shared by the service's threads.

Every state change is one SQL statement (or one ``BEGIN IMMEDIATE`` transaction), so a service killed at
any instant leaves a consistent table: a job is queued, running, or finished, never half of two.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    spec TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '[]',
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    last_start REAL,
    resume INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs (submitted, seq);
"""


def error_text(error: str | None) -> str | None:
    """A job's error as one message: without the ``error:`` the job's command line put before it.

    The job's last ``error: ...`` line is its error; shown under a label (``error:``), or after ``error:``
    by the client's own error line, the prefix would appear twice.
    """
    if error is None:
        return None
    text = error.strip()
    while text[:6].lower() == "error:":
        text = text[6:].lstrip()
    return text or error.strip()


def iso(t: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``2026-05-01T12:00:00.123+00:00``), None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """One row of the job table."""

    id: str
    seq: int
    name: str
    state: str
    progress: float
    error: str | None
    spec: str
    outputs: list[str]
    submitted: float
    started: float | None = None
    finished: float | None = None
    last_start: float | None = None
    resume: bool = False
    cancel_requested: bool = False
    pid: int | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The job as the HTTP API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "progress": round(self.progress, 4),
            "error": error_text(self.error),
            "submitted": iso(self.submitted),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "outputs": list(self.outputs),
            "attempts": self.attempts,
        }


def _row(r: sqlite3.Row) -> Job:
    return Job(id=r["id"], seq=r["seq"], name=r["name"], state=r["state"], progress=r["progress"],
               error=r["error"], spec=r["spec"], outputs=json.loads(r["outputs"]), submitted=r["submitted"],
               started=r["started"], finished=r["finished"], last_start=r["last_start"],
               resume=bool(r["resume"]), cancel_requested=bool(r["cancel_requested"]), pid=r["pid"],
               attempts=r["attempts"])


class JobStore:
    """Jobs in an SQLite file.

    Parameters
    ----------
    path : Path
        The database file; created with its tables when missing.

    Notes
    -----
    One connection serves every thread of the service behind a lock: the service's write rate is tiny
    (submissions, state changes, throttled progress), and one connection keeps each statement atomic
    without cross-connection busy waits.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a network file system without shared memory
            raise OSError(f"SQLite cannot use WAL mode for {self.path} (got {mode!r}); put the database on a local disk")
        # NORMAL is durable across a crash of this process in WAL mode (only a power loss can drop the
        # last commits), and it avoids an fsync per progress update.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise OSError(f"{self.path} was written by a newer convpipe (job table version {version})")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(r) if r is not None else None

    def list_jobs(self, *, state: str | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first by submission time (the later-inserted first among equal times)."""
        sql, args = "SELECT * FROM jobs", list[Any]()
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY submitted DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row(r) for r in rows]

    def active(self) -> list[Job]:
        """The queued and running jobs (what a new job must not collide with)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY seq",
                                    (QUEUED, RUNNING)).fetchall()
        return [_row(r) for r in rows]

    def total(self) -> int:
        """How many jobs the table holds."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    # ------------------------------------------------------------------ writes

    def add(self, name: str, spec: str, outputs: list[str], *, resume: bool = False) -> Job:
        """A new queued job; ``resume``: its run finishes an output an interrupted run left incomplete."""
        now = time.time()
        with self._lock:
            for _ in range(8):  # 48 random bits: a collision is astronomically rare, but never fatal
                job_id = secrets.token_hex(6)
                try:
                    self._db.execute("INSERT INTO jobs (id, name, state, spec, outputs, submitted, resume) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     (job_id, name, QUEUED, spec, json.dumps(outputs), now, int(resume)))
                    break
                except sqlite3.IntegrityError:
                    continue
            else:  # pragma: no cover
                raise RuntimeError("could not allocate a job id")
            r = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(r)

    def claim_next(self) -> Job | None:
        """Move the oldest queued job to running and return it (None when the queue is empty)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                r = self._db.execute("SELECT seq FROM jobs WHERE state = ? ORDER BY seq LIMIT 1",
                                     (QUEUED,)).fetchone()
                if r is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute("UPDATE jobs SET state = ?, started = COALESCE(started, ?), last_start = ?, "
                                 "attempts = attempts + 1, pid = NULL, error = NULL WHERE seq = ?",
                                 (RUNNING, now, now, r["seq"]))
                row = self._db.execute("SELECT * FROM jobs WHERE seq = ?", (r["seq"],)).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return _row(row)

    def set_pid(self, job_id: str, pid: int | None) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def set_progress(self, job_id: str, progress: float) -> None:
        """Raise a running job's progress (never lowers it: a resumed run may count from zero again)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET progress = MAX(progress, ?) WHERE id = ? AND state = ?",
                             (min(1.0, max(0.0, progress)), job_id, RUNNING))

    def finish(self, job_id: str, state: str, *, error: str | None = None) -> None:
        """End a running job as succeeded, failed or cancelled."""
        assert state in TERMINAL
        error = error_text(error)
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, error = ?, finished = ?, pid = NULL, "
                             "progress = CASE WHEN ? THEN 1.0 ELSE progress END WHERE id = ?",
                             (state, error, time.time(), state == SUCCEEDED, job_id))

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False when it is no longer queued."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state = ?, finished = ?, cancel_requested = 1 "
                                   "WHERE id = ? AND state = ?", (CANCELLED, time.time(), job_id, QUEUED))
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Flag a running job for cancellation; False when it is not running."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = ?",
                                   (job_id, RUNNING))
            return cur.rowcount == 1

    def requeue(self, job_id: str, *, resume: bool = True) -> None:
        """Put a running job back in the queue, to be resumed from its finished chunks."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, resume = ?, pid = NULL WHERE id = ? AND state = ?",
                             (QUEUED, int(resume), job_id, RUNNING))

    def running(self) -> Iterator[Job]:
        """Jobs in state running (at start-up: the ones a dead service left behind)."""
        yield from self.list_jobs(state=RUNNING)
