"""The paper on a GPU: `paper` pretraining throughput, AudioLDM seconds per clip at S = 10 and 50, and the hours
of the paper's full schedule (``rcmae reproduce``), written to bench/results/paper.md and a step-times JSON.

Run it on the GPU machine (one GPU is enough; the estimate scales to ``--gpus``)::

    python bench/bench_paper.py --data /path/to/dcase2020 --gpus 2
    rcmae reproduce --out OUT --data /path/to/dcase2020 --dry-run --step-times bench/results/paper-step-times.json

Without ``--model`` AudioLDM is timed with the real ``cvssp/audioldm-s-full-v2`` architecture and random
weights (built in memory by bench/bench_audioldm.py: same layers, same cost, nothing downloaded), in float16.
Without ``--data`` pass ``--clips`` (the number of clips pretraining sees) for the schedule estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import header, write_result  # noqa: E402

from rcmae.evaluation import reproduce  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--data", default=None, help="a DCASE 2020 folder (dev_data + eval_data) for the clip counts")
    parser.add_argument("--clips", type=int, default=None, help="clips pretraining sees, without --data")
    parser.add_argument("--gpus", type=int, default=2, help="GPUs of the estimated schedule (default 2, the paper's)")
    parser.add_argument("--per-clip", type=int, default=4, help="AudioLDM copies per clip (default 4)")
    parser.add_argument("--model", default=None, help="AudioLDM folder (default: real-size, random weights)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per stage (default 3)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "paper-step-times.json"))
    parser.add_argument("--print-only", action="store_true", help="do not write bench/results/paper.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_paper: no CUDA GPU visible; these are GPU measurements (see bench/results/paper.md)")

    times = reproduce.measure_step_times(args.preset, steps=args.steps, device="cuda")
    if args.model:
        aug = args.model
    else:
        from bench_audioldm import build_real_size_pipeline

        from rcmae.augment.audioldm import AudioLDMAugmenter

        pipe = build_real_size_pipeline().to("cuda", torch.float16)
        pipe.set_progress_bar_config(disable=True)
        aug = AudioLDMAugmenter(pipe, model_id="cvssp/audioldm-s-full-v2 architecture, random weights")
    times["audioldm_s_per_clip"] = reproduce.measure_audioldm(aug, device="cuda", seconds=10.0)
    Path(args.json).write_text(json.dumps(times, indent=2) + "\n")

    opts = reproduce.Options(out=Path("."), data=Path(args.data) if args.data else None, preset=args.preset,
                             gpus=args.gpus, per_clip=args.per_clip)
    if args.data:
        layout = reproduce.check_layout(args.data)
        clips = {"pretrain": layout["train_clips"] + layout["test_clips"], "finetune": layout["train_clips"],
                 "test": layout["test_clips"]}
    elif args.clips:
        clips = {"pretrain": args.clips, "finetune": args.clips, "test": 0}
    else:
        clips = None
    batch = times["batch"]["pretrain"]
    lines = [header("The paper on a GPU: throughput, AudioLDM, full-schedule hours"),
             f"- `{args.preset}` pretraining, bf16 autocast, one GPU, batch {batch}: "
             f"{times['pretrain_step_s']:.3f} s/step = {batch / times['pretrain_step_s']:.1f} samples/s; "
             f"fine-tuning {times['finetune_step_s']:.3f} s/step",
             "- AudioLDM audio-to-audio, 10 s clip, t0 0.5, guidance 2.5, float16: "
             + ", ".join(f"S = {s}: {v:.2f} s/clip" for s, v in times["audioldm_s_per_clip"].items())]
    if clips:
        est = reproduce.estimate(opts, clips, times)
        lines.append(f"- full schedule on {args.gpus} GPU(s) ({clips['pretrain']} pretraining clips x "
                     f"{args.per_clip} copies; 400 + 50 epochs, both Table 3 arms): "
                     + ", ".join(f"{k} {v:.1f} h" for k, v in est["wall_hours"].items() if v is not None)
                     + f"; total {est['total_wall_hours']:.1f} h wall, {est['total_gpu_hours']:.1f} GPU hours")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.print_only:
        write_result("paper", "# The paper on a GPU\n\n" + text)


if __name__ == "__main__":
    main()
