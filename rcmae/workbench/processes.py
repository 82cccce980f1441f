"""Operating-system side of jobs: process checks, GPU detection, killing a group, the job wrapper."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the module imports this one
    from rcmae.workbench.store import Job



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


def process_group_alive(pgid: int) -> bool:
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


def job_alive(job: Job) -> bool:
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


def read_pid_file(job: Job) -> tuple[int, int] | None:
    """``(pid, start time)`` the job's wrapper wrote when it started, or None."""
    try:
        pid, start = job.pid_path.read_text().split()
        return int(pid), int(start)
    except (FileNotFoundError, ValueError):
        return None


def read_rc(job: Job) -> int | None:
    try:
        return int(job.rc_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cpu_slots_default() -> int:
    """How many CPU jobs may run at once: ``$RCMAE_CPU_JOBS`` or 1."""
    try:
        return max(1, int(os.environ.get("RCMAE_CPU_JOBS", "1")))
    except ValueError:
        return 1


def kill_group(pgid: int, alive, timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.time() + timeout
        while time.time() < deadline:
            alive()  # reaps our own child so the group can empty
            if not process_group_alive(pgid):
                return
            time.sleep(0.05)


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


def run_exec(rc_file: str, command: list[str]) -> int:
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

# Popen objects of jobs this process started: polling them reaps the child (no zombie left behind).
_CHILDREN: dict[int, subprocess.Popen] = {}
