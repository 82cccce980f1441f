"""Scoring speed: clips/s and real-time factor of rcmae.scorers.Detector for 10 s clips, per preset and scorer.

    python bench/bench_scoring.py [--presets tiny,paper] [--clips 16] [--device cpu|cuda] [--threads N]

Random-initialised models (speed does not depend on the weights): the same Detector.score_waveforms
path that ``rcmae evaluate``/``rcmae score`` use, log-mel front-end included. Real-time factor =
processing time / audio duration (below 1 is faster than real time). Keeps its raw numbers in the
"Scoring speed (<device>)" section of bench/results/speed.json (bench/bench_training.py keeps "Training speed" there)
and draws bench/results/speed.md from that file alone (``render``; bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import header, load_raw, save_raw, write_result

from rcmae.data.features import FeatureStats
from rcmae.models.rcmae import RCMAE, count_parameters
from rcmae.run.config import load_config
from rcmae.scorers.detector import Detector

N_CLASSES = 4


def update_section(title: str, raw: dict) -> None:
    """Put one script's raw numbers under ``title`` in speed.json (other sections stay) and redraw speed.md."""
    everything = load_raw("speed") or {"sections": {}}
    everything["sections"][title] = raw
    save_raw("speed", everything)
    text = render(everything)
    print(text)
    print(write_result("speed", text))


def render(raw: dict) -> str:
    """bench/results/speed.md from speed.json alone: scoring sections first, then training."""
    from bench_training import render_training

    order = sorted(raw["sections"], key=lambda t: (not t.startswith("Scoring"), t))
    parts = [render_scoring(raw["sections"][t]) if t.startswith("Scoring") else render_training(raw["sections"][t])
             for t in order]
    return "# Speed benchmarks\n\n" + "".join(parts).rstrip("\n") + "\n"


def render_scoring(raw: dict) -> str:
    lines = ["| preset | parameters | scorer | clips/s | real-time factor | x real time |",
             "|---|---:|---|---:|---:|---:|"]
    for r in raw["rows"]:
        rtf = r["wall_s"] / (raw["clips"] * raw["seconds"])
        lines.append(f"| {r['preset']} | {r['parameters'] / 1e6:.2f} M | {r['scorer']} | "
                     f"{raw['clips'] / r['wall_s']:.2f} | {rtf:.4f} | {1 / rtf:.0f} |")
    return (raw["header"] + "\n".join(lines) + "\n" +
            f"\n{raw['clips']} clips of {raw['seconds']:.0f} s per cell, batch = the preset's score.batch_size, "
            f"device {raw['device']}, {raw['threads']} torch threads; random-initialised models (timing only); recon "
            "averages the preset's score.recon_masks random masks per clip. 1-minute load average "
            f"{raw['load_before']:.1f} before and {raw['load_after']:.1f} after on the shared machine.\n\n")


def build_detector(preset: str, device: str, run: Path) -> Detector:
    """A Detector over random pretrained and fine-tuned models of ``preset`` with ``N_CLASSES`` machine IDs."""
    cfg = load_config(preset)
    gen = torch.Generator().manual_seed(0)
    pre = RCMAE(cfg.model)
    fin = RCMAE(cfg.model)
    fin.set_num_classes(N_CLASSES)
    classes = [("machine", f"{i:02d}") for i in range(N_CLASSES)]
    stats = FeatureStats(mean=np.full(cfg.features.n_mels, -40.0), std=np.full(cfg.features.n_mels, 10.0))
    # knn needs normal training embeddings per ID: 50 per ID, as the demo data has.
    refs = {}
    for space in ("pretrain", "finetune"):
        z = torch.randn(50 * N_CLASSES, cfg.model.proj_dim, generator=gen).numpy()
        refs[space] = {"z": z, "machine_type": np.array(["machine"] * len(z)),
                       "machine_id": np.repeat([c[1] for c in classes], 50), "path": np.array([""] * len(z))}
    det = Detector(run, cfg, stats, classes, {"pretrain": pre, "finetune": fin}, {}, refs, device)
    det.autofit = False  # random references stand in for a fit (there is no run folder to fit from)
    return det


def time_scorer(det: Detector, waves: np.ndarray, scorer: str, device: str) -> float:
    """Seconds to score ``waves`` (after one warm-up clip)."""
    types = ["machine"] * len(waves)
    ids = [f"{i % N_CLASSES:02d}" for i in range(len(waves))]
    det.score_waveforms(waves[:1], types[:1], ids[:1], scorer)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    det.score_waveforms(waves, types, ids, scorer)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,paper")
    ap.add_argument("--scorers", default="idprob,knn,recon")
    ap.add_argument("--clips", type=int, default=16, help="10 s clips per measurement (default 16)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = 10.0
    load_before = os.getloadavg()[0]
    waves = np.random.default_rng(0).normal(scale=0.1, size=(args.clips, int(seconds * 16000))).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            det = build_detector(preset, args.device, Path(tmp))
            n_params = count_parameters(det.models["finetune"])
            for scorer in args.scorers.split(","):
                t = time_scorer(det, waves, scorer, args.device)
                rows.append({"preset": preset, "parameters": n_params, "scorer": scorer, "wall_s": round(t, 4)})
                print(rows[-1], flush=True)
    device = args.device.split(":")[0]
    update_section(f"Scoring speed ({device})", {
        "header": header(f"Scoring speed ({device})"), "clips": args.clips, "seconds": seconds, "device": args.device,
        "threads": args.threads, "load_before": load_before, "load_after": os.getloadavg()[0], "rows": rows})


if __name__ == "__main__":
    main()
