"""Fitting a run's scorers: held-out scores, thresholds, references and embeddings after each stage."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rcmae.files import atomic_write_text, write_json
from rcmae.models.rcmae import clip_stats
from rcmae.run.folder import read_run_json, update_run_json
from rcmae.run.trainset import TrainData
from rcmae.scorers import (
    ScoringError,
    band_stats,
    fit_unit_thresholds,
)

if TYPE_CHECKING:  # annotations only: the module imports this one
    from rcmae.scorers.detector import Detector


def training_stamp(info: dict) -> dict[str, str | None]:
    """When each training stage of a run finished (from run.json): thresholds fitted before it are stale."""
    return {stage: s.get("finished", s.get("skipped")) for stage, s in sorted(info.get("stages", {}).items())}


def load_rows(path: Path) -> dict | None:
    """The train rows of an ``embeddings/*.npz``-schema file, or ``None`` when it does not exist."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            train = npz["split"] == "train"
            return {"z": npz["z"][train].astype(np.float32), "machine_type": npz["machine_type"][train].astype(str),
                    "machine_id": npz["machine_id"][train].astype(str), "path": npz["path"][train].astype(str)}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        # Derived from the run's weights and data: a torn file is refitted, never fatal.
        print(f"{path}: damaged ({type(err).__name__}: {str(err)[:80]}); refitting it from the run's data",
              file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


# --------------------------------------------------------------------------------- run-level fitting/evaluation
def save_embeddings(path: Path, z: np.ndarray, paths, types, ids, split: str, labels, keep_other: bool) -> None:
    """Write/merge ``embeddings/<space>.npz`` rows of one split (rows of the other split are kept)."""
    cols = {"z": np.asarray(z, dtype=np.float32), "path": np.asarray(paths, dtype=str),
            "machine_type": np.asarray(types, dtype=str), "machine_id": np.asarray(ids, dtype=str),
            "split": np.asarray([split] * len(paths), dtype=str), "label": np.asarray(labels, dtype=str)}
    if keep_other and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as old:
                other = old["split"] != split
                if other.any() and old["z"].shape[1] == cols["z"].shape[1]:
                    cols = {k: np.concatenate([old[k][other], v]) for k, v in cols.items()}
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged file is simply rewritten with this split's rows
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **cols)
    os.replace(tmp, path)


def fit_detector(det: Detector, train: TrainData | None = None, progress: bool = True) -> dict:
    """Embed the normal training clips and fit per-ID thresholds for every scorer ``det`` supports.

    ``det`` is a run's detector loaded without fitting (:func:`rcmae.scorers.detector.fit_run` is the
    public entry). Writes ``embeddings/{pretrain,finetune}.npz`` (train rows), ``thresholds.json`` and
    ``train_scores.csv``. ``train`` passes log-mels already in memory (the end of training).
    """
    run = Path(det.run)
    cfg = det.cfg
    if train is None and det.family == "margin":
        from rcmae.run.trainset import load_train_waves

        train = load_train_waves(read_run_json(run)["data"], cfg, progress=progress)
    elif train is None:
        from rcmae.run.trainset import load_train_data

        info = read_run_json(run)
        train, _ = load_train_data(info["data"], cfg, stats=det.stats, progress=progress)
    types, ids = train.machine_types, train.machine_ids
    for space in det.models:
        z = det.embed(train.x, space).float().cpu().numpy()
        save_embeddings(run / "embeddings" / f"{space}.npz", z, train.paths, types, ids, "train",
                         ["normal"] * len(z), keep_other=False)  # the weights changed: old test rows are stale
        det.references[space] = {"z": z, "machine_type": np.asarray(types), "machine_id": np.asarray(ids),
                                 "path": np.asarray(train.paths)}
    if det.family != "margin":  # band statistics of log-mels (the margin family's inputs are waveforms)
        for name, fn in CLIP_FEATURES.items():
            cs = fn(train.x).float().cpu().numpy()
            save_embeddings(run / "references" / f"{name}.npz", cs, train.paths, types, ids, "train",
                             ["normal"] * len(cs), keep_other=False)
            setattr(det, name, {"z": cs, "machine_type": np.asarray(types), "machine_id": np.asarray(ids),
                                "path": np.asarray(train.paths)})
        det.refit(logmels=(train.x, list(map(str, types)), list(map(str, ids)), list(map(str, train.paths))))
    else:
        det.refit()
    thresholds: dict[str, dict[str, float]] = {}
    moments = det.moments  # shared with the ensemble, which z-scores its members with them
    moments.clear()
    rows = []
    paths = list(map(str, train.paths))
    for scorer in det.scorers:
        try:
            # Held-out normal scores: each training clip is left out of its own references (knn, knn_joint, maha).
            scores = det._scores(train.x, types, ids, scorer, paths, train.attributes)
        except ScoringError as err:
            print(f"{scorer}: {err}; its threshold is not fitted", file=sys.stderr)
            continue
        thresholds[scorer], moments[scorer] = fit_unit_thresholds(scores, types, ids, cfg.score.threshold,
                                                                  cfg.score.threshold_q)
        rows += [{"path": p, "machine_type": t, "machine_id": i, "scorer": scorer, "score": float(s)}
                 for p, t, i, s in zip(train.paths, types, ids, scores, strict=True)]
    write_json(run / "thresholds.json", {"method": cfg.score.threshold, "q": cfg.score.threshold_q,
                                         "scorers": det.scorers, "default_scorer": det.default_scorer,
                                         "thresholds": thresholds, "moments": moments,
                                         "fitted_on": training_stamp(read_run_json(run))})
    frame = pd.DataFrame(rows, columns=["path", "machine_type", "machine_id", "scorer", "score"])
    atomic_write_text(run / "train_scores.csv", frame.to_csv(index=False))
    for note in det.notes:
        print(note, flush=True)
    update_run_json(run, scorers=det.scorers, default_scorer=det.default_scorer, notes=det.notes)
    return thresholds
# Per-clip statistics computed from the log-mel alone, saved as references/<name>.npz for the scorers.
CLIP_FEATURES = {"clipstats": clip_stats, "bandstats": band_stats}
