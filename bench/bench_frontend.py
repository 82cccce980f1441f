"""Front-end speed: rcmae.data.features.LogMel (batched, torch) vs librosa clip by clip, same clips, same run.

    python bench/bench_frontend.py [--clips 64] [--batch 32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import librosa
import numpy as np
import torch
from _machine import header, write_result

from rcmae.data.features import LogMel, LogMelConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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

    rows = [("librosa, clip by clip", args.clips / t_librosa), (f"rcmae LogMel, batch {args.batch}, {args.device}",
                                                                  args.clips / t_ours)]
    table = "| front-end (10 s clips) | clips/s |\n|---|---|\n" + "".join(f"| {n} | {v:.1f} |\n" for n, v in rows)
    table += f"\nspeed-up: {t_librosa / t_ours:.1f}x ({args.clips} clips, {args.threads} torch threads)\n"
    print(table)
    write_result(f"frontend-{args.device.split(':')[0]}", header("Front-end speed") + table)


if __name__ == "__main__":
    main()
