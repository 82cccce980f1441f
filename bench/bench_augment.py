"""Seconds per 10 s clip of each augmentation backend, and the throughput of a whole bank build.

Backends live in the ``BACKENDS`` registry (name -> function returning result rows); add one there.
``procedural`` times every sound model and each of the paper's six prompts on one core;
``audioldm`` times the tiny test pipeline through ``AudioLDMAugmenter.__call__`` (run
``bench/bench_audioldm.py`` for the real-size pipeline and a per-stage breakdown); ``bank`` times
``rcmae augment --backend procedural`` end to end (read, augment, write, hash, manifest) on a small
synthetic DCASE-layout data set; ``specaugment`` times masking a batch of log-mels.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_augment.py                 # all backends, print
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_augment.py --backend procedural --repeat 20 --write

``--write`` keeps the raw numbers in bench/results/augment.json and draws augment.md from them alone (``render``;
bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import header, save_raw, write_result  # noqa: E402

SR = 16000


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 120 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, min) seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def bench_procedural(args: argparse.Namespace) -> list[dict]:
    from rcmae.augment.procedural import SOUND_MODELS, ProceduralAugmenter
    from rcmae.augment.prompts import PAPER_PROMPTS

    x = _clip(args.seconds)
    n = x.size
    aug = ProceduralAugmenter()
    rows = []
    for name, model in SOUND_MODELS.items():
        med, best = _timed(lambda model=model: model(n, SR, np.random.default_rng(0)), args.repeat)
        rows.append({"backend": "procedural", "case": f"sound model `{name}`", "median_s": med, "min_s": best})
    for i, prompt in enumerate(PAPER_PROMPTS, start=1):
        med, best = _timed(lambda prompt=prompt: aug(x, prompt, 5.0, seed=0), args.repeat)
        rows.append({"backend": "procedural", "case": f"paper prompt {i} (mix at 5 dB)", "median_s": med,
                     "min_s": best})
    all_six = "saws, printing presses, rock crushers, injection moulding, woodworking lathes, pneumatic drills"
    med, best = _timed(lambda: aug(x, all_six, 5.0, seed=0), args.repeat)
    rows.append({"backend": "procedural", "case": "all six sources in one prompt", "median_s": med, "min_s": best})
    return rows


def bench_audioldm(args: argparse.Namespace) -> list[dict]:
    import torch

    from rcmae.augment.audioldm import AudioLDMAugmenter
    from rcmae.augment.audioldm_testing import build_tiny_pipeline
    from rcmae.augment.prompts import PAPER_PROMPTS

    x = _clip(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        aug = AudioLDMAugmenter.from_pretrained(build_tiny_pipeline(Path(tmp) / "tiny"), device="cpu")
        med, best = _timed(lambda: aug(x, PAPER_PROMPTS[0], num_inference_steps=args.steps, guidance_scale=2.5,
                                       t0=args.t0, generator=torch.Generator().manual_seed(0)),
                           max(1, min(args.repeat, 3)))
    return [{"backend": "audioldm", "case": f"tiny test pipeline, S={args.steps}, t0={args.t0}, guidance 2.5 "
             f"(real size: bench/bench_audioldm.py)", "median_s": med, "min_s": best}]


def bench_bank(args: argparse.Namespace) -> list[dict]:
    import soundfile as sf

    from rcmae.augment.bank import build_bank

    n_clips = args.bank_clips
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "data" / "dev_data" / "fan" / "train"
        train.mkdir(parents=True)
        for i in range(n_clips):
            sf.write(train / f"normal_id_00_{i:08d}.wav", _clip(args.seconds, seed=i), SR, subtype="PCM_16")
        start = time.perf_counter()
        build_bank(Path(tmp) / "data", Path(tmp) / "bank", backend="procedural", progress=False)
        total = time.perf_counter() - start
    return [{"backend": "procedural", "case": f"`rcmae augment` bank of {n_clips} clips (load, mix, write, sha256, "
             f"manifest)", "median_s": total / n_clips, "min_s": float("nan")}]


def bench_specaugment(args: argparse.Namespace) -> list[dict]:
    import torch

    from rcmae.augment.specaugment import spec_augment

    x = torch.randn(64, 128, 313)
    gen = torch.Generator().manual_seed(0)
    med, best = _timed(lambda: spec_augment(x, generator=gen), args.repeat)
    return [{"backend": "specaugment", "case": "batch of 64 log-mels [128 x 313], per clip",
             "median_s": med / 64, "min_s": best / 64}]


BACKENDS: dict[str, Callable[[argparse.Namespace], list[dict]]] = {
    "procedural": bench_procedural,
    "bank": bench_bank,
    "specaugment": bench_specaugment,
    "audioldm": bench_audioldm,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="all", help=f"comma list of {', '.join(BACKENDS)} (default all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per case (default 20)")
    parser.add_argument("--steps", type=int, default=10, help="AudioLDM S (default 10)")
    parser.add_argument("--t0", type=float, default=0.5, help="AudioLDM t0 (default 0.5)")
    parser.add_argument("--bank-clips", type=int, default=40, help="clips in the bank throughput run (default 40)")
    parser.add_argument("--write", action="store_true", help="write bench/results/augment.json and .md")
    args = parser.parse_args()
    names = list(BACKENDS) if args.backend == "all" else [b for b in args.backend.split(",") if b]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    load = os.getloadavg()[0]
    rows = [row for name in names for row in BACKENDS[name](args)]
    raw = {"header": header("Augmentation backends: time per clip"), "seconds": args.seconds, "repeat": args.repeat,
           "omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_before": load, "cpus": os.cpu_count(),
           "rows": [{**r, "min_s": None if np.isnan(r["min_s"]) else r["min_s"]} for r in rows]}
    text = render(raw)
    print(text)
    if args.write:
        save_raw("augment", raw)
        print(f"wrote {write_result('augment', text)}")


def render(raw: dict) -> str:
    """bench/results/augment.md from the raw numbers alone (bench/assemble.py calls it)."""
    lines = [f"Clip {raw['seconds']:g} s at 16 kHz; OMP_NUM_THREADS={raw['omp_threads']}; median and minimum of "
             f"{raw['repeat']} timed calls after one warm-up. Load average {raw['load_before']:.1f} on "
             f"{raw['cpus']} CPUs at the start: on a busy machine the minimum is the better estimate of one idle "
             "core.", "", "| backend | case | ms per clip (median) | ms per clip (min) |", "|---|---|---:|---:|"]
    for r in raw["rows"]:
        best = "" if r["min_s"] is None else f"{1000 * r['min_s']:.1f}"
        lines.append(f"| {r['backend']} | {r['case']} | {1000 * r['median_s']:.1f} | {best} |")
    return raw["header"] + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
