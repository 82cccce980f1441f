"""Machine description and a results-file helper shared by the bench scripts."""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
from pathlib import Path


def machine() -> str:
    """One line: CPU model, cores, memory, GPU, torch version (``rcmae.evaluation.benchmark.machine_info``)."""
    from rcmae.evaluation.benchmark import machine_info

    m = machine_info()
    gpu = ", ".join(m["gpu"]) or "no GPU"
    return (f"{m['cpu'] or 'unknown CPU'}, {m['usable_cores']} cores, {m['memory_gib']:.0f} GiB, {gpu}, "
            f"torch {m['torch']}, Python {m['python']}")


def header(title: str) -> str:
    """Markdown header with machine, date and the exact command."""
    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    return (f"## {title}\n\n- machine: {machine()}\n- date: {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC\n"
            f"- command: `python {cmd}`\n\n")


def header_date(text: str) -> str:
    """The date line of a :func:`header` (``2026-12-07 02:25 UTC``)."""
    return text.split("- date: ", 1)[1].split("\n", 1)[0]


def write_result(name: str, text: str) -> Path:
    path = Path(__file__).parent / "results" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def raw_path(name: str) -> Path:
    return Path(__file__).parent / "results" / f"{name}.json"


def save_raw(name: str, raw: dict) -> Path:
    """Write bench/results/<name>.json (the numbers a page is drawn from) atomically."""
    import json

    from rcmae.files import atomic_write_text

    return atomic_write_text(raw_path(name), json.dumps(raw, indent=1) + "\n")


def load_raw(name: str) -> dict | None:
    from rcmae.files import read_json

    path = raw_path(name)
    return read_json(path) if path.is_file() else None


RUN_MARKERS = ("run.json", "config.yaml", "progress.json")


def remove_run(run: Path, part: str | None = None) -> None:
    """Remove a run folder a bench script made (or its ``part``, e.g. ``checkpoints``): only a folder holding what
    rcmae writes into a run (``RUN_MARKERS``) goes; anything else in its place is refused, never deleted."""
    import shutil

    from rcmae.files import check_replaceable

    check_replaceable(run, RUN_MARKERS, "run folder", flag="a bench rerun")
    if part is not None and not any((run / m).is_file() for m in RUN_MARKERS):
        return  # nothing of a run there: no part of one to remove
    shutil.rmtree(run if part is None else run / part, ignore_errors=True)
