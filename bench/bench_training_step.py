"""One `tiny` pretraining step on CPU: its time here and in an older checkout, where it goes, and its floor.

    python bench/bench_training_step.py [--baseline CHECKOUT] [--steps 150] [--rounds 5] [--threads 2]

Issue 18 asks the README pipeline for 5x at the same settings; its training loop is `tiny`'s 60 pretraining epochs
of 93 steps (750 clips x 4 crops of 96 frames, batch 32, clip and twin). Each timed step is the real
``PretrainModule.training_step`` (SpecAugment twins, crops, masking, both branches, the losses), backward and
the stage's own optimizer from ``configure_optimizers``, on 750 random log-mels of the demo clips' size
(128 x 313), after 10 warm-up steps. With ``--baseline`` the same runs in that checkout (a child process with the
checkout first on PYTHONPATH), alternating with this one for ``--rounds`` rounds; each side reports its median.

Then 30 steps of this checkout under torch.profiler: the self time of the dense kernels (matrix products, the
patch convolution and its backward) is arithmetic no change around them removes, so it is the step's floor in
eager PyTorch at these settings; the rest is attention, elementwise work, copies and dispatch. Keeps the numbers in
bench/results/training-step.json and draws bench/results/training-step.md from them alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _machine import header, header_date, load_raw, save_raw, write_result  # noqa: E402

# Kernels whose own time is the step's matrix arithmetic (profiler names, CPU): linear layers and the patch
# convolution, forward and backward. Attention is listed beside them but not counted: its kernel is a choice
# (the flash kernel here; the math path would be matrix products again).
DENSE = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
         "aten::convolution_backward")
ATTENTION = ("aten::_scaled_dot_product_flash_attention_for_cpu",
             "aten::_scaled_dot_product_flash_attention_for_cpu_backward")

# Runs inside either checkout: the layout moved (issue 19), so both import paths are tried.
CHILD = r"""
import json, sys, time, warnings
import torch
warnings.filterwarnings("ignore")
try:
    from rcmae.models.rcmae import RCMAE
    from rcmae.run.config import load_config
    from rcmae.training.modules import PretrainModule
    from rcmae.training.pairs import PairSource
except ImportError:
    from rcmae.config import load_config
    from rcmae.datasets import PairSource
    from rcmae.model import RCMAE
    from rcmae.train import PretrainModule
steps, threads, profile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(threads)
cfg = load_config("tiny")
torch.manual_seed(0)
n, batch = 750, cfg.pretrain.batch_size
steps_per_epoch = n * cfg.pretrain.crops_per_clip // batch
x = torch.randn(n, cfg.features.n_mels, 313, generator=torch.Generator().manual_seed(1))
labels = torch.arange(n) % 15
module = PretrainModule(RCMAE(cfg.model), cfg, x, labels, steps_per_epoch,
                        PairSource(specaugment=cfg.pretrain.specaugment))
opt = module.configure_optimizers()["optimizer"]
order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
def step(i):
    start = (i * batch) % (n - batch)
    idx = order[start:start + batch]
    loss = module.training_step((idx, labels[idx]), i)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
for i in range(10):
    step(i)
t0 = time.perf_counter()
for i in range(10, 10 + steps):
    loss = step(i)
out = {"ms_per_step": (time.perf_counter() - t0) / steps * 1e3, "loss": loss,
       "optimizer": type(opt).__name__, "fused": bool(opt.defaults.get("fused")),
       "pipeline_steps": cfg.pretrain.epochs * steps_per_epoch}
if profile:
    from torch.profiler import profile as prof
    with prof() as p:
        for i in range(30):
            step(10 + steps + i)
    events = p.key_averages()
    out["profile_ms"] = {e.key: e.self_cpu_time_total / 1e3 / 30 for e in events}
    out["calls_per_step"] = sum(e.count for e in events) / 30
