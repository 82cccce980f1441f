"""The paper on a GPU: `paper` pretraining throughput, AudioLDM seconds per clip at S = 10 and 50, and the hours
of the paper's full schedule (``rcmae reproduce``), written to bench/results/paper.md and a step-times JSON.

Run it on the GPU machine (one GPU is enough; the estimate scales to ``--gpus``)::

    python bench/bench_paper.py --data /path/to/dcase2020 --gpus 2
    rcmae reproduce --out OUT --data /path/to/dcase2020 --dry-run --step-times bench/results/paper-step-times.json

Without ``--model`` AudioLDM is timed with the real ``cvssp/audioldm-s-full-v2`` architecture and random
weights (built in memory by bench/bench_audioldm.py: same layers, same cost, nothing downloaded), in float16.
Without ``--data`` pass ``--clips`` (the number of clips pretraining sees) for the schedule estimate.
The numbers go to bench/results/paper.json, from which ``render`` draws the page (bench/assemble.py redraws it).
On a machine without a GPU, ``--record-unmeasured`` records that nothing could be measured there (date and
machine); it never replaces a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import header, load_raw, save_raw, write_result  # noqa: E402

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
    parser.add_argument("--print-only", action="store_true", help="do not write bench/results/paper.md / .json")
    parser.add_argument("--record-unmeasured", action="store_true",
                        help="without a GPU: record in bench/results/paper.json that this machine could not measure "
                             "(refused when that file already holds a GPU measurement)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        if not args.record_unmeasured:
            sys.exit("bench_paper: no CUDA GPU visible; these are GPU measurements (see bench/results/paper.md)")
        old = load_raw("paper")
        if old and old.get("measured"):
            sys.exit("bench_paper: bench/results/paper.json holds a GPU measurement; not replacing it with none")
        raw = {"header": header("The paper on a GPU: throughput, AudioLDM, full-schedule hours"), "measured": False,
               "reason": "no CUDA GPU visible on the measuring machine"}
        _write(raw, args.print_only)
        return

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
    raw = {"header": header("The paper on a GPU: throughput, AudioLDM, full-schedule hours"), "measured": True,
           "preset": args.preset, "gpus": args.gpus, "per_clip": args.per_clip, "times": times, "clips": clips,
           "estimate": reproduce.estimate(opts, clips, times) if clips else None}
    _write(raw, args.print_only)


def _write(raw: dict, print_only: bool) -> None:
    text = render(raw)
    print(text)
    if not print_only:
        save_raw("paper", raw)
        write_result("paper", text)


NOT_MEASURED = """| what | value | how it will be measured |
|---|---|---|
| `paper` preset pretraining throughput (samples/s, bf16, one GPU, batch 128) | not measured | \
`measure_step_times("paper", device="cuda")`: both branches encoded, one decoded, `pretrain_loss`, Adam, timed after \
a warm-up step |
| AudioLDM audio-to-audio, seconds per 10 s clip at S = 10 and S = 50 (float16) | not measured | `measure_audioldm`: \
the real `cvssp/audioldm-s-full-v2` architecture (random weights, same cost) or `--model` weights |
| hours of the paper's full schedule (AudioLDM bank, 400 + 50 epochs, both Table 3 arms) | not measured | \
`reproduce.estimate` from the two measurements above and the clip counts of the DCASE 2020 folder |

The command that measures all three on a GPU machine (it writes this page, its raw numbers bench/results/paper.json
and `bench/results/paper-step-times.json`, which `rcmae reproduce --dry-run --step-times` reads):

```bash
python bench/bench_paper.py --data /path/to/dcase2020 --gpus 2     # or --clips N without the data
```

What is known from CPU measurements (machine and date in their own sections): one `paper`-sized pretraining step
on a batch of 8 took 11-16 s on the shared 2-core CPU with the previous 256 x 4 decoder (docs/model.md; the `paper`
preset's decoder is now 384 x 12, which runs on all 512 tokens and costs more), and real-size AudioLDM takes about
50 CPU-seconds per clip at S = 10 on one thread (bench/results/audioldm.md). Neither says anything reliable about a
GPU.

`rcmae reproduce --dry-run` without `--step-times` measures step times on the machine it runs on, at that moment
(on a CPU: a batch of 4, scaled linearly to the preset's batch, and it says so).
"""


def render(raw: dict) -> str:
    """bench/results/paper.md from the raw record alone (bench/assemble.py calls it)."""
    if not raw["measured"]:
        return (f"# The paper on a GPU\n\n{raw['header']}**Not measured: {raw['reason']}.** The sessions that built "
                f"`rcmae reproduce` had no GPU, so these three numbers are still open:\n\n{NOT_MEASURED}")
    times, batch = raw["times"], raw["times"]["batch"]["pretrain"]
    lines = [f"- `{raw['preset']}` pretraining, bf16 autocast, one GPU, batch {batch}: "
             f"{times['pretrain_step_s']:.3f} s/step = {batch / times['pretrain_step_s']:.1f} samples/s; "
             f"fine-tuning {times['finetune_step_s']:.3f} s/step",
             "- AudioLDM audio-to-audio, 10 s clip, t0 0.5, guidance 2.5, float16: "
             + ", ".join(f"S = {s}: {v:.2f} s/clip" for s, v in times["audioldm_s_per_clip"].items())]
    if raw["clips"]:
        clips, est = raw["clips"], raw["estimate"]
        lines.append(f"- full schedule on {raw['gpus']} GPU(s) ({clips['pretrain']} pretraining clips x "
                     f"{raw['per_clip']} copies; 400 + 50 epochs, both Table 3 arms): "
                     + ", ".join(f"{k} {v:.1f} h" for k, v in est["wall_hours"].items() if v is not None)
                     + f"; total {est['total_wall_hours']:.1f} h wall, {est['total_gpu_hours']:.1f} GPU hours")
    return "# The paper on a GPU\n\n" + raw["header"] + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
