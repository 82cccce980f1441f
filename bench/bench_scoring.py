"""Scoring speed: clips/s and real-time factor of rcmae.scorers.Detector for 10 s clips, per preset and scorer.

    python bench/bench_scoring.py [--presets tiny,paper] [--clips 16] [--device cpu|cuda] [--threads N]

Random-initialised models (speed does not depend on the weights): the same Detector.score_waveforms
path that ``rcmae evaluate``/``rcmae score`` use, log-mel front-end included. Real-time factor =
processing time / audio duration (below 1 is faster than real time). Writes the "Scoring speed"
section of bench/results/speed.md.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import header

from rcmae.data.features import FeatureStats
from rcmae.models.rcmae import RCMAE, count_parameters
from rcmae.run.config import load_config
from rcmae.scorers.detector import Detector

RESULTS = Path(__file__).parent / "results" / "speed.md"
N_CLASSES = 4


def update_section(path: Path, title: str, text: str) -> Path:
    """Replace the ``## title`` section of ``path`` (or append it), keeping the other scripts' sections."""
    old = path.read_text() if path.is_file() else "# Speed benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)
    return path


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
    return Detector(run, cfg, stats, classes, {"pretrain": pre, "finetune": fin}, {}, refs, device)


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
    waves = np.random.default_rng(0).normal(scale=0.1, size=(args.clips, int(seconds * 16000))).astype(np.float32)
    lines = ["| preset | parameters | scorer | clips/s | real-time factor | x real time |",
             "|---|---:|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            det = build_detector(preset, args.device, Path(tmp))
            n_params = count_parameters(det.models["finetune"])
            for scorer in args.scorers.split(","):
                t = time_scorer(det, waves, scorer, args.device)
                rate = args.clips / t
                rtf = t / (args.clips * seconds)
                lines.append(f"| {preset} | {n_params / 1e6:.2f} M | {scorer} | {rate:.2f} | {rtf:.4f} | "
                             f"{1 / rtf:.0f} |")
                print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    note = (f"\n{args.clips} clips of {seconds:.0f} s per cell, batch = the preset's score.batch_size, device "
            f"{args.device}, {args.threads} torch threads; random-initialised models (timing only); recon "
            "averages the preset's score.recon_masks random masks per clip.\n\n")
    print(table)
    update_section(RESULTS, f"Scoring speed ({args.device.split(':')[0]})", header(
        f"Scoring speed ({args.device.split(':')[0]})") + table + note)


if __name__ == "__main__":
    main()
