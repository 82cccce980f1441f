"""Background jobs: a SQLite registry of ``rcmae`` commands run as detached processes.

State lives in ``<workspace>/jobs.sqlite`` (WAL) and in per-job log files, never in a UI
session, so jobs keep running when the browser closes and a restarted app picks them up.
Each job runs through a tiny wrapper (``python -m rcmae.jobs _exec``) that records the
command's return code atomically in ``<log>.rc``: that file, not the process table, is the
truth about how a job ended, because a restarted app is no longer the job's parent.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled", "killed")
ACTIVE = ("queued", "running")
# Ended without success: a job waiting for one of these is cancelled; pretrain/finetune ones can resume.
ENDED_BADLY = ("failed", "cancelled", "killed")
# Flags whose values are paths: recorded absolute (from the job's cwd), so Resume / Run again work from anywhere.
_PATH_FLAGS = ("--data", "--out", "--run", "--aug", "--bank", "--prompts", "--preset")
# Subcommands whose folder (``--out`` or ``--run``) the Jobs page follows for progress.json / metrics.csv.
_OUT_FLAGS = ("--out", "--run")
# Long-running servers (``rcmae demo-app``): they start at once and hold no CPU slot, since they idle until used;
# they run until cancelled.
SERVICE_KINDS = ("demo-app",)
# A claimed job gets its pid a moment after it is marked running; before this many seconds a missing pid is normal.
_START_GRACE_S = 60.0

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

# Popen objects of jobs this process started: polling them reaps the child (no zombie left behind).
_CHILDREN: dict[int, subprocess.Popen] = {}


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
        """Where the wrapper writes its own ``pid start-time`` when it starts (:func:`_run_exec`)."""
        return Path(self.log + ".pid")

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


_COLUMNS = {f for f in Job.__dataclass_fields__ if f != "id"}


def _row_to_job(row: sqlite3.Row) -> Job:
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
        return _row_to_job(row)

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        """All jobs (oldest first), optionally only those in ``states``."""
        with self.connect() as con:
            if states:
                marks = ",".join("?" * len(states))
                rows = con.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", tuple(states))
            else:
                rows = con.execute("SELECT * FROM jobs ORDER BY id")
            return [_row_to_job(r) for r in rows.fetchall()]

    def update(self, job_id: int, only_if_state: str | None = None, **fields) -> bool:
        """Set columns of one job; with ``only_if_state`` only when it is still in that state. True if written."""
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise JobError(f"update: unknown column(s) {sorted(unknown)}; use fields of rcmae.jobs.Job")
        cols = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE jobs SET {cols} WHERE id = ?"
        params = [*fields.values(), int(job_id)]
        if only_if_state is not None:
            sql += " AND state = ?"
            params.append(only_if_state)
        with self.connect() as con:
            return con.execute(sql, params).rowcount == 1


# ---------------------------------------------------------------- processes
def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of a process from ``/proc/<pid>/stat``, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def _process_group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def _job_alive(job: Job) -> bool:
    """Is the job's wrapper still running (same pid and start time, not a zombie)? Reaps our own children."""
    if job.pid is None:
        return False
    child = _CHILDREN.get(job.pid)
    if child is not None:
        if child.poll() is None:
            return True
        _CHILDREN.pop(job.pid, None)
        return False
    stat = proc_stat(job.pid)
    if stat is None or (job.pid_start is not None and stat[1] != job.pid_start):
        return False
    if stat[0] == "Z":
        # A zombie that is our child (started by an earlier store object in this process): reap it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(job.pid, os.WNOHANG)
        return False
    return True


def _read_pid_file(job: Job) -> tuple[int, int] | None:
    """``(pid, start time)`` the job's wrapper wrote when it started, or None."""
    try:
        pid, start = job.pid_path.read_text().split()
        return int(pid), int(start)
    except (FileNotFoundError, ValueError):
        return None


