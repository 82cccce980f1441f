"""Atomic file writes: a reader never sees a half-written file, and a crash never loses the old one."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is not valid JSON: write None instead)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); delete or regenerate it") from err


def check_replaceable(folder: str | os.PathLike, marker: str | tuple[str, ...], what: str,
                      flag: str = "--overwrite") -> None:
    """Refuse, in one line, to replace a non-empty ``folder`` that holds none of ``marker`` (what rcmae writes
    into that kind of folder: a bundle's ``detector.json``, a run's ``run.json``). Replacing deletes the folder;
    only a folder rcmae made for the same purpose may go."""
    folder = Path(folder)
    markers = (marker,) if isinstance(marker, str) else tuple(marker)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ValueError(f"{folder}: not a {what} folder; {flag} replaces only a {what}. Choose another folder")
    if folder.is_dir() and any(folder.iterdir()) and not any((folder / m).is_file() for m in markers):
        raise ValueError(f"{folder}: not a {what} (no {' or '.join(markers)}); {flag} replaces only a {what}, "
                         "never other folders. Choose another folder")


def current_git_commit() -> str | None:
    """The commit of the rcmae source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
