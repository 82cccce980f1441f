"""The run folder contract: paths, run.json, progress.json and the provenance every stage records."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

import rcmae
from rcmae.files import current_git_commit, read_json, write_json  # noqa: F401 (current_git_commit: re-exported)

STAGES = ("pretrain", "finetune")
METRIC_COLUMNS = [
    "stage", "kind", "epoch", "step", "loss", "mae", "info_nce", "vcr", "variance", "covariance", "supcon", "ce",
    "lr",
]


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (missing, already trained, other preset)."""


# ------------------------------------------------------------------------------------------------ run folder
def run_paths(run: str | os.PathLike) -> dict[str, Path]:
    """The files of a run folder by role."""
    run = Path(run)
    return {
        "config": run / "config.yaml",
        "run_json": run / "run.json",
        "stats": run / "stats.json",
        "checkpoints": run / "checkpoints",
        "metrics": run / "metrics.csv",
        "progress": run / "progress.json",
        "thresholds": run / "thresholds.json",
        "embeddings": run / "embeddings",
        "eval": run / "eval",
    }


def checkpoint_path(run: str | os.PathLike, stage: str, which: str = "last") -> Path:
    """``run/checkpoints/<stage>-<which>.ckpt``."""
    return Path(run) / "checkpoints" / f"{stage}-{which}.ckpt"


def read_run_json(run: str | os.PathLike) -> dict:
    """``run.json`` of a run folder (one clear line when the folder is not a run)."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise RunFolderError(f"{run}: not an rcmae run folder (no run.json); pretrain one with `rcmae pretrain`")
    return read_json(path)


def update_run_json(run: str | os.PathLike, **fields: object) -> dict:
    """Merge ``fields`` into ``run.json`` (atomic rewrite)."""
    path = Path(run) / "run.json"
    info = read_json(path) if path.is_file() else {}
    info.update(fields)
    write_json(path, info)
    return info


def package_versions() -> dict[str, str]:
    """Versions recorded in run.json (lightning's read from its metadata: this module never imports it)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": importlib.metadata.version("lightning"),
        "rcmae": rcmae.__version__,
        "numpy": np.__version__,
    }


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_progress(run: str | os.PathLike, **fields: object) -> None:
    """Atomically write ``progress.json`` (``stage, epoch, epochs, step, steps, loss, state, updated``)."""
    record = {"stage": None, "epoch": 0, "epochs": 0, "step": 0, "steps": 0, "loss": None, "state": "running"}
    record.update(fields)
    loss = record.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        record["loss"] = None
    record["updated"] = utc_now()
    write_json(Path(run) / "progress.json", record)


def update_progress(run: str | os.PathLike, **fields: object) -> None:
    """Merge ``fields`` into ``progress.json`` (what a stage wrote stays: its epochs, steps and loss)."""
    path = Path(run) / "progress.json"
    try:
        record = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        record = {}  # a torn progress file is only a display: start it again
    record = record if isinstance(record, dict) else {}
    record.update(fields)
    record["updated"] = utc_now()
    write_json(path, record)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def writer_lock(run: str | os.PathLike, command: str | None = None) -> Iterator[None]:
    """One writer per run folder: an advisory lock (``fcntl.flock`` on ``RUN/.lock``) held while a stage writes.

    A second writer fails at once with one line naming the holder's PID and command. The operating system drops
    the lock when its holder exits, even on ``kill -9``, so a crash leaves no stale lock behind.

    Raises:
        RunFolderError: another process holds the lock.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the whole block
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # The holder writes its PID right after it takes the lock: give it a moment to, so the line can name it.
        holder = ""
        for _ in range(20):
            fh.seek(0)
            holder = fh.read().strip()
            if holder:
                break
            time.sleep(0.025)
        holder = holder or "another process"
        fh.close()
        raise RunFolderError(f"{run}: in use by {holder}; wait for it to finish, or choose another folder") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"PID {os.getpid()} ({command or ' '.join(sys.argv) or 'python'})")
    fh.flush()
    try:
        yield
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
