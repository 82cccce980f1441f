"""Front-end speed: rcmae.data.features.LogMel (batched, torch) vs librosa clip by clip, same clips, same run.

    python bench/bench_frontend.py [--clips 64] [--batch 32] [--device cpu|cuda]

Writes the raw numbers to bench/results/frontend-<device>.json and draws frontend-<device>.md from them alone
(``render``; bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import os
import time

import librosa
import numpy as np
import torch
from _machine import header, save_raw, write_result

from rcmae.data.features import LogMel, LogMelConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    c = LogMelConfig()
    waves = np.random.default_rng(0).normal(scale=0.1, size=(args.clips, 10 * c.sample_rate)).astype(np.float32)

    t = time.perf_counter()
    for y in waves:
        S = librosa.feature.melspectrogram(y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                                           n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, power=c.power)
        librosa.power_to_db(S, top_db=None)
    t_librosa = time.perf_counter() - t

    model = LogMel(c).to(args.device)
    x = torch.from_numpy(waves)
    model(x[:2].to(args.device))  # warm-up (kernel selection, CUDA context)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(x), args.batch):
            model(x[start:start + args.batch].to(args.device)).cpu()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t

    device = args.device.split(":")[0]
    raw = {"header": header("Front-end speed"), "clips": args.clips, "batch": args.batch, "device": device,
           "threads": args.threads, "load_before": load_before, "load_after": os.getloadavg()[0],
           "librosa_s": round(t_librosa, 4), "rcmae_s": round(t_ours, 4)}
    save_raw(f"frontend-{device}", raw)
    text = render(raw)
    print(text)
    print(write_result(f"frontend-{device}", text))


def render(raw: dict) -> str:
    """bench/results/frontend-<device>.md from the raw numbers alone (bench/assemble.py calls it)."""
    rows = [("librosa, clip by clip", raw["clips"] / raw["librosa_s"]),
            (f"rcmae LogMel, batch {raw['batch']}, {raw['device']}", raw["clips"] / raw["rcmae_s"])]
    table = "| front-end (10 s clips) | clips/s |\n|---|---|\n" + "".join(f"| {n} | {v:.1f} |\n" for n, v in rows)
    return (raw["header"] + table + f"\nspeed-up: {raw['librosa_s'] / raw['rcmae_s']:.1f}x ({raw['clips']} clips, "
            f"{raw['threads']} torch thread(s); 1-minute load average {raw['load_before']:.1f} before and "
            f"{raw['load_after']:.1f} after on the shared machine)\n")


if __name__ == "__main__":
    main()
