"""How far loudness alone goes on a data set: a per-clip RMS detector's AUC / pAUC.

A set on which a clip's loudness already separates normal from anomalous clips says little about a detector. The
suite reports this check beside every set (docs/benchmark.md). The detector is fitted on each unit's normal
training clips, like every other system: a test clip's score is the distance of its RMS level in dB from the
unit's training mean, in training standard deviations (``|z|``, so quieter and louder both count). A second
score, the level itself (louder = more anomalous), is reported beside it. Both go through the same
:func:`rcmae.evaluation.metrics.evaluate_scores` as every system (mean over types of the mean over IDs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from rcmae.data.index import index_dataset
from rcmae.evaluation.metrics import evaluate_scores

__all__ = ["clip_level_db", "loudness_auc"]


def clip_level_db(path: str | os.PathLike) -> float:
    """A clip's RMS level in dBFS (all channels, the whole file)."""
    y, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return float(10.0 * np.log10(np.mean(y * y) + 1e-20))


def loudness_auc(data: str | os.PathLike) -> dict:
    """The loudness-only detectors' AUC / pAUC on ``data`` (a DCASE-layout folder with labelled test clips).

    Returns:
        ``{"deviation": {"auc", "pauc"}, "level": {"auc", "pauc"}, "clips": n, "skipped": [...]}``: ``deviation``
        scores ``|z|`` of the clip's dB level against its unit's training clips, ``level`` the dB level itself.
        Units without training clips or without both test labels are left out (as :func:`evaluate_scores` does);
        a file that cannot be read is skipped and listed as ``"path: problem"``.
    """
    index = index_dataset(Path(data))
    index = index[index["label"].isin(["normal", "anomaly"]) | (index["split"] == "train")]
    levels, skipped = [], []
    for path in index["path"]:
        try:
            levels.append(clip_level_db(path))
        except (RuntimeError, OSError, ValueError) as err:  # soundfile's errors are RuntimeErrors
            levels.append(np.nan)
            skipped.append(f"{path}: {str(err).splitlines()[0]}")
    index = index.assign(level=levels)
    index = index[np.isfinite(index["level"])]
    test = index[index["split"] == "test"].copy()
    train = index[index["split"] == "train"]
    stats = train.groupby(["machine_type", "machine_id"])["level"].agg(["mean", "std"])
    keys = list(zip(test["machine_type"], test["machine_id"], strict=True))
    have = [k in stats.index for k in keys]
    test = test[have]
    keys = [k for k, h in zip(keys, have, strict=True) if h]
    mean = np.array([stats.loc[k, "mean"] for k in keys])
    std = np.array([stats.loc[k, "std"] for k in keys])
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    out: dict = {"clips": int(len(test)), "skipped": skipped}
    for name, score in (("deviation", np.abs(test["level"].to_numpy() - mean) / std),
                        ("level", test["level"].to_numpy())):
        table = pd.DataFrame({"path": test["path"], "machine_type": test["machine_type"],
                              "machine_id": test["machine_id"], "label": test["label"], "score": score})
        res = evaluate_scores(table, f"loudness-{name}", str(data))
        out[name] = dict(res["average"])
    return out
