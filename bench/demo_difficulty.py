"""How hard is the demo factory data? Two simple detectors, per machine type and on average.

1. loudness: score = mean log-mel (dB) over the whole clip (higher = more anomalous). Target: AUC 0.4-0.6.
2. kNN: per machine ID, per-clip [mean, std] of each log-mel bin over time (256 values), standardised on
   that ID's normal training clips; score = distance to the nearest training clip (Euclidean and cosine).
   Target: average AUC below 0.95 and clearly above chance (> 0.65).

Usage:
    python bench/demo_difficulty.py                   # generate the default set (seed 0) in a temp dir
    python bench/demo_difficulty.py --data DIR        # an existing demo set (or any DCASE 2020 dev folder)
    python bench/demo_difficulty.py --seed 1 --train-per-id 50 --test-per-id 20
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from rcmae import data  # noqa: E402
from rcmae.data import demo
from rcmae.data.features import LogMel  # noqa: E402
from rcmae.evaluation import metrics


def clip_features(index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip loudness (mean log-mel) and [mean, std] log-mel vectors, in index order."""
    waves, kept, report = data.load_waveforms(index["path"].tolist(), progress=True)
    if report.skipped:
        raise SystemExit(report.summary())
    logmel = LogMel().transform_batches(torch.from_numpy(waves), batch_size=32, progress=True).numpy()
    loud = logmel.mean(axis=(1, 2))
    vec = np.concatenate([logmel.mean(axis=2), logmel.std(axis=2)], axis=1)
    return loud, vec


def knn_scores(train: np.ndarray, test: np.ndarray, metric: str) -> np.ndarray:
    scaler = StandardScaler().fit(train)
    nn = NearestNeighbors(n_neighbors=1, metric=metric).fit(scaler.transform(train))
    return nn.kneighbors(scaler.transform(test))[0][:, 0]


def evaluate(root: Path) -> pd.DataFrame:
    """One row per test clip: machine type/ID, label, kind (when known) and the three scores."""
    index = data.index_dataset(root)
    index = index[index["dataset"] != "eval"].reset_index(drop=True)
    loud, vec = clip_features(index)
    rows = []
    for _, group in index.groupby(["machine_type", "machine_id"]):
        tr = group.index[group["split"] == "train"]
        te = group.index[group["split"] == "test"]
        part = index.loc[te, ["path", "machine_type", "machine_id", "label"]].copy()
        part["loudness"] = loud[te]
        part["knn_euclidean"] = knn_scores(vec[tr], vec[te], "euclidean")
        part["knn_cosine"] = knn_scores(vec[tr], vec[te], "cosine")
        rows.append(part)
    table = pd.concat(rows, ignore_index=True)
    clips_csv = root / demo.CLIPS_CSV
    if clips_csv.is_file():
        kinds = pd.read_csv(clips_csv)
        kinds["path"] = [str((root / p).resolve()) for p in kinds["path"]]
        table["path"] = [str(Path(p).resolve()) for p in table["path"]]
        table = table.merge(kinds[["path", "kind"]], on="path", how="left")
    return table


SCORES = ("loudness", "knn_euclidean", "knn_cosine")


def summarise(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """AUC per type (mean over its IDs) and the average over types; plus kNN AUC per anomaly kind."""
    per_type = {}
    for score in SCORES:
        res = metrics.evaluate_scores(table.assign(score=table[score]), system=score, data="demo")
        per_type[score] = {t: v["auc"] for t, v in res["per_type"].items()} | {"average": res["average"]["auc"]}
    summary = pd.DataFrame(per_type)
    by_kind = None
    if "kind" in table:
        recs = []
        for (mtype, kind), grp in table[table["label"] == "anomaly"].groupby(["machine_type", "kind"]):
            aucs = {s: [] for s in SCORES}
            for mid, anom in grp.groupby("machine_id"):
                norm = table[(table["machine_type"] == mtype) & (table["machine_id"] == mid)
                             & (table["label"] == "normal")]
                y = np.r_[np.zeros(len(norm)), np.ones(len(anom))]
                for s in SCORES:
                    aucs[s].append(metrics.auc_pauc(y, np.r_[norm[s], anom[s]])[0])
            recs.append({"machine_type": mtype, "kind": kind} | {s: float(np.mean(v)) for s, v in aucs.items()})
        by_kind = pd.DataFrame(recs)
    return summary, by_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="existing data folder (default: generate a demo set in a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-id", type=int, default=50)
    parser.add_argument("--test-per-id", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None, help="generation processes (default: up to 2)")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "demo"
            t0 = time.perf_counter()
            demo.make_demo_data(root, seed=args.seed, train_per_id=args.train_per_id,
                                test_per_id=args.test_per_id, workers=args.workers)
            print(f"generated {root} in {time.perf_counter() - t0:.1f} s")
        table = evaluate(root)
    summary, by_kind = summarise(table)
    print("\nAUC per machine type (mean over IDs), and the average over types:")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    if by_kind is not None:
        print("\nAUC per anomaly kind (mean over IDs; each kind against all normal test clips of the ID):")
        print(by_kind.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