print(json.dumps(out))
"""


def measure(checkout: Path, steps: int, threads: int, profile: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(threads), "1" if profile else "0"],
                          env=env, capture_output=True, text=True, cwd=checkout)
    if proc.returncode != 0:
        raise SystemExit(f"step timing in {checkout} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, default=None, help="an older rcmae checkout to time beside this one")
    ap.add_argument("--steps", type=int, default=150, help="timed steps per run after 10 warm-up steps")
    ap.add_argument("--rounds", type=int, default=5, help="alternating runs per checkout (each reports its mean)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    raw: dict = {"header": header("pretraining step (cpu)"), "steps": args.steps, "threads": args.threads,
                 "load_before": os.getloadavg()[0], "now": [], "baseline": []}
    raw["baseline_name"] = args.baseline.name if args.baseline else None
    for r in range(args.rounds):
        raw["now"].append(measure(ROOT, args.steps, args.threads))
        if args.baseline:
            raw["baseline"].append(measure(args.baseline.resolve(), args.steps, args.threads))
        print(f"round {r + 1}/{args.rounds}:", raw["now"][-1]["ms_per_step"],
              raw["baseline"][-1]["ms_per_step"] if args.baseline else "", flush=True)
    raw["profile"] = measure(ROOT, args.steps, args.threads, profile=True)
    raw["load_after"] = os.getloadavg()[0]
    pipeline = load_raw("pipeline")
    if pipeline:  # the README pipeline this step is the loop of (bench_pipeline.py), for the arithmetic below
        raw["pipeline"] = {"baseline_total_s": pipeline["baseline"]["total_s"],
                           "now_outside_s": round(pipeline["now"]["total_s"] - pipeline["now"]["train_s"], 1),
                           "date": header_date(pipeline["header"])}
    save_raw("training-step", raw)
    text = render(raw)
    print(text)
    print(write_result("training-step", text))


def render(raw: dict) -> str:
    """bench/results/training-step.md from the raw numbers alone (bench/assemble.py calls it)."""
    median = {side: statistics.median(r["ms_per_step"] for r in raw[side]) for side in ("now", "baseline")
              if raw[side]}
    now = median["now"]
    prof = raw["profile"]["profile_ms"]
    total = sum(prof.values())
    dense = sum(prof.get(k, 0.0) for k in DENSE)
    steps = raw["profile"]["pipeline_steps"]  # the preset's epochs x steps per epoch on the demo set's 750 clips
    lines = ["# One `tiny` pretraining step (CPU)\n", raw["header"],
             f"The real `PretrainModule.training_step` + backward + the stage's optimizer, batch 32 (clip and twin), "
             f"750 random log-mels of 128 x 313; {raw['steps']} timed steps after 10 warm-up steps, {raw['threads']} "
             f"torch threads, median of {len(raw['now'])} alternating runs per checkout.\n",
             "| checkout | ms per step (runs) | optimizer | loss after the timed steps |", "|---|---:|---|---:|"]
    rows = [("this", "now")] + ([(f"baseline `{raw['baseline_name']}`", "baseline")] if raw["baseline"] else [])
    for name, side in rows:
        runs, ms = raw[side], median[side]
        each = ", ".join(f"{r['ms_per_step']:.1f}" for r in runs)
        opt = f"{runs[0]['optimizer']}{' (fused)' if runs[0]['fused'] else ''}"
        lines.append(f"| {name} | **{ms:.1f}** ({each}) | {opt} | {runs[0]['loss']:.6f} |")
    if raw["baseline"]:
        lines += ["", f"Speed-up of the step: **{median['baseline'] / now:.2f}x**. The losses agree to the digits "
                  "shown: the same draws and arithmetic, in a different order of operations."]
    lines += ["", f"Where this checkout's step goes (torch.profiler, 30 steps, self time per step; "
              f"{raw['profile']['calls_per_step']:.0f} operator calls per step):", "",
              "| part | ms per step | share |", "|---|---:|---:|"]
    attention = sum(prof.get(k, 0.0) for k in ATTENTION)
    top = sorted(((k, v) for k, v in prof.items() if k in DENSE), key=lambda kv: -kv[1])
    for k, v in top:
        lines.append(f"| `{k}` | {v:.2f} | {v / total:.0%} |")
    lines += [f"| **dense kernels (the floor)** | **{dense:.2f}** | {dense / total:.0%} |",
              f"| attention (flash kernel, forward and backward) | {attention:.2f} | {attention / total:.0%} |",
              f"| everything else (elementwise, copies, optimizer, dispatch) | {total - dense - attention:.2f} | "
              f"{(total - dense - attention) / total:.0%} |", ""]
    if "pipeline" in raw:
        p = raw["pipeline"]
        budget = p["baseline_total_s"] / 5
        lines += ["Issue 18's 5x target, in numbers:", "",
                  f"- 5x the baseline's README pipeline ({p['baseline_total_s']} s, bench/results/pipeline.md of "
                  f"{p['date']}) is **{budget:.0f} s** for pretrain + finetune + evaluate.",
                  f"- Pretraining alone is {steps} of these steps. At this checkout's step that is "
                  f"{steps * now / 1e3:.0f} s; at the dense kernels' time alone, with every other operation free, "
                  f"it would still be **{steps * dense / 1e3:.0f} s**.",
                  f"- Outside the training loops the pipeline takes {p['now_outside_s']} s (start-up, log-mels, "
                  "fitting, scoring 600 test clips).",
                  f"- With today's work outside the loops, the pipeline cannot go below "
                  f"{steps * dense / 1e3 + p['now_outside_s']:.0f} s at these settings, against the {budget:.0f} s "
                  "the target allows; the loop's floor alone leaves "
                  f"{max(budget - steps * dense / 1e3, 0):.0f} s for start-up, log-mels, fitting, fine-tuning and "
                  "scoring.", ""]
    lines.append(f"1-minute load average {raw['load_before']:.1f} before and {raw['load_after']:.1f} after (2 cores). "
                 "Raw numbers: bench/results/training-step.json.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
