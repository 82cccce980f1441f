"""Every scorer of trained runs, set by set: AUC/pAUC, ensemble variants, fit time and clips/s (issue 9).

For each ``NAME=RUN`` (a trained run folder, e.g. ``tiny`` on a ``bench/scorer_sets.py`` set) it refits the
thresholds (``rcmae.scorers.detector.fit_run``, timed per scorer), evaluates every scorer on the run's labelled test
clips, re-scores the ``ensemble`` with other member lists (members z-scored per unit with their held-out
normal training scores, equal weights), and times each scorer on the test log-mels (embedding included,
log-mel excluded). Writes a markdown report.

Usage: ``python bench/bench_scorers.py --run NAME=RUN [...] --out bench/results/scorers.md``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae import scorers as score_scorers
from rcmae.data.datasets import compute_logmels
from rcmae.data.index import index_dataset
from rcmae.evaluation.metrics import evaluate_scores
from rcmae.run.folder import read_run_json
from rcmae.run.trainset import load_train_data
from rcmae.scorers import detector as score

ENSEMBLES = [["knn", "maha"], ["maha", "frame_pca"], ["maha", "stats_maha"], ["maha", "stats_maha", "frame_pca"],
             ["knn_norm", "maha", "frame_pca"], ["stats_maha", "frame_pca"], ["knn", "stats_maha", "frame_pca"],
             ["maha", "stats_maha", "frame_pca", "knn"]]


def one_run(name: str, run: Path) -> tuple[list[dict], list[dict]]:
    """Accuracy rows and speed rows of one run."""
    info = read_run_json(run)
    det = score.Detector.load(run)
    cfg = det.cfg
    train, _ = load_train_data(info["data"], cfg, stats=det.stats, progress=False)
    paths = list(map(str, train.paths))
    types, ids = list(map(str, train.machine_types)), list(map(str, train.machine_ids))
    index = index_dataset(info["data"])
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])].reset_index(drop=True)
    t0 = time.time()
    x, kept, _ = compute_logmels(list(test["path"]), det.logmel, cfg.data.sample_rate, cfg.data.duration,
                                 progress=False, transform=det.stats.apply)
    logmel_s = time.time() - t0
    test = test.set_index("path").loc[kept].reset_index()
    tt, ti = list(test["machine_type"].astype(str)), list(test["machine_id"].astype(str))
    # Fit time per scorer: its fit on the normal set, plus its held-out scores of the training clips.
    normal = det._normal_set()
    normal.logmels = (train.x, types, ids, paths)
    speed, acc = [], []
    for s in det.scorers:
        det._memo.clear()
        t0 = time.time()
        det._families[s].fit(normal)
        try:
            det._scores(train.x, types, ids, s, paths)
        except score_scorers.ScoringError as err:
            print(f"{name}: {s} held-out scores failed: {err}")
        fit_s = time.time() - t0
        det._memo.clear()
        t0 = time.time()
        scores = det.score_logmels(x, tt, ti, s)
        score_s = time.time() - t0
        speed.append({"set": name, "scorer": s, "fit_s": round(fit_s, 2), "clips_per_s": round(len(x) / score_s, 1),
                      "n_train": len(paths), "n_test": len(x)})
        avg = evaluate_scores(test.assign(score=scores), system=s, data=name)["average"]
        acc.append({"set": name, "scorer": s, "auc": avg["auc"], "pauc": avg["pauc"]})
    det._memo.clear()
    for members in ENSEMBLES:
        det.cfg.score.ensemble = members
        det._memo.pop(("score", "ensemble"), None)
        scores = det.score_logmels(x, tt, ti, "ensemble")
        avg = evaluate_scores(test.assign(score=scores), system="ensemble", data=name)["average"]
        acc.append({"set": name, "scorer": "ensemble[" + ",".join(members) + "]", "auc": avg["auc"],
                    "pauc": avg["pauc"]})
    speed.append({"set": name, "scorer": "(log-mel front-end)", "fit_s": np.nan,
                  "clips_per_s": round(len(x) / logmel_s, 1), "n_train": len(paths), "n_test": len(x)})
    return acc, speed


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A pipe table (pandas' ``to_markdown`` needs tabulate, which the project does not install)."""
    frame = frame.reset_index() if index else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join([head, rule] + ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN")
    ap.add_argument("--csv", type=Path, default=None, help="also write the raw rows here")
    args = ap.parse_args()
    acc, speed = [], []
    for item in args.run:
        name, run = item.split("=", 1)
        a, s = one_run(name, Path(run))
        acc += a
        speed += s
        print(pd.DataFrame(a).to_string(index=False), flush=True)
    table = pd.DataFrame(acc)
    auc = table.pivot(index="scorer", columns="set", values="auc")
    pauc = table.pivot(index="scorer", columns="set", values="pauc")
    auc["mean"], pauc["mean"] = auc.mean(1), pauc.mean(1)
    both = auc.round(3).astype(str) + " / " + pauc.round(3).astype(str)
    print("\nAUC / pAUC\n" + markdown(both.loc[auc["mean"].sort_values(ascending=False).index]))
    print("\nspeed\n" + markdown(pd.DataFrame(speed), index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
        pd.DataFrame(speed).to_csv(args.csv.with_suffix(".speed.csv"), index=False)


if __name__ == "__main__":
    main()
