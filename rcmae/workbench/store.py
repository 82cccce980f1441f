"""The job registry: one SQLite table of jobs (command, state, GPUs, log, pid), safe under concurrent writers."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled", "killed")
ACTIVE = ("queued", "running")
# Ended without success: a job waiting for one of these is cancelled; pretrain/finetune ones can resume.
ENDED_BADLY = ("failed", "cancelled", "killed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    argv TEXT NOT NULL,
    gpus TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'queued',
    pid INTEGER,
    pid_start INTEGER,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    returncode INTEGER,
    log TEXT NOT NULL DEFAULT '',
    out TEXT NOT NULL DEFAULT '',
    cwd TEXT NOT NULL DEFAULT '',
    after INTEGER,
    note TEXT NOT NULL DEFAULT ''
)
"""


class JobError(ValueError):
    """A bad job request (unknown id, bad GPU list, empty command); the message says what to fix."""


@dataclass(frozen=True)
class Job:
    """One row of the registry.

    Attributes:
        id: Registry id (1, 2, ...).
        name: Display name.
        kind: The rcmae subcommand (``pretrain``, ``evaluate``, ...) or ``python`` for a raw Python job.
        argv: The arguments after ``rcmae`` (or after ``python`` for raw Python jobs).
        gpus: CUDA_VISIBLE_DEVICES for the job; ``""`` is a CPU job.
        state: One of queued, running, done, failed, cancelled, killed (ended by a signal, e.g. kill -9).
        pid: Process id of the job's wrapper (also its process-group id).
        pid_start: Start time of ``pid`` in clock ticks from ``/proc/<pid>/stat``, against PID reuse.
        created, started, ended: Unix times.
        returncode: The command's exit status once it ended.
        log: Log file (stdout and stderr).
        out: The run/output folder named by ``--out`` or ``--run``, or ``""``.
        cwd: Working directory the command runs in.
        after: Id of a job that must finish successfully before this one starts.
        note: Why a job failed or was cancelled, when the log cannot say it.
    """

    id: int
    name: str
    kind: str
    argv: tuple[str, ...]
    gpus: str
    state: str
    pid: int | None
    pid_start: int | None
    created: float
    started: float | None
    ended: float | None
    returncode: int | None
    log: str
    out: str
    cwd: str
    after: int | None
    note: str

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        return tuple(g for g in self.gpus.split(",") if g.strip() != "")

    @property
    def command(self) -> list[str]:
        """The full argument list the wrapper runs."""
        if self.kind == "python":
            return [sys.executable, *self.argv]
        return [sys.executable, "-m", "rcmae.cli", *self.argv]

    @property
    def rc_path(self) -> Path:
        return Path(self.log + ".rc")

    @property
    def pid_path(self) -> Path:
        """Where the wrapper writes its own ``pid start-time`` when it starts (:func:`run_exec`)."""
        return Path(self.log + ".pid")

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


_COLUMNS = {f for f in Job.__dataclass_fields__ if f != "id"}


def row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["argv"] = tuple(json.loads(data["argv"]))
    return Job(**data)


class JobStore:
    """The job registry in one SQLite file.

    Every call opens its own short connection, so one store can be shared by Streamlit's
    script threads, a CLI process and the queue runner at the same time.

    Args:
        db_path: The SQLite file (created with its parent folder); logs go to ``<db folder>/logs``.
    """

    def __init__(self, db_path: str | os.PathLike) -> None:
        self.db_path = Path(db_path).resolve()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.db_path.parent / "logs"
        con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            # WAL lets the app read while a runner writes; the mode is stored in the file, set once.
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)
            check = con.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
        except sqlite3.DatabaseError as err:
            raise JobError(
                f"{self.db_path}: not a readable job database ({err}); move it aside (mv {self.db_path.name} "
                f"{self.db_path.name}.bad) to start a new one: running jobs keep running, their history is lost"
            ) from err
        finally:
            con.close()

    @contextlib.contextmanager
    def connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction; ``immediate`` takes the write lock up front (for claims)."""
        con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def add(self, kind: str, argv: Sequence[str], gpus: str = "", name: str | None = None, out: str = "",
            cwd: str | None = None, after: int | None = None) -> Job:
        """Insert a queued job and return it."""
        now = time.time()
        with self.connect() as con:
            cur = con.execute(
                "INSERT INTO jobs (name, kind, argv, gpus, state, created, out, cwd, after) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (name or "", kind, json.dumps(list(argv)), gpus, now, out, cwd or os.getcwd(), after),
            )
            job_id = int(cur.lastrowid)
            log = str(self.log_dir / f"job-{job_id:05d}.log")
            con.execute("UPDATE jobs SET log = ?, name = ? WHERE id = ?",
                        (log, name or f"{kind} #{job_id}", job_id))
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        """The job with this id; :class:`JobError` when there is none."""
        with self.connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise JobError(f"job {job_id}: no such job in {self.db_path}; see `rcmae jobs list`")
        return row_to_job(row)

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        """All jobs (oldest first), optionally only those in ``states``."""
        with self.connect() as con:
            if states:
                marks = ",".join("?" * len(states))
                rows = con.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", tuple(states))
            else:
                rows = con.execute("SELECT * FROM jobs ORDER BY id")
            return [row_to_job(r) for r in rows.fetchall()]

    def update(self, job_id: int, only_if_state: str | None = None, **fields) -> bool:
        """Set columns of one job; with ``only_if_state`` only when it is still in that state. True if written."""
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise JobError(f"update: unknown column(s) {sorted(unknown)}; use fields of rcmae.workbench.jobs.Job")
        cols = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE jobs SET {cols} WHERE id = ?"
        params = [*fields.values(), int(job_id)]
        if only_if_state is not None:
            sql += " AND state = ?"
            params.append(only_if_state)
        with self.connect() as con:
            return con.execute(sql, params).rowcount == 1
