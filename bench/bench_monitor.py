"""Speed of ``rcmae monitor`` on a long recording: x real time, by a run and by its exported bundle.

    python bench/bench_monitor.py [--minutes 10] [--hop 1.0] [--threads 2]

Trains a ``tiny``-preset run for one epoch per stage on a small demo data set (speed depends on the
architecture, not on how well it is trained), exports its default scorer (default bundle format), tiles demo clips
into a recording of ``--minutes`` and times the monitor over it (windows streamed from disk, peak memory
reported). Writes bench/results/monitor.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import header, write_result  # noqa: E402

from rcmae.data import demo  # noqa: E402
from rcmae.deploy import export, monitor
from rcmae.deploy.bundle import Bundle
from rcmae.training import stages as train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    data = demo.make_demo_data(tmp / "demo", train_per_id=4, test_per_id=1, progress=False, machine_types=["fan"])
    run = tmp / "run"
    train.pretrain(data / "dev_data", run, preset="tiny", epochs=1, progress=False)
    train.finetune(run, epochs=1, progress=False)
    bundle = export.export_run(run, tmp / "bundle", examples=0)
    clips = sorted((data / "dev_data" / "fan" / "test").glob("*_id_00_*.wav"))
    y = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])
    reps = int(np.ceil(args.minutes * 60 * 16000 / len(y)))
    rec = tmp / "long.wav"
    with sf.SoundFile(rec, "w", 16000, 1, subtype="PCM_16") as f:
        for _ in range(reps):
            f.write(y)
    seconds = sf.info(rec).duration
    raw = []
    fmt = Bundle(bundle).format
    for label, kw in (("run (Detector)", {"run": run}), (f"bundle ({fmt})", {"bundle": bundle})):
        scorer = monitor.open_scorer(**kw, trust=True)  # the bundle this script just exported
        for stream in (True, False):
            t0 = time.perf_counter()
            res = monitor.monitor_recording(scorer, rec, "fan", "00", hop=args.hop, progress=False, stream=stream)
            wall = time.perf_counter() - t0
            raw.append({"detector": label, "stream": stream, "scorer": scorer.name, "seconds": seconds,
                        "windows": len(res.series), "wall_s": round(wall, 2), "x_real_time": round(seconds / wall, 1)})
    raw = {"hop": args.hop, "threads": args.threads, "load_before": load_before, "load_after": os.getloadavg()[0],
           "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "header": header("rcmae monitor speed (cpu)"), "rows": raw}
    (Path(__file__).parent / "results" / "monitor.json").write_text(json.dumps(raw, indent=1) + "\n")
    text = render(raw)
    print(text)
    print(write_result("monitor", text))


def render(raw: dict) -> str:
    """bench/results/monitor.md from the raw numbers alone (bench/assemble.py calls it)."""
    rows = []
    for r in raw["rows"]:
        mode = "streamed" if r["stream"] else "window by window (`--no-stream`)"
        rows.append(f"| {r['detector']} | {mode} | {r['scorer']} | {r['seconds'] / 60:.1f} | {r['windows']} | "
                    f"{r['wall_s']:.1f} | {r['x_real_time']:.1f} |")
    return ("# Monitoring long recordings\n\n" + raw["header"] +
            "| detector | log-mel | scorer | recording (min) | windows | wall (s) | x real time |\n"
            "|---|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
            f"`tiny` preset (0.18 M parameters), 10 s windows every {raw['hop']:g} s (streamed: 64 windows per batch "
            "share their log-mel frames, rcmae.deploy.stream; window by window: batches of 16), "
            f"{raw['threads']} torch threads; the recording is streamed from disk in 10 s blocks (peak resident "
            f"memory of the whole benchmark process, training included: {raw['peak_mib']:.0f} MiB). The machine was "
            f"shared: 1-minute load average {raw['load_before']:.1f} before and {raw['load_after']:.1f} after on its "
            "2 cores, so these are lower bounds of the speed on an idle machine. A hop of h seconds "
            "scores 1/h windows per second of audio, so the speed scales with the hop.\n")


if __name__ == "__main__":
    main()
