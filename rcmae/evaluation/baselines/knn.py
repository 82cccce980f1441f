"""Nearest-neighbour baseline: per machine ID, distance of a test clip to its nearest normal training clips.

Each clip becomes one vector: by default the per-clip mean and standard deviation over time of
rcmae's log-mel front-end (128 mel bins -> 256 values), standardised with the statistics of all
training clips; or, with ``embeddings=RUN``, the encoder embeddings an rcmae run saved in
``RUN/embeddings/*.npz``. The score of a test clip is the mean distance (cosine or euclidean) to its
``k`` nearest training clips of the same machine type and ID, a simple, strong reference that
later DCASE systems also use on learned embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.evaluation.baselines.ae import clip_seconds, compute_logmels

METRICS = ("cosine", "euclidean")


def clip_statistics(logmels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-clip mean and (population) std of each mel bin over time: ``[n, F, T]`` -> ``[n, 2F]``."""
    x = torch.as_tensor(logmels, dtype=torch.float64)
    return torch.cat([x.mean(dim=-1), x.std(dim=-1, correction=0)], dim=-1).numpy()


def knn_scores(train: np.ndarray, test: np.ndarray, k: int = 1, metric: str = "cosine") -> np.ndarray:
    """Mean distance of each ``test`` row to its ``k`` nearest ``train`` rows (``k`` capped at len(train))."""
    if metric not in METRICS:
        raise ValueError(f"knn metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"knn k must be >= 1, got {k}")
    if len(train) == 0:
        raise ValueError("knn needs at least one training clip per machine ID")
    if len(test) == 0:
        return np.zeros(0)
    nn_index = NearestNeighbors(n_neighbors=min(k, len(train)), metric=metric, algorithm="brute").fit(train)
    dist, _ = nn_index.kneighbors(test)
    return dist.mean(axis=1)


def load_run_embeddings(run: str | Path, space: str | None = None) -> dict[str, np.ndarray]:
    """``{clip path: embedding}`` from ``RUN/embeddings/<space>.npz`` (arrays ``path``, ``z``: rcmae.scorers.detector).

    Without ``space``, the fine-tuned embeddings (``finetune.npz``) are used when present, else the
    pretrained ones (``pretrain.npz``), else the only ``.npz`` in the folder.
    """
    folder = Path(run) / "embeddings"
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no embeddings/*.npz; run `rcmae evaluate --run {run}` first")
    names = {f.stem: f for f in files}
    if space is not None:
        if space not in names:
            raise FileNotFoundError(f"{folder}/{space}.npz not found; available spaces: {', '.join(sorted(names))}")
        file = names[space]
    else:
        file = names.get("finetune") or names.get("pretrain") or (files[0] if len(files) == 1 else None)
        if file is None:
            raise ValueError(f"{folder}: several embedding files ({', '.join(sorted(names))}); pick one with space=")
    with np.load(file, allow_pickle=False) as npz:
        keys = set(npz.files)
        path_key = next((k for k in ("path", "paths") if k in keys), None)
        emb_key = next((k for k in ("z", "embeddings") if k in keys), None)
        if path_key is None or emb_key is None:
            raise ValueError(f"{file}: expected arrays 'path' and 'z'; found {sorted(keys)}; re-run rcmae evaluate")
        return {str(p): np.asarray(z, dtype=np.float64)
                for p, z in zip(npz[path_key].astype(str), npz[emb_key], strict=True)}


def _logmel_features(index: pd.DataFrame, config: LogMelConfig, progress: bool) -> tuple[pd.DataFrame, list, list]:
    """Per-clip mean/std log-mel vectors of every clip in ``index`` (one machine type at a time)."""
    front = LogMel(config)
    kept_rows, feats, skipped = [], [], []
    for machine_type, sub in index.groupby("machine_type", sort=True):
        sub = sub.sort_values("path")
        duration = clip_seconds(sub["path"].iloc[0])
        mels, kept, skip = compute_logmels(sub["path"].tolist(), front, duration, progress=progress,
                                           desc=f"{machine_type} log-mel")
        skipped += skip
        if kept:
            kept_rows.append(sub.set_index("path").loc[kept].reset_index())
            feats.append(clip_statistics(mels))
    rows = pd.concat(kept_rows, ignore_index=True) if kept_rows else index.iloc[:0]
    return rows, feats, skipped


def run_knn(
    index: pd.DataFrame,
    out: Path,
    k: int = 1,
    metric: str | None = None,
    embeddings: str | Path | None = None,
    space: str | None = None,
    features: LogMelConfig | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Score every test clip of ``index`` by its kNN distance to the training clips of its machine ID.

    Args:
        metric: ``"euclidean"`` (default on the standardised log-mel statistics: their distance from
            the global training mean carries the level, which cosine would discard) or ``"cosine"``
            (default on run embeddings, as rcmae's own knn scorer).
        embeddings: an rcmae run folder whose ``embeddings/*.npz`` replace the log-mel statistics.
        space: which embeddings of that run: ``finetune`` (default when present) or ``pretrain``.

    Returns:
        (scores table ``path, machine_type, machine_id, label, score``, info dict).
    """
    metric = metric or ("cosine" if embeddings is not None else "euclidean")
    if metric not in METRICS:
        raise ValueError(f"knn metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"knn k must be >= 1, got {k}")
    info: dict = {"k": k, "metric": metric, "space": "logmel-mean-std", "skipped": []}
    if embeddings is not None:
        table = load_run_embeddings(embeddings, space)
        present = index["path"].isin(table)
        for path in index.loc[~present, "path"]:
            info["skipped"].append((path, f"no embedding in {embeddings}/embeddings"))
        rows = index[present].reset_index(drop=True)
        x = np.stack([table[p] for p in rows["path"]]) if len(rows) else np.zeros((0, 1))
        info["space"] = f"embeddings:{embeddings}"
    else:
        rows, feats, info["skipped"] = _logmel_features(index, features or LogMelConfig(), progress)
        x = np.concatenate(feats) if feats else np.zeros((0, 1))
        train_mask = (rows["split"] == "train").to_numpy()
        if not train_mask.any():
            raise ValueError("knn: the data folder has no readable training clips; check its train/ folders")
        # Standardise each dimension with the training clips' statistics (all IDs together).
        mean, std = x[train_mask].mean(axis=0), x[train_mask].std(axis=0)
        x = (x - mean) / np.maximum(std, 1e-8)
    out_rows = []
    for (machine_type, machine_id), sub in rows.groupby(["machine_type", "machine_id"], sort=True):
        train_i = sub.index[sub["split"] == "train"].to_numpy()
        test_i = sub.index[sub["split"] == "test"].to_numpy()
        if len(test_i) == 0:
            continue
        if len(train_i) == 0:
            info["skipped"].append((f"{machine_type} id {machine_id}", "no training clips for this machine ID"))
            continue
        scored = rows.loc[test_i, ["path", "machine_type", "machine_id", "label"]].copy()
        scored["score"] = knn_scores(x[train_i], x[test_i], k=k, metric=metric)
        out_rows.append(scored)
    table = pd.concat(out_rows, ignore_index=True) if out_rows else pd.DataFrame(
        columns=["path", "machine_type", "machine_id", "label", "score"]
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    return table, info
