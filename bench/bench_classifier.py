"""Accuracy, training time and scoring speed of trained runs (the margin classifier family next to others).

    python bench/bench_classifier.py RUN [RUN ...] [--clips 64]

For each evaluated run folder: the data set, the family, the parameters, the training wall time of each
stage (run.json), the average AUC/pAUC of every scorer (eval/results.<scorer>.json), and the scoring speed
in clips per second: ``--clips`` test clips (10 s) scored in batches through ``Detector.score_waveforms``
(feature extraction + network + scorer; audio decoding excluded), per scorer. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rcmae.data.index import index_dataset  # noqa: E402
from rcmae.data.loading import load_waveforms
from rcmae.files import read_json  # noqa: E402
from rcmae.scorers.detector import Detector  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--clips", type=int, default=64)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print("| run | data | family | parameters | training (s) | scorer | AUC | pAUC | clips/s |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|")
    for run in args.runs:
        info = read_json(run / "run.json")
        det = Detector.load(run)
        stages = info.get("stages", {})
        wall = sum(s.get("wall_s", 0.0) for s in stages.values() if isinstance(s, dict))
        index = index_dataset(info["data"])
        test = index[index["split"] == "test"].head(args.clips)
        waves, kept, _ = load_waveforms(list(test["path"]), duration=det.cfg.data.duration, progress=False)
        rows = test.set_index("path").loc[[str(p) for p in kept]]
        types, ids = list(rows["machine_type"].astype(str)), list(rows["machine_id"].astype(str))
        for scorer in det.scorers:
            res_path = run / "eval" / f"results.{scorer}.json"
            avg = read_json(res_path)["average"] if res_path.is_file() else {"auc": float("nan"), "pauc": float("nan")}
            det._memo.clear()
            started = time.perf_counter()
            for b in range(0, len(waves), 32):
                det._memo.clear()
                det.score_waveforms(waves[b : b + 32], types[b : b + 32], ids[b : b + 32], scorer)
            rate = len(waves) / (time.perf_counter() - started)
            print(f"| {run.name} | {Path(info['data']).name} | {det.family} | {info.get('parameters', 0):,} | "
                  f"{wall:.0f} | {scorer} | {avg['auc']:.3f} | {avg['pauc']:.3f} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
