"""Fitting a run's scorers: held-out scores, thresholds, references and embeddings after each stage."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rcmae.files import atomic_write_text, write_json
from rcmae.models.rcmae import clip_stats
from rcmae.run.folder import read_run_json, update_progress, update_run_json
from rcmae.run.trainset import TrainData
from rcmae.scorers import (
    ScoringError,
    band_stats,
    fit_unit_thresholds,
)

if TYPE_CHECKING:  # annotations only: the module imports this one
    from rcmae.scorers.detector import Detector


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


# Scorers that read only the log-mel (no network): fitted once per data set and front-end, whatever is trained.
TRAINING_FREE = ("stats_knn", "stats_maha", "frame_pca", "frame_maha")
# Scorers whose held-out scores need the log-mel references (band statistics, clip statistics, frame models).
_LOGMEL_REFS = (*TRAINING_FREE, "knn_joint", "maha")


def scorer_spaces(det: Detector, name: str) -> list[str]:
    """The embedding spaces (trained networks) a scorer's fit depends on; ``[]`` for a training-free scorer."""
    if name == "ensemble":
        return sorted({s for m in det.cfg.score.ensemble if m in det.scorers for s in scorer_spaces(det, m)})
    if name in TRAINING_FREE:
        return []
    if name == "idprob":
        return ["finetune"]
    if name in ("recon", "recon_topk"):
        return ["pretrain"]
    return [det.knn_space]  # knn, knn_joint, maha, knn_norm


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_stamp(det: Detector, info: dict) -> str:
    """What every fit depends on: the data folder, the front-end, its normalisation statistics, the score settings."""
    stats = det.run / "stats.json"
    return _digest({"data": info.get("data"), "features": dataclasses.asdict(det.cfg.features),
                    "data_cfg": dataclasses.asdict(det.cfg.data), "score": dataclasses.asdict(det.cfg.score),
                    "stats": stats.read_text() if stats.is_file() else None})


def space_stamp(info: dict, space: str) -> str | None:
    """When the stage that trained ``space`` finished (``None``: not trained)."""
    stage = "pretrain" if info.get("family") == "margin" else space  # the margin family's one stage
    st = info.get("stages", {}).get(stage) or {}
    return st.get("finished", st.get("skipped"))


def fit_stamp(det: Detector, name: str, info: dict) -> str:
    """A scorer's fit is current while this is unchanged: the data stamp and the stamps of its networks."""
    spaces = {s: space_stamp(info, s) for s in scorer_spaces(det, name)}
    return _digest({"data": data_stamp(det, info), "spaces": spaces})


def with_members(det: Detector, names: list[str]) -> list[str]:
    """``names`` plus the ensemble's members when it is among them, in :data:`rcmae.scorers.SCORERS` order."""
    wanted = set(names)
    if "ensemble" in wanted:
        wanted |= set(det.cfg.score.ensemble)
    return [s for s in det.scorers if s in wanted]


def stale_scorers(det: Detector, names: list[str] | None = None, info: dict | None = None) -> list[str]:
    """Which of ``names`` (default: every available scorer; with ensemble members) need a (re)fit."""
    info = info if info is not None else read_run_json(det.run)
    names = with_members(det, list(det.scorers) if names is None else list(names))
    refs_missing = det.family != "margin" and (
        det.clipstats is None or det.bandstats is None or not (det.run / "references" / "frames.npz").is_file())
    out = []
    for name in names:
        stamp = det.fitted.get(name)
        if name in det.failed and stamp == fit_stamp(det, name, info):
            continue  # tried under these very inputs and could not be fitted (the reason is in det.failed)
        missing = name not in det.thresholds or (name in det.cfg.score.ensemble and name not in det.moments)
        spaces_missing = any(s not in det.references for s in scorer_spaces(det, name) if s in det.models)
        if (stamp != fit_stamp(det, name, info) or missing or spaces_missing
                or (refs_missing and name in _LOGMEL_REFS)):
            out.append(name)
    return out