def _read_rc(job: Job) -> int | None:
    try:
        return int(job.rc_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _out_folder(argv: Sequence[str]) -> str:
    for i, arg in enumerate(argv):
        for flag in _OUT_FLAGS:
            if arg == flag and i + 1 < len(argv):
                return str(Path(argv[i + 1]).resolve())
            if arg.startswith(flag + "="):
                return str(Path(arg.split("=", 1)[1]).resolve())
    return ""


def _absolute_argv(argv: Sequence[str], cwd: Path) -> list[str]:
    """``argv`` with the values of path flags made absolute from ``cwd`` (``--aug specaugment`` and preset
    names stay as they are)."""
    out: list[str] = []
    expect: str | None = None
    for arg in argv:
        if expect is not None:
            out.append(_absolute_value(expect, arg, cwd))
            expect = None
            continue
        flag, eq, value = arg.partition("=")
        if flag in _PATH_FLAGS and eq:
            out.append(f"{flag}={_absolute_value(flag, value, cwd)}")
            continue
        if arg in _PATH_FLAGS:
            expect = arg
        out.append(arg)
    if argv[:1] == ["demo-data"] and len(out) > 1 and not out[1].startswith("-"):
        out[1] = str((cwd / out[1]).resolve())
    return out


def _absolute_value(flag: str, value: str, cwd: Path) -> str:
    if flag == "--aug" and value == "specaugment":
        return value
    if flag == "--preset" and not value.endswith((".yaml", ".yml")):
        return value
    return str((cwd / Path(value).expanduser()).resolve())


def _parse_gpus(gpus: str | Sequence[str] | None) -> str:
    if gpus is None:
        return ""
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    items = [g.strip() for g in items if g.strip() != ""]
    for g in items:
        if not g.isdigit():
            raise JobError(f"gpus: {g!r} is not a GPU index; give indices like 0,1 or leave empty for CPU")
    return ",".join(items)


# ---------------------------------------------------------------- the public verbs
def launch(store: JobStore, argv: Sequence[str], gpus: str | Sequence[str] = "", name: str | None = None,
           raw_python: bool = False, after: int | None = None, cwd: str | os.PathLike | None = None) -> Job:
    """Queue ``rcmae <argv>`` (or ``python <argv>`` with ``raw_python``) as a background job.

    The job starts when :func:`start_ready` finds its GPUs free (the Jobs page and
    ``rcmae jobs run-queue`` call it); ``after`` makes it wait for another job to finish
    successfully first (it is cancelled if that job fails).
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise JobError("argv: empty command; give an rcmae subcommand such as ['index', 'data/demo']")
    if not raw_python and argv[0] in ("jobs",):
        raise JobError("argv: a job cannot run `rcmae jobs`; give a work command such as pretrain or evaluate")
    if after is not None:
        store.get(after)
    kind = "python" if raw_python else argv[0]
    workdir = Path(cwd).resolve() if cwd else Path.cwd()
    if not raw_python:
        argv = _absolute_argv(argv, workdir)
    return store.add(kind, argv, gpus=_parse_gpus(gpus), name=name, out=_out_folder(argv),
                     cwd=str(workdir), after=after)


def plan_starts(queued: Sequence[Job], running: Sequence[Job], gpus: Sequence[str], cpu_slots: int = 1,
                finished_ok: set[int] | None = None) -> tuple[list[Job], list[tuple[Job, str]]]:
    """Which queued jobs may start now: a pure function of the registry and the detected GPUs.

    Jobs are taken oldest first. A GPU job starts when every GPU it asks for exists and no
    running job holds it; a blocked job reserves its GPUs so later jobs cannot starve it.
    CPU jobs (``gpus == ""``) run at most ``cpu_slots`` at a time. A job with ``after`` waits
    until that job id is in ``finished_ok``.

    Returns:
        ``(start, invalid)``: the jobs to start, and ``(job, reason)`` for jobs that can never start.
    """
    finished_ok = finished_ok or set()
    known = {str(g) for g in gpus}
    busy: set[str] = {g for job in running for g in job.gpu_ids}
    cpu_busy = sum(1 for job in running if not job.gpu_ids and job.kind not in SERVICE_KINDS)
    start: list[Job] = []
    invalid: list[tuple[Job, str]] = []
    for job in sorted(queued, key=lambda j: j.id):
        if job.after is not None and job.after not in finished_ok:
            continue
        wanted = set(job.gpu_ids)
        if not wanted and job.kind in SERVICE_KINDS:
            start.append(job)
            continue
        if not wanted:
            if cpu_busy < cpu_slots:
                start.append(job)
                cpu_busy += 1
            continue
        missing = sorted(wanted - known, key=int)
        if missing:
            have = ",".join(sorted(known, key=int)) or "none"
            invalid.append((job, f"GPU {','.join(missing)} not detected (detected: {have}); relaunch on CPU "
                                 "or on a detected GPU"))
            continue
        if wanted & busy:
            busy |= wanted
            continue
        start.append(job)
        busy |= wanted
    return start, invalid


def cpu_slots_default() -> int:
    """How many CPU jobs may run at once: ``$RCMAE_CPU_JOBS`` or 1."""
    try:
        return max(1, int(os.environ.get("RCMAE_CPU_JOBS", "1")))
    except ValueError:
        return 1


def _spawn(job: Job) -> subprocess.Popen:
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    for stale in (job.rc_path, job.pid_path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = job.gpus
    env.setdefault("PYTHONUNBUFFERED", "1")
    wrapper = [sys.executable, "-m", "rcmae.jobs", "_exec", "--rc", str(job.rc_path), "--", *job.command]
    with open(job.log, "ab") as log:
        return subprocess.Popen(wrapper, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=job.cwd or None, env=env, start_new_session=True)


def start_ready(store: JobStore, gpus: Sequence[str] | None = None, cpu_slots: int | None = None,
                _hooks: dict | None = None) -> list[Job]:
    """Start the queued jobs that may run now (see :func:`plan_starts`); returns them as started.

    A job is claimed (``running``, no pid) in one write transaction, spawned, then its pid is recorded
    only if it is still ``running``. A :func:`cancel` that lands anywhere in between wins: the claim is
    not spawned, or the fresh process group is killed at once. ``_hooks`` (tests) are called with the
    job id at ``"claimed"`` and ``"spawned"``.
    """
    hooks = _hooks or {}
    refresh(store)
    gpus = detect_gpu_ids() if gpus is None else list(gpus)
    cpu_slots = cpu_slots_default() if cpu_slots is None else cpu_slots
    with store.connect(immediate=True) as con:
        # Claim inside one write transaction, so two callers (app + runner) never start the same job.
        rows = [_row_to_job(r) for r in con.execute("SELECT * FROM jobs ORDER BY id").fetchall()]
        queued = [j for j in rows if j.state == "queued"]
        running = [j for j in rows if j.state == "running"]
        ok = {j.id for j in rows if j.state == "done"}
        dead = {j.id: j.state for j in rows if j.state in ENDED_BADLY}
        now = time.time()
        # A failed link cancels the rest of its chain (oldest first, so one pass reaches the end).
        for job in queued:
            if job.after in dead:
                con.execute("UPDATE jobs SET state='cancelled', ended=?, note=? WHERE id=?",
                            (now, f"job {job.after} it waited for ended {dead[job.after]}", job.id))
                dead[job.id] = "cancelled"
        start, invalid = plan_starts([j for j in queued if j.after not in dead], running, gpus, cpu_slots, ok)
        for job, reason in invalid:
            con.execute("UPDATE jobs SET state='failed', ended=?, note=? WHERE id=?", (now, reason, job.id))
        for job in start:
            con.execute("UPDATE jobs SET state='running', started=? WHERE id=?", (now, job.id))
    started = []
    for job in start:
        if "claimed" in hooks:
            hooks["claimed"](job.id)
        current = store.get(job.id)
        if current.state != "running":  # cancelled between claim and spawn: never start it
            continue
        try:
            proc = _spawn(current)
        except OSError as err:
            store.update(job.id, only_if_state="running", state="failed", ended=time.time(),
                         note=f"could not start: {err}")
            continue
        _CHILDREN[proc.pid] = proc
        if "spawned" in hooks:
            hooks["spawned"](job.id)
        stat = proc_stat(proc.pid)
        if not store.update(job.id, only_if_state="running", pid=proc.pid, pid_start=stat[1] if stat else None):
            # Cancelled after the spawn, before its pid was known to anyone: this launcher kills it.
            _kill_group(proc.pid, lambda p=proc: p.poll() is None)
            store.update(job.id, pid=proc.pid, pid_start=stat[1] if stat else None)
            continue
        started.append(store.get(job.id))
    return started


def refresh(store: JobStore) -> list[Job]:
    """Reconcile running jobs with their processes: ended ones become done/failed. Returns all jobs."""
    now = time.time()
    for job in store.list(["running", "cancelled"]):
        if job.state == "cancelled":
            # A cancelled job's return code still arrives; keep it for the record.
            if job.returncode is None and job.pid is not None and not _job_alive(job):
                rc = _read_rc(job)
                if rc is not None:
                    store.update(job.id, returncode=rc)
            continue
        if job.pid is None:
            # The launcher died between spawning the wrapper and recording its pid: the wrapper said it itself.
            adopted = _read_pid_file(job)
            if adopted is not None and store.update(job.id, only_if_state="running", pid=adopted[0],
                                                    pid_start=adopted[1]):
                job = store.get(job.id)
        if job.pid is None:
            if job.started is not None and now - job.started > _START_GRACE_S:
                store.update(job.id, only_if_state="running", state="failed", ended=now,
                             note="the job was claimed but never started (the launcher died)")
            continue
        if _job_alive(job):
            continue
        rc = _read_rc(job)
        if rc == 0:
            store.update(job.id, only_if_state="running", state="done", returncode=0, ended=now)
        elif rc is None or rc < 0:
            # No return code (the wrapper itself was killed) or a signal (rc -9): the job was killed.
            how = "without a return code" if rc is None else f"by signal {-rc}"
            ckpt = _mark_progress(job, "killed")
            note = f"killed ({how})" + (f"; last checkpoint {ckpt}: Resume continues from it" if ckpt else "")
            if store.update(job.id, only_if_state="running", state="killed", returncode=rc, ended=now, note=note):
                _append_log(job, f"[killed {how}]" + (f" last checkpoint: {ckpt}" if ckpt else ""))
        else:
            store.update(job.id, only_if_state="running", state="failed", returncode=rc, ended=now)
    return store.list()


def _append_log(job: Job, line: str) -> None:
    with contextlib.suppress(OSError), open(job.log, "a") as log:
        log.write(f"\n{line}\n")


def last_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest ``checkpoints/*-last.ckpt`` of a run folder, or None."""
    found = sorted(Path(out).glob("checkpoints/*-last.ckpt"), key=lambda p: p.stat().st_mtime) if out else []
    return found[-1] if found else None


def _mark_progress(job: Job, state: str) -> Path | None:
    """Set a still-"running" ``progress.json`` of the job's folder to ``state`` with the last checkpoint named."""
    if not job.out:
        return None
    path = Path(job.out) / "progress.json"
    ckpt = last_checkpoint(job.out)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return ckpt
    if isinstance(record, dict) and record.get("state") == "running":
        from rcmae.files import write_json

        record.update(state=state, checkpoint=str(ckpt) if ckpt else None, updated_by=f"job {job.id}")
        with contextlib.suppress(OSError):
            write_json(path, record)
    return ckpt


def _kill_group(pgid: int, alive, timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.time() + timeout
        while time.time() < deadline:
            alive()  # reaps our own child so the group can empty
            if not _process_group_alive(pgid):
                return
            time.sleep(0.05)


def cancel(store: JobStore, job_id: int, timeout: float = 5.0) -> Job:
    """Cancel a job: a queued one never starts; a running one's process group gets SIGTERM, then SIGKILL.

    Race-free against :func:`start_ready`: the state changes first (only from queued/running), then the
    pid is read back. A launcher that has claimed the job but not yet recorded its pid sees the
    cancellation when it tries to record it, and kills what it spawned.
    """
    job = store.get(job_id)
    now = time.time()
    if job.state == "queued" and store.update(job.id, only_if_state="queued", state="cancelled", ended=now,
                                              note="cancelled"):
        return store.get(job.id)
    job = store.get(job_id)
    if job.state != "running":
        return job
    if not store.update(job.id, only_if_state="running", state="cancelled", ended=now, note="cancelled"):
        return store.get(job.id)
    job = store.get(job.id)  # the pid as recorded now: after this, no launcher records one
    if job.pid is not None and _job_alive(job):
        _kill_group(job.pid, lambda: _job_alive(job), timeout)
    _mark_progress(job, "cancelled")
    _append_log(job, "[cancelled]")
    return store.get(job.id)


def resume_argv(job: Job) -> list[str]:
    """The argv that continues a pretrain/finetune job from its last checkpoint."""
    if job.kind not in ("pretrain", "finetune"):
        raise JobError(f"job {job.id}: only pretrain and finetune jobs can resume, this is a {job.kind} job")
    argv = list(job.argv)
    return argv if "--resume" in argv else [*argv, "--resume"]


def tail_log(job: Job, n: int = 40) -> str:
    """The last ``n`` lines of a job's log; progress-bar redraws (``\\r``) keep only their last state."""
    try:
        with open(job.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line.rstrip("\r").split("\r")[-1] for line in data.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines[-n:]) if n > 0 else ""


def detect_gpus() -> list[str]:
    """Names of the CUDA GPUs torch sees (index = position); empty on a CPU machine."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def detect_gpu_ids() -> list[str]:
    """Indices ("0", "1", ...) of the detected GPUs."""
    return [str(i) for i in range(len(detect_gpus()))]


# ---------------------------------------------------------------- queue runner
def _runner_lock(store: JobStore) -> Path:
    return store.db_path.with_name(store.db_path.name + ".runner.lock")


def runner_alive(store: JobStore) -> bool:
    """Whether a queue runner holds this registry's runner lock."""
    with open(_runner_lock(store), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def revive_runner(store: JobStore) -> bool:
    """Start a queue runner when jobs are queued and none runs (it died, or was killed). True if started.

    The Jobs page and ``rcmae jobs`` call this on every view, so a dead runner costs a queue at most
    until someone looks.
    """
    if not store.list(["queued"]) or runner_alive(store):
        return False
    ensure_runner(store)
    return True


def ensure_runner(store: JobStore) -> None:
    """Start a detached queue runner for this registry unless one already runs.

    The runner starts queued jobs as GPUs free up, so a queue drains even with the browser
    closed; it exits when nothing is queued or running.
    """
    lock = _runner_lock(store)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        fcntl.flock(f, fcntl.LOCK_UN)
    subprocess.Popen([sys.executable, "-m", "rcmae.jobs", "_runner", str(store.db_path)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def run_queue(store: JobStore, wait: bool = False, poll_s: float = 1.0) -> None:
    """Start ready jobs once, or with ``wait`` keep doing so until nothing is queued or running."""
    start_ready(store)
    while wait and store.list(ACTIVE):
        time.sleep(poll_s)
        start_ready(store)


def _run_runner(db_path: str) -> int:
    store = JobStore(db_path)
    with open(_runner_lock(store), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        run_queue(store, wait=True)
    return 0


def _run_exec(rc_file: str, command: list[str]) -> int:
    """Run ``command``, then write its return code atomically to ``rc_file`` (the job wrapper).

    First the wrapper writes its own pid and start time beside it (``<log>.pid``), so that a job whose launcher
    died before recording the pid is still found (:func:`refresh`).
    """
    stat = proc_stat(os.getpid())
    if stat is not None and rc_file.endswith(".rc"):
        pid_file = rc_file[: -len(".rc")] + ".pid"
        with open(f"{pid_file}.tmp", "w") as f:
            f.write(f"{os.getpid()} {stat[1]}\n")
        os.replace(f"{pid_file}.tmp", pid_file)
    print(f"$ {' '.join(command)}", flush=True)
    try:
        rc = subprocess.call(command)
    except OSError as err:
        print(f"could not run the command: {err}", flush=True)
        rc = 127
    tmp = f"{rc_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{rc}\n")
    os.replace(tmp, rc_file)
    print(f"[exit {rc}]", flush=True)
    return rc


# ---------------------------------------------------------------- rcmae jobs ...
def _format_row(job: Job) -> str:
    dur = f"{job.duration:7.1f}s" if job.duration is not None else "       -"
    rc = "" if job.returncode is None else f"rc={job.returncode}"
    return f"{job.id:>4}  {job.state:<9}  {job.gpus or 'cpu':<5}  {dur}  {rc:<6}  {job.name}"


def main(args: argparse.Namespace) -> int:
    """``rcmae jobs list|launch|cancel|log|run-queue`` (see :func:`rcmae.cli._add_jobs`)."""
    from rcmae.workspace import Workspace

    store = JobStore(Workspace.default(args.workspace).jobs_db)
    if args.action != "run-queue" and revive_runner(store):
        print("the queue runner was not running (killed?): restarted it for the queued jobs", file=sys.stderr)
    if args.action == "list":
        jobs = refresh(store)
        if not jobs:
            print("no jobs")
        for job in jobs:
            print(_format_row(job))
        return 0
    if args.action == "launch":
        argv = list(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        job = launch(store, argv, gpus=args.gpus, name=args.name)
        started = start_ready(store)
        ensure_runner(store)
        state = "started" if any(j.id == job.id for j in started) else "queued"
        print(f"job {job.id} {state}: {' '.join(argv)} (log {job.log})")
        return 0
    if args.action == "cancel":
        job = cancel(store, args.id)
        print(f"job {job.id}: {job.state}")
        return 0
    if args.action == "log":
        refresh(store)
        print(tail_log(store.get(args.id), args.lines))
        return 0
    if args.action == "run-queue":
        run_queue(store, wait=getattr(args, "wait", False))
        for job in store.list(ACTIVE):
            print(_format_row(job))
        return 0
    raise JobError(f"jobs: unknown action {args.action!r}; use list, launch, cancel, log or run-queue")


def _private_main(argv: list[str]) -> int:
    if argv[:1] == ["_exec"]:
        parser = argparse.ArgumentParser(prog="python -m rcmae.jobs _exec")
        parser.add_argument("--rc", required=True)
        parser.add_argument("command", nargs=argparse.REMAINDER)
        ns = parser.parse_args(argv[1:])
        command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
        return _run_exec(ns.rc, command)
    if argv[:1] == ["_runner"] and len(argv) == 2:
        return _run_runner(argv[1])
    print("usage: python -m rcmae.jobs _exec --rc FILE -- COMMAND... | _runner DB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_private_main(sys.argv[1:]))
