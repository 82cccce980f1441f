"""Every scorer of trained runs, set by set: AUC/pAUC, ensemble variants, fit time and clips/s (issue 9).

For each ``NAME=RUN`` (a trained run folder, e.g. ``tiny`` on a ``bench/scorer_sets.py`` set) it refits the
thresholds (``rcmae.scorers.detector.fit_run``, timed per scorer), evaluates every scorer on the run's labelled test
clips, re-scores the ``ensemble`` with other member lists (members z-scored per unit with their held-out
normal training scores, equal weights), and times each scorer on the test log-mels (embedding included,
log-mel excluded). Prints the tables; ``--write`` keeps the numbers in bench/results/scorers.json and draws
bench/results/scorers.md from them alone (``render``; bench/assemble.py redraws it).

Usage: ``python bench/bench_scorers.py --run NAME=RUN [...] [--write]``

The committed page uses the design suite's seed-0 ``tiny`` runs of its five sets (``rcmae benchmark --suite
design``; each run folder copied first, because fitting rewrites its thresholds)::

    python bench/bench_scorers.py --run demo-s0=RUNS/demo-s0 --run demo-s1=RUNS/demo-s1 \\
        --run near-identical=RUNS/near-identical --run domain-shift=RUNS/domain-shift \\
        --run real-slider=RUNS/real-slider --write
"""

from __future__ import annotations

import argparse
import os
import sys
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save_raw, write_result  # noqa: E402

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
        acc.append(_accuracy(test, scores, name, s))
    det._memo.clear()
    for members in ENSEMBLES:
        det.cfg.score.ensemble = members
        det._memo.pop(("score", "ensemble"), None)
        scores = det.score_logmels(x, tt, ti, "ensemble")
        acc.append(_accuracy(test, scores, name, "ensemble[" + ",".join(members) + "]"))
    speed.append({"set": name, "scorer": "(log-mel front-end)", "fit_s": None,
                  "clips_per_s": round(len(x) / logmel_s, 1), "n_train": len(paths), "n_test": len(x)})
    return acc, speed


def _accuracy(test: pd.DataFrame, scores, name: str, scorer: str) -> dict:
    """One accuracy row: the set's average AUC / pAUC and every unit's (the raw numbers the average comes from)."""
    res = evaluate_scores(test.assign(score=scores), system=scorer, data=name)
    per_id = [{k: u[k] for k in ("machine_type", "machine_id", "auc", "pauc")} for u in res["per_id"]]
    avg = {m: (None if res["average"][m] is None or np.isnan(res["average"][m]) else res["average"][m])
           for m in ("auc", "pauc")}  # NaN: the scorer has no score on this set (idprob on a one-unit set)
    return {"set": name, "scorer": scorer, **avg, "per_id": per_id}


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A pipe table (pandas' ``to_markdown`` needs tabulate, which the project does not install)."""
    frame = frame.reset_index() if index else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join([head, rule] + ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN")
    ap.add_argument("--write", action="store_true", help="write bench/results/scorers.json and scorers.md")
    args = ap.parse_args()
    raw = {"header": header("Scorers on unlike data sets: accuracy, fit time, clips/s"),
           "load_before": os.getloadavg()[0], "runs": {}, "acc": [], "speed": []}
    for item in args.run:
        name, run = item.split("=", 1)
        info = read_run_json(Path(run))
        raw["runs"][name] = {"data": str(info["data"]), "commit": info.get("git_commit"),
                             "preset": info.get("preset"), "seed": info.get("seed")}
        a, s = one_run(name, Path(run))
        raw["acc"] += a
        raw["speed"] += s
        print(pd.DataFrame(a).to_string(index=False), flush=True)
    raw["load_after"] = os.getloadavg()[0]
    text = render(raw)
    print(text)
    if args.write:
        save_raw("scorers", raw)
        print(write_result("scorers", text))


def render(raw: dict) -> str:
    """bench/results/scorers.md from the raw numbers alone (bench/assemble.py calls it)."""
    table = pd.DataFrame(raw["acc"])
    sets = list(raw["runs"])
    auc = table.pivot(index="scorer", columns="set", values="auc")[sets].astype(float)
    pauc = table.pivot(index="scorer", columns="set", values="pauc")[sets].astype(float)
    partial = auc.isna().any(axis=1)
    auc["mean"], pauc["mean"] = auc.mean(axis=1), pauc.mean(axis=1)
    both = auc.map(lambda v: "-" if v != v else f"{v:.3f}") + " / " + pauc.map(lambda v: "-" if v != v else f"{v:.3f}")
    both.loc[partial, "mean"] = both.loc[partial, "mean"] + " *"
    both = both.loc[auc["mean"].sort_values(ascending=False, kind="stable").index]
    shipped = "ensemble"
    beat = [r for r in auc.index if r.startswith("ensemble[") and auc.loc[r, "mean"] > auc.loc[shipped, "mean"]
            and pauc.loc[r, "mean"] > pauc.loc[shipped, "mean"]]
    speed = pd.DataFrame(raw["speed"])
    speed["fit_s"] = speed["fit_s"].map(lambda v: "-" if v is None or v != v else f"{v:.2f}")
    speed["clips_per_s"] = speed["clips_per_s"].map(lambda v: f"{v:.1f}")
    runs = "; ".join(f"`{n}`: {r['data']} (commit {(r['commit'] or 'unknown')[:7]}, preset `{r['preset']}`, seed "
                     f"{r['seed']})" for n, r in raw["runs"].items())
    return "\n".join([
        raw["header"].rstrip(), "",
        f"One trained `tiny` run per set, re-scored with every scorer and with other ensemble member lists: {runs}. "
        "The runs are the design suite's seed-0 rcmae runs (bench/results/design-suite.md), so these sets are where "
        "choices are made, not where they are reported.",
        "- Thresholds, normalisers and ensemble moments come from held-out normal training scores only "
        "(docs/scorers.md); no test clip enters any fit.",
        "- One seed per set: differences of ~0.02 AUC are within run-to-run noise.",
        f"- 1-minute load average {raw['load_before']:.1f} before and {raw['load_after']:.1f} after, on 2 cores: "
        "times are upper bounds.", "",
        "## Accuracy: every scorer on every set (AUC / pAUC, mean over types; sorted by mean AUC)", "",
        "`ensemble[...]` rows re-score the same run with another member list (equal weights, members z-scored per "
        "unit with their held-out normal moments): decision 1's eight candidates (bench/results/decisions.md), "
        "re-measured on these runs. The plain `ensemble` row is the preset's own list.", "",
        markdown(both), "",
        "\\* no score on every set (`idprob` needs two units to fine-tune on): its mean is over the sets it has.", "",
        "Other member lists that beat the run's own `ensemble` on both the mean AUC and the mean pAUC (decision 1's "
        "rule, bench/results/decisions.md): " + (", ".join(f"`{r}`" for r in beat) if beat else "none") + ".", "",
        "## Speed (fit on each set's normal training clips, scoring its test clips: `n_train`, `n_test`)", "",
        "`fit_s`: the scorer's fit plus its held-out scores of the training clips (what `fit_run` does for it), in "
        "seconds; `clips_per_s`: scoring the test log-mels (embedding included; the log-mel front-end has its own "
        "row).", "",
        markdown(speed, index=False), ""])


if __name__ == "__main__":
    main()
