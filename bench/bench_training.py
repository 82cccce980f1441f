"""Training speed: samples/s of RC-MAE pretraining and fine-tuning steps per preset, and how step time grows.

    python bench/bench_training.py [--presets tiny,paper] [--steps 3] [--device cpu|cuda] [--threads N]
                                   [--grid-frames 80,160,320,640] [--grid-batch 8,16,32]

Each step is the real ``training_step`` of rcmae.training's PretrainModule / FinetuneModule (pairs by
SpecAugment, masking, both branches, losses) plus backward and an optimizer step, outside the
Lightning Trainer loop. Part 1: both stages per preset (paper preset at a small batch on CPU).
Part 2 (tiny preset, pretraining): step time over clip length (tokens) x batch size. Keeps its raw numbers
in the "Training speed (<device>)" section of bench/results/speed.json and redraws bench/results/speed.md.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
from _machine import header
from bench_scoring import update_section

from rcmae.models.rcmae import RCMAE, count_parameters
from rcmae.run.config import load_config
from rcmae.training.modules import FinetuneModule, PretrainModule
from rcmae.training.pairs import PairSource

N_CLASSES = 4


def step_seconds(stage: str, preset: str, batch: int, steps: int, device: str, overrides: list[str] = ()) -> tuple:
    """Mean seconds per optimizer step (after one warm-up step), parameters and tokens per clip."""
    cfg = load_config(preset, list(overrides))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch * (steps + 1), cfg.model.n_mels, cfg.model.n_frames, generator=gen)
    labels = torch.arange(len(x)) % N_CLASSES
    model = RCMAE(cfg.model)
    if stage == "pretrain":
        module = PretrainModule(model, cfg, x, labels, steps + 1, PairSource(specaugment=cfg.pretrain.specaugment))
    else:
        model.set_num_classes(N_CLASSES)
        module = FinetuneModule(model, cfg, x, labels, steps + 1)
    module.to(device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        idx = torch.arange(i * batch, (i + 1) * batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = module.training_step((idx, labels[idx].to(device)), i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps, count_parameters(model), cfg.model.num_patches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,paper")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per cell after one warm-up (default 3)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", default=None, help="batch per preset, e.g. tiny=32,paper=4 (default: 32 and 4 on "
                                                  "CPU, the preset's batch on GPU)")
    ap.add_argument("--grid-frames", default="80,160,320,640", help="clip lengths in frames for the grid")
    ap.add_argument("--grid-batch", default="8,16,32", help="batch sizes for the grid")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # LightningModule.log outside a Trainer only warns; the timing does not need the logger.
    warnings.filterwarnings("ignore", message=".*self.log.*")
    on_gpu = args.device.startswith("cuda")
    batches = dict(item.split("=") for item in args.batch.split(",")) if args.batch else {}

    load_before = os.getloadavg()[0]
    part1 = []
    for preset in args.presets.split(","):
        default = load_config(preset).pretrain.batch_size if on_gpu else (4 if preset == "paper" else 32)
        batch = int(batches.get(preset, default))
        for stage in ("pretrain", "finetune"):
            sec, n_params, tokens = step_seconds(stage, preset, batch, args.steps, args.device)
            part1.append({"preset": preset, "stage": stage, "parameters": n_params, "tokens": tokens,
                          "batch": batch, "s_per_step": round(sec, 5)})
            print(part1[-1], flush=True)

    frames = [int(f) for f in args.grid_frames.split(",")]
    grid_batches = [int(b) for b in args.grid_batch.split(",")]
    part2 = []
    for n in frames:
        cells, tokens = [], 0
        for b in grid_batches:
            sec, _, tokens = step_seconds("pretrain", "tiny", b, args.steps, args.device, [f"model.n_frames={n}"])
            cells.append(round(sec, 5))
        part2.append({"frames": n, "tokens": tokens, "s_per_step": cells})
        print(part2[-1], flush=True)
    device = args.device.split(":")[0]
    update_section(f"Training speed ({device})", {
        "header": header(f"Training speed ({device})"), "steps": args.steps, "threads": args.threads,
        "device": args.device, "load_before": load_before, "load_after": os.getloadavg()[0], "part1": part1,
        "grid_batches": grid_batches, "part2": part2})


def render_training(raw: dict) -> str:
    """The "Training speed" section of speed.md from its raw numbers alone."""
    part1 = ["| preset | stage | parameters | tokens | batch | s/step | samples/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in raw["part1"]:
        part1.append(f"| {r['preset']} | {r['stage']} | {r['parameters'] / 1e6:.2f} M | {r['tokens']} | "
                     f"{r['batch']} | {r['s_per_step']:.3f} | {r['batch'] / r['s_per_step']:.1f} |")
    part2 = ["| frames (clip s) | tokens | " + " | ".join(f"batch {b}: s/step" for b in raw["grid_batches"]) + " |",
             "|---|---:|" + "---:|" * len(raw["grid_batches"])]
    for r in raw["part2"]:
        n = r["frames"]
        part2.append(f"| {n} ({n * 512 / 16000:.1f} s) | {r['tokens']} | "
                     + " | ".join(f"{c:.3f}" for c in r["s_per_step"]) + " |")
    return (raw["header"] + "Per preset (one optimizer step = training_step + backward + Adam):\n\n"
            + "\n".join(part1) + "\n\nTiny preset pretraining, step time over clip length (tokens) and batch size:"
            "\n\n" + "\n".join(part2) + f"\n\n{raw['steps']} timed steps per cell after one warm-up, "
            f"{raw['threads']} torch threads, device {raw['device']}; 1-minute load average {raw['load_before']:.1f} "
            f"before and {raw['load_after']:.1f} after on the shared machine.\n\n")


if __name__ == "__main__":
    main()
