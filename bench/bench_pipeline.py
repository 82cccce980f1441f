"""The README pipeline at its default settings, side by side with an older checkout and the official AE.

    python bench/bench_pipeline.py --baseline CHECKOUT [--ae | --only-ae] [--epochs default|P,F] [--out DIR]

Issue 18's speed target: ``rcmae pretrain``, ``finetune``, ``evaluate`` (the README's three commands, the ``tiny``
preset's own epochs) on the default demo set (``rcmae demo-data`` with its defaults: 15 IDs, 50 training and
20 + 20 test clips each), timed with this checkout and with ``--baseline`` (the checkout before the issue) one
after the other on the same data and machine. ``--ae`` also times ``rcmae baseline ae`` (the official-settings
autoencoder, 100 epochs) on the same data.

Each stage's wall time is split into its training loop (``run.json``'s stage ``wall_s``) and everything else
(start-up, loading log-mels, fitting scorers). The training loop bounds the ratio: ``total_baseline / train_now``
(the pretraining step's own floor: bench/bench_training_step.py). Without ``--ae`` the AE's earlier wall time
stays in the raw file, with its date.

Writes bench/results/pipeline.md and the raw numbers bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _machine import header, header_date, load_raw, save_raw, write_result  # noqa: E402
from bench_first_run import pipeline, rcmae  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the rcmae checkout to compare with")
    ap.add_argument("--ae", action="store_true", help="also time `rcmae baseline ae` (official settings)")
    ap.add_argument("--only-ae", action="store_true",
                    help="time only the AE, on the same --out data, and add it to bench/results/pipeline.json")
    ap.add_argument("--epochs", default="default", help="'default' (the preset's) or pretrain,finetune epochs")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    epochs = None if args.epochs == "default" else tuple(int(e) for e in args.epochs.split(","))
    tmp = args.out or Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "demo"
    res: dict = {"epochs": epochs or "preset", "load_before": os.getloadavg()[0]}
    earlier = load_raw("pipeline") or {}
    if args.only_ae:
        res = earlier
    elif not args.ae and "ae" in earlier:
        # The AE's 48 minutes are not rerun with every pipeline timing: its earlier wall time is kept, with its date.
        res["ae"] = {"date": header_date(earlier["header"]), **earlier["ae"]}
    res["demo_data_s"] = round(rcmae(["demo-data", str(data), "--quiet", "--if-missing"])[0], 1)
    dev = data / "dev_data"
    if not args.only_ae:
        res["now"] = pipeline(dev, tmp / "runs" / "now", epochs, ROOT)
        res["baseline"] = pipeline(dev, tmp / "runs" / "baseline", epochs, args.baseline.resolve())
        res["load_after"] = os.getloadavg()[0]
    if args.ae or args.only_ae:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        rcmae(["baseline", "ae", "--data", str(dev), "--out", str(tmp / "runs" / "ae")])
        res["ae"] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before": load,
                     "load_after": os.getloadavg()[0]}
        print("ae", res["ae"], flush=True)
    res.setdefault("header", header("pipeline (cpu)"))
    res["baseline_name"] = args.baseline.name
    now, base = res["now"], res["baseline"]
    res.update(speedup=round(base["total_s"] / now["total_s"], 2),
               ceiling=round(base["total_s"] / max(now["train_s"], 1e-9), 2),
               speedup_outside_training=round((base["total_s"] - base["train_s"])
                                              / max(now["total_s"] - now["train_s"], 1e-9), 2))
    text = render(res)
    print(text)
    save_raw("pipeline", res)
    print(write_result("pipeline", text))


def render(res: dict) -> str:
    """bench/results/pipeline.md from the raw numbers alone (bench/assemble.py calls it)."""
    now, base = res["now"], res["baseline"]
    ratio = base["total_s"] / now["total_s"]
    ceiling = base["total_s"] / max(now["train_s"], 1e-9)
    other = (base["total_s"] - base["train_s"]) / max(now["total_s"] - now["train_s"], 1e-9)

    epochs = None if res["epochs"] == "preset" else res["epochs"]
    ep = "the `tiny` preset's own (60 + 20)" if epochs is None else f"{epochs[0]} + {epochs[1]}"
    lines = ["# The README pipeline, side by side\n", res["header"],
             f"Default demo set (15 IDs, 750 training and 600 test clips); epochs: {ep}; baseline checkout "
             f"`{res['baseline_name']}`.\n",
             "| checkout | stage | wall (s) | training loop (s) | everything else (s) | of which fitting (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, pipe in (("this", now), ("baseline", base)):
        for stage in ("pretrain", "finetune", "evaluate"):
            st = pipe[stage]
            fit = st.get("fit_s") if name == "this" else "(not printed)"
            lines.append(f"| {name} | `rcmae {stage}` | {st['wall_s']} | {st['train_s'] or ''} | {st['other_s']} | "
                         f"{fit} |")
        lines.append(f"| **{name}** | **all three** | **{pipe['total_s']}** | {pipe['train_s']} | "
                     f"{round(pipe['total_s'] - pipe['train_s'], 1)} | |")
    if "ae" in res:
        when = f"; measured {res['ae']['date']}" if "date" in res["ae"] else ""
        lines.append(f"| official AE | `rcmae baseline ae` (100 epochs; load {res['ae']['load_before']:.1f} before, "
                     f"{res['ae']['load_after']:.1f} after{when}) | {res['ae']['wall_s']} | | |")
    d_now, d_base = now["evaluate"].get("default"), base["evaluate"].get("default")
    lines += ["", f"- Speed-up of the whole pipeline: **{ratio:.2f}x** (baseline total / this total).",
              f"- Speed-up of everything outside the training loops (start-up, loading, fitting, scoring): "
              f"**{other:.2f}x**.",
              f"- Speed-up of the training loops: **{base['train_s'] / max(now['train_s'], 1e-9):.2f}x** (the "
              "pretraining step itself: bench/results/training-step.md).",
              f"- No change outside the training loops can exceed {ceiling:.2f}x here (baseline total / this "
              "checkout's training loops).", ""]
    if d_now and d_base:
        lines += [f"Default scorer: this checkout `{d_now['scorer']}` AUC {d_now['auc']} / pAUC {d_now['pauc']}; "
                  f"baseline `{d_base['scorer']}` AUC {d_base['auc']} / pAUC {d_base['pauc']}.", ""]
    s_now, s_base = now["evaluate"].get("scorers") or {}, base["evaluate"].get("scorers") or {}
    common = sorted(set(s_now) & set(s_base))
    if common:
        # Training changed between the checkouts only in how a step is computed: every scorer should agree.
        lines += ["Every scorer of both runs (AUC / pAUC, mean over the machine types), trained by each checkout:", "",
                  "| scorer | this | baseline |", "|---|---:|---:|"]
        lines += [f"| `{k}` | {s_now[k][0]:.4f} / {s_now[k][1]:.4f} | {s_base[k][0]:.4f} / {s_base[k][1]:.4f} |"
                  for k in common]
        diff = max(abs(a - b) for k in common for a, b in zip(s_now[k], s_base[k], strict=True))
        lines += ["", f"Largest difference: {diff:.4f}.", ""]
    met = "yes" if ratio >= 5 else "**no**"
    lines += [f"1-minute load average {res['load_before']:.1f} before and {res['load_after']:.1f} after (2 cores). "
              "Raw numbers: bench/results/pipeline.json.", "",
              "| target (issue 18) | measured | met |", "|---|---:|---|",
              f"| README pipeline >= 5x the baseline, same settings | {ratio:.2f}x | {met} |"]
    for stage in ("pretrain", "finetune"):
        share = now[stage].get("fit_s", 0.0) / now[stage]["wall_s"]
        lines.append(f"| scorer fitting <= 20 % of `rcmae {stage}`'s wall time | {share:.0%} | "
                     f"{'yes' if share <= 0.2 else '**no**'} |")
    if "ae" in res:
        faster = now["total_s"] < res["ae"]["wall_s"]
        lines.append(f"| README pipeline faster than `rcmae baseline ae` on the same data | {now['total_s']} s vs "
                     f"{res['ae']['wall_s']} s | {'yes' if faster else '**no**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
