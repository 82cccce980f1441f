"""The queue runner: one background process per workspace that starts queued jobs as slots free up."""

from __future__ import annotations

import argparse
import fcntl
import subprocess
import sys
import time
from pathlib import Path

from rcmae.workbench.jobs import ACTIVE, JobStore, start_ready
from rcmae.workbench.processes import run_exec


# ---------------------------------------------------------------- queue runner
def runner_lock(store: JobStore) -> Path:
    return store.db_path.with_name(store.db_path.name + ".runner.lock")


def runner_alive(store: JobStore) -> bool:
    """Whether a queue runner holds this registry's runner lock."""
    with open(runner_lock(store), "a") as f:
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
    lock = runner_lock(store)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        fcntl.flock(f, fcntl.LOCK_UN)
    subprocess.Popen([sys.executable, "-m", "rcmae.workbench.runner", "_runner", str(store.db_path)],
                     stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def run_queue(store: JobStore, wait: bool = False, poll_s: float = 1.0) -> None:
    """Start ready jobs once, or with ``wait`` keep doing so until nothing is queued or running."""
    start_ready(store)
    while wait and store.list(ACTIVE):
        time.sleep(poll_s)
        start_ready(store)


def run_runner(db_path: str) -> int:
    store = JobStore(db_path)
    with open(runner_lock(store), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        run_queue(store, wait=True)
    return 0


def _private_main(argv: list[str]) -> int:
    if argv[:1] == ["_exec"]:
        parser = argparse.ArgumentParser(prog="python -m rcmae.workbench.runner _exec")
        parser.add_argument("--rc", required=True)
        parser.add_argument("command", nargs=argparse.REMAINDER)
        ns = parser.parse_args(argv[1:])
        command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
        return run_exec(ns.rc, command)
    if argv[:1] == ["_runner"] and len(argv) == 2:
        return run_runner(argv[1])
    print("usage: python -m rcmae.workbench.runner _exec --rc FILE -- COMMAND... | _runner DB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_private_main(sys.argv[1:]))
