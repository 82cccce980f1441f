"""AUC / pAUC, their DCASE aggregation, ``results.json`` and the official challenge CSV files.

Conventions (DCASE 2020 Task 2, y-kawagu/dcase2020_task2_baseline ``01_test.py``): anomaly = 1,
``roc_auc_score(y, s)`` and ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised) per machine ID,
the arithmetic mean per machine type, and papers average the per-type means. From 2021 the
official code also reports harmonic means, which punish one bad ID harder.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score, roc_curve

from rcmae.files import atomic_write_text, read_json, write_json

LABELS = {"normal": 0, "anomaly": 1}


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be 1-D arrays of the same length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf; check the scorer's output")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold 0 (normal) and 1 (anomaly) only")
    if y.min() == y.max():
        raise ValueError("AUC needs both normal (0) and anomalous (1) clips; this set has only one class")
    return y.astype(int), s


def auc_pauc(y_true, scores, max_fpr: float = 0.1, standardized: bool = True) -> tuple[float, float]:
    """ROC AUC and partial AUC over FPR in [0, max_fpr], as fractions in [0, 1]; anomaly = 1.

    Args:
        y_true: 0 for normal, 1 for anomalous clips.
        scores: higher means more anomalous.
        max_fpr: upper FPR bound of the partial AUC.
        standardized: True gives the McClish-standardised value that
            ``sklearn.metrics.roc_auc_score(max_fpr=...)`` returns and every DCASE table reports
            (chance = 0.5); False gives the raw partial area divided by ``max_fpr`` (the paper's Eq. 12,
            chance = max_fpr / 2).
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    y, s = _check(y_true, scores)
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # Area under the ROC from 0 to max_fpr, the curve cut at max_fpr by linear interpolation.
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.append(fpr[:stop], max_fpr)
    yv = np.append(tpr[:stop], np.interp(max_fpr, fpr, tpr))
    area = float(np.trapezoid(yv, x))
    if standardized:
        min_area = 0.5 * max_fpr**2
        pauc = 0.5 * (1 + (area - min_area) / (max_fpr - min_area))
    else:
        pauc = area / max_fpr
    return auc, float(pauc)


def _means(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    # hmean is undefined for zeros; an AUC of exactly 0 makes the harmonic mean 0.
    h = 0.0 if np.any(arr <= 0) else float(hmean(arr))
    return float(arr.mean()), h


def evaluate_scores(table: pd.DataFrame, system: str, data: str, max_fpr: float = 0.1) -> dict:
    """Per-ID, per-type and overall AUC/pAUC of a scores table, in the ``results.json`` shape.

    Args:
        table: one row per clip with columns ``path, machine_type, machine_id, label, score``;
            rows labelled "unknown" (unlabelled evaluation clips) are ignored here.
        system: the system's name, recorded as is.
        data: the data set's path or name, recorded as is.
    """
    missing = {"path", "machine_type", "machine_id", "label", "score"} - set(table.columns)
    if missing:
        raise ValueError(f"scores table lacks columns {sorted(missing)}")
    labelled = table[table["label"].isin(list(LABELS))]
    per_id, skipped = [], []
    for (mtype, mid), group in labelled.groupby(["machine_type", "machine_id"], sort=True):
        y = group["label"].map(LABELS).to_numpy()
        n_anomaly = int(y.sum())
        n_normal = int(len(y) - n_anomaly)
        if n_normal == 0 or n_anomaly == 0:
            skipped.append({"machine_type": mtype, "machine_id": mid, "reason": "needs normal and anomalous clips"})
            continue
        auc, pauc = auc_pauc(y, group["score"].to_numpy(), max_fpr=max_fpr)
        per_id.append({"machine_type": mtype, "machine_id": mid, "auc": auc, "pauc": pauc,
                       "n_normal": n_normal, "n_anomaly": n_anomaly})
    per_type = {}
    for mtype in sorted({r["machine_type"] for r in per_id}):
        rows = [r for r in per_id if r["machine_type"] == mtype]
        auc, auc_h = _means([r["auc"] for r in rows])
        pauc, pauc_h = _means([r["pauc"] for r in rows])
        per_type[mtype] = {"auc": auc, "pauc": pauc, "auc_hmean": auc_h, "pauc_hmean": pauc_h}
    if per_type:
        average = {
            "auc": float(np.mean([v["auc"] for v in per_type.values()])),
            "pauc": float(np.mean([v["pauc"] for v in per_type.values()])),
        }
    else:
        average = {"auc": None, "pauc": None}
    return {"system": system, "data": str(data), "max_fpr": max_fpr, "per_id": per_id, "per_type": per_type,
            "average": average, "skipped_ids": skipped}


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _group_tag(group: pd.DataFrame, machine_id: str) -> str:
    # DCASE 2021+ files are named by section; 2020 by machine ID.
    sections = group["section"] if "section" in group.columns else pd.Series([], dtype=str)
    if len(sections) and sections.astype(str).str.len().gt(0).all():
        return f"section_{machine_id}"
    return f"id_{machine_id}"


def write_results(
    results: dict, table: pd.DataFrame, out_dir: str | os.PathLike, name: str = "results.json",
    challenge_csvs: bool = True,
) -> Path:
    """Write ``results.json`` (as ``name``) and, beside it, the official challenge files.

    ``anomaly_score_<type>_id_XX.csv`` holds ``<wav file name>,<score>`` rows, no header, normal clips
    then anomalous ones (sorted), as the DCASE 2020 baseline writes them; ``result.csv`` holds, per type,
    the type, ``id,AUC,pAUC``, one row per ID, ``Average`` and a blank row.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(out_dir / name, results)
    if not challenge_csvs:
        return path
    order = {"normal": 0, "anomaly": 1, "unknown": 2}
    for (mtype, mid), group in table.groupby(["machine_type", "machine_id"], sort=True):
        g = group.assign(_name=group["path"].map(lambda p: Path(p).name), _o=group["label"].map(order).fillna(2))
        g = g.sort_values(["_o", "_name"])
        rows = [[n, float(s)] for n, s in zip(g["_name"], g["score"], strict=True)]
        atomic_write_text(out_dir / f"anomaly_score_{mtype}_{_group_tag(group, mid)}.csv", _csv_text(rows))
    lines: list[list] = []
    for mtype, type_res in results["per_type"].items():
        rows = [r for r in results["per_id"] if r["machine_type"] == mtype]
        lines.append([mtype])
        lines.append(["id", "AUC", "pAUC"])
        lines.extend([r["machine_id"], r["auc"], r["pauc"]] for r in rows)
        lines.append(["Average", type_res["auc"], type_res["pauc"]])
        lines.append([])
    atomic_write_text(out_dir / "result.csv", _csv_text(lines))
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a ``results.json`` (or a folder holding one) and check its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    res = read_json(path)
    missing = {"system", "per_id", "per_type", "average"} - set(res)
    if missing:
        raise ValueError(f"{path}: not an rcmae results file (missing {sorted(missing)})")
    return res


def results_frame(results: dict) -> pd.DataFrame:
    """The per-ID rows of a results dict as a table (machine_type, machine_id, auc, pauc, n_normal, n_anomaly)."""
    return pd.DataFrame(results["per_id"],
                        columns=["machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly"])
