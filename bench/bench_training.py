"""Training speed: samples/s of RC-MAE pretraining and fine-tuning steps per preset, and how step time grows.

    python bench/bench_training.py [--presets tiny,paper] [--steps 3] [--device cpu|cuda] [--threads N]
                                   [--grid-frames 80,160,320,640] [--grid-batch 8,16,32]

Each step is the real ``training_step`` of rcmae.training's PretrainModule / FinetuneModule (pairs by
SpecAugment, masking, both branches, losses) plus backward and an optimizer step, outside the
Lightning Trainer loop. Part 1: both stages per preset (paper preset at a small batch on CPU).
Part 2 (tiny preset, pretraining): step time over clip length (tokens) x batch size. Writes the
"Training speed" section of bench/results/speed.md.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _machine import header
from bench_scoring import RESULTS, update_section

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

    part1 = ["| preset | stage | parameters | tokens | batch | s/step | samples/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for preset in args.presets.split(","):
        default = load_config(preset).pretrain.batch_size if on_gpu else (4 if preset == "paper" else 32)
        batch = int(batches.get(preset, default))
        for stage in ("pretrain", "finetune"):
            sec, n_params, tokens = step_seconds(stage, preset, batch, args.steps, args.device)
            part1.append(f"| {preset} | {stage} | {n_params / 1e6:.2f} M | {tokens} | {batch} | {sec:.3f} | "
                         f"{batch / sec:.1f} |")
            print(part1[-1], flush=True)

    frames = [int(f) for f in args.grid_frames.split(",")]
    grid_batches = [int(b) for b in args.grid_batch.split(",")]
    part2 = ["| frames (clip s) | tokens | " + " | ".join(f"batch {b}: s/step" for b in grid_batches) + " |",
             "|---|---:|" + "---:|" * len(grid_batches)]
    for n in frames:
        cells, tokens = [], 0
        for b in grid_batches:
            sec, _, tokens = step_seconds("pretrain", "tiny", b, args.steps, args.device, [f"model.n_frames={n}"])
            cells.append(f"{sec:.3f}")
        part2.append(f"| {n} ({n * 512 / 16000:.1f} s) | {tokens} | " + " | ".join(cells) + " |")
        print(part2[-1], flush=True)

    text = (header(f"Training speed ({args.device.split(':')[0]})")
            + "Per preset (one optimizer step = training_step + backward + Adam):\n\n" + "\n".join(part1)
            + "\n\nTiny preset pretraining, step time over clip length (tokens) and batch size:\n\n"
            + "\n".join(part2)
            + f"\n\n{args.steps} timed steps per cell after one warm-up, {args.threads} torch threads, "
              f"device {args.device}.\n\n")
    print(text)
    update_section(RESULTS, f"Training speed ({args.device.split(':')[0]})", text)


if __name__ == "__main__":
    main()
