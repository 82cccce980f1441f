"""`rcmae fit`: a run without a network, fitted in seconds: the training-free scorers on a data folder.

The `tiny` preset's default detector is an ensemble of two training-free scorers (``stats_maha`` on per-band
statistics, ``frame_pca`` on 5-frame context vectors; README "What to expect"), so a useful detector needs no
training at all. :func:`fit_training_free` writes an ordinary run folder (``config.yaml``, ``stats.json``,
``run.json`` with ``training_free: true``, ``references/``, ``thresholds.json``) that ``rcmae evaluate``, ``score``,
``export`` and ``monitor`` read like any other. Training RC-MAE stays one command away (``rcmae pretrain``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rcmae.files import write_json
from rcmae.run import config as rconfig
from rcmae.run.folder import (
    RunFolderError,
    current_git_commit,
    package_versions,
    read_run_json,
    update_progress,
    utc_now,
    writer_lock,
)
from rcmae.run.trainset import classes_note, load_train_data
from rcmae.scorers.detector import Detector
from rcmae.scorers.fitting import TRAINING_FREE, fit_detector


def fit_training_free(data: str | os.PathLike, out: str | os.PathLike, preset: str = "tiny",
                      overrides: Sequence[str] = (), progress: bool = True) -> Path:
    """Index ``data``, compute the log-mel statistics and fit the training-free scorers into run folder ``out``.

    Args:
        data: A DCASE-layout folder (or your own, docs/data.md).
        out: The run folder to write (new, or an earlier training-free run: only what changed is refitted).
        preset, overrides: The config (front-end, score settings, the default scorer and its ensemble).
        progress: Progress bars and one line per fitted scorer on stderr.

    Returns:
        The run folder.
    """
    out = Path(out)
    cfg = rconfig.load_config(preset, overrides)
    if cfg.family == "margin":
        raise rconfig.ConfigError(f"preset {preset}: the margin family has no training-free scorers; use tiny")
    if (out / "run.json").is_file() and not read_run_json(out).get("training_free"):
        raise RunFolderError(f"{out}: already holds a trained run; choose a new --out for a training-free run")
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt")):
        raise RunFolderError(f"{out}: holds checkpoints of a trained run; choose a new --out")
    with writer_lock(out):  # one writer per run folder
        return _fit(data, out, cfg, preset, overrides, progress)


def _fit(data, out: Path, cfg, preset, overrides, progress: bool) -> Path:
    update_progress(out, stage="fit", state="running", scorer="loading the training clips")
    train, stats = load_train_data(data, cfg, progress=progress)
    rconfig.save_config(cfg, out / "config.yaml")
    stats.save(out / "stats.json")
    write_json(out / "run.json", {
        "created": utc_now(),
        "seed": cfg.seed,
        "preset": str(preset),
        "overrides": list(overrides),
        "versions": package_versions(),
        "git_commit": current_git_commit(),
        "command": " ".join(sys.argv),
        "data": str(Path(data).resolve()),
        "classes": [list(c) for c in train.classes],
        "class_units": [list(u) for u in train.class_units],
        "n_train": len(train.paths),
        "skipped": [list(s) for s in train.report.skipped],
        "training_free": True,
        "stages": {},
    })
    print(f"{len(train.paths)} training clips, {classes_note(train)}", file=sys.stderr, flush=True)
    det = Detector.load(out, fit=False)
    wanted = [s for s in det.scorers if s in (*TRAINING_FREE, "ensemble")]
    fit_detector(det, train=train, progress=progress, scorers=wanted)
    return out
