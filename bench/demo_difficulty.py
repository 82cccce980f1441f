"""How hard is the demo factory data? Two simple detectors, per machine type and on average.

1. loudness: score = mean log-mel (dB) over the whole clip (higher = more anomalous). Target: AUC 0.4-0.6.
2. kNN: per machine ID, per-clip [mean, std] of each log-mel bin over time (256 values), standardised on
   that ID's normal training clips; score = distance to the nearest training clip (Euclidean and cosine).
   Target: average AUC below 0.95 and clearly above chance (> 0.65).

Usage:
    python bench/demo_difficulty.py                   # generate the default set (seed 0) in a temp dir
    python bench/demo_difficulty.py --data DIR        # an existing demo set (or any DCASE 2020 dev folder)
    python bench/demo_difficulty.py --seed 1 --train-per-id 50 --test-per-id 20
    python bench/demo_difficulty.py --seed 0 --write  # keep the numbers in bench/results/demo.json, redraw demo.md

``--write`` (generated sets only) replaces that seed's record in bench/results/demo.json (other seeds stay) and draws
bench/results/demo.md from the file alone (``render``; bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, load_raw, save_raw, write_result  # noqa: E402

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
    parser.add_argument("--write", action="store_true", help="keep this seed's numbers in bench/results/demo.json")
    args = parser.parse_args()
    if args.write and args.data is not None:
        parser.error("--write records a generated set (its seed and generation time); drop --data")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    load_before = os.getloadavg()[0]
    gen_s = None
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "demo"
            t0 = time.perf_counter()
            demo.make_demo_data(root, seed=args.seed, train_per_id=args.train_per_id,
                                test_per_id=args.test_per_id, workers=args.workers)
            gen_s = time.perf_counter() - t0
            print(f"generated {root} in {gen_s:.1f} s")
        table = evaluate(root)
        clips = len(data.index_dataset(root))
    summary, by_kind = summarise(table)
    print("\nAUC per machine type (mean over IDs), and the average over types:")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    if by_kind is not None:
        print("\nAUC per anomaly kind (mean over IDs; each kind against all normal test clips of the ID):")
        print(by_kind.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.write:
        raw = load_raw("demo") or {"seeds": {}}
        raw["seeds"][str(args.seed)] = {
            "header": header(f"Demo factory data, seed {args.seed}"), "train_per_id": args.train_per_id,
            "test_per_id": args.test_per_id, "clips": clips, "generation_s": round(gen_s, 1),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "per_type": {score: {t: round(float(v), 6) for t, v in col.items()} for score, col in summary.items()},
            "by_kind": by_kind.round(6).to_dict("records") if by_kind is not None else None}
        save_raw("demo", raw)
        text = render(raw)
        print(write_result("demo", text))


def render(raw: dict) -> str:
    """bench/results/demo.md from the raw numbers alone (bench/assemble.py calls it)."""
    out = ["# Demo factory data: difficulty and generation time\n",
           "Detectors: *loudness* = mean log-mel (dB) over the clip; *kNN* = per ID, per-clip [mean, std] of the 128 "
           "log-mel bins (256 values, `rcmae.data.features.LogMel`, paper parameters), standardised on the ID's "
           "normal training clips, distance to the nearest training clip (Euclidean and cosine). AUC from "
           "`rcmae.evaluation.metrics` (per ID, mean per type, mean over types). Targets: loudness 0.4-0.6; kNN "
           "< 0.95 and > 0.65. `OMP_NUM_THREADS=1`.\n"]
    summary = ["| seed | clips | generation (s) | loudness AUC | kNN AUC (Euclidean) | kNN AUC (cosine) |",
               "|---|---:|---:|---:|---:|---:|"]
    for seed in sorted(raw["seeds"], key=int):
        r = raw["seeds"][seed]
        types = [t for t in r["per_type"][SCORES[0]] if t != "average"]
        lines = [r["header"].rstrip("\n") + "\n",
                 f"Generated with {r['train_per_id']} training and {r['test_per_id']} + {r['test_per_id']} test clips "
                 f"per ID ({r['clips']} clips) in {r['generation_s']:.1f} s, then scored; 1-minute load average "
                 f"{r['load_before']:.1f} before and {r['load_after']:.1f} after on the shared machine.\n",
                 "AUC per machine type (mean over IDs), and the average over types:\n",
                 "| type | " + " | ".join(SCORES) + " |", "|---|" + "---:|" * len(SCORES)]
        for t in [*types, "average"]:
            name = "**average**" if t == "average" else t
            lines.append(f"| {name} | " + " | ".join(f"{r['per_type'][s][t]:.3f}" for s in SCORES) + " |")
        if r["by_kind"]:
            lines += ["", "AUC per anomaly kind (mean over IDs; each kind against all normal test clips of the ID):\n",
                      "| type | kind | " + " | ".join(SCORES) + " |", "|---|---|" + "---:|" * len(SCORES)]
            lines += [f"| {k['machine_type']} | {k['kind']} | " + " | ".join(f"{k[s]:.3f}" for s in SCORES) + " |"
                      for k in r["by_kind"]]
        out.append("\n".join(lines) + "\n")
        summary.append(f"| {seed} | {r['clips']} | {r['generation_s']:.1f} | "
                       + " | ".join(f"{r['per_type'][s]['average']:.3f}" for s in SCORES) + " |")
    out.append("## Summary\n\n" + "\n".join(summary) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()
