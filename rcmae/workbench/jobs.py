"""Background jobs: launching, scheduling, refreshing and cancelling them, their logs (the registry is `store`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rcmae.workbench.processes import (
    _CHILDREN,
    cpu_slots_default,
    detect_gpu_ids,
    job_alive,
    kill_group,
    proc_stat,
    read_pid_file,
    read_rc,
)

# The registry's names are part of this module's interface (pages and scripts use jobs.JobStore, jobs.ACTIVE).
from rcmae.workbench.store import ACTIVE as ACTIVE
from rcmae.workbench.store import ENDED_BADLY as ENDED_BADLY
from rcmae.workbench.store import STATES as STATES
from rcmae.workbench.store import Job as Job
from rcmae.workbench.store import JobError as JobError
from rcmae.workbench.store import JobStore as JobStore
from rcmae.workbench.store import row_to_job

# Flags whose values are paths: recorded absolute (from the job's cwd), so Resume / Run again work from anywhere.
_PATH_FLAGS = ("--data", "--out", "--run", "--aug", "--bank", "--prompts", "--preset")
# Subcommands whose folder (``--out`` or ``--run``) the Jobs page follows for progress.json / metrics.csv.
_OUT_FLAGS = ("--out", "--run")
# Long-running servers (``rcmae demo-app``): they start at once and hold no CPU slot, since they idle until used;
# they run until cancelled.
SERVICE_KINDS = ("demo-app",)
# A claimed job gets its pid a moment after it is marked running; before this many seconds a missing pid is normal.
_START_GRACE_S = 60.0


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


def _spawn(job: Job) -> subprocess.Popen:
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    for stale in (job.rc_path, job.pid_path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = job.gpus
    env.setdefault("PYTHONUNBUFFERED", "1")
    wrapper = [sys.executable, "-m", "rcmae.workbench.runner", "_exec", "--rc", str(job.rc_path), "--", *job.command]
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
        rows = [row_to_job(r) for r in con.execute("SELECT * FROM jobs ORDER BY id").fetchall()]
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
            kill_group(proc.pid, lambda p=proc: p.poll() is None)
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
            if job.returncode is None and job.pid is not None and not job_alive(job):
                rc = read_rc(job)
                if rc is not None:
                    store.update(job.id, returncode=rc)
            continue
        if job.pid is None:
            # The launcher died between spawning the wrapper and recording its pid: the wrapper said it itself.
            adopted = read_pid_file(job)
            if adopted is not None and store.update(job.id, only_if_state="running", pid=adopted[0],
                                                    pid_start=adopted[1]):
                job = store.get(job.id)
        if job.pid is None:
            if job.started is not None and now - job.started > _START_GRACE_S:
                store.update(job.id, only_if_state="running", state="failed", ended=now,
                             note="the job was claimed but never started (the launcher died)")
            continue
        if job_alive(job):
            continue
        rc = read_rc(job)
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
    if job.pid is not None and job_alive(job):
        kill_group(job.pid, lambda: job_alive(job), timeout)
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
