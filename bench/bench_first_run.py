"""A newcomer's first run, timed: the quick demo, the trained pipeline, folder scoring and monitoring.

    python bench/bench_first_run.py [--epochs 8,4] [--baseline CHECKOUT] [--hours 1] [--out DIR]

1. **Quick demo** (the Start page's chain, as the CLI runs it): ``rcmae demo-data`` (the small set,
   20 + 10/10 clips per ID, 5 types, and the 3-minute recording), ``rcmae fit``, ``rcmae evaluate``.
2. **Trained pipeline** at the given epochs: ``rcmae pretrain``, ``finetune``, ``evaluate`` on the same set; the
   part of each stage spent fitting scorers (the "fitted in" line) against the stage's wall time.
   ``--baseline CHECKOUT`` runs the same commands with another rcmae checkout (e.g. the commit before this
   benchmark's) on the same data, side by side.
3. **Folder scoring**: every test clip of the set through ``Detector.score_paths`` and through an exported
   bundle, clips per second.
4. **Monitoring**: the demo recording tiled to ``--hours``, ``rcmae monitor`` over it in a child process:
   x real time at a 1 s hop and its peak resident memory.

Writes bench/results/first_run.md and bench/results/first_run.json (raw numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _machine import header, write_result  # noqa: E402


def rcmae(args: list[str], checkout: Path = ROOT, env_extra: dict | None = None) -> tuple[float, str]:
    """Run ``python -m rcmae.cli ARGS`` with ``checkout`` on PYTHONPATH; ``(wall seconds, stderr+stdout)``."""
    env = dict(os.environ, PYTHONPATH=str(checkout), **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rcmae.cli", *args], env=env, capture_output=True, text=True,
                          cwd=checkout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"rcmae {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def fitted_seconds(log: str) -> float:
    """The fitting time a stage printed (``fitted in X s``), 0 when it fitted nothing."""
    return sum(float(m) for m in re.findall(r"fitted in ([0-9.]+) s", log))


def pipeline(data: Path, run: Path, epochs: tuple[int, int] | None, checkout: Path) -> dict:
    """The three README commands with ``checkout``; per stage wall, training-loop and other seconds."""
    out = {}
    more = {"pretrain": ["--epochs", str(epochs[0])] if epochs else [],
            "finetune": ["--epochs", str(epochs[1])] if epochs else []}
    for stage, args in (("pretrain", ["pretrain", "--data", str(data), "--out", str(run), "--preset", "tiny",
                                      *more["pretrain"]]),
                        ("finetune", ["finetune", "--run", str(run), *more["finetune"]]),
                        ("evaluate", ["evaluate", "--run", str(run)])):
        wall, log = rcmae(args, checkout)
        info = json.loads((run / "run.json").read_text())
        train_s = (info.get("stages", {}).get(stage) or {}).get("wall_s", 0.0) if stage != "evaluate" else 0.0
        out[stage] = {"wall_s": round(wall, 1), "train_s": round(train_s, 1), "other_s": round(wall - train_s, 1),
                      "fit_s": round(fitted_seconds(log), 1)}  # what the checkout printed ("fitted in X s")
        if stage == "evaluate":
            name = info.get("default_scorer") or ""
            m = re.search(rf"^\s*{re.escape(name)}: AUC ([0-9.]+)\s+pAUC ([0-9.]+)", log, re.M)
            out[stage]["default"] = {"scorer": name, "auc": float(m.group(1)),
                                     "pauc": float(m.group(2))} if m and name else None
            # Every scorer's averages, from the files evaluate wrote (eval/<scorer>/results.json).
            out[stage]["scorers"] = {
                path.parent.name: [round(json.loads(path.read_text())["average"][k], 4) for k in ("auc", "pauc")]
                for path in sorted((run / "eval").glob("*/results.json"))}
        print(checkout.name, stage, out[stage], flush=True)
    out["total_s"] = round(sum(v["wall_s"] for v in out.values()), 1)
    out["train_s"] = round(sum(v["train_s"] for k, v in out.items() if isinstance(v, dict)), 1)
    return out


def targets_table(res: dict) -> list[str]:
    """Issue 18's targets beside this run's numbers (met or not, computed, never typed)."""
    q, s, m = res["quick_demo"], res["scoring"], res["monitor"]
    long = res.get("monitor_long")
    rows = [("quick demo end to end <= 180 s", f"{q['total_s']} s", q["total_s"] <= 180)]
    if "baseline" in res:
        ratio = res["baseline"]["total_s"] / res["pipeline"]["total_s"]
        rows.append(("pretrain + finetune + evaluate >= 5x the baseline, same settings", f"{ratio:.2f}x", ratio >= 5))
    rows += [("folder scoring >= 200 clips/s through `Detector`", f"{s['detector_clips_per_s']}",
              s["detector_clips_per_s"] >= 200),
             ("folder scoring >= 200 clips/s through a bundle", f"{s['bundle_clips_per_s']}",
              s["bundle_clips_per_s"] >= 200),
             ("monitor >= 200x real time at a 1 s hop", f"{m['x_real_time']}x", m["x_real_time"] >= 200)]
    if long:
        rows.append((f"monitor memory < 1 GiB on a {long['recording_s'] / 3600:.0f} h recording",
                     f"{long['peak_rss_mib']} MiB", long["peak_rss_mib"] < 1024))
    out = ["| target (issue 18) | measured | met |", "|---|---:|---|"]
    out += [f"| {what} | {value} | {'yes' if ok else '**no**'} |" for what, value, ok in rows]
    return [*out, ""]


def monitor_long(tmp: Path, y: np.ndarray, sr: int, hours: float) -> dict:
    """``rcmae monitor`` (the training-free run) over the recording ``y`` tiled to ``hours``, in a child process."""
    long = tmp / "recordings" / "fan" / f"demo_id_00_{hours:g}h.wav"
    long.parent.mkdir(parents=True, exist_ok=True)
    reps = int(np.ceil(hours * 3600 * sr / len(y)))
    with sf.SoundFile(long, "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(reps):
            f.write(y)
    seconds = sf.info(long).duration
    code = ("import resource, sys, time; from rcmae.deploy import monitor; "
            "s = monitor.open_scorer(run=sys.argv[1]); t = time.perf_counter(); "
            "r = monitor.monitor_recording(s, sys.argv[2], 'fan', '00', progress=False); "
            "print(time.perf_counter() - t, len(r.series), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp / "runs" / "free"), str(long)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    long.unlink()  # hours of audio: not kept
    wall, windows, rss = proc.stdout.split()[-3:]
    return {"recording_s": round(seconds, 1), "windows": int(windows), "wall_s": round(float(wall), 1),
            "x_real_time": round(seconds / float(wall), 1), "peak_rss_mib": round(int(rss) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", default="8,4", help="pretrain,finetune epochs of the trained pipeline")
    ap.add_argument("--baseline", type=Path, default=None, help="another rcmae checkout, run side by side")
    ap.add_argument("--hours", type=float, default=1.0, help="length of the monitored recording")
    ap.add_argument("--memory-hours", type=float, default=0.0,
                    help="also monitor a recording this long (e.g. 24) for its peak memory (0: skip)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    epochs = tuple(int(e) for e in args.epochs.split(","))
    tmp = args.out or Path(tempfile.mkdtemp(prefix="bench_first_run_"))
    tmp.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    res: dict = {"epochs": epochs, "load_before": load_before}

    # 1. The quick demo.
    data, rec = tmp / "quick-demo", tmp / "recordings" / "demo_fan_id_00.wav"
    t_data, _ = rcmae(["demo-data", str(data), "--train-per-id", "20", "--test-per-id", "10", "--quiet",
                       "--recording", str(rec)])
    t_fit, log = rcmae(["fit", "--data", str(data), "--out", str(tmp / "runs" / "free")])
    t_eval, log_eval = rcmae(["evaluate", "--run", str(tmp / "runs" / "free")])
    auc = re.search(r"ensemble: AUC ([0-9.]+)\s+pAUC ([0-9.]+)", log_eval)
    res["quick_demo"] = {"demo_data_s": round(t_data, 1), "fit_s": round(t_fit, 1), "evaluate_s": round(t_eval, 1),
                         "total_s": round(t_data + t_fit + t_eval, 1),
                         "auc": float(auc.group(1)) if auc else None, "pauc": float(auc.group(2)) if auc else None}
    print("quick demo", res["quick_demo"], flush=True)

    # 2. The trained pipeline (and the baseline checkout on the same data).
    dev = data / "dev_data"
    res["pipeline"] = pipeline(dev, tmp / "runs" / "trained", epochs, ROOT)
    if args.baseline is not None:
        res["baseline"] = pipeline(dev, tmp / "runs" / "baseline", epochs, args.baseline.resolve())

    # 3. Folder scoring through Detector and through a bundle.
    from rcmae.data.audio import load_audio
    from rcmae.deploy.bundle import Bundle
    from rcmae.deploy.export import export_run
    from rcmae.scorers.detector import Detector

    det = Detector.load(tmp / "runs" / "free")
    folders = sorted(dev.glob("*/test"))
    n = sum(len(list(f.glob("*.wav"))) for f in folders)
    det.score_paths(folders[:1])  # warm-up (first-call allocations)
    t0 = time.perf_counter()
    rows = det.score_paths(folders)
    t_det = time.perf_counter() - t0
    bundle = Bundle(export_run(tmp / "runs" / "free", tmp / "bundle", examples=0, overwrite=True), trust=True)
    files = [p for f in folders for p in sorted(f.glob("*.wav"))]
    first = (files[0].parent.parent.name, re.search(r"id_(\d\d)", files[0].name).group(1))
    bundle.score_waveforms(load_audio(files[0])[None], [first[0]], [first[1]])  # warm-up, as for the Detector
    t0 = time.perf_counter()
    units = [(p.parent.parent.name, re.search(r"id_(\d\d)", p.name).group(1)) for p in files]
    for b in range(0, len(files), 64):  # read and score a batch at a time, as score_paths does
        waves = np.stack([load_audio(p) for p in files[b:b + 64]])
        bundle.score_waveforms(waves, [u[0] for u in units[b:b + 64]], [u[1] for u in units[b:b + 64]])
    t_bundle = time.perf_counter() - t0
    res["scoring"] = {"clips": n, "errors": sum(r["error"] is not None for r in rows),
                      "detector_clips_per_s": round(n / t_det, 1), "bundle_clips_per_s": round(n / t_bundle, 1)}
    print("scoring", res["scoring"], flush=True)

    # 4. Monitoring a long recording (child process: its own peak memory), and optionally a day-long one.
    y, sr = sf.read(rec, dtype="float32")
    res["monitor"] = monitor_long(tmp, y, sr, args.hours)
    print("monitor", res["monitor"], flush=True)
    if args.memory_hours:
        res["monitor_long"] = monitor_long(tmp, y, sr, args.memory_hours)
        print("monitor (long)", res["monitor_long"], flush=True)
    res["load_after"] = os.getloadavg()[0]
    res["peak_rss_bench_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    res["header"] = header("first run (cpu)")
    text = render(res)
    print(text)
    (ROOT / "bench" / "results" / "first_run.json").write_text(json.dumps(res, indent=1) + "\n")
    print(write_result("first_run", text))


def render(res: dict) -> str:
    """bench/results/first_run.md from the raw numbers alone (bench/assemble.py calls it)."""
    epochs, load_before = res["epochs"], res["load_before"]
    q, p, s, m = res["quick_demo"], res["pipeline"], res["scoring"], res["monitor"]
    lines = [
        "# A newcomer's first run\n", res["header"],
        "| step | wall (s) | training loop (s) | everything else: start-up, loading, fitting scorers (s) |",
        "|---|---:|---:|---:|",
        f"| quick demo: demo-data (small set + 3-min recording) | {q['demo_data_s']} | | |",
        f"| quick demo: `rcmae fit` (training-free) | {q['fit_s']} | 0 | {q['fit_s']} |",
        f"| quick demo: `rcmae evaluate` | {q['evaluate_s']} | | |",
        f"| **quick demo, end to end** | **{q['total_s']}** | | |",
    ]
    for name, pipe in (("this checkout", p), ("baseline", res.get("baseline"))):
        if pipe is None:
            continue
        for stage in ("pretrain", "finetune", "evaluate"):
            what = f"`rcmae {stage}`" + (f" ({epochs[0] if stage == 'pretrain' else epochs[1]} epochs)"
                                         if stage != "evaluate" else "")
            lines.append(f"| {name}: {what} | {pipe[stage]['wall_s']} | {pipe[stage]['train_s'] or ''} | "
                         f"{pipe[stage]['other_s']} |")
        lines.append(f"| **{name}: pretrain + finetune + evaluate** | **{pipe['total_s']}** | | |")
    lines += ["", f"Quick demo detector (training-free ensemble): AUC {q['auc']}, pAUC {q['pauc']} on the small set.",
              "", "| throughput | value |", "|---|---:|",
              f"| folder scoring, `Detector.score_paths` ({s['clips']} clips, {s['errors']} errors) | "
              f"{s['detector_clips_per_s']} clips/s |",
              "| folder scoring, exported bundle (default graph format, batches of 64) | "
              f"{s['bundle_clips_per_s']} clips/s |",
              f"| `monitor` over {m['recording_s'] / 3600:.2f} h at a 1 s hop ({m['windows']} windows) | "
              f"{m['x_real_time']}x real time ({m['wall_s']} s) |",
              f"| `monitor` peak resident memory (child process) | {m['peak_rss_mib']} MiB |",
              *([f"| `monitor` over {res['monitor_long']['recording_s'] / 3600:.1f} h: x real time, peak resident "
                 f"memory | {res['monitor_long']['x_real_time']}x, {res['monitor_long']['peak_rss_mib']} MiB |"]
                if "monitor_long" in res else []),
              "", f"1-minute load average {load_before:.1f} before and {res['load_after']:.1f} after (2 cores): "
              "wall times are upper bounds on an idle machine. Raw numbers: bench/results/first_run.json.", ""]
    lines += targets_table(res)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
