"""Size and CPU speed of exported bundles (``rcmae export``): the ``tiny`` default ensemble and its members.

    python bench/bench_export.py [--train-per-id 10] [--test-per-id 8] [--threads 1] [--onnx]

Trains a ``tiny``-preset run for one epoch per stage on demo data (one machine type, 3 units; speed and size
depend on the architecture and the unit count, not on how well it is trained), exports each scorer in the
default format (``graph``: a JSON spec plus arrays), the default scorer as TorchScript too (and as ONNX with
``--onnx``), and times scoring the test clips in batches of
16 with the bundle and with the run's ``Detector``. Keeps the raw numbers in bench/results/export.json and
draws export.md from them alone (``render``; bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import header, save_raw, write_result  # noqa: E402

from rcmae.data import demo  # noqa: E402
from rcmae.data.audio import load_audio  # noqa: E402
from rcmae.data.index import index_dataset  # noqa: E402
from rcmae.deploy import bundle as export_bundle
from rcmae.deploy import export
from rcmae.scorers.detector import Detector  # noqa: E402
from rcmae.training import stages as train

BATCH = 16


def _mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _clips_per_s(score, waves: np.ndarray, types: list[str], ids: list[str], repeat: int = 2) -> float:
    score(waves[:BATCH], types[:BATCH], ids[:BATCH])  # warm-up (first-call allocations, lazy init)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for b in range(0, len(waves), BATCH):
            score(waves[b : b + BATCH], types[b : b + BATCH], ids[b : b + BATCH])
    return repeat * len(waves) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-id", type=int, default=10)
    ap.add_argument("--test-per-id", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--onnx", action="store_true", help="also export and time the default scorer as ONNX")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    data = demo.make_demo_data(tmp / "demo", train_per_id=args.train_per_id, test_per_id=args.test_per_id,
                               progress=False, machine_types=["fan"], workers=1)
    run = tmp / "run"
    train.pretrain(data / "dev_data", run, preset="tiny", epochs=1, progress=False)
    train.finetune(run, epochs=1, progress=False)
    det = Detector.load(run)
    index = index_dataset(data / "dev_data")
    test = index[index["split"] == "test"].sort_values("path")
    waves = np.stack([load_audio(p) for p in test["path"]])
    types, ids = list(test["machine_type"]), list(test["machine_id"])
    default = det.default_scorer
    members = list(det.cfg.score.ensemble) if default == "ensemble" else []
    scorers = [*dict.fromkeys([*members, "maha", "frame_maha", default])]
    # The default format (graph: data) for every scorer; TorchScript (code) and ONNX for the default scorer.
    jobs = [(s, "graph") for s in scorers] + [(default, "torchscript")] + ([(default, "onnx")] if args.onnx else [])
    rows: list[dict] = []
    for scorer, fmt in jobs:
        t0 = time.perf_counter()
        path = export.export_run(run, tmp / f"{scorer}-{fmt}", format=fmt, scorer=scorer, examples=0)
        export_s = time.perf_counter() - t0
        bundle = export_bundle.Bundle(path, trust=True)
        ref = det.score_waveforms(waves, types, ids, scorer)
        got = bundle.score_waveforms(waves, types, ids)
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        bundle_rate = _clips_per_s(bundle.score_waveforms, waves, types, ids)
        run_rate = _clips_per_s(lambda w, t, i, s=scorer: det.score_waveforms(w, t, i, s), waves, types, ids)
        label = f"{scorer} [{', '.join(members)}]" if scorer == "ensemble" else scorer
        model_mib = _mib(path / bundle.meta["model_file"]) + (_mib(path / "graph.npz") if fmt == "graph" else 0.0)
        rows.append({"scorer": label, "format": fmt, "model_mib": round(model_mib, 4),
                     "references_mib": round(_mib(path / "references.npz"), 4), "bundle_mib": round(_mib(path), 4),
                     "export_s": round(export_s, 2), "bundle_clips_per_s": round(bundle_rate, 2),
                     "run_clips_per_s": round(run_rate, 2), "max_rel_diff": err})
        print(rows[-1], flush=True)
    raw = {"header": header("rcmae export: bundle size and clips/s (cpu)"), "units": len(det.classes),
           "train_per_id": args.train_per_id, "clips": len(waves), "batch": BATCH, "threads": args.threads,
           "load_before": load_before, "load_after": os.getloadavg()[0], "rows": rows}
    save_raw("export", raw)
    text = render(raw)
    print(text)
    print(write_result("export", text))


def render(raw: dict) -> str:
    """bench/results/export.md from the raw numbers alone (bench/assemble.py calls it)."""
    rows = [f"| {r['scorer']} | {r['format']} | {r['model_mib']:.2f} | {r['references_mib']:.2f} | "
            f"{r['bundle_mib']:.2f} | {r['export_s']:.1f} | {r['bundle_clips_per_s']:.1f} | "
            f"{r['run_clips_per_s']:.1f} | {r['max_rel_diff']:.1e} |" for r in raw["rows"]]
    return ("# Exported bundles: size and speed\n\n" + raw["header"] +
            "| scorer | format | model files (MiB) | references.npz (MiB) | bundle (MiB) | export (s) | "
            "bundle clips/s | run clips/s | max diff / max score |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
            f"`tiny` preset trained 1 + 1 epochs on demo data (fan, {raw['units']} units, {raw['train_per_id']} "
            "training clips per unit), bundles without example clips (`--examples 0`; each example adds ~320 kB). "
            f"Speed: {raw['clips']} test clips of 10 s scored twice in batches of {raw['batch']} after one warm-up "
            f"batch, {raw['threads']} torch thread(s) (onnxruntime: its default threads); *run* is "
            "`Detector.score_waveforms` on the same clips. A bundle always computes the clip's embedding (an "
            "output: the demo app finds the nearest example clips with it), which the network-free scorers' runs "
            "skip. The last column is the largest bundle-vs-run score difference relative to the largest score.\n\n"
            "Size grows with the units, and every reference is stored twice (in the model and in references.npz). "
            "Per unit, `frame_pca` carries the top 32 of the 640 eigenvectors of the 5-frame context vectors "
            "(0.16 MiB) and `frame_maha` all of them (3.1 MiB). `maha` and `stats_maha` carry their Ledoit-Wolf "
            "precision as a multiple of the identity plus a correction of rank (training clips - 1) "
            "(`rcmae.deploy.graph.compress_precisions`), so they grow with the clips per unit up to the full "
            "matrix (`stats_maha`: 768 x 768, 4.5 MiB) once a unit has as many clips as dimensions.\n\n"
            f"The machine was shared: 1-minute load average {raw['load_before']:.1f} before and "
            f"{raw['load_after']:.1f} after on its 2 cores, so the speeds are lower bounds.\n")


if __name__ == "__main__":
    main()