def fit_detector(det: Detector, train: TrainData | None = None, progress: bool = True,
                 scorers: list[str] | None = None) -> dict:
    """Fit held-out thresholds (and z-score moments) of the scorers that need it; keep the current ones.

    ``scorers`` names what is needed now (default: every scorer the run supports; an ensemble brings its
    members). A scorer is refitted only when its stamp changed (:func:`fit_stamp`): training-free scorers once per
    data set and front-end, network scorers after the stage that trained their network. Embeddings and log-mel
    references are recomputed only for what is refitted. ``det`` is a run's detector loaded without fitting
    (:func:`rcmae.scorers.detector.fit_run` is the public entry). Writes ``embeddings/<space>.npz`` (train rows),
    ``references/``, ``thresholds.json`` (with a ``fitted`` stamp per scorer) and ``train_scores.csv``.
    ``train`` passes log-mels already in memory (the end of training). Returns the thresholds.
    """
    run = Path(det.run)
    cfg = det.cfg
    info = read_run_json(run)
    todo = stale_scorers(det, scorers, info)
    if not todo:
        return det.thresholds
    started = time.monotonic()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"fitting {len(todo)} scorer(s): {', '.join(todo)}")
    update_progress(run, state="fitting", fit_step=0, fit_steps=len(todo), scorer="loading the training clips")
    if train is None and det.family == "margin":
        from rcmae.run.trainset import load_train_waves

        train = load_train_waves(info["data"], cfg, progress=progress)
    elif train is None:
        from rcmae.run.trainset import load_train_data

        train, _ = load_train_data(info["data"], cfg, stats=det.stats, progress=progress)
    types, ids = train.machine_types, train.machine_ids
    rows_of = {"machine_type": np.asarray(types), "machine_id": np.asarray(ids), "path": np.asarray(train.paths)}
    refs = dict(det.fitted_refs)
    for space in sorted({s for name in todo for s in scorer_spaces(det, name)}):
        if space not in det.models or (space in det.references and refs.get(space) == space_stamp(info, space)):
            continue
        z = det.embed(train.x, space).float().cpu().numpy()
        save_embeddings(run / "embeddings" / f"{space}.npz", z, train.paths, types, ids, "train",
                        ["normal"] * len(z), keep_other=False)  # the weights changed: old test rows are stale
        det.references[space] = {"z": z, **rows_of}
        refs[space] = space_stamp(info, space)
    if det.family != "margin" and any(name in _LOGMEL_REFS for name in todo):
        # band statistics of log-mels (the margin family's inputs are waveforms)
        for name, fn in CLIP_FEATURES.items():
            cs = fn(train.x).float().cpu().numpy()
            save_embeddings(run / "references" / f"{name}.npz", cs, train.paths, types, ids, "train",
                            ["normal"] * len(cs), keep_other=False)
            setattr(det, name, {"z": cs, **rows_of})
        refs["logmel"] = data_stamp(det, info)
        det.refit(logmels=(train.x, list(map(str, types)), list(map(str, ids)), list(map(str, train.paths))))
    else:
        det.refit()
    fitted = {k: v for k, v in det.fitted.items() if k not in todo}
    failed = {k: v for k, v in det.failed.items() if k not in todo}
    thresholds = {k: v for k, v in det.thresholds.items() if k not in todo}
    moments = det.moments  # shared with the ensemble, which z-scores its members with them
    for name in todo:
        moments.pop(name, None)
    rows = []
    paths = list(map(str, train.paths))
    for k, scorer in enumerate(todo):
        update_progress(run, state="fitting", fit_step=k, fit_steps=len(todo), scorer=scorer)
        tic = time.monotonic()
        try:
            # Held-out normal scores: each training clip is left out of its own references (knn, knn_joint, maha).
            scores = det._scores(train.x, types, ids, scorer, paths, train.attributes)
        except ScoringError as err:
            print(f"{scorer}: {err}; its threshold is not fitted", file=sys.stderr)
            failed[scorer] = str(err)
            fitted[scorer] = fit_stamp(det, scorer, info)  # current: not tried again until something changes
            continue
        thresholds[scorer], moments[scorer] = fit_unit_thresholds(scores, types, ids, cfg.score.threshold,
                                                                  cfg.score.threshold_q)
        fitted[scorer] = fit_stamp(det, scorer, info)
        rows += [{"path": p, "machine_type": t, "machine_id": i, "scorer": scorer, "score": float(s)}
                 for p, t, i, s in zip(train.paths, types, ids, scores, strict=True)]
        say(f"  fitted {scorer} ({k + 1}/{len(todo)}) in {time.monotonic() - tic:.1f} s")
    det.thresholds, det.fitted, det.fitted_refs, det.failed = thresholds, fitted, refs, failed
    write_json(run / "thresholds.json", {"method": cfg.score.threshold, "q": cfg.score.threshold_q,
                                         "scorers": det.scorers, "default_scorer": det.default_scorer,
                                         "thresholds": thresholds, "moments": moments, "fitted": fitted,
                                         "failed": failed, "references": refs})
    old = run / "train_scores.csv"
    frame = pd.DataFrame(rows, columns=["path", "machine_type", "machine_id", "scorer", "score"])
    if old.is_file():
        try:
            kept = pd.read_csv(old, dtype={"machine_id": str})
            frame = pd.concat([kept[kept["scorer"].isin([s for s in fitted if s not in todo])], frame])
        except (OSError, ValueError, KeyError):
            pass  # derived data: a damaged file is rewritten with what was fitted now
    atomic_write_text(run / "train_scores.csv", frame.to_csv(index=False))
    for note in det.notes:
        print(note, flush=True)
    update_run_json(run, scorers=det.scorers, default_scorer=det.default_scorer, notes=det.notes)
    update_progress(run, state="done", fit_step=len(todo), fit_steps=len(todo), scorer="",
                    fit_seconds=round(time.monotonic() - started, 1))
    say(f"fitted in {time.monotonic() - started:.1f} s")
    return thresholds


# Per-clip statistics computed from the log-mel alone, saved as references/<name>.npz for the scorers.
CLIP_FEATURES = {"clipstats": clip_stats, "bandstats": band_stats}
