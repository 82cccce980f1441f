"""Test helpers shared across test packages: a re-implementation of the DCASE 2023 evaluator's computation (from
nttcslab/dcase2023_task2_evaluator's published definition; docs/metrics.md says how it was checked against the
script) and a 2023 evaluation-style copy of a dev set. tests/ is on sys.path (conftest's folder): import it by name."""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import confusion_matrix, roc_auc_score


def _evaluator_2023(team_dir: Path, gt_root: Path) -> dict:
    """The numbers of nttcslab/dcase2023_task2_evaluator's ``output_result``, re-implemented from its
    published definition: it reads the team's CSVs and the three ground-truth folders, pairs rows by
    *sorted* file name (after mapping dev-style names through ground_truth_attributes), and scores each
    section with sklearn."""
    eps = sys.float_info.epsilon
    gt_files = sorted((gt_root / "ground_truth_data").glob("ground_truth_*.csv"))
    machines = sorted({f.name.split("_")[2] for f in gt_files})
    sections = sorted({s for f in gt_files for s in re.findall("section_[0-9][0-9]", f.name)})

    def read(path, decision=False, attribute=None):
        with open(path) as f:
            rows = list(csv.reader(f))
        if attribute:
            rows = [[attribute[r[0]], r[1]] if r[0] in attribute else r for r in rows]
        vals = [float(r[1]) for r in sorted(rows)]
        return np.array([int(v) for v in vals] if decision else vals)

    per = []
    for machine in machines:
        for section in sections:
            stem = f"{machine}_{section}_test.csv"
            with open(gt_root / "ground_truth_attributes" / f"ground_truth_{stem}") as f:
                attribute = {f"{a[1]}.wav": a[0] for a in csv.reader(f)}
            y_pred = read(team_dir / f"anomaly_score_{stem}", attribute=attribute)
            y_true = read(gt_root / "ground_truth_data" / f"ground_truth_{stem}")
            y_dom = read(gt_root / "ground_truth_domain" / f"ground_truth_{stem}")
            dec = read(team_dir / f"decision_result_{stem}", decision=True, attribute=attribute)
            row = {"machine_type": machine, "section": section.split("_")[1],
                   "auc_all": roc_auc_score(y_true, y_pred), "pauc": roc_auc_score(y_true, y_pred, max_fpr=0.1)}
            for name, idx in (("source", 0), ("target", 1)):
                keep = (y_dom == idx) | (y_true != 0)
                row[f"auc_{name}"] = roc_auc_score(y_true[keep], y_pred[keep])
                tn, fp, fn, tp = confusion_matrix(y_true[y_dom == idx], dec[y_dom == idx]).ravel()
                prec = tp / np.maximum(tp + fp, eps)
                rec = tp / np.maximum(tp + fn, eps)
                row[f"precision_{name}"], row[f"recall_{name}"] = prec, rec
                row[f"f1_{name}"] = 2.0 * prec * rec / np.maximum(prec + rec, eps)
            per.append(row)
    src = [r["auc_source"] for r in per]
    tgt = [r["auc_target"] for r in per]
    pauc = [r["pauc"] for r in per]
    all_perf = np.array([src + tgt + pauc], dtype=float)
    return {"per_section": per, "score": hmean(np.maximum(all_perf, eps), axis=None),
            "auc_amean": np.mean(src + tgt), "amean": np.mean(all_perf),
            "hmean_source": hmean(np.maximum(src, eps)), "hmean_target": hmean(np.maximum(tgt, eps))}


def _eval_style_copy(dev: Path, root: Path, gt_root: Path, seed: int) -> None:
    """A 2023 evaluation-style copy of ``dev``'s test clips: shuffled bare names ``section_00_NNNN.wav`` plus
    the evaluator's ground_truth_{data,domain,attributes} CSVs in the official formats."""
    rng = np.random.default_rng(seed)
    from rcmae.data.index import index_dataset

    index = index_dataset(dev)
    for (mtype, section), group in index[index["split"] == "test"].groupby(["machine_type", "section"]):
        order = rng.permutation(len(group))
        files = {"data": [], "domain": [], "attributes": []}
        out = root / "eval_data" / "raw" / mtype / "test"
        out.mkdir(parents=True, exist_ok=True)
        for n, (_, row) in zip(order, group.iterrows(), strict=True):
            name = f"section_{section}_{n:04d}.wav"
            shutil.copy(row["path"], out / name)
            files["data"].append([name, int(row["label"] == "anomaly")])
            files["domain"].append([name, int(row["domain"] == "target")])
            files["attributes"].append([name, Path(row["path"]).stem])
        for kind, rows in files.items():
            path = gt_root / f"ground_truth_{kind}" / f"ground_truth_{mtype}_section_{section}_test.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(sorted(rows))
