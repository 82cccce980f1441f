"""Seconds per clip of the AudioLDM audio-to-audio backend: the tiny test pipeline and a real-size one.

The real-size pipeline is ``cvssp/audioldm-s-full-v2``'s architecture with random weights, built from
its published configuration (diffusers' ``scripts/convert_original_audioldm_to_diffusers.py``
DEFAULT_CONFIG: UNet model_channels 128, channel_mult 1,2,3,5, attention at 2/4/8, 2 res blocks,
8 latent channels, FiLM/concat CLAP conditioning of size 512; VAE ch 128, ch_mult 1,2,4, z 8;
HiFi-GAN 1024 channels, upsampling 5,4,2,2,2; CLAP text = RoBERTa-base with a 512 projection).
Timings of random weights equal those of the real ones (same shapes, same operations).

Usage::

    .venv/bin/python bench/bench_audioldm.py --repeat 3            # both pipelines; writes the results
    .venv/bin/python bench/bench_audioldm.py --which tiny --print-only --threads 2

On a shared, oversubscribed CPU keep the default of one thread: OpenMP threads that spin-wait for each other made
the tiny pipeline's UNet step 10-40x slower with 2 threads under a load average of 6 on 2 cores.

Keeps the raw numbers in bench/results/audioldm.json and draws audioldm.md from them alone (``render``;
bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rcmae.augment.audioldm import AudioLDMAugmenter, start_index
from rcmae.augment.audioldm_sizes import build_real_size_pipeline
from rcmae.augment.audioldm_testing import build_tiny_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from _machine import header, save_raw, write_result  # noqa: E402


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def time_clip(aug: AudioLDMAugmenter, seconds: float, steps: int, t0: float, repeat: int, warmup: bool) -> dict:
    """Median/min wall seconds of ``aug`` on one synthetic clip, plus a per-stage split of the last run."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 120 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    if warmup:  # first-call allocations; skipped for the real-size model, where one clip is all we can afford
        aug(clip, "factory", num_inference_steps=steps, t0=t0, generator=torch.Generator().manual_seed(99))
    times, cpu_times = [], []
    for i in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = aug(clip, "rhythmic buzzing of printing presses", num_inference_steps=steps, t0=t0,
                  generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        assert out.shape == clip.shape and np.all(np.isfinite(out))
    # Stage split: encode, one guided UNet step, decode + vocoder.
    with torch.no_grad():
        start = time.perf_counter()
        x0 = aug.encode(clip, torch.Generator().manual_seed(0))
        t_encode = time.perf_counter() - start
        cond = aug.encode_prompt("factory", None, True)
        start = time.perf_counter()
        aug.pipe.unet(torch.cat([x0] * 2), 401, **cond)
        t_unet = time.perf_counter() - start
        start = time.perf_counter()
        aug.decode(x0, clip.size)
        t_decode = time.perf_counter() - start
    return {"seconds_per_clip_median": float(np.median(times)), "seconds_per_clip_min": float(np.min(times)),
            "cpu_seconds_per_clip_median": float(np.median(cpu_times)),
            "runs": repeat, "vae_encode_s": t_encode, "unet_step_s": t_unet, "decode_vocoder_s": t_decode,
            "denoising_steps": steps - start_index(steps, t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=["tiny", "real", "both"], default="both",
                        help="tiny test pipeline, real-size random one, or both (default)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--steps", type=int, default=10, help="S (default 10)")
    parser.add_argument("--t0", type=float, default=0.5, help="t0 (default 0.5)")
    parser.add_argument("--repeat", type=int, default=1, help="clips timed for the tiny pipeline (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see above)")
    parser.add_argument("--print-only", action="store_true", help="do not write bench/results/audioldm.json / .md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    if args.which in ("tiny", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            aug = AudioLDMAugmenter.from_pretrained(build_tiny_pipeline(Path(tmp) / "tiny"), device="cpu")
            rows.append({"pipeline": "tiny (tests)", **time_clip(aug, args.seconds, args.steps, args.t0,
                                                                   args.repeat, warmup=True)})
    if args.which in ("real", "both"):
        start = time.perf_counter()
        pipe = build_real_size_pipeline()
        build_s = time.perf_counter() - start
        sizes = {name: round(_millions(getattr(pipe, name)), 1) for name in ("unet", "vae", "text_encoder", "vocoder")}
        aug = AudioLDMAugmenter(pipe, model_id="random audioldm-s-full-v2 architecture", revision="random")
        rows.append({"pipeline": "real-size, random weights", "params_M": sizes, "build_s": build_s,
                     # One clip, no warm-up: a real-size clip costs minutes of a shared CPU.
                     **time_clip(aug, args.seconds, args.steps, args.t0, 1, warmup=False)})
    raw = {"header": header("AudioLDM audio-to-audio: seconds per clip"), "seconds": args.seconds,
           "steps": args.steps, "t0": args.t0, "threads": torch.get_num_threads(),
           "load_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    text = render(raw)
    print(json.dumps(rows, indent=2))
    print(text)
    if not args.print_only:
        save_raw("audioldm", raw)
        print(f"wrote {write_result('audioldm', text)}")


def render(raw: dict) -> str:
    """bench/results/audioldm.md from the raw numbers alone (bench/assemble.py calls it)."""
    rows = raw["rows"]
    load = ", ".join(f"{v:.1f}" for v in raw["load_after"])
    table = [f"Clip {raw['seconds']:g} s, S = {raw['steps']}, t0 = {raw['t0']} ({rows[0]['denoising_steps']} guided "
             f"DDIM steps), guidance 2.5, float32 on CPU, {raw['threads']} torch thread(s); load average at the "
             f"end {load} (the machine is shared, so treat these as upper bounds).", "",
             "| pipeline | parameters (M): UNet / VAE / CLAP text / vocoder | wall s per clip (runs) "
             "| CPU s per clip | VAE encode s | one guided UNet step s | VAE decode + vocoder s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sizes = r.get("params_M") or {}
        params = " / ".join(f"{sizes[k]:.1f}" for k in ("unet", "vae", "text_encoder", "vocoder")) if sizes else "tiny"
        table.append(f"| {r['pipeline']} | {params} | {r['seconds_per_clip_median']:.2f} ({r['runs']}) | "
                     f"{r['cpu_seconds_per_clip_median']:.2f} | "
                     f"{r['vae_encode_s']:.2f} | {r['unet_step_s']:.2f} | {r['decode_vocoder_s']:.2f} |")
    table += ["", "The real-size pipeline is built from the published configuration (diffusers' "
              "`scripts/convert_original_audioldm_to_diffusers.py` DEFAULT_CONFIG for the UNet, VAE and HiFi-GAN; "
              "`ClapTextConfig()` defaults = laion/clap-htsat-unfused's RoBERTa-base text branch with a 512 "
              "projection) with random weights; its parameter counts reproduce the published 421 M "
              "(UNet 185 M, VAE 55 M, CLAP text 125 M, HiFi-GAN 55 M). Random weights cost the same time as "
              "trained ones. Wall time on a shared machine depends on the other jobs; CPU time much less so."]
    return raw["header"] + "\n".join(table) + "\n"


if __name__ == "__main__":
    main()
